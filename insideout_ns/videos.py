"""Turntable videos of a trained model: RGB and X-ray from a ring of cameras round the object.

Example:
    >>> from insideout_ns.videos import orbit_cameras, write_orbit_videos
    >>> cams = orbit_cameras(model, pipeline.datamanager.train_dataset.cameras)  # doctest: +SKIP
    >>> write_orbit_videos(model, cams, "out")  # out/orbit_rgb.mp4, out/orbit_xray.mp4  # doctest: +SKIP
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, List

import numpy as np
import torch

from nerfstudio.cameras.cameras import Cameras

from .dataparsers.dataparser import nerfstudio_cameras
from .dataparsers.cameras import ring_orbit


def orbit_cameras(model, like: Cameras, n: int = 48, elevation_deg: float = 20.0, size: int = 512) -> Cameras:
    """n cameras evenly round the model's object, at the median distance, mean up direction and field of view of
    the cameras `like` (e.g. the training photographs), `size` pixels wide: Gaussians render at any size, however
    small the photographs were."""
    centre, _ = model.object_sphere()
    centre = centre.detach().cpu().double().numpy()
    c2w = like.camera_to_worlds.detach().cpu().double().numpy()  # [N, 3, 4]
    up = c2w[:, :, 1].mean(0)  # OpenGL: a camera's +Y is its up
    radius = float(np.median(np.linalg.norm(c2w[:, :, 3] - centre, axis=-1)))
    poses = ring_orbit(n, radius, centre, up, elevation_deg)
    k = size / float(like.width[0])
    intr = k * np.array([[float(like.fx[0]), float(like.fy[0]), float(like.cx[0]), float(like.cy[0])]]).repeat(n, 0)
    return nerfstudio_cameras("cone", intr, poses, size, round(k * float(like.height[0])))


@torch.no_grad()
def render_orbit(model, cameras: Cameras) -> Dict[str, List[np.ndarray]]:
    """uint8 frames [H, W, 3] of the model's `rgb` (the viewer's modality, RGB by default) and `xray`
    (grey, default window) outputs for each camera."""
    model.eval()
    frames: Dict[str, List[np.ndarray]] = {"rgb": [], "xray": []}
    for i in range(len(cameras)):
        out = model.get_outputs_for_camera(cameras[i : i + 1])
        for key in frames:
            if key in out:
                frames[key].append((out[key].clamp(0, 1).cpu().numpy() * 255 + 0.5).astype(np.uint8))
    return {k: v for k, v in frames.items() if v}


def write_orbit_videos(model, cameras: Cameras, out_dir: Path | str, fps: int = 16) -> List[Path]:
    """`orbit_rgb.mp4` and `orbit_xray.mp4` (H.264, through imageio-ffmpeg's own ffmpeg binary)."""
    import imageio.v3 as iio

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for key, frames in render_orbit(model, cameras).items():
        path = out_dir / f"orbit_{key}.mp4"
        iio.imwrite(path, np.stack(frames), plugin="FFMPEG", fps=fps, codec="libx264")
        written.append(path)
    return written
