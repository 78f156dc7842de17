"""`insideout-demo`: the whole job on built-in data, on a CPU.

1. generate a phantom scene (`insideout-synth phantom`) and print a summary of it;
2. train `insideout-lite` (all three phases);
3. print the held-out metrics (RGB, X-ray, volume, alignment);
4. export the attenuation volume (.npy and NIfTI) and the splat (.ply);
5. render the scene's X-ray camera file with `insideout-render` and compare with the projections;
6. render turntable videos (RGB and X-ray, .mp4) and the README's pictures.

    insideout-demo --out demo_out --preset doll
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Optional

import numpy as np
import torch
import tyro

from . import figures
from .dataparsers.dataparser import InsideOutDataParserConfig
from .dataparsers.scene_format import read_xray_scan
from .dataparsers.synth.generate import SceneOptions, generate_scene
from .dataparsers.synth.phantom import preset
from .export import write_splat, write_volume
from .losses import psnr
from .render import render_camera_file
from .videos import orbit_cameras, write_orbit_videos


@dataclass
class Demo:
    out: Path = Path("demo_out")
    """Folder for the scene, the run and the exports."""
    preset: Literal["doll", "box", "fruit"] = "doll"
    steps: Optional[int] = None
    """Training steps (default: insideout-lite's)."""
    res: int = 96
    """RGB and X-ray image size of the generated scene."""
    rgb_views: int = 50
    xray_views: int = 60
    figures: Optional[Path] = None
    """Where the README's pictures go (default OUT/figures; the README's are in docs/images)."""


def summarise(scene: Path) -> dict:
    train = InsideOutDataParserConfig(data=scene).setup().get_dataparser_outputs("train")
    xr = train.metadata["xray"]
    summary = {
        "rgb_train_views": len(train.image_filenames),
        "xray_train_views": len(xr) if xr is not None else 0,
        "xray_projection": xr.projection if xr is not None else None,
        "xray_max_line_integral": float(xr.projections.max()) if xr is not None else None,
        "volume_shape": list(xr.volume.values.shape) if xr is not None and xr.volume is not None else None,
        "rgb_scene_box": train.scene_box.aabb.tolist(),
    }
    print(json.dumps(summary, indent=1))
    return summary


def train(scene: Path, out: Path, steps: Optional[int]) -> Path:
    from nerfstudio.scripts.train import main as ns_train

    from .method_configs import insideout_lite_method, scaled

    config = scaled(insideout_lite_method, steps)  # the preset's CPU / GPU choice, its phases at their fractions
    config.data = scene
    config.output_dir = out / "runs"
    config.vis = "tensorboard"
    config.viewer.quit_on_train_completion = True
    config.set_timestamp()
    ns_train(config)
    return config.get_base_dir() / "config.yml"


def xray_render_check(model, scene: Path, out: Path) -> float:
    """insideout-render on the scene's own X-ray camera file: PSNR of the renders against every stored
    projection (training and held-out), peak = the data's maximum."""
    written = render_camera_file(model, scene / "xray" / "transforms.json", out)
    data = read_xray_scan(scene / "xray" / "transforms.json").values
    renders = torch.from_numpy(np.stack([np.load(p) for p in written]))
    return psnr(renders, torch.from_numpy(data), float(data.max()))


def evaluate_and_export(config_path: Path, scene: Path, out: Path, figure_dir: Path) -> dict:
    from nerfstudio.utils.eval_utils import eval_setup

    _, pipeline, _, _ = eval_setup(config_path, test_mode="val")
    metrics = pipeline.get_average_eval_image_metrics()
    pipeline.eval()  # renders below use the evaluation background, not training's random one
    model = pipeline.model
    volume = write_volume(model, str(out / "volume"), model.gt_volume.aabb, shape=model.gt_volume.values.shape)
    write_splat(model.gaussians, out / "splat.ply")
    metrics["insideout_render_xray_psnr"] = xray_render_check(model, scene, out / "xray_renders")
    orbit = orbit_cameras(model, pipeline.datamanager.train_dataset.cameras)
    write_orbit_videos(model, orbit, out)
    figure_dir.mkdir(parents=True, exist_ok=True)
    figures.held_out_views(pipeline, figure_dir / "tour_views.png")
    figures.cross_sections(volume, model.gt_volume.values, figure_dir / "tour_cross_section.png")
    figures.cutaway(model, orbit, figure_dir / "tour_cutaway.png")
    (out / "metrics.json").write_text(json.dumps(metrics, indent=1))
    return metrics


def entrypoint():
    args = tyro.cli(Demo)
    start = time.perf_counter()
    args.out.mkdir(parents=True, exist_ok=True)
    scene = args.out / f"scene_{args.preset}"
    if not (scene / "transforms.json").exists():
        opts = SceneOptions(rgb_views=args.rgb_views, xray_views=args.xray_views, rgb_res=args.res, xray_res=args.res)
        generate_scene(preset(args.preset), scene, opts)
    summarise(scene)
    config_path = train(scene, args.out, args.steps)
    metrics = evaluate_and_export(config_path, scene, args.out, args.figures or args.out / "figures")
    print("\nheld-out metrics:")
    for k, v in sorted(metrics.items()):
        print(f"  {k:<28} {v:.4f}")
    o = args.out
    print(f"\nrun: {config_path.parent}\nexports: {o / 'volume.npy'}, {o / 'volume.nii.gz'}, {o / 'splat.ply'}\n"
          f"videos: {o / 'orbit_rgb.mp4'}, {o / 'orbit_xray.mp4'}\nX-ray renders: {o / 'xray_renders'}\n"
          f"pictures: {args.figures or o / 'figures'}\ntotal {time.perf_counter() - start:.0f} s")
