"""Initial Gaussians of both populations, from the data alone (pure torch).

- RGB: points of the visual hull (inside the alpha mask of every photograph that sees them).
- Hull surfaces for the alignment: the visual hull of the photographs' alpha masks and the "X-ray hull"
  of the projections' supports (where anything attenuates), each as an iso-surface. Both come from the
  data alone, so the alignment does not depend on how far the fit has got.
- Radiative: a filtered back-projection of the projections (FBP or FDK, fbp.py) on a grid of the X-ray
  frame (a CT scene: the CT itself), sampled on a regular lattice where it exceeds 5 % of its peak: one Gaussian a
  node, with its value.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from nerfstudio.cameras.cameras import Cameras

from .dataparsers.scene_format import Volume
from .fbp import filtered_backprojection
from .projection_geometry import grid_points, project, sample_images
from .solids import largest_part, surface_points


@dataclass
class StartingData:
    """What the training data gives the model to start from (the datamanager computes it once)."""

    rgb_points: Optional[Tensor] = None  # [P, 3] starting means of the RGB population (RGB frame)
    radiative: Optional[Tuple[Tensor, Tensor, Tensor]] = None  # means [K, 3], scales [K], densities [K] (X-ray frame)
    hull_rgb: Optional[Tensor] = None  # [S, 3] surface of the photographs' visual hull, for the alignment
    hull_xray: Optional[Tensor] = None  # [S', 3] surface of the projections' hull, for the alignment
    notes: List[str] = field(default_factory=list)  # fallbacks taken (uniform points, no hull), for the log and alignment.json
    masked: bool = True  # the photographs mark the object (alpha or mask_path); False: a capture with its background
    rgb_cameras: Optional[Cameras] = None  # [V] the photographs' cameras
    rgb_masks: Optional[List[Tensor]] = None  # [H, W, 1] uint8 or float per photograph, where they have masks (object_grid.py)
    sfm_points: Optional[Tensor] = None  # [P, 3] the capture's SfM points, where it has no masks (object_region.py)

    @classmethod
    def placeholder(cls, rgb: bool, xray: bool) -> "StartingData":
        """A few points of each population, for a model whose Gaussians a checkpoint is about to replace."""
        return cls(rgb_points=torch.rand(4, 3) if rgb else None,
                   radiative=(torch.rand(1, 3), torch.ones(1), torch.ones(1)) if xray else None,
                   notes=["loaded from a checkpoint: no starting data computed"])


def visual_hull(cameras: Cameras, alphas: Tensor, box: Tensor, n_points: int, res: int = 48, seed: int = 0
                ) -> Tuple[Tensor, Optional[str]]:
    """Points [n_points, 3] inside the alpha mask (> 0.5) of every view that sees them, and None; where
    the masks carve (almost) nothing, uniform points in the box and a note that says so."""
    pts = grid_points(box, res)
    inside = hull_occupancy(cameras, alphas, box, parallel=False, res=res).reshape(-1)
    g = torch.Generator().manual_seed(seed)
    cell = (box[1] - box[0]) / res
    if inside.sum() < 8:
        note = f"the photographs' masks leave {int(inside.sum())} of {res}^3 cells: RGB points start uniform in the box"
        return box[0] + torch.rand(n_points, 3, generator=g) * (box[1] - box[0]), note
    chosen = pts[inside][torch.randint(int(inside.sum()), (n_points,), generator=g)]
    return chosen + (torch.rand(n_points, 3, generator=g) - 0.5) * cell, None  # jitter within the cell


def unmasked_start(sfm_points: Optional[Tensor], box: Tensor, n_points: int, seed: int = 0) -> Tuple[Tensor, str]:
    """Starting means [P, 3] of the RGB population for photographs without masks (they show the object's
    surroundings too): the SfM points where there are any (at most `n_points`, drawn at random), as
    splatfacto starts, else uniform in `box`; and a note for the log."""
    g = torch.Generator().manual_seed(seed)
    head = "the photographs have no masks: the object will be found among the fitted Gaussians at the alignment; "
    if sfm_points is not None and len(sfm_points) >= 4:
        pts = sfm_points.float()
        if len(pts) > n_points:
            pts = pts[torch.randperm(len(pts), generator=g)[:n_points]]
        return pts, head + f"RGB points start at {len(pts)} of the {len(sfm_points)} SfM points"
    return box[0] + torch.rand(n_points, 3, generator=g) * (box[1] - box[0]), head + "RGB points start uniform in the box (no SfM points)"


def radiative_init(cameras: Cameras, projections: Tensor, box: Tensor, parallel: bool, n_points: int, res: int = 64,
                   threshold: float = 0.05, ct: Optional[Volume] = None) -> Tuple[Tuple[Tensor, Tensor, Tensor], Optional[str]]:
    """Means [K, 3], isotropic scales [K] and densities [K] of the initial radiative population: a filtered
    back-projection (fbp.py) sampled on a regular lattice of about `n_points` nodes where it exceeds
    `threshold` of its peak (R2-Gaussian's threshold), one Gaussian a node with the reconstruction's value
    there; and a note where nothing stands out (then the lattice fills the box). A CT scene's own voxels (`ct`; means
    of k^3 where it has more than 2 `res` a side) take the reconstruction's place: nothing to reconstruct.

    A lattice of Gaussians of standard deviation 0.6 x its spacing sums to a smooth copy of the values it
    carries, so the population starts as a smooth copy of the reconstruction (head CT at 60 views, 20 000
    points: 26.7 dB against 21.4 for points drawn at random among the strong cells).
    """
    if ct is None:
        rec = filtered_backprojection(cameras, projections, box, (res, res, res), parallel).clamp(min=0)  # [r, r, r]
    else:
        rec, box = torch.from_numpy(ct.values).clamp(min=0), torch.from_numpy(ct.aabb).float()  # [X, Y, Z]
        k = max(1, max(rec.shape) // (2 * res))  # a clinical CT's 512 voxels: means of 4^3, as coarse as its lattice
        if k > 1:
            rec = torch.nn.functional.adaptive_avg_pool3d(rec[None].float(), [-(-n // k) for n in rec.shape])[0]
        rec = rec.float()
    note = None
    strong_fraction = float(torch.count_nonzero(rec > threshold * rec.max())) / rec.numel()
    if strong_fraction * rec.numel() < 8:  # nothing stands out: a lattice over the whole box
        note = "nothing stands out of the projections' reconstruction: radiative points start uniform in the box"
        strong_fraction, threshold = 1.0, -1.0
    size = box[1] - box[0]
    spacing = (strong_fraction * float(size.prod()) / n_points) ** (1 / 3)
    for _ in range(3):  # the strong region is not a box: correct the spacing by the count it gave
        means, values = _lattice_values(rec, box, spacing)
        keep = values > threshold * rec.max()
        spacing *= (max(int(keep.sum()), 1) / n_points) ** (1 / 3)  # (a lattice that missed it all: finer)
    means, values = _lattice_values(rec, box, spacing)
    keep = values > threshold * rec.max()
    means, values = means[keep], values[keep].clamp(min=1e-3 * float(rec.max()))
    sigma = 0.6 * spacing  # neighbours overlap enough for their sum to be smooth
    # a lattice of Gaussians of peak rho sums to rho (2 pi)^(3/2) sigma^3 / spacing^3: that is the value
    dens = values * spacing**3 / ((2 * math.pi) ** 1.5 * sigma**3)
    return (means, torch.full((len(means),), sigma), dens), note


def _lattice_values(rec: Tensor, box: Tensor, spacing: float) -> Tuple[Tensor, Tensor]:
    """Nodes [K, 3] of a lattice of `spacing` centred in `box` and the grid `rec` [X, Y, Z] (cells over
    `box`) interpolated there [K]."""
    size = box[1] - box[0]
    counts = torch.clamp((size / spacing).floor(), min=1)  # [3] nodes along each axis
    centre, half = 0.5 * (box[0] + box[1]), 0.5 * spacing * counts
    nodes = grid_points(torch.stack([centre - half, centre + half]), counts.int().tolist())  # [K, 3] cell centres
    unit = (nodes - box[0]) / size * 2 - 1  # [-1, 1] over the box; grid_sample's x indexes the last axis
    values = torch.nn.functional.grid_sample(rec.permute(2, 1, 0)[None, None], unit[None, None, None],
                                             align_corners=False, padding_mode="border")
    return nodes, values.reshape(-1)


SUPPORT_FRACTION = 0.02  # a ray "met the object" where its line integral exceeds this fraction of the view's peak
# The thresholds the alignment chooses among (merge.fitted_support): a scan sees what photographs do not
# (tissue fainter than the photographed skin, a couch, a holder), which a higher one trims
SUPPORT_FRACTIONS = (0.02, 0.05, 0.1, 0.15)


def xray_support(projections: Tensor, fraction: float = SUPPORT_FRACTION) -> Tensor:  # [V, H, W] -> [V, H, W]
    """1 where a ray met the object (its integral above `fraction` of its view's peak), else 0: the X-ray
    hull's silhouettes and the outline the silhouette refinement matches."""
    return (projections > fraction * projections.amax(dim=(1, 2), keepdim=True)).float()


def outline_steepness(projections: Tensor, fractions: Sequence[float]) -> List[float]:  # projections [V, H, W]
    """How fast the integrals rise where the support above each of `fractions` ends (xray_support): the mean
    gradient (per pixel, in units of each view's peak, after a 1-pixel Gaussian blur against the noise) on the
    support's outline, one value per fraction. At an object's edge a chord grows as the square root of the
    depth, so its integral rises fastest there; tissue fainter than the skin, a couch or noise in air rise slowly.

    >>> u = torch.linspace(-2, 2, 81)
    >>> ball = 2 * (1 - u[:, None] ** 2 - u[None] ** 2).clamp(min=0).sqrt()  # a unit ball seen by a parallel beam
    >>> halo = 0.1 * (1.6 - u[:, None] ** 2 - u[None] ** 2).clamp(min=0).sqrt()  # a faint shell around it
    >>> faint, skin = outline_steepness((ball + halo)[None], (0.02, 0.1))
    >>> skin > 2 * faint
    True
    """
    taps = torch.exp(-0.5 * torch.arange(-2.0, 3.0, device=projections.device) ** 2)  # sigma = 1 pixel
    taps = taps / taps.sum()
    total, count = [0.0] * len(fractions), [0] * len(fractions)
    for raw in projections.split(1):  # one view at a time: a full-size scan's temporaries stay the size of one view
        view = raw[:, None].float()  # [1, 1, H, W]
        view = view / view.amax().clamp(min=1e-12)
        padded = F.pad(view, (2, 2, 2, 2), mode="replicate")
        smooth = F.conv2d(F.conv2d(padded, taps.view(1, 1, 5, 1)), taps.view(1, 1, 1, 5))  # [1, 1, H, W]
        dy, dx = torch.gradient(smooth, dim=(2, 3))  # central differences, per pixel
        rise = torch.hypot(dx, dy)  # [1, 1, H, W], the same for every fraction
        for i, fraction in enumerate(fractions):
            support = xray_support(raw, fraction)[:, None]  # [1, 1, H, W]
            inner = -F.max_pool2d(-support, 3, stride=1, padding=1)  # 1 where the pixel and its 8 neighbours are in
            outline = (support - inner) > 0.5
            total[i], count[i] = total[i] + float(rise[outline].sum()), count[i] + int(outline.sum())
    return [t / n if n else 0.0 for t, n in zip(total, count)]


def hull_occupancy(cameras: Cameras, silhouettes: Tensor, box: Tensor, parallel: bool, res: int,
                   min_seen: float = 0.5) -> Tensor:
    """[res, res, res] bool: cells whose centre lies inside every silhouette (silhouettes [V, H, W, 1] in
    [0, 1], or a list of [H_v, W_v, 1] where the views differ in size) of the views that see it (a view
    that does not see a cell does not carve it), among the cells that at least `min_seen` of the views
    see: the object is in every view, while corners of the box that few views see would otherwise
    survive uncarved (with few views, as ghosts bigger than it)."""
    return inside_hull(grid_points(box, res), cameras, silhouettes, parallel, min_seen).reshape(res, res, res)


def inside_hull(points: Tensor, cameras: Cameras, silhouettes: Tensor, parallel: bool, min_seen: float = 0.5,
                chunk: int = 16) -> Tensor:
    """[P] bool: which points [P, 3] lie in the visual hull of the silhouettes (as hull_occupancy's cells;
    uint8 silhouettes count 255 as 1). Views are taken `chunk` at a time, so that memory stays [chunk, P]
    however many photographs there are."""
    inside_all = torch.ones(len(points), dtype=torch.bool)
    n_seen = torch.zeros(len(points), dtype=torch.long)
    for start in range(0, len(silhouettes), chunk):
        sils = silhouettes[start : start + chunk]
        uv, depth = project(points, cameras[start : start + len(sils)], parallel)  # [v, P, 2], [v, P]
        size = torch.tensor([[s.shape[1], s.shape[0]] for s in sils], dtype=uv.dtype)  # [v, 2] (W, H)
        seen = (depth > 0) & (uv >= 0).all(dim=-1) & (uv < size[:, None]).all(dim=-1)
        inside = torch.cat([sample_images(s[None].float() / (255.0 if s.dtype == torch.uint8 else 1.0), uv[v : v + 1])
                            for v, s in enumerate(sils)])[..., 0] > 0.5
        inside_all &= (inside | ~seen).all(dim=0)
        n_seen += seen.sum(dim=0)
    return inside_all & (n_seen > 0) & (n_seen >= min_seen * len(silhouettes))


def hull_surface(cameras: Cameras, silhouettes: Tensor, box: Tensor, parallel: bool, res: int = 64) -> Tensor:
    """Surface points [K, 3] of the hull: a coarse pass finds it in the box, a fine pass on its own box;
    the largest connected part, cavities filled, as a marching-cubes iso-surface (sub-voxel)."""
    import numpy as np

    occ = hull_occupancy(cameras, silhouettes, box, parallel, res // 2).numpy()
    if occ.any():  # zoom onto the hull (one coarse cell of margin)
        idx = np.argwhere(occ)
        cell = (box[1] - box[0]) / (res // 2)
        box = torch.stack([box[0] + torch.from_numpy(idx.min(0) - 1) * cell, box[0] + torch.from_numpy(idx.max(0) + 2) * cell])
    mask = largest_part(hull_occupancy(cameras, silhouettes, box, parallel, res).numpy())
    if not mask.any() or mask.all():  # nothing carved, or the hull fills its box: the views do not constrain it
        return torch.zeros(0, 3)
    return torch.from_numpy(surface_points(mask, box.double().numpy())).to(box)
