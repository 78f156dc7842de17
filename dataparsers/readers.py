"""Readers that convert other public X-ray layouts into an :class:`XrayScan` (the scene format's model).

- R2-Gaussian's `meta_data.json` (TIGRE geometry: `DSD`, `DSO`, `nDetector`/`sDetector` as [v, u],
  `offOrigin`, `offDetector`, `mode`, `proj_train`/`proj_test` with angles in radians, `vol`).
- TomoPy's Data Exchange HDF5 (`exchange/data`, `data_white`, `data_dark`, `theta` in degrees):
  parallel beam, flat/dark corrected into line integrals.

Example:
    >>> scan = read_dxchange("data/xray/tooth.h5")  # the measured scan shipped in data/
    >>> scan.projection, scan.values.shape
    ('parallel', (181, 2, 640))
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional

import numpy as np

from .scene_format import (SceneFormatError, Volume, XrayScan, check_not_mostly_negative, describe_negatives,
                           finite_number, interval_splits, load_json, load_npy, positive_number, require)
from .cameras import look_at

log = logging.getLogger(__name__)

# The scene format's cameras are OpenGL (look along -Z, +Y up); TIGRE / 3DGS cameras are OpenCV.
OPENCV_TO_OPENGL = np.diag([1.0, -1.0, -1.0, 1.0])


def scanner_pose(angle: float, distance: float) -> np.ndarray:  # [4, 4]
    """OpenGL camera-to-world of a source at `angle` (radians) on a circle of radius `distance` about the
    z axis, looking at the origin, z up (the circular-orbit convention of TIGRE and R2-Gaussian)."""
    eye = distance * np.array([np.cos(angle), np.sin(angle), 0.0])
    return look_at(eye, np.zeros(3), np.array([0.0, 0.0, 1.0]))


def _scanner(cfg: dict, key: str, path: Path, what: str):
    """scanner[key], or a clear error on `scanner.<key>`."""
    if key not in cfg:
        raise SceneFormatError(path, f"scanner.{key}", f"{what} (the field is missing)")
    return cfg[key]


_VU_CHECKS = {"numbers": lambda x: np.isfinite(x),
              "positive finite numbers": lambda x: np.isfinite(x) and x > 0,
              "positive integers": lambda x: (isinstance(x, int) or x.is_integer()) and x > 0}  # 512.0 is an integer too


def _vu(cfg: dict, key: str, path: Path, kind: str = "numbers") -> np.ndarray:  # [2] v, u
    """scanner[key] as a [v, u] pair of `kind` (a key of _VU_CHECKS)."""
    value = _scanner(cfg, key, path, "a [v, u] pair")
    if not isinstance(value, list) or len(value) != 2 or not all(
            isinstance(x, (int, float)) and not isinstance(x, bool) and _VU_CHECKS[kind](x) for x in value):
        raise SceneFormatError(path, f"scanner.{key}", f"a [v, u] pair of {kind}", value)
    return np.array(value, dtype=np.float64)


def read_r2gaussian(root: Path | str) -> XrayScan:
    """An R2-Gaussian scene folder (with `meta_data.json`)."""
    root = Path(root)
    path = root / "meta_data.json"
    meta = load_json(path)
    cfg = require(meta, "scanner", path, "the scanner geometry object")
    if not isinstance(cfg, dict):
        raise SceneFormatError(path, "scanner", "the scanner geometry object (mode, DSO, DSD, nDetector, sDetector)", cfg)
    mode = _scanner(cfg, "mode", path, '"cone" or "parallel"')
    if mode not in ("cone", "parallel"):
        raise SceneFormatError(path, "scanner.mode", '"cone" or "parallel"', mode)
    dso = positive_number(_scanner(cfg, "DSO", path, "source-to-origin distance"), path, "scanner.DSO")
    dsd = positive_number(_scanner(cfg, "DSD", path, "source-to-detector distance"), path, "scanner.DSD")
    n_vu = _vu(cfg, "nDetector", path, "positive integers").astype(int)
    s_vu = _vu(cfg, "sDetector", path, "positive finite numbers")
    d_vu = s_vu / n_vu  # pixel pitch [v, u]
    off_det = _vu(cfg, "offDetector", path) if "offDetector" in cfg else np.zeros(2)
    off_origin = np.asarray(cfg.get("offOrigin", [0.0, 0.0, 0.0]), dtype=np.float64)
    h, w = int(n_vu[0]), int(n_vu[1])
    # A detector shifted by +off (along its own u, v axes) sees the central ray at -off from its centre.
    cx, cy = w / 2.0 - off_det[1] / d_vu[1], h / 2.0 - off_det[0] / d_vu[0]
    fx, fy = (dsd / d_vu[1], dsd / d_vu[0]) if mode == "cone" else (1.0 / d_vu[1], 1.0 / d_vu[0])

    names, c2ws, values, split_of = [], [], [], []
    no_train = "a non-empty list of projections (at least one training projection)"
    train = require(meta, "proj_train", path, no_train)
    for split, frames in (("train", train), ("test", meta.get("proj_test", []))):
        if not isinstance(frames, list):
            raise SceneFormatError(path, f"proj_{split}", "a list of {file_path, angle}", frames)
        if split == "train" and not frames:  # test projections alone leave nothing to train on
            raise SceneFormatError(path, "proj_train", no_train, frames)
        for i, fr in enumerate(frames):
            field = f"proj_{split}[{i}]"
            if not isinstance(fr, dict) or not isinstance(fr.get("file_path"), str) or "angle" not in fr:
                raise SceneFormatError(path, field, "an object with file_path (a string) and angle", fr)
            arr = load_npy(root / fr["file_path"], path, f"{field}.file_path").astype(np.float32)  # [h, w]
            if arr.shape != (h, w):
                raise SceneFormatError(path, f"{field}.file_path", f"an array of shape nDetector = [{h}, {w}]", list(arr.shape))
            if not np.all(np.isfinite(arr)):
                raise SceneFormatError(path, f"{field}.file_path", "finite line integrals")
            check_not_mostly_negative(arr, path, f"{field}.file_path")
            c2w = scanner_pose(finite_number(fr["angle"], path, f"{field}.angle"), dso)
            names.append(fr["file_path"])
            c2ws.append(c2w)
            values.append(arr)
            split_of.append(split)
    split_of = np.array(split_of)
    idx = np.arange(len(names))
    splits = {"train": idx[split_of == "train"], "val": idx[split_of == "test"], "test": idx[split_of == "test"]}

    volume: Optional[Volume] = None
    if "vol" in meta:
        if not isinstance(meta["vol"], str):
            raise SceneFormatError(path, "vol", "a .npy file path relative to the folder", meta["vol"])
        vol = load_npy(root / meta["vol"], path, "vol").astype(np.float32)  # [nx, ny, nz]
        if vol.ndim != 3:
            raise SceneFormatError(path, "vol", "a 3-D array [nx, ny, nz]", list(vol.shape))
        s_vox = np.asarray(cfg.get("sVoxel", np.array(vol.shape) * np.asarray(cfg.get("dVoxel", [1, 1, 1]))), dtype=np.float64)
        # TIGRE's offOrigin places the volume's centre relative to the rotation centre (the origin)
        volume = Volume(vol, np.stack([off_origin - s_vox / 2, off_origin + s_vox / 2]))
    n = len(names)
    return XrayScan(mode, w, h, np.tile([fx, fy, cx, cy], (n, 1)), np.stack(c2ws), np.stack(values), names, splits, volume)


def read_dxchange(path: Path | str, pixel_size: float = 1.0, rotation_center: Optional[float] = None) -> XrayScan:
    """A TomoPy Data Exchange HDF5 file: parallel beam, the rotation axis along the detector's columns.

    Transmission = (data - dark) / (white - dark) (means over the flat and dark frames); line integral =
    -ln(transmission), in units of `pixel_size`. Values above 1 (noise in air) are kept (negative line
    integrals); only what cannot be logged (transmission <= 0) is clipped to the smallest positive value,
    with a warning giving the count. `rotation_center`
    is the column (in TomoPy's convention, pixel j has centre j) the rotation axis projects to; default
    the detector's middle.
    """
    import h5py

    path = Path(path)
    if not path.is_file():
        raise SceneFormatError(path, "<file>", "an existing Data Exchange HDF5 file")
    with h5py.File(path, "r") as f:
        arrays = {}
        for key in ("data", "data_white", "data_dark", "theta"):
            if f"exchange/{key}" not in f:
                raise SceneFormatError(path, f"exchange/{key}", "a dataset (missing)")
            arrays[key] = np.asarray(f[f"exchange/{key}"], dtype=np.float64)
    data, white, dark, theta = arrays["data"], arrays["data_white"], arrays["data_dark"], arrays["theta"]
    if data.ndim != 3:
        raise SceneFormatError(path, "exchange/data", "[angles, rows, columns]", list(data.shape))
    for key in ("data_white", "data_dark"):
        if arrays[key].ndim != 3 or arrays[key].shape[1:] != data.shape[1:]:
            raise SceneFormatError(path, f"exchange/{key}", f"[frames, {data.shape[1]}, {data.shape[2]}]", list(arrays[key].shape))
    if theta.shape != (data.shape[0],):
        raise SceneFormatError(path, "exchange/theta", f"{data.shape[0]} angles in degrees", list(theta.shape))
    n, h, w = data.shape
    flat, dk = white.mean(axis=0), dark.mean(axis=0)
    gain = flat - dk
    if (gain <= 0).any():
        raise SceneFormatError(path, "exchange/data_white", "flat fields brighter than the dark fields at every pixel")
    trans = (data - dk) / gain
    low = int((trans <= 0).sum())
    if low:
        log.warning("%s: clipped %d transmission values at or below 0 (of %d) to the smallest positive one", path, low,
                    trans.size)
    values = (-np.log(np.maximum(trans, np.finfo(np.float32).tiny))).astype(np.float32)
    for i in range(n):
        check_not_mostly_negative(values[i], path, f"exchange/data[{i}]")
    note = describe_negatives(values)
    if note:
        log.warning("%s: %s", path, note)
    cx = w / 2.0 if rotation_center is None else rotation_center + 0.5
    f = 1.0 / pixel_size
    c2ws = np.stack([scanner_pose(np.deg2rad(t), w * pixel_size) for t in theta])
    names = [f"{i:04d}" for i in range(n)]
    return XrayScan("parallel", w, h, np.tile([f, f, cx, h / 2.0], (n, 1)), c2ws, values, names, interval_splits(n))
