"""The alignment's last, optional step: refine the X-ray -> RGB similarity by silhouettes.

After phase 1 the RGB population has fitted the photographs' alpha masks: its alpha is the object's
outline from any viewpoint, sharp. The X-ray projections have a sharp outline too: the support, where a
ray met anything. Rendering the RGB population's alpha from the X-ray cameras, moved by the similarity,
and matching it to the projections' support (least squares) refines the similarity between two sharp
outlines. (The radiative density's own outline, blurred by its Gaussians, biased such a fit: README.)

Example:
    >>> import numpy as np, torch
    >>> from insideout_ns.silhouette import rigid_about
    >>> m = rigid_about(torch.zeros(3), torch.zeros(3), torch.zeros(3), 1.0)
    >>> bool(torch.allclose(m, torch.eye(4)))
    True
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Tuple

import numpy as np
import torch
from torch import Tensor

from nerfstudio.cameras.lie_groups import exp_map_SO3xR3

from .kernels.rgb import rasterize_rgb
from .transforms import quat_multiply, rotmat_to_quat, transform_gaussians

# Outlines that still differ on more than this fraction of the object's projected area after the fit are
# not one object's outline (measured: phantoms 2.2-2.4 %; CT scenes, whose X-rays also see the scan's
# background around the photographed iso-surface, 11-12 %); the start is kept then.
MAX_MISMATCH = 0.05
MAX_RES = 256  # outlines are matched on at most 256 px a side (512^2 x 160 views took 166 s on 2 CPU cores)


@dataclass
class SilhouetteFit:
    matrix: np.ndarray  # [4, 4] the refined X-ray -> RGB similarity, or the start where `used` is False
    loss_before: float  # mean squared alpha - support difference over every view, at the start
    loss_after: float  # the same at the refined similarity
    mismatch: float  # loss_after as a fraction of the support's area
    used: bool  # the fit lowered the loss and the outlines agree (mismatch <= max_mismatch)
    steps: int


def pinhole_views(viewmats: Tensor, Ks: Tensor, projection: str, distance: float) -> Tuple[Tensor, Tensor]:
    """The X-ray cameras as pinholes ([V, 4, 4], [V, 3, 3]) for the alpha rasterizer: cone beams as they
    are; a parallel beam as a pinhole `distance` behind its detector with the focal length scaled by it
    (rays parallel to within object size / distance)."""
    if projection == "cone":
        return viewmats, Ks
    viewmats, Ks = viewmats.clone(), Ks.clone()
    viewmats[:, 2, 3] += distance  # OpenCV camera: the object `distance` further along +z
    Ks[:, 0, 0] *= distance
    Ks[:, 1, 1] *= distance
    return viewmats, Ks


def coarser_views(support: Tensor, Ks: Tensor, max_res: int = MAX_RES) -> Tuple[Tensor, Tensor]:
    """The support [V, H, W] averaged over f x f pixels, the smallest integer f that brings both sides to at
    most `max_res` (ragged rows and columns dropped), and the intrinsics Ks [V, 3, 3] of that detector."""
    f = -(-max(support.shape[1:]) // max_res)
    if f == 1:
        return support, Ks
    Ks = Ks.clone()
    Ks[:, :2] /= f  # fx, fy, cx, cy of pixels f times larger (the crop keeps the origin)
    return torch.nn.functional.avg_pool2d(support[:, None], f)[:, 0], Ks


def rigid_about(omega: Tensor, tau: Tensor, centre: Tensor, radius: float) -> Tensor:  # [3], [3], [3] -> [4, 4]
    """D(x) = R(omega) (x - centre) + centre + radius tau: a rotation about the centre and a translation."""
    rot = exp_map_SO3xR3(torch.cat([torch.zeros(3).to(omega), omega])[None])[0, :3, :3]
    m = torch.eye(4, dtype=omega.dtype, device=omega.device)
    m[:3, :3] = rot
    m[:3, 3] = centre + radius * tau - rot @ centre
    return m


def refine_similarity(
    means: Tensor, quats: Tensor, scales: Tensor, opacities: Tensor,  # [N, 3], [N, 4], [N, 3], [N]: RGB frame
    viewmats: Tensor, Ks: Tensor, width: int, height: int,  # [V, 4, 4], [V, 3, 3]: pinhole X-ray cameras, X-ray frame
    support: Tensor,  # [V, H, W] the projections' support in [0, 1]
    init: np.ndarray,  # [4, 4] X-ray -> RGB similarity to start from
    centre: Tensor, radius: float,  # [3] the object's centre (X-ray frame) and radius: the parameters' units
    steps: int = 60, views_per_step: int = 8, lr: float = 3e-2, max_mismatch: float = MAX_MISMATCH,
    backend: str = "auto", seed: int = 0,
) -> SilhouetteFit:
    """Adam on a rigid D (rotation vector, translation in radii) with T = init o D, minimising the mean
    squared difference between the RGB population's alpha seen by the X-ray cameras and the support.
    The scale stays the start's: the rasterizer's footprint (at least 0.3 px^2) widens the alpha's outline
    by a pixel or so, which a scale would absorb; a rotation or translation cannot."""
    V = viewmats.shape[0]
    assert support.shape == (V, height, width), (support.shape, V, height, width)
    assert means.shape[1:] == (3,) and quats.shape[1:] == (4,) and opacities.shape == means.shape[:1]
    dev = means.device
    # the RGB population in the X-ray frame under the start: y = init^-1(x)
    inv = torch.from_numpy(np.linalg.inv(init)).float().to(dev)
    y, qy, sy, _ = transform_gaussians(inv, means.detach(), quats.detach(), scales.detach(), opacities.detach())
    opac, colours = opacities.detach(), torch.ones(len(means), 1, device=dev)
    centre = centre.float().to(dev)
    omega, tau = torch.zeros(3, device=dev, requires_grad=True), torch.zeros(3, device=dev, requires_grad=True)

    def loss_of(views: Tensor) -> Tensor:
        d = rigid_about(omega, tau, centre, radius)
        rot_t = d[:3, :3].T
        m = (y - d[:3, 3]) @ rot_t.T  # the population at T^-1 = D^-1 init^-1: D^-1(y) = R^T (y - t)
        q = quat_multiply(rotmat_to_quat(rot_t).expand_as(qy), qy)
        _, alpha, _ = rasterize_rgb(m, q, sy, opac, colours, viewmats[views], Ks[views], width, height,
                                    backend=backend)
        return ((alpha[..., 0] - support[views]) ** 2).mean()

    def loss_all() -> float:
        with torch.no_grad():
            return float(sum(loss_of(torch.arange(i, min(i + views_per_step, V), device=dev)) *
                             (min(i + views_per_step, V) - i) for i in range(0, V, views_per_step)) / V)

    before = loss_all()
    opt = torch.optim.Adam([omega, tau], lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    gen = torch.Generator().manual_seed(seed)
    with torch.enable_grad():  # also under a caller's no_grad (the phase boundary runs in one)
        for _ in range(steps):
            views = torch.randperm(V, generator=gen)[:views_per_step].to(dev)
            opt.zero_grad()
            loss_of(views).backward()
            opt.step()
            sched.step()
    after = loss_all()
    with torch.no_grad():
        refined = init @ rigid_about(omega, tau, centre, radius).double().cpu().numpy()
    mismatch = after / max(float(support.mean()), 1e-12)
    used = after < before and mismatch <= max_mismatch
    return SilhouetteFit(refined if used else init, before, after, mismatch, used, steps)
