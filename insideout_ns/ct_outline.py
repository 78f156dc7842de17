"""A CT scene's alignment, refined by the CT's own surface against the photographs' masks, or without masks against
the SfM points of the object.

A CT gives what projections do not: the object's surface itself (`alignment.ct_surface_hu`, -500 HU). Seen from a
photograph's camera, the surface's rim (its points whose tangent plane holds the viewing ray and that lie on the
outline of its projection) must fall on the mask's outline. The similarity X-ray -> RGB, scale included, is fitted
so that it does, by least squares on the rims' signed distances to the masks' sub-pixel outlines (a 2D-3D ICP: the
rims are found again at each round). Unlike the hulls (two visual hulls of different views) and the silhouette step
(the RGB Gaussians' alpha, widened by the rasterizer's footprint), nothing is fitted but the data: the scale is
free (benchmarks/README.md, "A CT volume as the inside"). Without masks, structure from motion's points on the object
are samples of the same surface: the similarity is fitted so that they lie on it (fit_to_points, a trimmed
point-to-plane ICP, scale included).

Example:
    >>> import numpy as np
    >>> from insideout_ns.ct_outline import similarity_of, parameters_of
    >>> m = similarity_of(np.array([0.1, 0.0, 0.0, 1.0, 2.0, 3.0, np.log(2.0)]))
    >>> bool(np.allclose(parameters_of(m), [0.1, 0.0, 0.0, 1.0, 2.0, 3.0, np.log(2.0)]))
    True
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Sequence, Tuple

import numpy as np
from scipy import ndimage
from scipy.spatial import cKDTree
from scipy.spatial.transform import Rotation

from .solids import cells_to_world, largest_part
from .transforms import viewmat_from_c2w

CELLS_PER_PIXEL = 2  # the CT's projected outline is found on a grid of half pixels
SIDEWAYS = 0.5  # a rim point's normal is within 60 degrees of perpendicular to its ray
MAX_SIDE = 256  # the surface is extracted on a grid of at most this many voxels a side (a clinical CT's 512: every 2nd)
MAX_VIEWS = 60  # photographs used (evenly spread over the capture's order)
ROUNDS = 3  # rims found again, then the similarity refitted
MAX_RMS_PX = 1.0  # a fit whose rims stay further than this (RMS, pixels) from the masks' outlines is not kept


@dataclass
class OutlineFit:
    matrix: np.ndarray  # [4, 4] the refined X-ray -> RGB similarity, or the start where `used` is False
    rms_before: float  # RMS distance (pixels) of the rims to the masks' outlines, at the start
    rms_after: float  # the same at the refined similarity
    used: bool  # the fit lowered it and ends within MAX_RMS_PX
    views: int


def similarity_of(x: np.ndarray) -> np.ndarray:  # [7] rotation vector, translation, log scale -> [4, 4]
    m = np.eye(4)
    m[:3, :3] = np.exp(x[6]) * Rotation.from_rotvec(x[:3]).as_matrix()
    m[:3, 3] = x[3:6]
    return m


def parameters_of(m: np.ndarray) -> np.ndarray:  # [4, 4] -> [7]
    s = float(np.cbrt(np.linalg.det(m[:3, :3])))
    return np.concatenate([Rotation.from_matrix(m[:3, :3] / s).as_rotvec(), m[:3, 3], [np.log(s)]])


def air_boundary(values: np.ndarray, aabb: np.ndarray, air: float) -> Tuple[np.ndarray, np.ndarray]:
    """Vertices [K, 3] (the grid's frame, over aabb [2, 3]) and unit normals [K, 3] of the object's outer surface: the
    iso-surface at `air` of the largest solid above it (marching cubes, sub-voxel), its cavities filled and the field
    beyond its first layer of air zeroed (the air next to it keeps its values: they place the surface)."""
    from skimage.measure import marching_cubes

    step = max(1, -(-max(values.shape) // MAX_SIDE))
    coarse = values[::step, ::step, ::step]
    if not (coarse > air).any():
        raise ValueError(f"no voxel of the CT exceeds the surface level {air:.4g} / mm (its largest: {float(values.max()):.4g}): "
                         "lower --pipeline.model.alignment.ct-surface-hu")
    solid = largest_part(coarse > air)
    field = np.array(coarse, np.float32)
    field[solid & (field <= air)] = 2 * air  # cavities
    field[~ndimage.binary_dilation(solid)] = 0.0  # other objects, the scanner's couch
    field = np.pad(field, 1)
    verts, _, normals, _ = marching_cubes(field, air)
    spacing = (aabb[1] - aabb[0]) / np.array(values.shape)  # the coarse grid's cells are `step` voxels
    low = aabb[0] - 0.5 * spacing * (step - 1)  # the coarse cell i is the voxel i * step
    points = cells_to_world(verts - 1, np.stack([low, low + spacing * step * np.array(coarse.shape)]), coarse.shape)
    normals = normals / (spacing * step)  # a gradient in index units, to the frame's (slices thicker than pixels)
    return points, normals / np.linalg.norm(normals, axis=1, keepdims=True).clip(min=1e-12)


@dataclass
class MaskView:
    """One photograph: its mask and outline, its camera (OpenCV world-to-camera, pinhole)."""

    alpha: np.ndarray  # [H, W] in [0, 1]
    outline: cKDTree  # the mask's 0.5 contour, sub-pixel, densely sampled (pixel coordinates, centres at +0.5)
    viewmat: np.ndarray  # [4, 4]
    K: np.ndarray  # [4] fx, fy, cx, cy

    @classmethod
    def of(cls, mask: np.ndarray, c2w, K: np.ndarray) -> "MaskView":
        from skimage.measure import find_contours

        alpha = np.asarray(mask, np.float32)
        steps = np.linspace(0.0, 1.0, 8, endpoint=False)[None, :, None]  # 8 samples a segment: 1/16 px at most off
        dense = [(c[:-1, None] + (c[1:, None] - c[:-1, None]) * steps).reshape(-1, 2) for c in find_contours(alpha, 0.5)]
        points = np.concatenate(dense)[:, ::-1] + 0.5 if dense else np.zeros((1, 2))
        return cls(alpha, cKDTree(points), viewmat_from_c2w(c2w).double().numpy(), K)

    def camera_points(self, m: np.ndarray, points: np.ndarray) -> np.ndarray:  # [P, 3] X-ray frame -> camera [P, 3]
        return (points @ m[:3, :3].T + m[:3, 3]) @ self.viewmat[:3, :3].T + self.viewmat[:3, 3]

    def pixels(self, cam: np.ndarray) -> np.ndarray:  # [P, 3] -> [P, 2]
        return np.stack([self.K[0] * cam[:, 0] / cam[:, 2] + self.K[2], self.K[1] * cam[:, 1] / cam[:, 2] + self.K[3]], 1)

    def signed_distance(self, uv: np.ndarray) -> np.ndarray:  # [P, 2] -> [P]: pixels outside the mask positive
        d = self.outline.query(uv)[0]
        a = ndimage.map_coordinates(self.alpha, [uv[:, 1] - 0.5, uv[:, 0] - 0.5], order=1, mode="constant", cval=0.0)
        return np.where(a >= 0.5, -d, d)

    def rim(self, m: np.ndarray, verts: np.ndarray, normals: np.ndarray, spacing: float) -> np.ndarray:  # -> [R, 3]
        """The surface's points on the outline of its projection: of those that face sideways (SIDEWAYS) in the outline's
        cells (the projection on a grid of CELLS_PER_PIXEL, or coarser where the points, `spacing` apart, project
        sparser, so that they close; holes filled), the outermost of each cell (a cell's other points lie inside the
        outline, and would bias the scale)."""
        cam = self.camera_points(m, verts)
        px = spacing * float(np.cbrt(np.linalg.det(m[:3, :3]))) * self.K[0] / float(np.median(cam[:, 2]))  # pixels apart
        per_pixel = min(CELLS_PER_PIXEL, 1.0 / (1.5 * px))
        uv = self.pixels(cam) * per_pixel
        cells = np.floor(uv).astype(int)
        h, w = (int(np.ceil(n * per_pixel)) for n in self.alpha.shape)
        ok = (cells[:, 0] >= 0) & (cells[:, 0] < w) & (cells[:, 1] >= 0) & (cells[:, 1] < h) & (cam[:, 2] > 0)
        grid = np.zeros((h, w), bool)
        grid[cells[ok, 1], cells[ok, 0]] = True
        grid = ndimage.binary_fill_holes(ndimage.binary_closing(grid, iterations=2))
        edge = grid & ~ndimage.binary_erosion(grid)
        on = np.zeros(len(verts), bool)
        on[ok] = edge[cells[ok, 1], cells[ok, 0]]
        n_cam = normals @ (self.viewmat[:3, :3] @ m[:3, :3]).T
        cosine = (n_cam * cam).sum(1) / (np.linalg.norm(n_cam, axis=1) * np.linalg.norm(cam, axis=1)).clip(min=1e-12)
        chosen = np.nonzero(on & (np.abs(cosine) < SIDEWAYS))[0]
        # outward: the gradient of the projection's signed distance (positive outside), smoothed over a cell
        signed = ndimage.gaussian_filter(ndimage.distance_transform_edt(~grid) - ndimage.distance_transform_edt(grid), 1.0)
        gy, gx = np.gradient(signed)
        c = cells[chosen]
        outward = gx[c[:, 1], c[:, 0]] * uv[chosen, 0] + gy[c[:, 1], c[:, 0]] * uv[chosen, 1]
        cell_id = c[:, 1] * w + c[:, 0]
        order = np.lexsort((-outward, cell_id))  # by cell, the outermost first
        first = np.unique(cell_id[order], return_index=True)[1]
        return verts[chosen[order[first]]]


def fit_to_masks(verts: np.ndarray, normals: np.ndarray, views: Sequence[MaskView], start: np.ndarray,
                 rounds: int = ROUNDS) -> OutlineFit:
    """The similarity X-ray -> RGB from `start` [4, 4] that puts the rims of the surface (verts [K, 3], normals
    [K, 3], X-ray frame) on the masks' outlines in every view: `rounds` times the rims, then least squares (a soft
    L1 past a pixel: a rim the mask does not show, a hair or a fold, weighs less)."""
    from scipy.optimize import least_squares

    def rms(m: np.ndarray, rims: List[np.ndarray]) -> float:
        d = np.concatenate([v.signed_distance(v.pixels(v.camera_points(m, r))) for v, r in zip(views, rims)])
        return float(np.sqrt(np.mean(d**2))) if len(d) else float("inf")

    spacing = float(np.median(cKDTree(verts).query(verts, k=2)[0][:, 1]))  # between neighbouring surface points
    m = start
    rims = [v.rim(start, verts, normals, spacing) for v in views]
    before = rms(start, rims)
    for k in range(rounds):
        if k > 0:  # the rims where the last round left the similarity
            rims = [v.rim(m, verts, normals, spacing) for v in views]
        weights = [1.0 / np.sqrt(max(len(r), 1) * len(views)) for r in rims]  # each view counts alike

        def residuals(x: np.ndarray) -> np.ndarray:
            mm = similarity_of(x)
            return np.concatenate([w * v.signed_distance(v.pixels(v.camera_points(mm, r))) for v, r, w in zip(views, rims, weights)])

        x = least_squares(residuals, parameters_of(m), x_scale=np.full(7, 0.01), max_nfev=20, loss="soft_l1",
                          f_scale=float(np.mean(weights))).x
        m = similarity_of(x)
    after = rms(m, [v.rim(m, verts, normals, spacing) for v in views])
    used = after < before and after <= MAX_RMS_PX
    return OutlineFit(m if used else start, before, after, used, len(views))


MIN_POINTS = 50  # fewer SfM points of the object than this are not fitted (7 parameters: they would fit anything)
POINT_ROUNDS = 10  # nearest surface points found again, then the similarity refitted
POINT_TRIM = 0.8  # the fraction of SfM points, the nearest to the surface, that each round fits (floaters, the table's edge)
MAX_POINT_RMS = 0.01  # a fit whose kept points stay further than this (RMS, fraction of the diameter) is not kept
SCALE_STARTS = tuple(np.exp(np.linspace(-0.08, 0.08, 5)))  # the fit starts from the start's scale times each


@dataclass
class PointFit:
    matrix: np.ndarray  # [4, 4] the refined X-ray -> RGB similarity, or the start where `used` is False
    rms_before: float  # RMS distance of the kept SfM points to the surface at the start (fraction of its diameter)
    rms_after: float  # the same at the refined similarity
    used: bool  # the fit lowered it and ends within MAX_POINT_RMS
    points: int  # SfM points fitted


def fit_to_points(verts: np.ndarray, normals: np.ndarray, points: np.ndarray, start: np.ndarray,
                  rounds: int = POINT_ROUNDS) -> PointFit:
    """The similarity X-ray -> RGB near `start` [4, 4] that puts SfM points of the object (points [P, 3], RGB frame) on
    the surface (verts [K, 3], normals [K, 3], X-ray frame): from `start` rescaled about the surface's centre by each
    of SCALE_STARTS, `rounds` times each point's nearest surface point, then least squares on the distances along its
    normal (the points slide along the surface, which they sample), for the POINT_TRIM of the points nearest the
    surface; the fit that ends nearest the points is kept. From a start too large one fit can stall (the bunny's
    table capture, 6 % too large: 5 % off at RMS 0.36 % of the diameter against 0.23 % from the right scale)."""
    from scipy.optimize import least_squares

    tree = cKDTree(verts)
    diameter = float(np.linalg.norm(verts.max(0) - verts.min(0)))
    centre = 0.5 * (verts.max(0) + verts.min(0))

    def distances(m: np.ndarray, near: np.ndarray) -> np.ndarray:  # along the normals, fraction of the diameter
        inv = np.linalg.inv(m)
        return ((points @ inv[:3, :3].T + inv[:3, 3] - verts[near]) * normals[near]).sum(1) / diameter

    def pairs(m: np.ndarray):  # the points' nearest vertices, and which points are fitted
        inv = np.linalg.inv(m)
        near = tree.query(points @ inv[:3, :3].T + inv[:3, 3])[1]
        gap = np.abs(distances(m, near))
        return near, gap <= np.quantile(gap, POINT_TRIM)

    def rms(m: np.ndarray) -> float:
        near, kept = pairs(m)
        return float(np.sqrt(np.mean(distances(m, near)[kept] ** 2)))

    def fitted(m: np.ndarray) -> np.ndarray:
        for _ in range(rounds):
            near, kept = pairs(m)
            x = least_squares(lambda x: distances(similarity_of(x), near)[kept], parameters_of(m),
                              x_scale=np.full(7, 0.01), max_nfev=20).x
            m = similarity_of(x)
        return m

    def rescaled(s: float) -> np.ndarray:  # start, the X-ray frame scaled by s about the surface's centre
        about = np.eye(4)
        about[:3, :3] *= s
        about[:3, 3] = (1.0 - s) * centre
        return start @ about

    fits = [fitted(rescaled(s)) for s in SCALE_STARTS]
    after = [rms(m) for m in fits]
    best, before = int(np.argmin(after)), rms(start)
    used = after[best] < before and after[best] <= MAX_POINT_RMS
    return PointFit(fits[best] if used else start, before, after[best], used, len(points))


def mask_views(cameras, masks: Sequence, max_views: int = MAX_VIEWS) -> List[MaskView]:
    """MaskViews of the photographs (Cameras [V], masks [H, W, 1] each: alpha in [0, 1] or uint8), at most max_views
    of them, evenly spread."""
    chosen = np.unique(np.linspace(0, len(masks) - 1, min(max_views, len(masks))).round().astype(int))
    views = []
    for i in chosen:
        mask = np.asarray(masks[i])[..., 0]
        mask = mask.astype(np.float32) / 255.0 if mask.dtype == np.uint8 else mask.astype(np.float32)
        K = np.array([float(cameras.fx[i]), float(cameras.fy[i]), float(cameras.cx[i]), float(cameras.cy[i])])
        views.append(MaskView.of(mask, cameras.camera_to_worlds[i], K))
    return views
