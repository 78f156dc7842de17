"""The README's pictures, drawn from a trained model (the demo calls this; rerun it to regenerate them):

- `tour_views.png`: held-out photographs and X-ray projections beside the model's renders;
- `tour_cross_section.png`: the three central slices of the exported volume beside the ground truth;
- `tour_cutaway.png`: RGB, X-ray and the viewer's cut-away (by density, by colour) from one viewpoint.
"""

from __future__ import annotations

from pathlib import Path
from typing import List

import numpy as np
import torch


def _grid(path: Path, rows: List[List[np.ndarray]], titles: List[List[str]], cmap: str = "gray") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n_rows, n_cols = len(rows), max(len(r) for r in rows)
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(2.2 * n_cols, 2.3 * n_rows), squeeze=False)
    for i, (row, names) in enumerate(zip(rows, titles)):
        for j in range(n_cols):
            ax = axes[i][j]
            ax.axis("off")
            if j < len(row):
                ax.imshow(row[j], cmap=cmap, vmin=0, vmax=1, interpolation="nearest")
                ax.set_title(names[j], fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


@torch.no_grad()
def held_out_views(pipeline, path: Path, n: int = 3) -> None:
    model, dm = pipeline.model, pipeline.datamanager
    model.eval()
    rows, titles = [], []
    for v in dm.eval_views["rgb"][:n]:
        camera, batch = v.served(model.device)
        out = model.get_outputs_for_camera(camera)
        photo = model._composite(batch["image"], out["background"])
        rows.append([photo.cpu().numpy(), out["rgb"].cpu().numpy()])
        titles.append(["photograph (held out)", "model"])
    peak = float(model.xray_peak)
    for i, v in enumerate(dm.eval_views["xray"][:n]):
        out = model.get_outputs_for_camera(v.camera)
        pair = [v.batch["xray"][..., 0].cpu().numpy() / peak, out["xray_integral"][..., 0].cpu().numpy() / peak]
        if i < len(rows):
            rows[i] += pair
            titles[i] += ["X-ray (held out)", "model"]
        else:
            rows.append(pair)
            titles.append(["X-ray (held out)", "model"])
    _grid(path, rows, titles)


def cross_sections(volume: np.ndarray, truth: np.ndarray, path: Path) -> None:
    """Central slices along x, y and z: ground truth above, model below (one grey scale)."""
    peak = float(truth.max()) or 1.0
    rows = [[np.rot90(np.take(v, v.shape[a] // 2, axis=a)) / peak for a in range(3)] for v in (truth, volume)]
    titles = [[f"ground truth, central {n} slice" for n in "xyz"], [f"model, central {n} slice" for n in "xyz"]]
    _grid(path, rows, titles)


@torch.no_grad()
def cutaway(model, cameras, path: Path) -> None:
    """From the camera (of `cameras`) that faces the cut plane most squarely."""
    controls = model.controls
    model.eval()
    normal, _, _ = controls.cut_plane
    centre, _ = model.object_sphere()
    facing = (cameras.camera_to_worlds[:, :, 3] - centre.cpu()) @ normal
    camera = cameras[int(facing.argmax()) : int(facing.argmax()) + 1]
    pictures, names = [], []
    for modality, colour_by, name in (("RGB", "density", "RGB"), ("X-ray", "density", "X-ray"),
                                      ("Cut-away", "density", "cut-away: density"),
                                      ("Cut-away", "colour", "cut-away: colour")):
        controls.choose_modality.value, controls.cutaway_colour.value = modality, colour_by
        pictures.append(model.get_outputs_for_camera(camera)["rgb"].clamp(0, 1).cpu().numpy())
        names.append(name)
    controls.choose_modality.value = "RGB"
    _grid(path, [pictures], [names])
