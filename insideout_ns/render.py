"""`insideout-render`: every frame of a camera file of the scene format, rendered by a trained model.
This is how anyone evaluates a model on their own held-out views.

    insideout-render --load-config RUN/config.yml --cameras scene/xray/transforms.json --output-dir renders/

- RGB camera files (nerfstudio's `transforms.json`, poses in the RGB frame) give RGBA PNGs: alpha is the
  accumulated opacity, colour is un-premultiplied (independent of the background).
- X-ray camera files (`"modality": "xray"`, poses in the X-ray frame exactly as in the data, a CT scene's patient
  frame; the model's alignment is applied) give float32 `.npy` line integrals [h, w] in X-ray-frame units.

Each output is named after its frame's `file_path` (same sub-folders, extension `.png` or `.npy`).
Only the cameras are read: the images a camera file names need not exist.

Example (Python):
    >>> from insideout_ns.render import render_camera_file
    >>> written = render_camera_file(model, "scene/xray/transforms.json", "renders")  # doctest: +SKIP
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import List

import numpy as np
import torch
import tyro

from .dataparsers.dataparser import nerfstudio_cameras
from .dataparsers.scene_format import SceneFormatError, read_cameras


def output_path(out_dir: Path, file_path: str, suffix: str) -> Path:
    """Where the render of a frame goes: its file_path under out_dir (parent references and absolute
    paths are dropped, so nothing is written outside out_dir)."""
    parts = [p for p in PurePosixPath(file_path.replace("\\", "/")).parts if p not in ("/", "..", ".")]
    return out_dir.joinpath(*parts).with_suffix(suffix)


@torch.no_grad()
def render_camera_file(model, cameras: Path | str, out_dir: Path | str) -> List[Path]:
    """Renders every frame of `cameras` with `model` (an InsideOutModel) into `out_dir`; returns the files."""
    import imageio.v3 as iio

    cameras, out_dir = Path(cameras), Path(out_dir)
    cams = read_cameras(cameras)
    if cams.modality == "xray" and not model.has_xray:
        raise SceneFormatError(cameras, "modality", "RGB cameras: this model was trained without X-rays", "xray")
    if cams.modality == "rgb" and not model.has_rgb:
        raise SceneFormatError(cameras, "modality", '"xray" cameras: this model was trained without photographs', "rgb")
    poses = cams.camtoworlds
    if cams.modality == "xray":  # a CT scene's X-ray cameras are in its patient frame (LPS): onto its grid's axes
        poses = np.linalg.inv(model.patient_from_frame.cpu().double().numpy()) @ poses
    ns_cams = nerfstudio_cameras(cams.projection, cams.intrinsics, poses, cams.widths, cams.heights)
    model.eval()
    written = []
    for i, name in enumerate(cams.names):
        cam = ns_cams[i : i + 1]
        cam.metadata = {"modality": cams.modality, "projection": cams.projection}
        out = model.get_outputs_for_camera(cam)
        if cams.modality == "xray":
            target = output_path(out_dir, name, ".npy")
            target.parent.mkdir(parents=True, exist_ok=True)
            np.save(target, out["xray_integral"][..., 0].cpu().numpy().astype(np.float32))
        else:
            alpha = out["accumulation"].clamp(0, 1)  # [H, W, 1]
            colour = (out["rgb"] - (1 - alpha) * out["background"]) / alpha.clamp(min=1e-6)  # un-premultiplied
            rgba = torch.cat([colour.clamp(0, 1), alpha], dim=-1)
            target = output_path(out_dir, name, ".png")
            target.parent.mkdir(parents=True, exist_ok=True)
            iio.imwrite(target, (rgba.cpu().numpy() * 255 + 0.5).astype(np.uint8))
        written.append(target)
    return written


@dataclass
class Render:
    load_config: Path
    """The run's config.yml."""
    cameras: Path
    """A camera file of the scene format: an RGB transforms.json or an xray/transforms.json."""
    output_dir: Path

    def main(self) -> None:
        from .export import load_model

        written = render_camera_file(load_model(self.load_config), self.cameras, self.output_dir)
        print(f"wrote {len(written)} renders of {self.cameras} under {self.output_dir}")


def entrypoint():
    tyro.cli(Render, description=__doc__).main()
