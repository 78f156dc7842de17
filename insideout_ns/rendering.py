"""Drawing a Gaussian set (gaussians.py): photographs (alpha-composited SH colour), X-rays (line integrals of the
density), the viewer's cut-away, and the density on a voxel grid. Functions of the set, a selection and a camera,
so that the model, the alignment and the exports draw alike; the rasterizers are kernels/.
"""

from __future__ import annotations

import math
from typing import Dict, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from nerfstudio.cameras.cameras import Cameras
from nerfstudio.utils.colormaps import apply_float_colormap

from .gaussians import GaussianSet
from .kernels.rgb import ALPHA_MIN, rasterize_rgb
from .kernels.voxelize import voxelize_density
from .kernels.xray import rasterize_xray
from .transforms import camera_intrinsics, viewmat_from_c2w

INVISIBLE = math.log(ALPHA_MIN / (1 - ALPHA_MIN))  # an opacity logit below this never reaches the rasterizers' alpha cut


def splat(gaussians: GaussianSet, camera: Cameras, sel: Tensor, colors: Tensor, opacities: Tensor,
          sh_degree: Optional[int], background: Tensor, backend: str) -> Tuple[Tensor, Tensor, Dict]:
    """Alpha-composited image of the selected Gaussians sel [N] with colours [M, 3] (or SH coefficients [M, K, 3]
    with sh_degree), opacities [M] and background [3] in the first camera of `camera`: colour + depth [H, W, 4],
    alpha [H, W, 1], gsplat's info."""
    means, quats, scales = gaussians.geometry(sel)
    W, H = int(camera.width[0]), int(camera.height[0])
    viewmat = viewmat_from_c2w(camera.camera_to_worlds[0]).to(means.device)
    img, alpha, info = rasterize_rgb(means, quats, scales, opacities, colors, viewmat[None],
                                     camera_intrinsics(camera).to(means.device)[None], W, H, sh_degree=sh_degree,
                                     backgrounds=background[None], render_mode="RGB+ED", backend=backend)
    return img[0], alpha[0], info


def photograph(gaussians: GaussianSet, camera: Cameras, sel: Tensor, sh_degree: int, background: Tensor, backend: str
               ) -> Tuple[Tensor, Tensor, Dict, Tensor]:
    """The selected Gaussians' appearance (those under the rasterizer's 1/255 alpha cut draw nothing and are left
    out, which is exact): colour + depth [H, W, 4], alpha [H, W, 1], gsplat's info, and the selection drawn [N]."""
    sel = sel & (gaussians.params["opacities"].detach() >= INVISIBLE)
    img, alpha, info = splat(gaussians, camera, sel, gaussians.sh(sel), gaussians.opacities(sel), sh_degree, background, backend)
    return img, alpha, info, sel


def line_integrals(gaussians: GaussianSet, sel: Tensor, viewmat: Tensor, K: Tensor, W: int, H: int, projection: str,
                   backend: str, cutoff: float, alpha_blended_peak: Optional[float] = None) -> Tuple[Tensor, Dict]:
    """The X-ray [H, W, 1] of the selected Gaussians sel [N] seen by viewmat [4, 4] and K [3, 3]: line integrals of
    the density, or (the alpha-blending ablation, `alpha_blended_peak`) the density composited as a grey colour of
    that peak; and gsplat's info."""
    means, quats, scales = gaussians.geometry(sel)
    dens = gaussians.densities(sel)
    if alpha_blended_peak is not None:
        img, _, info = rasterize_rgb(means, quats, scales, gaussians.opacities(sel), dens[:, None] * alpha_blended_peak,
                                     viewmat[None], K[None], W, H, backend=backend)
    else:
        img, info = rasterize_xray(means, quats, scales, dens, viewmat[None], K[None], W, H, projection,
                                   backend=backend, cutoff=cutoff)
    return img[0], info


@torch.no_grad()
def cutaway(gaussians: GaussianSet, camera: Cameras, keep: Tensor, by_colour: bool, sh_degree: int, background: Tensor,
            backend: str) -> Tensor:  # [H, W, 3]
    """The Gaussians `keep` [N] (the near side of the viewer's cut plane) coloured by density (inferno map of the
    attenuation, opaque where dense) or, `by_colour`, by their RGB colour (inside: the nearest surface's)."""
    rho = gaussians.densities(keep)
    if len(rho) == 0:
        return background.expand(int(camera.height[0]), int(camera.width[0]), 3)
    ref = float(rho.quantile(0.99)) if len(rho) < 2**24 else float(rho.max())
    opacity = (rho / max(0.25 * ref, 1e-12)).clamp(0, 1)  # opaque where dense
    if by_colour:
        img, _, _ = splat(gaussians, camera, keep, gaussians.sh(keep), torch.maximum(opacity, gaussians.opacities(keep)),
                          sh_degree, background, backend)
    else:
        colours = apply_float_colormap((rho / max(ref, 1e-12)).clamp(0, 1)[:, None], "inferno")  # [M, 3]
        img, _, _ = splat(gaussians, camera, keep, colours, opacity, None, background, backend)
    return img[..., :3].clamp(0, 1)


def grid_shape(aabb: Tensor, res: int) -> Tuple[int, ...]:  # [2, 3] -> (nx, ny, nz)
    """A grid of `res` voxels along the longest side of aabb, as many of the same size along the others."""
    side = aabb[1] - aabb[0]
    return tuple(max(1, round(res * float(e) / float(side.max()))) for e in side)


def voxelized(means: Tensor, quats: Tensor, scales: Tensor, densities: Tensor, shape: Tuple[int, int, int], aabb: Tensor,
              backend: str, supersample: int = 1) -> Tensor:  # [M, 3], [M, 4], [M, 3], [M] -> shape
    """The density of these Gaussians on the grid `shape` over aabb [2, 3], each voxel the mean of supersample^3
    point samples (1: its centre's value, as the scene format's volume; export.py says why that is the default)."""
    fine = tuple(int(n) * supersample for n in shape)
    vol = voxelize_density(means, quats, scales, densities, fine, aabb.to(means.device), backend=backend)
    return F.avg_pool3d(vol[None, None], supersample)[0, 0] if supersample > 1 else vol
