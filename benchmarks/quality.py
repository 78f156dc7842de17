"""Quality of `insideout-lite` on every phantom preset and a from-CT scene of each real CT of the repository (data/ct), plus the
ablation rows and a sparse-view row. Prints one table and writes JSON.

    python benchmarks/quality.py                       # everything (about 8 minutes a row on 2 CPU cores)
    python benchmarks/quality.py --rows doll box       # chosen rows
    python benchmarks/quality.py --steps 600           # shorter runs (not the lite preset's figures)
    python benchmarks/quality.py --rows doll --phase1 700  # another phase boundary (the preset's: 400)

Rows: doll, box, fruit, headsq, bunny (full method); doll-no-hierarchy, doll-alpha,
doll-xray-only, doll-rgb-only (ablations); doll-sparse10 and its X-ray-only twin (10 X-ray views); doll-table,
box-table, headsq-table (a phone capture and a noisy scan, xray_psnr_clean against the noise-free projections) and
their references on the same detector with masks and clean projections (doll-offset, box-offset, headsq-offset);
headsq-ct, bunny-ct and their -table twins (the inside given as a CT volume), bunny-ct-only (its CT alone), and the
head's with the alignment's surface level at its photographed skin (-skin).
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import time
from dataclasses import replace
from pathlib import Path

from insideout_ns.dataparsers.synth.cli import FromCtCommand
from insideout_ns.dataparsers.synth.generate import SceneOptions, generate_scene
from insideout_ns.dataparsers.synth.phantom import preset
from insideout_ns.method_configs import insideout_lite_method, scaled
from insideout_ns.model_config import AblationConfig, AlignmentConfig
from insideout_ns.phases import TrainingStopped

CT_DIR = Path(__file__).resolve().parents[1] / "data" / "ct"  # the repository's real CTs (data/README.md)
RES, RGB_VIEWS, XRAY_VIEWS = 96, 50, 60


def make_scene(kind: str, root: Path, **kw) -> Path:
    out = root / (kind + "".join(f"_{k}{v}" for k, v in sorted(kw.items())))
    if out.exists():
        return out
    opts = SceneOptions(rgb_views=RGB_VIEWS, xray_views=XRAY_VIEWS, rgb_res=RES, xray_res=RES, seed=7, **kw)
    if kind in ("headsq", "bunny"):
        extra = {"axis_order": "zyx", "spacing": (1.35, 1.35, 1.35)} if kind == "bunny" else {}
        src = CT_DIR / ("headsq.mha" if kind == "headsq" else "bunny_ct_128.npy.gz")
        return FromCtCommand(volume=src, out=out, scene=opts, **extra).main()
    return generate_scene(preset(kind), out, opts)


def strip(scene: Path, keep: str, root: Path) -> Path:
    """A copy of the scene with one modality only."""
    out = root / f"{scene.name}_{keep}-only"
    if not out.exists():
        shutil.copytree(scene, out)
        if keep == "xray":
            (out / "transforms.json").unlink()
            shutil.rmtree(out / "images")
        else:
            shutil.rmtree(out / "xray")
    return out


def train_and_eval(scene: Path, out: Path, steps: int | None, radiative_points: int | None = None, **model_kw) -> dict:
    from nerfstudio.scripts.train import main as ns_train
    from nerfstudio.utils.eval_utils import eval_setup

    config = scaled(insideout_lite_method, steps, radiative_points=radiative_points)  # a deep copy: no row's settings leak
    config.data, config.output_dir = scene, out
    config.machine.device_type = "cpu"
    config.vis = "tensorboard"
    config.steps_per_eval_all_images = 10**9
    config.pipeline.model = replace(config.pipeline.model, **model_kw)
    config.set_timestamp()
    start = time.perf_counter()
    ns_train(config)
    wall = time.perf_counter() - start
    _, pipeline, _, _ = eval_setup(config.get_base_dir() / "config.yml", test_mode="val")
    metrics = pipeline.get_average_eval_image_metrics()
    metrics["wall_s"] = wall
    metrics["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return metrics


TABLE = {"capture": "table", "photons": 2e4, "detector_offset": (6.0, -3.0)}
ROWS = {
    "doll": ("doll", {}, None, {}),
    "box": ("box", {}, None, {}),
    "fruit": ("fruit", {}, None, {}),
    "headsq": ("headsq", {}, None, {}),
    "bunny": ("bunny", {}, None, {}),
    "doll-no-hierarchy": ("doll", {"write_calibration": True}, None, {"ablation": AblationConfig(hierarchical=False)}),
    "doll-alpha": ("doll", {}, None, {"ablation": AblationConfig(xray_rendering="alpha")}),
    "doll-xray-only": ("doll", {}, "xray", {}),
    "doll-rgb-only": ("doll", {}, "rgb", {}),
    "doll-sparse10": ("doll", {"orbit": "sparse", "sparse_views": 10}, None, {}),
    "doll-sparse10-xray-only": ("doll", {"orbit": "sparse", "sparse_views": 10}, "xray", {}),
    # As a phone and a real scanner give them: the object on a table in a room, no masks, SfM points; the
    # projections with Poisson noise (2e4 photons) and the detector's centre off the central ray
    "doll-table": ("doll", TABLE, None, {}),
    "box-table": ("box", TABLE, None, {}),
    "headsq-table": ("headsq", TABLE, None, {}),
    # The table rows' references: masks and clean projections on the same detector (the offset principal point
    # shrinks the focal length by 11 % so that the object stays on it: a coarser scan of the same object)
    "doll-offset": ("doll", {"detector_offset": TABLE["detector_offset"]}, None, {}),
    "box-offset": ("box", {"detector_offset": TABLE["detector_offset"]}, None, {}),
    "headsq-offset": ("headsq", {"detector_offset": TABLE["detector_offset"]}, None, {}),
    # The inside as a CT volume (ct.nii.gz in HU, its virtual scan standing in for projections): with masks, and
    # as a phone capture without them
    "headsq-ct": ("headsq", {"inside": "ct"}, None, {}),
    "bunny-ct": ("bunny", {"inside": "ct"}, None, {}),
    "headsq-ct-table": ("headsq", {"inside": "ct", "capture": "table"}, None, {}),
    "bunny-ct-table": ("bunny", {"inside": "ct", "capture": "table"}, None, {}),
    "bunny-ct-only": ("bunny", {"inside": "ct"}, "xray", {}),  # the CT alone, no photographs: what they cost or give
    # The head's photographs show its CT's -400 HU iso-surface (`insideout-synth from-ct --skin-hu`): the alignment's
    # surface level set to it, as a user who knows the level would
    "headsq-ct-skin": ("headsq", {"inside": "ct"}, None, {"alignment": AlignmentConfig(ct_surface_hu=-400.0)}),
    "headsq-ct-table-skin": ("headsq", {"inside": "ct", "capture": "table"}, None,
                             {"alignment": AlignmentConfig(ct_surface_hu=-400.0)}),
}
COLUMNS = ["psnr", "psnr_object", "ssim", "xray_psnr", "xray_ssim", "xray_psnr_clean", "volume_psnr", "volume_ssim", "alignment_rotation_deg",
           "alignment_translation_frac", "alignment_scale_rel", "wall_s", "peak_rss_mb"]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", nargs="*", default=list(ROWS), choices=list(ROWS))
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--phase1", type=int, default=None, help="steps before the alignment (default: the preset's)")
    ap.add_argument("--radiative-points", type=int, default=None,
                    help="radiative starting points (default: the preset's); rows are stored as ROW-<N/1000>k")
    ap.add_argument("--work", type=Path, default=Path("benchmarks/work"))
    ap.add_argument("--json", type=Path, default=Path("benchmarks/quality.json"))
    args = ap.parse_args()
    results = json.loads(args.json.read_text()) if args.json.exists() else {}
    tag = f"-{args.radiative_points // 1000}k" if args.radiative_points else ""
    for name in args.rows:
        kind, scene_kw, only, model_kw = ROWS[name]
        row = name + tag
        scene = make_scene(kind, args.work / "scenes", **scene_kw)
        if only is not None:
            scene = strip(scene, only, args.work / "scenes")
        if args.phase1 is not None:
            model_kw = {**model_kw, "phase1_steps": args.phase1}
        try:
            results[row] = train_and_eval(scene, args.work / "runs" / row, args.steps, args.radiative_points, **model_kw)
        except TrainingStopped as err:  # a failed alignment is a result too: recorded, and the next row runs
            results[row] = {"failed": str(err)}
        results[row]["steps"] = args.steps or insideout_lite_method.config.max_num_iterations
        results[row]["phase1_steps"] = model_kw.get("phase1_steps", "preset")
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=1))
    print("| row | " + " | ".join(COLUMNS) + " |")
    print("|---" * (len(COLUMNS) + 1) + "|")
    for row, m in results.items():
        print(f"| {row} | " + " | ".join(f"{m[c]:.3g}" if c in m else "–" for c in COLUMNS) + " |")
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
