"""Writes scenes in the paired format (docs/scene_format.md): the one place every producer goes through."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Optional, Tuple

import numpy as np

from .scene_format import XrayScan, interval_splits


@dataclass
class RgbViews:
    """Photographs of a scene in the RGB frame."""

    images: np.ndarray  # [N, H, W, 4] float in [0, 1], alpha = object mask; or [N, H, W, 3] without a mask
    camtoworlds: np.ndarray  # [N, 4, 4] OpenGL camera-to-world
    intrinsics: np.ndarray  # [4] fx, fy, cx, cy (shared by all views)
    sfm_points: Optional[Tuple[np.ndarray, np.ndarray]] = None  # [P, 3] points, [P, 3] colours in [0, 1]: sparse_pc.ply
    truth_masks: Optional[np.ndarray] = None  # [N, H, W] the object's coverage where the images have no mask (evaluation only)


def _split_lists(names, splits) -> dict:
    return {f"{s}_filenames": [names[i] for i in splits[s]] for s in ("train", "val", "test")}


def write_rgb_views(views: RgbViews, scene: Path) -> Dict[str, str]:
    """transforms.json, the images and sparse_pc.ply; returns {photograph: its true mask file} where the
    views carry true masks (ground_truth.json's "object_masks")."""
    import imageio.v3 as iio

    n, h, w, _ = views.images.shape
    (scene / "images").mkdir(parents=True, exist_ok=True)
    names = [f"images/{i:04d}.png" for i in range(n)]
    for name, img in zip(names, views.images):
        iio.imwrite(scene / name, np.round(np.clip(img, 0, 1) * 255).astype(np.uint8))
    fx, fy, cx, cy = (float(x) for x in views.intrinsics)
    meta = {
        "camera_model": "OPENCV",
        "fl_x": fx, "fl_y": fy, "cx": cx, "cy": cy, "w": int(w), "h": int(h),
        "k1": 0.0, "k2": 0.0, "p1": 0.0, "p2": 0.0,
        "frames": [{"file_path": nm, "transform_matrix": c2w.tolist()} for nm, c2w in zip(names, views.camtoworlds)],
        **_split_lists(names, interval_splits(n)),
    }
    if views.sfm_points is not None:
        write_point_cloud(scene / "sparse_pc.ply", *views.sfm_points)
        meta["ply_file_path"] = "sparse_pc.ply"
    (scene / "transforms.json").write_text(json.dumps(meta, indent=1))
    if views.truth_masks is None:
        return {}
    (scene / "ground_truth_masks").mkdir(exist_ok=True)
    for name, mask in zip(names, views.truth_masks):
        iio.imwrite(scene / "ground_truth_masks" / Path(name).name, np.round(np.clip(mask, 0, 1) * 255).astype(np.uint8))
    return {name: f"ground_truth_masks/{Path(name).name}" for name in names}


def write_point_cloud(path: Path, points: np.ndarray, colours: np.ndarray) -> None:
    """A coloured point cloud [P, 3] as binary PLY (x, y, z float; red, green, blue uint8), as
    ns-process-data writes sparse_pc.ply."""
    from plyfile import PlyData, PlyElement

    rows = np.empty(len(points), dtype=[("x", "f4"), ("y", "f4"), ("z", "f4"), ("red", "u1"), ("green", "u1"), ("blue", "u1")])
    for k, name in enumerate("xyz"):
        rows[name] = points[:, k]
    for k, name in enumerate(("red", "green", "blue")):
        rows[name] = np.round(np.clip(colours[:, k], 0, 1) * 255)
    PlyData([PlyElement.describe(rows, "vertex")]).write(str(path))


def write_xray_scan(scan: XrayScan, scene: Path) -> Dict[str, str]:
    """`xray/transforms.json`, float32 `.npy` line integrals, and the optional volume; returns {projection:
    its noise-free twin} for a simulated noisy scan (ground_truth.json's "xray_clean", `ground_truth_xray/`)."""
    root = scene / "xray"
    (root / "proj").mkdir(parents=True, exist_ok=True)
    names = [f"proj/{i:04d}.npy" for i in range(len(scan.names))]
    for name, values in zip(names, scan.values):
        np.save(root / name, values.astype(np.float32))
    fx, fy, cx, cy = scan.intrinsics[0]
    shared = np.allclose(scan.intrinsics, scan.intrinsics[0])
    meta = {"modality": "xray", "projection": scan.projection, "w": scan.width, "h": scan.height}
    if shared:
        meta.update({"cx": float(cx), "cy": float(cy)})
        if scan.projection == "cone":
            meta.update({"fl_x": float(fx), "fl_y": float(fy)})
        else:
            meta["pixel_size"] = [1.0 / float(fx), 1.0 / float(fy)]
    meta["value"] = "line_integral"
    frames = []
    for name, c2w, (fx, fy, cx, cy) in zip(names, scan.camtoworlds, scan.intrinsics):
        frame = {"file_path": name, "transform_matrix": c2w.tolist()}
        if not shared:
            frame.update({"cx": float(cx), "cy": float(cy)})
            if scan.projection == "cone":
                frame.update({"fl_x": float(fx), "fl_y": float(fy)})
            else:
                frame["pixel_size"] = [1.0 / float(fx), 1.0 / float(fy)]
        frames.append(frame)
    meta["frames"] = frames
    if scan.volume is not None:
        np.save(root / "volume.npy", scan.volume.values.astype(np.float32))
        meta["volume"] = {"file_path": "volume.npy", "aabb": scan.volume.aabb.tolist()}
    meta.update(_split_lists(names, scan.splits))
    (root / "transforms.json").write_text(json.dumps(meta, indent=1))
    if scan.clean is None:
        return {}
    (scene / "ground_truth_xray").mkdir(exist_ok=True)
    for name, values in zip(names, scan.clean):
        np.save(scene / "ground_truth_xray" / Path(name).name, values.astype(np.float32))
    return {name: f"ground_truth_xray/{Path(name).name}" for name in names}


def write_scene(
    scene: Path | str,
    rgb: Optional[RgbViews],
    xray: Optional[XrayScan],
    xray_to_rgb: Optional[np.ndarray] = None,
    aabb_rgb: Optional[np.ndarray] = None,
    write_calibration: bool = False,
) -> Path:
    """A whole scene; `xray_to_rgb` and `aabb_rgb` are the generator's truth (`ground_truth.json`)."""
    scene = Path(scene)
    scene.mkdir(parents=True, exist_ok=True)
    truth_masks = write_rgb_views(rgb, scene) if rgb is not None else {}
    clean = write_xray_scan(xray, scene) if xray is not None else {}
    if xray_to_rgb is not None:
        truth = {"xray_to_rgb": xray_to_rgb.tolist()}
        if aabb_rgb is not None:
            truth["aabb_rgb"] = aabb_rgb.tolist()
        if truth_masks:
            truth["object_masks"] = truth_masks
        if clean:
            truth["xray_clean"] = clean
        (scene / "ground_truth.json").write_text(json.dumps(truth, indent=1))
        if write_calibration:
            (scene / "calibration.json").write_text(json.dumps({"xray_to_rgb": xray_to_rgb.tolist()}, indent=1))
    return scene
