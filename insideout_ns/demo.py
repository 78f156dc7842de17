"""`insideout-demo`: the whole job on built-in data, on a CPU.

1. generate a phantom scene (`insideout-synth phantom`), 2. load it through the dataparser and print a
summary, 3. train `insideout-lite` (all three phases), 4. print the held-out metrics (RGB, X-ray,
volume, alignment), 5. export the attenuation volume (.npy and NIfTI) and a short RGB and X-ray orbit
(GIF frames side by side).

    insideout-demo --out demo_out --preset doll
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal, Optional

import numpy as np
import torch
import tyro

from .dataparsers.dataparser import InsideOutDataParserConfig
from .dataparsers.synth.generate import SceneOptions, generate_scene
from .dataparsers.synth.phantom import preset
from .export import write_splat, write_volume


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

    from .method_configs import insideout_lite_method

    config = replace(insideout_lite_method.config)
    config.data = scene
    config.output_dir = out / "runs"
    config.machine.device_type = "cpu" if not torch.cuda.is_available() else "cuda"
    config.vis = "tensorboard"
    config.viewer.quit_on_train_completion = True
    if steps is not None:
        config.max_num_iterations = steps
        config.pipeline.model.phase1_steps = steps // 2
        config.pipeline.model.densify.stop = int(steps * 0.8)
    config.set_timestamp()
    ns_train(config)
    return config.get_base_dir() / "config.yml"


def evaluate_and_export(config_path: Path, out: Path) -> dict:
    import imageio.v3 as iio
    from nerfstudio.utils.eval_utils import eval_setup

    _, pipeline, _, _ = eval_setup(config_path, test_mode="val")
    metrics = pipeline.get_average_eval_image_metrics()
    pipeline.eval()  # renders below use the evaluation background, not training's random one
    model = pipeline.model
    write_volume(model, str(out / "volume"), model.box_xray.cpu().numpy(), res=96)
    write_splat(model, out / "splat.ply")
    frames = []
    views = pipeline.datamanager.eval_views["rgb"] or pipeline.datamanager.train_views["rgb"]
    for v in views[:12]:
        cam = v.camera.to(model.device)
        cam.metadata = {}
        o = model.get_outputs_for_camera(cam)
        frames.append((torch.cat([o["rgb"], o["xray"]], dim=1).cpu().numpy() * 255).astype(np.uint8))
    if frames:
        iio.imwrite(out / "orbit_rgb_xray.gif", np.stack(frames), duration=250, loop=0)
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
    metrics = evaluate_and_export(config_path, args.out)
    print("\nheld-out metrics:")
    for k, v in sorted(metrics.items()):
        print(f"  {k:<28} {v:.4f}")
    print(f"\nrun: {config_path.parent}\nexports: {args.out / 'volume.npy'}, {args.out / 'volume.nii.gz'}, "
          f"{args.out / 'splat.ply'}, {args.out / 'orbit_rgb_xray.gif'}\ntotal {time.perf_counter() - start:.0f} s")
