"""The paired RGB + X-ray scene format (docs/scene_format.md, version 1): reading and validation.

Pure numpy/json: no torch, no nerfstudio. Everything that reads a scene goes through here, and every
defect is reported as a :class:`SceneFormatError` that names the file, the field and what was expected.

Example:
    >>> from insideout_ns.dataparsers.scene_format import read_xray_scan
    >>> scan = read_xray_scan("scene/xray/transforms.json")  # doctest: +SKIP
    >>> scan.values.shape  # [N, H, W] line integrals  # doctest: +SKIP
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Dict, List, Literal, Optional, Tuple

import numpy as np

from .resolution import bin_projection, binned_detector

log = logging.getLogger(__name__)

Projection = Literal["cone", "parallel"]
SPLITS = ("train", "val", "test")
EVAL_INTERVAL = 8  # without split lists, every 8th frame is held out (as nerfstudio's "interval" mode)


class SceneFormatError(ValueError):
    """A scene file breaks the format: says which file, which field, what was expected."""

    def __init__(self, path: Path | str, field_name: str, expected: str, got: Any = None):
        self.path, self.field, self.expected = str(path), field_name, expected
        msg = f"{path}: field '{field_name}': expected {expected}"
        if got is not None:
            text = repr(got)
            msg += f", got {text[:120] + '...' if len(text) > 120 else text}"
        super().__init__(msg)


@dataclass
class Volume:
    """Attenuation `mu` on a voxel grid; index [i, j, k] along x, y, z; voxel centres at
    aabb[0] + (index + 0.5) * (aabb[1] - aabb[0]) / shape."""

    values: np.ndarray  # [nx, ny, nz] float32
    aabb: np.ndarray  # [2, 3] float64

    @property
    def spacing(self) -> np.ndarray:  # [3]
        return (self.aabb[1] - self.aabb[0]) / np.array(self.values.shape)

    def centres(self, axis: int) -> np.ndarray:  # [n_axis]
        """Voxel-centre coordinates along one axis."""
        n = self.values.shape[axis]
        return self.aabb[0, axis] + (np.arange(n) + 0.5) * self.spacing[axis]


@dataclass
class XrayScan:
    """All X-ray views of a scene, in the X-ray frame, as line integrals.

    Intrinsics are (fx, fy, cx, cy) per view. Cone beam: a pinhole whose centre is the source.
    Parallel beam: fx = 1 / pixel_size_x, fy = 1 / pixel_size_y, so that in both cases a camera-frame
    point (x, y) (OpenCV axes) lands on pixel u = fx * x' + cx, with x' = x / z (cone) or x (parallel).
    """

    projection: Projection
    width: int
    height: int
    intrinsics: np.ndarray  # [N, 4] fx, fy, cx, cy
    camtoworlds: np.ndarray  # [N, 4, 4] OpenGL camera-to-world in the X-ray frame
    values: np.ndarray  # [N, H, W] float32 line integrals, X-ray-frame length units
    names: List[str]  # [N] each frame's file_path as written in the scene
    splits: Dict[str, np.ndarray] = field(default_factory=dict)  # split -> frame indices
    volume: Optional[Volume] = None
    clean: Optional[np.ndarray] = None  # [N, H, W] a simulated noisy scan's noise-free line integrals (evaluation only)
    seen: Optional[np.ndarray] = None  # [N, H, W] line integrals of what photographs see, where the views show more (a CT's air)

    def __post_init__(self):
        n = len(self.names)
        assert self.intrinsics.shape == (n, 4), self.intrinsics.shape
        assert self.camtoworlds.shape == (n, 4, 4), self.camtoworlds.shape
        assert self.values.shape == (n, self.height, self.width), self.values.shape
        assert self.seen is None or self.seen.shape == self.values.shape, (self.seen.shape, self.values.shape)
        if not self.splits:
            self.splits = interval_splits(n)

    def pixel_size(self) -> np.ndarray:  # [N, 2] world units per pixel (parallel beam only)
        assert self.projection == "parallel"
        return 1.0 / self.intrinsics[:, :2]

    def binned(self, b: int) -> "XrayScan":
        """The scan as a detector with b x b times larger pixels (resolution.binned_detector, bin_projection)."""
        if b == 1:
            return self
        width, height, intrinsics = binned_detector(self.width, self.height, self.intrinsics, b)
        return replace(self, width=width, height=height, intrinsics=intrinsics, values=bin_projection(self.values, b),
                       clean=None if self.clean is None else bin_projection(self.clean, b),
                       seen=None if self.seen is None else bin_projection(self.seen, b))


@dataclass
class CameraSet:
    """The cameras of a transforms.json (RGB or X-ray) without their images: what a renderer needs.
    Intrinsics as in :class:`XrayScan` (a photograph's camera is a cone-beam pinhole)."""

    modality: Literal["rgb", "xray"]
    projection: Projection
    widths: np.ndarray  # [N] int
    heights: np.ndarray  # [N] int
    intrinsics: np.ndarray  # [N, 4] fx, fy, cx, cy
    camtoworlds: np.ndarray  # [N, 4, 4] OpenGL camera-to-world (RGB frame, or X-ray frame for "xray")
    names: List[str]  # [N] each frame's file_path as written

    def __post_init__(self):
        n = len(self.names)
        assert self.widths.shape == (n,) and self.heights.shape == (n,), (self.widths.shape, self.heights.shape)
        assert self.intrinsics.shape == (n, 4) and self.camtoworlds.shape == (n, 4, 4), self.intrinsics.shape


def interval_splits(n: int) -> Dict[str, np.ndarray]:
    """Every 8th frame (0, 8, 16, ...) held out for val and test, the rest for training."""
    idx = np.arange(n)
    held = idx[idx % EVAL_INTERVAL == 0] if n > 1 else idx[:0]
    return {"train": np.setdiff1d(idx, held), "val": held, "test": held}


# ----------------------------------------------------------------------------------------------
# Field checks
# ----------------------------------------------------------------------------------------------


def load_json(path: Path) -> Dict[str, Any]:
    if not path.is_file():
        raise SceneFormatError(path, "<file>", "an existing JSON file")
    try:
        meta = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise SceneFormatError(path, "<file>", f"valid JSON ({err})") from None
    if not isinstance(meta, dict):
        raise SceneFormatError(path, "<top level>", "a JSON object", type(meta).__name__)
    return meta


def read_ground_truth(root: Path | str) -> Dict[str, Any]:
    """A generated scene's ground_truth.json (the truth evaluation scores against; training never reads it): {} where
    the scene has none."""
    path = Path(root) / "ground_truth.json"
    return load_json(path) if path.is_file() else {}


def require(meta: Dict[str, Any], key: str, path: Path, what: str = "a value") -> Any:
    if key not in meta:
        raise SceneFormatError(path, key, f"{what} (the field is missing)")
    return meta[key]


def positive_number(value: Any, path: Path, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not np.isfinite(value) or value <= 0:
        raise SceneFormatError(path, name, "a finite positive number", value)
    return float(value)


def finite_number(value: Any, path: Path, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not np.isfinite(value):
        raise SceneFormatError(path, name, "a finite number", value)
    return float(value)


def positive_int(value: Any, path: Path, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise SceneFormatError(path, name, "a positive integer", value)
    return int(value)


def matrix4(value: Any, path: Path, name: str) -> np.ndarray:
    """A finite, invertible 4x4 affine matrix with last row [0, 0, 0, 1]."""
    try:
        m = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise SceneFormatError(path, name, "a 4x4 matrix of numbers", value) from None
    if m.shape != (4, 4):
        raise SceneFormatError(path, name, "a 4x4 matrix", f"shape {list(m.shape)}")
    if not np.all(np.isfinite(m)):
        raise SceneFormatError(path, name, "a 4x4 matrix of finite numbers", value)
    if not np.allclose(m[3], [0, 0, 0, 1], atol=1e-6):
        raise SceneFormatError(path, name, "last row [0, 0, 0, 1]", m[3].tolist())
    scale = np.abs(m[:3, :3]).max()
    if scale == 0 or abs(np.linalg.det(m[:3, :3])) < 1e-9 * scale**3:
        raise SceneFormatError(path, name, "an invertible (non-singular) matrix", m[:3, :3].tolist())
    return m


def similarity_scale(m: np.ndarray, path: Path, name: str) -> float:
    """Checks that the 3x3 block is s R (R a rotation, s > 0) and returns s."""
    a = m[:3, :3]
    s = np.cbrt(np.linalg.det(a))
    gram = a.T @ a
    if s <= 0 or not np.allclose(gram, s * s * np.eye(3), rtol=0, atol=1e-5 * s * s):
        raise SceneFormatError(path, name, "a similarity s*R with R a rotation and s > 0 (A^T A = s^2 I, det > 0)", a.tolist())
    return float(s)


def intrinsic(meta: Dict[str, Any], frame: Dict[str, Any], key: str, path: Path, index: int, kind=positive_number):
    """A per-frame value, else the global one, else a clear error."""
    if key in frame:
        return kind(frame[key], path, f"frames[{index}].{key}")
    if key in meta:
        return kind(meta[key], path, key)
    raise SceneFormatError(path, key, f"a global or frames[{index}] value (the field is missing)")


def frame_list(meta: Dict[str, Any], path: Path) -> List[Dict[str, Any]]:
    frames = require(meta, "frames", path, "a non-empty list of frames")
    if not isinstance(frames, list) or not frames:
        raise SceneFormatError(path, "frames", "a non-empty list of frames", frames)
    for i, fr in enumerate(frames):
        if not isinstance(fr, dict):
            raise SceneFormatError(path, f"frames[{i}]", "an object with file_path and transform_matrix", fr)
        if not isinstance(fr.get("file_path"), str):
            raise SceneFormatError(path, f"frames[{i}].file_path", "a relative file path string", fr.get("file_path"))
        require(fr, "transform_matrix", path, "a 4x4 camera-to-world matrix")
    return frames


def read_splits(meta: Dict[str, Any], names: List[str], path: Path) -> Dict[str, np.ndarray]:
    """`*_filenames` lists when present (names must be frames of the file), else every 8th frame held out."""
    if not any(f"{s}_filenames" in meta for s in SPLITS):
        return interval_splits(len(names))
    index = {n: i for i, n in enumerate(names)}
    # Accept either exact file_path strings or normalised paths ("./a.npy" == "a.npy").
    index.update({str(Path(n)): i for i, n in enumerate(names)})
    splits = {}
    for s in SPLITS:
        listed = meta.get(f"{s}_filenames", [])
        if not isinstance(listed, list):
            raise SceneFormatError(path, f"{s}_filenames", "a list of frame file paths", listed)
        ids = []
        for name in listed:
            key = name if name in index else str(Path(str(name)))
            if key not in index:
                raise SceneFormatError(path, f"{s}_filenames", "file paths that are frames of this file", name)
            ids.append(index[key])
        splits[s] = np.array(ids, dtype=np.int64)
    if len(splits["train"]) == 0:
        raise SceneFormatError(path, "train_filenames", "at least one training frame", [])
    return splits


# ----------------------------------------------------------------------------------------------
# X-ray views
# ----------------------------------------------------------------------------------------------


def load_npy(file: Path, meta_path: Path, name: str) -> np.ndarray:
    """A numeric .npy array as stored, or an error naming the file that lists it (`meta_path`) and the field: a file
    that is missing, not an array (pickled objects, an .npz, a truncated or foreign file) or not numbers."""
    if not file.is_file():
        raise SceneFormatError(meta_path, name, f"an existing .npy ({file} not found)")
    try:
        arr = np.load(file, allow_pickle=False)
    except (ValueError, OSError, EOFError) as err:
        raise SceneFormatError(meta_path, name, f"a .npy array file in {file.name}", f"{type(err).__name__}: {err}") from err
    if not isinstance(arr, np.ndarray):  # an .npz archive under a .npy name
        arr.close()
        raise SceneFormatError(meta_path, name, f"a .npy array file in {file.name}", "an .npz archive")
    if arr.dtype.kind not in "fiu":  # strings, booleans, complex numbers
        raise SceneFormatError(meta_path, name, f"a numeric .npy array in {file.name}", str(arr.dtype))
    return arr


def load_projection(file: Path, meta_path: Path, name: str, h: int, w: int, png_scale: Optional[float]) -> np.ndarray:
    """One projection file as float32 [h, w] (values as stored, before the `value` conversion)."""
    if not file.is_file():
        raise SceneFormatError(meta_path, name, f"an existing projection file ({file} not found)")
    suffix = file.suffix.lower()
    if suffix == ".npy":
        arr = load_npy(file, meta_path, name)
        if arr.dtype != np.float32:
            raise SceneFormatError(meta_path, name, f"a float32 .npy array in {file.name}", str(arr.dtype))
    elif suffix in (".tif", ".tiff"):
        import tifffile

        with tifffile.TiffFile(file) as tif:
            if len(tif.pages) != 1:
                raise SceneFormatError(meta_path, name, f"a single-page TIFF in {file.name}", f"{len(tif.pages)} pages")
            arr = tif.pages[0].asarray()
        if arr.dtype != np.float32:
            raise SceneFormatError(meta_path, name, f"a float32 TIFF in {file.name}", str(arr.dtype))
    elif suffix == ".png":
        import imageio.v3 as iio

        if png_scale is None:
            raise SceneFormatError(meta_path, "png_scale", "a positive number for 16-bit PNG projections (the field is missing)")
        arr = iio.imread(file)
        if arr.dtype != np.uint16:
            raise SceneFormatError(meta_path, name, f"a 16-bit grayscale PNG in {file.name}", str(arr.dtype))
        arr = arr.astype(np.float32) * np.float32(png_scale)
    else:
        raise SceneFormatError(meta_path, name, "a .npy, .tif/.tiff or 16-bit .png projection", file.suffix)
    if arr.shape != (h, w):
        raise SceneFormatError(meta_path, name, f"an array of shape [h, w] = [{h}, {w}] in {file.name}", list(arr.shape))
    return arr


def to_line_integral(arr: np.ndarray, value: str, meta_path: Path, name: str) -> np.ndarray:
    """Applies the `value` convention. Measured noise is data: finite negative line integrals and
    transmission above 1 (air, counts above the flat field) are kept as they are. Rejected: non-finite
    values, transmission <= 0 (cannot be logged) and a projection that is mostly negative."""
    if not np.all(np.isfinite(arr)):
        raise SceneFormatError(meta_path, name, "finite values only", f"{int((~np.isfinite(arr)).sum())} non-finite pixels")
    if value == "transmission":
        if (arr <= 0).any():
            raise SceneFormatError(meta_path, name, "transmission values I / I0 > 0 (-ln cannot take the others)",
                                   f"{int((arr <= 0).sum())} pixels at or below 0, min {arr.min()}")
        arr = -np.log(arr.astype(np.float64))
    check_not_mostly_negative(arr, meta_path, name)
    return arr.astype(np.float32)


def check_not_mostly_negative(line_integrals: np.ndarray, source: Path, name: str) -> None:
    """Noise in air gives line integrals around 0, as many slightly negative as positive; an object only
    adds. A projection whose negative values outweigh its positive ones (a mean below 0 by more than
    five standard errors) is a sign or flat-field mistake, not noise: SceneFormatError."""
    arr = np.asarray(line_integrals, dtype=np.float64)
    mean, stderr = float(arr.mean()), float(arr.std()) / np.sqrt(arr.size)
    if mean < -5 * stderr:
        raise SceneFormatError(source, name, "line integrals -ln(I / I0) that are mostly >= 0 (noise in air "
                               "averages to 0; is the sign or the flat field wrong?)",
                               f"{100 * float((arr < 0).mean()):.0f} % negative pixels, mean {mean:.4g}")


def describe_negatives(values: np.ndarray) -> Optional[str]:
    """One line on the negative line integrals of a scan [N, H, W] (measured noise in air), or None."""
    count = int((values < 0).sum())
    if count == 0:
        return None
    return (f"{count} of {values.size} line integrals are negative (min {float(values.min()):.4g}, peak "
            f"{float(values.max()):.4g}): noise in air, kept as measured")


def read_volume(entry: Any, root: Path, meta_path: Path) -> Volume:
    if not isinstance(entry, dict):
        raise SceneFormatError(meta_path, "volume", "an object with file_path and aabb", entry)
    rel = require(entry, "file_path", meta_path, "volume.file_path, a .npy path")
    file = root / str(rel)
    if Path(str(rel)).suffix.lower() != ".npy":
        raise SceneFormatError(meta_path, "volume.file_path", "a .npy file", rel)
    aabb = np.asarray(require(entry, "aabb", meta_path, "[[xmin, ymin, zmin], [xmax, ymax, zmax]]"), dtype=np.float64)
    if aabb.shape != (2, 3) or not np.all(np.isfinite(aabb)) or not np.all(aabb[1] > aabb[0]):
        raise SceneFormatError(meta_path, "volume.aabb", "[[xmin, ymin, zmin], [xmax, ymax, zmax]] with max > min", entry["aabb"])
    values = load_npy(file, meta_path, "volume.file_path")
    if values.ndim != 3 or not np.issubdtype(values.dtype, np.floating):
        raise SceneFormatError(meta_path, "volume.file_path", "a 3-D float array [nx, ny, nz]", f"{values.dtype} {list(values.shape)}")
    if not np.all(np.isfinite(values)) or (values < 0).any():
        raise SceneFormatError(meta_path, "volume.file_path", "finite attenuation values >= 0")
    return Volume(values.astype(np.float32), aabb)


def read_xray_cameras(meta_path: Path | str) -> CameraSet:
    """The geometry of `xray/transforms.json` (every field checked; the projections are not read)."""
    meta_path = Path(meta_path)
    meta = load_json(meta_path)
    if meta.get("modality", "xray") != "xray":
        raise SceneFormatError(meta_path, "modality", '"xray"', meta.get("modality"))
    projection = require(meta, "projection", meta_path, '"cone" or "parallel"')
    if projection not in ("cone", "parallel"):
        raise SceneFormatError(meta_path, "projection", '"cone" or "parallel"', projection)
    w = positive_int(require(meta, "w", meta_path, "the detector width in pixels"), meta_path, "w")
    h = positive_int(require(meta, "h", meta_path, "the detector height in pixels"), meta_path, "h")
    frames = frame_list(meta, meta_path)
    intr, c2ws = [], []
    for i, fr in enumerate(frames):
        if projection == "cone":
            fx = intrinsic(meta, fr, "fl_x", meta_path, i)
            fy = intrinsic(meta, fr, "fl_y", meta_path, i)
        else:
            ps = fr.get("pixel_size", meta.get("pixel_size"))
            if ps is None:
                raise SceneFormatError(meta_path, "pixel_size", "a number or [sx, sy] for parallel beam (the field is missing)")
            if isinstance(ps, list) and len(ps) != 2:
                raise SceneFormatError(meta_path, "pixel_size", "a number or [sx, sy]", ps)
            sx, sy = ps if isinstance(ps, list) else (ps, ps)
            fx = 1.0 / positive_number(sx, meta_path, "pixel_size")
            fy = 1.0 / positive_number(sy, meta_path, "pixel_size")
        cx = intrinsic(meta, fr, "cx", meta_path, i, finite_number)
        cy = intrinsic(meta, fr, "cy", meta_path, i, finite_number)
        intr.append([fx, fy, cx, cy])
        c2ws.append(matrix4(fr["transform_matrix"], meta_path, f"frames[{i}].transform_matrix"))
    n = len(frames)
    return CameraSet("xray", projection, np.full(n, w), np.full(n, h), np.array(intr, dtype=np.float64).reshape(n, 4),
                     np.stack(c2ws).reshape(n, 4, 4), [fr["file_path"] for fr in frames])


def read_xray_scan(meta_path: Path | str, binning: int = 1) -> XrayScan:
    """Reads `xray/transforms.json` and every projection it names, as line integrals, binned `binning` x
    `binning` as each is read (XrayScan.binned; a full-size scan is never held whole)."""
    meta_path = Path(meta_path)
    cams = read_xray_cameras(meta_path)
    meta = load_json(meta_path)
    value = meta.get("value", "line_integral")
    if value not in ("line_integral", "transmission"):
        raise SceneFormatError(meta_path, "value", '"line_integral" or "transmission"', value)
    png_scale = positive_number(meta["png_scale"], meta_path, "png_scale") if "png_scale" in meta else None
    w, h = int(cams.widths[0]), int(cams.heights[0])
    values = []
    for i, name in enumerate(cams.names):
        raw = load_projection(meta_path.parent / name, meta_path, f"frames[{i}].file_path", h, w, png_scale)
        values.append(bin_projection(to_line_integral(raw, value, meta_path, f"frames[{i}].file_path"), binning))
    volume = read_volume(meta["volume"], meta_path.parent, meta_path) if "volume" in meta else None
    values = np.stack(values)
    note = describe_negatives(values)
    if note:
        log.warning("%s: %s", meta_path, note)
    width, height, intrinsics = binned_detector(w, h, cams.intrinsics, binning)
    return XrayScan(
        projection=cams.projection,
        width=width,
        height=height,
        intrinsics=intrinsics,
        camtoworlds=cams.camtoworlds,
        values=values,
        names=cams.names,
        splits=read_splits(meta, cams.names, meta_path),
        volume=volume,
    )


# ----------------------------------------------------------------------------------------------
# RGB views and calibration
# ----------------------------------------------------------------------------------------------


def read_rgb_cameras(meta_path: Path | str) -> CameraSet:
    """The pinhole cameras of an RGB `transforms.json` (every field checked; images are not read)."""
    meta_path = Path(meta_path)
    meta = load_json(meta_path)
    frames = frame_list(meta, meta_path)
    intr, size, c2ws = [], [], []
    for i, fr in enumerate(frames):
        intr.append([intrinsic(meta, fr, key, meta_path, i, positive_number if key.startswith("fl") else finite_number)
                     for key in ("fl_x", "fl_y", "cx", "cy")])
        size.append([intrinsic(meta, fr, key, meta_path, i, positive_int) for key in ("w", "h")])
        c2ws.append(matrix4(fr["transform_matrix"], meta_path, f"frames[{i}].transform_matrix"))
    n = len(frames)
    size = np.array(size, dtype=np.int64).reshape(n, 2)
    return CameraSet("rgb", "cone", size[:, 0], size[:, 1], np.array(intr, dtype=np.float64).reshape(n, 4),
                     np.stack(c2ws).reshape(n, 4, 4), [fr["file_path"] for fr in frames])


def read_cameras(meta_path: Path | str) -> CameraSet:
    """The cameras of any camera file of the format: X-ray (`"modality": "xray"`) or RGB."""
    meta = load_json(Path(meta_path))
    return read_xray_cameras(meta_path) if meta.get("modality") == "xray" else read_rgb_cameras(meta_path)


def check_rgb_transforms(meta_path: Path | str) -> None:
    """Validates an RGB `transforms.json` before nerfstudio parses it (nerfstudio's own parser fails
    deep inside on most of these defects)."""
    meta_path = Path(meta_path)
    cams = read_rgb_cameras(meta_path)
    meta = load_json(meta_path)
    for i, fr in enumerate(meta["frames"]):  # Nerfstudio reads a global value for every frame when there is one
        for key in ("fl_x", "fl_y", "cx", "cy", "w", "h"):
            if key in fr and key in meta and float(fr[key]) != float(meta[key]):
                raise SceneFormatError(meta_path, f"frames[{i}].{key}", f"no per-frame {key} beside a different global "
                                       f"{key} (Nerfstudio would use the global {meta[key]}): give it per frame only",
                                       fr[key])
    without_mask = [i for i, fr in enumerate(meta["frames"]) if "mask_path" not in fr]
    if 0 < len(without_mask) < len(meta["frames"]):
        raise SceneFormatError(meta_path, f"frames[{without_mask[0]}].mask_path",
                               "a mask_path in every frame or in none (Nerfstudio reads them as one list)", "missing")
    for i, fr in enumerate(meta["frames"]):
        for key in ("file_path", "mask_path"):
            if key in fr and not (meta_path.parent / fr[key]).is_file():
                raise SceneFormatError(meta_path, f"frames[{i}].{key}", f"an existing image ({meta_path.parent / fr[key]} not found)")
    if "ply_file_path" in meta and not (meta_path.parent / str(meta["ply_file_path"])).is_file():
        raise SceneFormatError(meta_path, "ply_file_path", "an existing point cloud file (SfM points, .ply)",
                               f"{meta_path.parent / str(meta['ply_file_path'])} not found")
    read_splits(meta, cams.names, meta_path)


def load_mask(file: Path, height: int, width: int, scale_factor: float = 1.0) -> np.ndarray:
    """A frame's `mask_path` image as float [height, width, 1]: 1 where non-zero (the object), else 0
    (Nerfstudio's convention), resized by `scale_factor` (nearest) as Nerfstudio resizes its photograph."""
    from PIL import Image

    try:
        with Image.open(file) as img:
            if scale_factor != 1.0:
                img = img.resize((int(img.width * scale_factor), int(img.height * scale_factor)), Image.NEAREST)
            arr = np.asarray(img)
    except (OSError, ValueError, SyntaxError) as err:
        raise SceneFormatError(file, "mask_path", "a readable single-channel mask image", f"{type(err).__name__}: {err}") from err
    if arr.ndim == 3:  # an RGB(A) mask: its first channel
        arr = arr[..., 0]
    if arr.shape != (height, width):
        raise SceneFormatError(file, "mask_path", f"a mask of its photograph's size {width} x {height}",
                               f"{arr.shape[1]} x {arr.shape[0]}")
    return (arr > 0).astype(np.float32)[..., None]


def read_point_cloud(path: Path) -> Tuple[np.ndarray, np.ndarray]:
    """The SfM points of `ply_file_path` (ns-process-data's sparse_pc.ply): positions float32 [P, 3] and colours
    uint8 [P, 3] (grey where the file has none), from any PLY with x, y, z per vertex (read with plyfile, which
    Nerfstudio depends on too)."""
    from plyfile import PlyData

    expected = "a point cloud with x, y, z per vertex (the file named by transforms.json's ply_file_path)"
    try:
        vertex = PlyData.read(str(path))["vertex"]
        points = np.stack([np.asarray(vertex[k], np.float32) for k in "xyz"], -1).reshape(-1, 3)
    except (OSError, ValueError, KeyError, IndexError) as err:
        raise SceneFormatError(path, "vertex", expected, f"{type(err).__name__}: {err}") from err
    if len(points) == 0:
        raise SceneFormatError(path, "vertex", expected, "no points")
    names = vertex.data.dtype.names
    if all(k in names for k in ("red", "green", "blue")):
        colours = np.stack([np.asarray(vertex[k]) for k in ("red", "green", "blue")], -1).astype(np.uint8)
    else:
        colours = np.full_like(points, 128, dtype=np.uint8)
    return points, colours


def read_calibration(path: Path | str) -> np.ndarray:
    """`calibration.json`: the X-ray -> RGB similarity `p_rgb = s R p_xray + t`, as a 4x4 matrix."""
    path = Path(path)
    meta = load_json(path)
    m = matrix4(require(meta, "xray_to_rgb", path, "a 4x4 similarity matrix"), path, "xray_to_rgb")
    similarity_scale(m, path, "xray_to_rgb")
    return m
