"""The photographed object in a capture without masks: the region of space it fills.

A phone capture photographs the object where it stands (on a table, in a room) and gives no mask: the
RGB population fits the table and the room as well as the object, and the alignment needs the object
alone. Its region comes from one of:

1. A user's hint: an oriented crop box in the RGB frame (Nerfstudio's `obb_center` / `obb_rotation` /
   `obb_scale`, as `ns-export` and the viewer's crop take them).
2. Without a hint: the object stands where the cameras look (the point nearest to their optical axes)
   on the dominant plane there (RANSAC). Of the points above that plane (the SfM points where the
   capture has them, else the opaque Gaussians) inside the ball the photographs frame, the object is the
   connected part that comes nearest to the vertical through the focus point; its region is the upright
   cylinder over that part, up to the top of the framed ball.

The RGB Gaussians in the region then render the object's masks in the photographs (merge.object_masks).
Around the region, the air between the table and the cameras holds nothing a capture of one object needs
(Region.in_the_air): RGB Gaussians there are floaters, which veil the photographs seen from near them.

Example:
    >>> import numpy as np, torch
    >>> from insideout_ns.object_region import focus_point
    >>> from insideout_ns.dataparsers.cameras import look_at
    >>> c2ws = np.stack([look_at(np.array(e, float), np.array([1.0, 2.0, 0.0]), np.array([0.0, 0.0, 1.0]))
    ...                  for e in ([5, 2, 1], [1, 6, 2], [-3, 2, 3])])
    >>> (np.round(focus_point(torch.from_numpy(c2ws)).numpy(), 3) + 0.0).tolist()  # + 0.0: no -0.0
    [1.0, 2.0, 0.0]
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple

import numpy as np
import torch
from scipy import sparse
from scipy.sparse.csgraph import connected_components
from scipy.spatial import cKDTree
from torch import Tensor

PLANE_TOL = 0.02  # RANSAC inlier distance, as a fraction of the cameras' distance to the focus point
ABOVE = 1.0  # the object's region starts this many tolerances above the plane (on the doll capture, 99 % of the
# table's fitted Gaussians are below 0.82 of one)
REACH = 0.6  # the table is looked for among points this fraction of the cameras' distance from the focus point
FRAMED = 1.15  # a photographed object fits in the frame: it lies within this much of the framing radius
RADIUS_MARGIN = 1.2  # the region is this much wider than the object's points spread about their axis
LINK = 3.0  # points closer than this many typical neighbour spacings are parts of one thing
AIR_FLOOR = 2.0  # the air starts this many plane tolerances above the table (its Gaussians stay below)
AIR_MARGIN = 1.5  # ... and this many of the region's radii from its axis
AIR_RING = 1.2  # ... out to this many times the cameras' farthest distance from the axis (beyond: the room)


def focus_point(c2ws: Tensor) -> Tensor:  # [V, 3 or 4, 4] -> [3]
    """The point nearest (least squares) to every camera's optical axis (OpenGL: each looks along -Z)."""
    c2ws = c2ws.double()
    origins, dirs = c2ws[:, :3, 3], -c2ws[:, :3, 2]
    dirs = dirs / dirs.norm(dim=-1, keepdim=True)
    proj = torch.eye(3, dtype=dirs.dtype) - dirs[:, :, None] * dirs[:, None, :]  # [V, 3, 3] onto each axis's normal plane
    return torch.linalg.solve(proj.sum(0), (proj @ origins[:, :, None]).sum(0))[:, 0]


def dominant_plane(points: np.ndarray, tol: float, iters: int = 300, seed: int = 0) -> Tuple[np.ndarray, float]:
    """RANSAC: the unit normal [3] and offset d (n . p = d) of the plane with the most points [P, 3] within
    `tol`, refit by least squares on its inliers."""
    rng = np.random.default_rng(seed)
    best, best_count = None, -1
    for _ in range(iters):
        a, b, c = points[rng.choice(len(points), 3, replace=False)]
        n = np.cross(b - a, c - a)
        if np.linalg.norm(n) < 1e-12:
            continue
        n /= np.linalg.norm(n)
        count = int((np.abs(points @ n - n @ a) < tol).sum())
        if count > best_count:
            best, best_count = (n, float(n @ a)), count
    n, d = best
    inliers = points[np.abs(points @ n - d) < tol]
    centre = inliers.mean(0)
    n = np.linalg.svd(inliers - centre)[2][-1]  # the direction of least spread
    return n, float(n @ centre)


def inside_box(points: Tensor, center, rotation, scale) -> Tensor:  # [N, 3] -> [N] bool
    """Nerfstudio's oriented box (`obb_center`, `obb_rotation` as roll-pitch-yaw radians, `obb_scale`)."""
    from nerfstudio.data.scene_box import OrientedBox

    box = OrientedBox.from_params(tuple(center), tuple(rotation), tuple(scale))
    return box.within(points.float().cpu()).to(points.device)


@dataclass
class Ground:
    """The plane the object stands on and where the cameras look."""

    normal: np.ndarray  # [3] unit, towards the cameras
    offset: float  # the plane: normal . p = offset
    focus: np.ndarray  # [3] the point nearest to the cameras' optical axes
    reach: float  # the cameras' median distance to it
    framed: float  # radius of the ball about it that fits in the photographs (half the narrowest field of view)

    def height(self, points: np.ndarray) -> np.ndarray:  # [P, 3] -> [P]
        return points @ self.normal - self.offset


def find_ground(points: Tensor, cameras) -> Ground:  # [N, 3], Cameras [V]
    """The dominant plane among `points` near where the cameras look, facing the cameras. Raises
    ValueError where there are too few points there."""
    c2ws = cameras.camera_to_worlds
    focus = focus_point(c2ws)
    cams = c2ws[:, :3, 3].double().cpu()
    reach = float((cams - focus).norm(dim=-1).median())
    pts = points.detach().cpu().double()
    pts = pts[(pts - focus).norm(dim=-1) < REACH * reach].numpy()
    if len(pts) < 20:
        raise ValueError(f"{len(pts)} points near where the cameras look: too few to find the table "
                         "(give a crop box around the object)")
    normal, offset = dominant_plane(pts, PLANE_TOL * reach)
    if np.median(cams.numpy() @ normal - offset) < 0:  # the cameras look down on the table: the normal points up
        normal, offset = -normal, -offset
    half_fov = torch.atan(torch.minimum(cameras.width / (2 * cameras.fx), cameras.height / (2 * cameras.fy))).min()
    return Ground(normal, offset, focus.numpy(), reach, reach * float(torch.sin(half_fov)))


@dataclass
class Region:
    """The object's region: a crop box, or an upright cylinder on the ground."""

    how: str  # a line for the log and alignment.json
    crop: Optional[Tuple] = None  # (center, rotation, scale)
    ground: Optional[Ground] = None
    axis: Optional[np.ndarray] = None  # [3] a point of the cylinder's axis (along the ground's normal)
    radius: float = 0.0
    floor: float = 0.0  # heights above the ground between which the cylinder stands
    ceiling: float = 0.0

    def contains(self, points: Tensor) -> Tensor:  # [P, 3] -> [P] bool
        if self.crop is not None:
            return inside_box(points, *self.crop)
        pts = points.detach().cpu().double().numpy()
        height = self.ground.height(pts)
        across = np.linalg.norm(np.cross(pts - self.axis, self.ground.normal), axis=-1)  # distance from the axis
        return torch.from_numpy((height > self.floor) & (height < self.ceiling) & (across < self.radius)).to(points.device)

    def in_the_air(self, points: Tensor, cameras: Tensor) -> Tensor:  # [P, 3], camera centres [V, 3] -> [P] bool
        """Points above the table, away from the object's cylinder and within the cameras' ring: empty space
        in a capture of one object (the doll's table capture: the floaters there took its lowest held-out
        photographs from 25 to 13 dB). Nothing for a crop box (no table known)."""
        if self.ground is None:
            return torch.zeros(len(points), dtype=torch.bool, device=points.device)
        pts, cams = points.detach().cpu().double().numpy(), cameras.detach().cpu().double().numpy()
        tol = PLANE_TOL * self.ground.reach
        across = np.linalg.norm(np.cross(pts - self.axis, self.ground.normal), axis=-1)  # from the object's axis
        ring = AIR_RING * float(np.linalg.norm(np.cross(cams - self.axis, self.ground.normal), axis=-1).max())
        air = (self.ground.height(pts) > AIR_FLOOR * tol) & (across > AIR_MARGIN * self.radius) & (across < ring)
        return torch.from_numpy(air).to(points.device)


def crop_region(crop: Tuple, means: Tensor) -> Region:
    """The user's crop box (center, rotation, scale); ValueError where it holds no Gaussian (means [N, 3])."""
    count = int(inside_box(means, *crop).sum())
    if count < 10:
        raise ValueError(f"the crop box (center {list(crop[0])}, scale {list(crop[2])}) holds {count} RGB Gaussians: "
                         "it misses the object (read its values off the viewer's crop)")
    return Region(f"the object is the crop box given ({count} RGB Gaussians)", crop=crop)


def standing_region(points: Tensor, ground: Ground, source: str) -> Region:
    """The object among `points` [N, 3] (SfM points or opaque Gaussians, named by `source`): those above the
    plane and inside the framed ball, the largest connected part near the vertical through the focus
    point; its region is the cylinder over it. ValueError where nothing stands there."""
    pts = points.detach().cpu().double().numpy()
    tol = PLANE_TOL * ground.reach
    height = ground.height(pts)
    cand = pts[(height > ABOVE * tol) & (np.linalg.norm(pts - ground.focus, axis=-1) < FRAMED * ground.framed)]
    if len(cand) < 10:
        raise ValueError(f"{len(cand)} {source} stand on the plane where the cameras look: give a crop box around the object")
    tree = cKDTree(cand)
    pairs = tree.query_pairs(LINK * float(np.median(tree.query(cand, k=2)[0][:, 1])), output_type="ndarray")
    graph = sparse.coo_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])), shape=(len(cand), len(cand)))
    n_parts, labels = connected_components(graph, directed=False)
    off_axis = np.linalg.norm(np.cross(cand - ground.focus, ground.normal), axis=-1)  # from the vertical through the focus
    central = np.unique(labels[off_axis < max(0.1 * ground.reach, float(off_axis.min()))])
    part = central[np.argmax(np.bincount(labels, minlength=n_parts)[central])]  # floaters are small parts
    obj = cand[labels == part]
    axis = obj.mean(0)
    spread = float(np.percentile(np.linalg.norm(np.cross(obj - axis, ground.normal), axis=-1), 98))
    top = float(ground.height(ground.focus[None])[0]) + FRAMED * ground.framed
    return Region(f"no masks: the object is what stands on the plane where the cameras look ({len(obj)} {source}, "
                  f"{spread:.3g} from its axis; {n_parts - 1} other parts left out)",
                  ground=ground, axis=axis, radius=RADIUS_MARGIN * spread, floor=ABOVE * tol, ceiling=top)


class SfmRegion:
    """What stands on the table among a capture's SfM points (standing_region), looked for once a run: the air
    clearing asks at every refinement and the alignment once. `region()` is None without SfM points, and raises
    ValueError where they show nothing standing there."""

    def __init__(self, points: Optional[Tensor], cameras):  # [P, 3] or None, Cameras [V]
        self.points, self.cameras = points, cameras
        self._region: Optional[Region] = None
        self._error: Optional[str] = None

    def region(self) -> Optional[Region]:
        if self.points is None:
            return None
        if self._region is None and self._error is None:
            try:
                self._region = standing_region(self.points, find_ground(self.points, self.cameras), "SfM points")
            except ValueError as err:
                self._error = str(err)
        if self._error is not None:
            raise ValueError(self._error)
        return self._region

    def in_the_air(self, means: Tensor) -> Tensor:  # [N, 3] -> [N] bool
        """The points in the air around the object (none where nothing stands there: the alignment says why)."""
        try:
            region = self.region()
        except ValueError:
            region = None
        if region is None:
            return torch.zeros(len(means), dtype=torch.bool, device=means.device)
        return region.in_the_air(means, self.cameras.camera_to_worlds[:, :3, 3])
