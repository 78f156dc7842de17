"""Turns any object that can be ray-cast and X-rayed into a paired scene whose truth is known exactly.

An object (an analytic :class:`~.phantom.Phantom` or a :class:`~.from_ct.CtObject`) lives in the X-ray
frame and provides `line_integrals(origins, dirs)`, `shade(origins, dirs)`, `aabb(transform)` and
`volume()`. This module places the scanner and the photographer around it, draws a random similarity
between the frames, adds the requested noise and writes the scene.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Optional, Protocol, Tuple

import numpy as np

from ..ct_volume import write_ct_file
from ..scene_format import Volume, XrayScan
from ..scene_writer import RgbViews, write_scene
from ..cameras import circular_orbit, pixel_rays, random_similarity, sphere_orbit
from .tabletop import Tabletop


class ScannableObject(Protocol):
    def line_integrals(self, origins: np.ndarray, dirs: np.ndarray) -> np.ndarray: ...  # [R, 3], [R, 3] -> [R]
    def shade(self, origins: np.ndarray, dirs: np.ndarray) -> Tuple[np.ndarray, np.ndarray, np.ndarray]: ...  # -> [R, 3], [R], [R]
    def aabb(self, transform: Optional[np.ndarray] = None) -> np.ndarray: ...  # [2, 3]
    def volume(self) -> Volume: ...


@dataclass
class SceneOptions:
    """What to photograph and scan."""

    rgb_views: int = 50
    """Number of RGB photographs (0: an X-ray-only scene)."""
    xray_views: int = 60
    """Number of X-ray projections (0: an RGB-only scene)."""
    rgb_res: int = 128
    """RGB image width and height in pixels."""
    xray_res: int = 128
    """X-ray detector width and height in pixels."""
    orbit: Literal["full", "limited", "sparse"] = "full"
    """Scanner orbit: a full circle, a limited arc (--arc-deg), or a full circle with --sparse-views views."""
    arc_deg: float = 120.0
    """Arc of the limited-angle orbit, degrees."""
    sparse_views: int = 10
    """Number of X-ray views of the sparse orbit."""
    beam: Literal["cone", "parallel"] = "cone"
    """X-ray geometry."""
    detector_offset: Tuple[float, float] = (0.0, 0.0)
    """Principal point off the detector's centre, pixels (u, v), as a real flat panel has; the focal length
    shrinks so that the object stays on the detector."""
    photons: Optional[float] = None
    """Photons per detector pixel for Poisson noise on the transmission (none: noise-free); the noise-free
    projections are kept for evaluation (`ground_truth_xray/`, ground_truth.json's "xray_clean")."""
    capture: Literal["studio", "table"] = "studio"
    """Photographs as a studio gives them (black background, an alpha mask in each) or as a phone capture:
    the object on a textured table in a room, no mask, cameras on the upper hemisphere (10-60 degrees of
    elevation), and the points a structure-from-motion run would find (sparse_pc.ply, as ns-process-data)."""
    sfm_points_per_view: int = 100
    """With --capture table: surface points written per photograph (sparse_pc.ply), with 0.5 % noise."""
    rgb_noise: float = 0.0
    """Standard deviation of Gaussian noise on RGB values in [0, 1]."""
    seed: int = 0
    """Seed of the similarity between the frames and of the noise."""
    write_calibration: bool = False
    """Also write the true X-ray -> RGB transform as calibration.json (else only ground_truth.json)."""
    inside: Literal["projections", "ct"] = "projections"
    """The inside as X-ray projections (xray/), or as the object's CT volume (ct.nii.gz in Hounsfield units, its
    frame the X-ray frame), as a hospital's or a museum's scanner exports it."""


def _chunked(fn, origins: np.ndarray, dirs: np.ndarray, chunk: int = 8192):
    """Runs fn over rays in chunks (memory stays flat for large images); concatenates the outputs."""
    outs = [fn(origins[i : i + chunk], dirs[i : i + chunk]) for i in range(0, len(origins), chunk)]
    if isinstance(outs[0], tuple):
        return tuple(np.concatenate(parts) for parts in zip(*outs))
    return np.concatenate(outs)


def bounding_radius(box: np.ndarray) -> float:  # [2, 3] -> radius
    """The radius of a ball about the origin that holds the box: the scanner's and the frames' length scale."""
    return max(0.5 * float(np.linalg.norm(box[1] - box[0])), float(np.abs(box).max()))


def scan_xray(obj: ScannableObject, opts: SceneOptions, radius: float, rng: np.random.Generator) -> XrayScan:
    """X-ray projections on a circular orbit around the z axis of the X-ray frame."""
    n = opts.sparse_views if opts.orbit == "sparse" else opts.xray_views
    arc = opts.arc_deg if opts.orbit == "limited" else 360.0
    res = opts.xray_res
    if opts.beam == "cone":
        dso = 4.0 * radius  # source-to-object distance
        c2ws = circular_orbit(n, dso, arc)
        f = 0.5 * res / np.tan(np.arcsin(1.1 * radius / dso))  # the whole object fits on the detector
    else:
        c2ws = circular_orbit(n, 2.0 * radius, arc)  # the ray plane sits outside the object
        f = res / (2.2 * radius)  # 1 / pixel size
    du, dv = opts.detector_offset
    f *= 0.5 * res / (0.5 * res + max(abs(du), abs(dv)))  # the object's image, shifted, stays on the detector
    intr = np.array([f, f, res / 2.0 + du, res / 2.0 + dv])
    values = np.empty((n, res, res), np.float32)
    for i, c2w in enumerate(c2ws):
        o, d = pixel_rays(c2w, intr, res, res, opts.beam)
        values[i] = _chunked(obj.line_integrals, o.reshape(-1, 3), d.reshape(-1, 3)).reshape(res, res)
    clean = None  # the noise-free values of a noisy scan: the evaluation's truth
    if opts.photons is not None:
        clean = values
        # Poisson counts, -ln(I / I0) as a detector gives it: negative where air counts exceed the flat field
        counts = rng.poisson(opts.photons * np.exp(-values.astype(np.float64)))
        values = -np.log(np.maximum(counts, 1) / opts.photons).astype(np.float32)  # 0 counts cannot be logged
    return XrayScan(opts.beam, res, res, np.tile(intr, (n, 1)), c2ws, values, [f"{i:04d}" for i in range(n)],
                    volume=obj.volume(), clean=clean)


def photograph(obj: ScannableObject, opts: SceneOptions, xray_to_rgb: np.ndarray, aabb_rgb: np.ndarray,
               up_rgb: np.ndarray, rng: np.random.Generator) -> RgbViews:
    """Photographs in the RGB frame, ray cast in the X-ray frame with 2 x 2 supersampling: RGBA over black
    (studio), or RGB of the object on a table in a room with the visible surface's points (table)."""
    centre = aabb_rgb.mean(axis=0)
    r = 0.5 * np.linalg.norm(aabb_rgb[1] - aabb_rgb[0])
    dist = 3.0 * r
    res, ss = opts.rgb_res, 2
    f = 0.5 * res / np.tan(np.arcsin(min(1.05 * r / dist, 0.99)))
    intr = np.array([f, f, res / 2.0, res / 2.0])
    table = opts.capture == "table"
    c2ws = sphere_orbit(opts.rgb_views, dist, centre, up_rgb, elev_deg=(10.0, 60.0) if table else (-25.0, 65.0))
    rgb_to_xray = np.linalg.inv(xray_to_rgb)
    scale = float(np.cbrt(np.linalg.det(xray_to_rgb[:3, :3])))
    r_x = r / scale  # the object's radius in the X-ray frame
    surroundings = Tabletop(height=float(obj.aabb()[0, 2]), radius=4.0 * r_x, cell=0.3 * r_x) if table else None
    images = np.empty((len(c2ws), res, res, 3 if table else 4))
    points, colours = [], []
    coverage = np.empty((len(c2ws), res, res)) if table else None  # the object's true mask, for evaluation
    for i, c2w in enumerate(c2ws):
        o, d = pixel_rays(c2w, intr, res, res, "cone", supersample=ss)
        o = o.reshape(-1, 3) @ rgb_to_xray[:3, :3].T + rgb_to_xray[:3, 3]  # rays into the X-ray frame
        d = d.reshape(-1, 3) @ rgb_to_xray[:3, :3].T
        d /= np.linalg.norm(d, axis=-1, keepdims=True)
        colour, alpha, depth = _chunked(obj.shade, o, d)
        if surroundings is None:
            rgba = np.concatenate([colour, alpha[:, None]], axis=-1).reshape(res, ss, res, ss, 4).mean(axis=(1, 3))
            # Colour over a zero background: the mean of a pixel's covered samples (straight alpha)
            rgba[..., :3] /= np.maximum(rgba[..., 3:], 1e-8)
            images[i] = rgba
            continue
        back, back_depth = surroundings.shade(o, d)
        colour = alpha[:, None] * colour + (1.0 - alpha[:, None]) * back  # the object stands on the table
        depth = np.where(alpha > 0, depth, back_depth)
        images[i] = colour.reshape(res, ss, res, ss, 3).mean(axis=(1, 3))
        coverage[i] = alpha.reshape(res, ss, res, ss).mean(axis=(1, 3))
        seen = np.flatnonzero(np.isfinite(depth))  # what structure from motion could triangulate
        pick = rng.choice(seen, size=min(opts.sfm_points_per_view, len(seen)), replace=False)
        points.append(o[pick] + depth[pick, None] * d[pick] + rng.normal(0.0, 0.005 * r_x, (len(pick), 3)))
        colours.append(colour[pick])
    if opts.rgb_noise > 0:
        images[..., :3] = np.clip(images[..., :3] + rng.normal(0.0, opts.rgb_noise, images[..., :3].shape), 0.0, 1.0)
    sfm = None
    if points:  # into the RGB frame, as SfM gives them with its cameras
        sfm = (np.concatenate(points) @ xray_to_rgb[:3, :3].T + xray_to_rgb[:3, 3], np.concatenate(colours))
    return RgbViews(images, c2ws, intr, sfm, coverage)


def generate_scene(obj: ScannableObject, out: Path | str, opts: SceneOptions, scan: Optional[XrayScan] = None) -> Path:
    """Photographs and scans `obj`, draws the frames' similarity, and writes the scene to `out`. A given
    `scan` (X-ray frame) replaces the scanner of `opts` (a benchmark's own detector, say)."""
    if opts.rgb_views <= 0 and opts.xray_views <= 0:
        raise ValueError("a scene needs RGB views, X-ray views or both: --rgb-views and --xray-views are both 0")
    rng = np.random.default_rng(opts.seed)
    radius = bounding_radius(obj.aabb())  # the object fits in this ball about the origin
    xray_to_rgb = random_similarity(rng, scale_range=(0.6 / radius, 1.6 / radius), max_translation=0.5)
    aabb_rgb = obj.aabb(xray_to_rgb)
    up_rgb = xray_to_rgb[:3, 2] / np.linalg.norm(xray_to_rgb[:3, 2])  # the scanner's z axis is the object's up
    as_ct = opts.inside == "ct"
    xray = None if as_ct else scan if scan is not None else scan_xray(obj, opts, radius, rng) if opts.xray_views > 0 else None
    rgb = photograph(obj, opts, xray_to_rgb, aabb_rgb, up_rgb, rng) if opts.rgb_views > 0 else None
    out = write_scene(out, rgb, xray, xray_to_rgb, aabb_rgb, opts.write_calibration)
    if as_ct:  # the grid's voxel centres in the X-ray frame, which is the CT's patient frame
        vol = obj.volume()
        write_ct_file(out / "ct.nii.gz", vol.values, vol.spacing, vol.aabb[0] + 0.5 * vol.spacing, np.eye(3))
    return out
