"""Where the object is, as both modalities see it once they are aligned (phase 3): each bounds the other.

- The photographs bound the inside: the photographed object's visual hull (its masks, or for a capture
  without masks the object's rendered masks), carried into the X-ray frame. Density outside it is
  penalised on the TV's cube (the model's support_loss) and, with masks, Gaussians there are pruned: a sparse or
  limited-angle scan cannot tell air from its own streaks there, many sharp photographs can.
- The projections bound the outside: the X-ray hull (the rays that met the object). With masks, Gaussians
  outside it are pruned too: the floaters 3DGS makes from few photographs stand where no ray met anything.

Both hulls are dilated by a margin that covers the alignment's error (a 3 % scale error moves the hull by
1.5 % of the diameter), so a good alignment is never cut into. The grid lives in the X-ray frame, over the
scanned region; its cells are `ObjectGrid.occupancy` [R, R, R] (x slowest).

Example:
    >>> import torch
    >>> from insideout_ns.object_grid import ObjectGrid
    >>> occ = torch.zeros(4, 4, 4, dtype=torch.bool); occ[1:3, 1:3, 1:3] = True
    >>> grid = ObjectGrid(occ, torch.tensor([[0.0, 0, 0], [4, 4, 4]]))
    >>> points = torch.tensor([[2.0, 2, 2], [0.5, 0.5, 0.5], [9.0, 2, 2]])
    >>> grid.contains(points).tolist(), grid.excludes(points).tolist()  # past the box: neither
    ([True, False, False], [False, True, False])
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from nerfstudio.cameras.cameras import Cameras

from .init_points import inside_hull
from .projection_geometry import grid_points

GRID_RES = 64  # cells along each side of the scanned region
MARGIN = 0.03  # each hull is dilated by this fraction of the region's longest side (2 cells at 64)


@dataclass
class ObjectGrid:
    """Occupancy [R, R, R] bool of the object on a grid over `box` [2, 3] (the X-ray frame)."""

    occupancy: Tensor  # [R, R, R] bool
    box: Tensor  # [2, 3]

    def contains(self, points: Tensor) -> Tensor:  # [P, 3] X-ray frame -> [P] bool
        """Whether each point lies in an occupied cell (points outside the box are outside)."""
        return self.sample(points) > 0.5

    def excludes(self, points: Tensor) -> Tensor:  # [P, 3] X-ray frame -> [P] bool
        """Whether each point lies in the box but in no occupied cell: past the box the scan says nothing (a CT that
        covers part of what the photographs show), so nothing there is excluded."""
        box = self.box.to(points)
        inside = ((points >= box[0]) & (points <= box[1])).all(dim=-1)
        return inside & ~self.contains(points)

    def sample(self, points: Tensor) -> Tensor:  # [..., 3] -> [...] in {0, 1}
        """The occupancy at points of the X-ray frame, nearest cell (0 outside the box)."""
        box = self.box.to(points)
        unit = 2 * (points - box[0]) / (box[1] - box[0]) - 1  # [-1, 1] over the box
        occ = self.occupancy.to(points.device, torch.float32).permute(2, 1, 0)[None, None]  # grid_sample's z, y, x
        out = F.grid_sample(occ, unit.reshape(1, 1, 1, -1, 3), mode="nearest", align_corners=False, padding_mode="zeros")
        return out.reshape(points.shape[:-1])


def dilated(occupancy: Tensor, cells: int) -> Tensor:  # [R, R, R] bool -> [R, R, R] bool
    """The occupancy grown by `cells` cells in every direction (a cube's max-pool)."""
    if cells <= 0:
        return occupancy
    k = 2 * cells + 1
    return F.max_pool3d(occupancy[None, None].float(), k, stride=1, padding=cells)[0, 0] > 0.5


def hull_in_xray_frame(cameras: Cameras, silhouettes: List[Tensor], parallel: bool, xray_to_frame: Tensor, box: Tensor,
                       res: int | Tuple[int, int, int] = GRID_RES) -> Tensor:  # -> [res, res, res] bool
    """The visual hull of `silhouettes` ([H, W, 1] each, one a camera of `cameras`, which live in the frame that
    `xray_to_frame` [4, 4] maps the X-ray frame to) on a grid of res^3 cells (or a shape) over `box` [2, 3] of the
    X-ray frame. A cell that no view sees counts as outside (min_seen 0.5, as the hulls the alignment fits)."""
    shape = (res,) * 3 if isinstance(res, int) else tuple(res)
    cells = grid_points(box.float(), shape)  # [X * Y * Z, 3] X-ray frame
    m = xray_to_frame.to(cells)
    moved = cells @ m[:3, :3].T + m[:3, 3]
    return inside_hull(moved, cameras, silhouettes, parallel).reshape(shape)


def object_grid(rgb: Tensor, xray: Tensor, box: Tensor, margin: float = MARGIN) -> ObjectGrid:
    """Both hulls ([R, R, R] bool, the X-ray frame over `box`), each dilated by `margin` of the grid: the cells
    both modalities allow."""
    cells = max(1, round(margin * rgb.shape[0]))
    return ObjectGrid(dilated(rgb, cells) & dilated(xray, cells), box)
