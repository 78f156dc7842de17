"""Initial Gaussians of both populations, from the data alone (pure torch).

- RGB: points of the visual hull (inside the alpha mask of every photograph that sees them).
- Hull surfaces for the alignment: the visual hull of the photographs' alpha masks and the "X-ray hull"
  of the projections' supports (where anything attenuates), each as an iso-surface. Both come from the
  data alone, so the alignment does not depend on how far the fit has got.
- Radiative: a filtered back-projection of the projections (FBP or FDK, fbp.py) on a grid of the X-ray
  frame; points drawn among its cells above 5 % of its peak become Gaussians with its values there.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import List, Optional, Tuple

import torch
from torch import Tensor

from nerfstudio.cameras.cameras import Cameras

from .fbp import filtered_backprojection
from .projection_geometry import grid_points, project, sample_images


@dataclass
class StartingData:
    """What the training data gives the model to start from (the datamanager computes it once)."""

    rgb_points: Optional[Tensor] = None  # [P, 3] starting means of the RGB population (RGB frame)
    radiative: Optional[Tuple[Tensor, Tensor, Tensor]] = None  # means [K, 3], scales [K], densities [K] (X-ray frame)
    hull_rgb: Optional[Tensor] = None  # [S, 3] surface of the photographs' visual hull, for the alignment
    hull_xray: Optional[Tensor] = None  # [S', 3] surface of the projections' hull, for the alignment
    notes: List[str] = field(default_factory=list)  # fallbacks taken (uniform points, no hull), for the log and alignment.json


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


def radiative_init(cameras: Cameras, projections: Tensor, box: Tensor, parallel: bool, n_points: int, res: int = 64,
                   threshold: float = 0.05) -> Tuple[Tuple[Tensor, Tensor, Tensor], Optional[str]]:
    """Means [K, 3], isotropic scales [K] and densities [K] of the initial radiative population (R2-Gaussian's
    recipe): points drawn uniformly among the cells of a filtered back-projection (fbp.py) above
    `threshold` of its peak, each with the reconstruction's value there, scaled so that the Gaussians hold
    the reconstruction's mass; and a note where nothing stands out (then the means are uniform in the box)."""
    rec = filtered_backprojection(cameras, projections, box, (res, res, res), parallel).reshape(-1).clamp(min=0)
    pts = grid_points(box, res)
    cell = (box[1] - box[0]) / res
    strong = rec > threshold * rec.max()
    gen = torch.Generator().manual_seed(0)
    note = None
    if strong.sum() < 8:  # nothing stands out: uniform over the box
        note = "nothing stands out of the projections' reconstruction: radiative points start uniform in the box"
        strong = torch.ones_like(strong)
    cells = torch.nonzero(strong).squeeze(-1)
    idx = cells[torch.randint(len(cells), (n_points,), generator=gen)]
    means = pts[idx] + (torch.rand(n_points, 3, generator=gen) - 0.5) * cell
    scale = 0.5 * float(len(cells) * cell.prod() / n_points) ** (1 / 3)  # neighbours overlap a little
    unit = (2 * math.pi) ** 1.5 * scale**3  # mass of a Gaussian of unit density
    # each point stands for len(cells) / n_points cells of the reconstruction's value
    dens = rec[idx].clamp(min=1e-3 * float(rec.max())) * float(cell.prod()) * len(cells) / (n_points * unit)
    return (means, torch.full((n_points,), scale), dens), note


SUPPORT_FRACTION = 0.02  # a ray "met the object" where its line integral exceeds this fraction of the view's peak
# The thresholds the alignment chooses among (merge.fitted_support): a scan sees what photographs do not
# (tissue fainter than the photographed skin, a couch, a holder), which a higher one trims
SUPPORT_FRACTIONS = (0.02, 0.05, 0.1, 0.15)


def xray_support(projections: Tensor, fraction: float = SUPPORT_FRACTION) -> Tensor:  # [V, H, W] -> [V, H, W]
    """1 where a ray met the object (its integral above `fraction` of its view's peak), else 0: the X-ray
    hull's silhouettes and the outline the silhouette refinement matches."""
    return (projections > fraction * projections.amax(dim=(1, 2), keepdim=True)).float()


def hull_occupancy(cameras: Cameras, silhouettes: Tensor, box: Tensor, parallel: bool, res: int,
                   min_seen: float = 0.5) -> Tensor:
    """[res, res, res] bool: cells whose centre lies inside every silhouette (silhouettes [V, H, W, 1] in
    [0, 1], or a list of [H_v, W_v, 1] where the views differ in size) of the views that see it (a view
    that does not see a cell does not carve it), among the cells that at least `min_seen` of the views
    see: the object is in every view, while corners of the box that few views see would otherwise
    survive uncarved (with few views, as ghosts bigger than it)."""
    pts = grid_points(box, res)
    uv, depth = project(pts, cameras, parallel)  # [V, P, 2], [V, P]
    size = torch.tensor([[s.shape[1], s.shape[0]] for s in silhouettes], dtype=uv.dtype)  # [V, 2] (W, H)
    seen = (depth > 0) & (uv >= 0).all(dim=-1) & (uv < size[:, None]).all(dim=-1)
    inside = torch.cat([sample_images(s[None].float(), uv[v : v + 1]) for v, s in enumerate(silhouettes)])[..., 0] > 0.5
    well_seen = seen.float().mean(dim=0) >= min_seen
    return ((inside | ~seen).all(dim=0) & seen.any(dim=0) & well_seen).reshape(res, res, res)


def hull_surface(cameras: Cameras, silhouettes: Tensor, box: Tensor, parallel: bool, res: int = 64) -> Tensor:
    """Surface points [K, 3] of the hull: a coarse pass finds it in the box, a fine pass on its own box;
    the largest connected part, cavities filled, as a marching-cubes iso-surface (sub-voxel)."""
    import numpy as np
    from scipy import ndimage
    from skimage.measure import marching_cubes

    occ = hull_occupancy(cameras, silhouettes, box, parallel, res // 2).numpy()
    if occ.any():  # zoom onto the hull (one coarse cell of margin)
        idx = np.argwhere(occ)
        cell = (box[1] - box[0]) / (res // 2)
        box = torch.stack([box[0] + torch.from_numpy(idx.min(0) - 1) * cell, box[0] + torch.from_numpy(idx.max(0) + 2) * cell])
    occ = hull_occupancy(cameras, silhouettes, box, parallel, res).numpy()
    labels, n = ndimage.label(occ)
    if n == 0:
        return torch.zeros(0, 3)
    sizes = ndimage.sum(occ, labels, range(1, n + 1))
    mask = ndimage.binary_fill_holes(labels == 1 + int(np.argmax(sizes)))
    if mask.all():  # the hull fills its box: the views do not constrain it
        return torch.zeros(0, 3)
    verts = marching_cubes(np.pad(mask.astype(np.float32), 1), 0.5)[0] - 1
    return box[0] + (torch.from_numpy(verts.copy()).to(box) + 0.5) * (box[1] - box[0]) / res
