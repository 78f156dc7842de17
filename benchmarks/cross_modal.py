"""What each modality gives the other: X-ray only, RGB only and joint on the same data, in one table.

A case is an object (a real CT of data/ct, or a phantom), a scan (parallel or cone beam; N views over the full
orbit, or over a 120-degree arc) and a number of photographs (48, 12 or 6, with masks). Every case holds out the
same 8 photographs and 8 projections (at angles between the training ones) for evaluation. Methods:

- `xray-only`, `rgb-only`, `joint` (`insideout-lite`; the joint's alignment estimated, as users get it),
  `joint-calibrated` (the true alignment given as calibration.json), `xray-only-equal-time` (X-ray only, its steps
  scaled to the joint's wall time when the joint took longer);
- `sirt` (ASTRA, 200 iterations, >= 0) and `sirt-hull` (the same, given the photographed visual hull, carried
  by the true alignment and dilated by the joint model's margin, as its reconstruction mask: the classical way to
  use the photographs), parallel beams only.

Scores: the volume against the CT's (or the phantom's) grid, PSNR / SSIM; held-out X-ray PSNR; held-out RGB PSNR
(whole image and the object's pixels); the alignment's error; wall time.

    pip install -e ".[bench]"                                    # astra-toolbox, for the sirt rows
    python benchmarks/cross_modal.py --cases headsq-p20 --methods xray-only joint sirt sirt-hull
    python benchmarks/cross_modal.py                             # every case and method (hours on 2 cores)

Writes benchmarks/cross_modal.json (rows are kept across runs) and prints the table.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from ct_peers import astra_reconstructions, load_ct, score  # noqa: E402
from quality import strip, train_and_eval  # noqa: E402

from insideout_ns.dataparsers.scene_format import XrayScan  # noqa: E402
from insideout_ns.dataparsers.cameras import circular_orbit, pixel_rays  # noqa: E402
from insideout_ns.dataparsers.synth.generate import SceneOptions, _chunked, bounding_radius, generate_scene  # noqa: E402
from insideout_ns.dataparsers.synth.phantom import preset  # noqa: E402

HELD_OUT = 8  # photographs and projections kept for evaluation in every case
PHOTOGRAPHS = 48  # the densest photograph setting; fewer are evenly spread among these


@dataclass(frozen=True)
class Case:
    obj: str  # "headsq", "bunny" (data/ct) or a phantom preset
    beam: str  # "parallel" or "cone"
    views: int  # training projections
    arc: float = 0.0  # degrees of a limited orbit (0: the full orbit)
    photographs: int = PHOTOGRAPHS


CASES = {
    "headsq-p60": Case("headsq", "parallel", 60),
    "headsq-p20": Case("headsq", "parallel", 20),
    "headsq-p10": Case("headsq", "parallel", 10),
    "headsq-p20-arc120": Case("headsq", "parallel", 20, arc=120.0),
    "headsq-c20": Case("headsq", "cone", 20),
    "bunny-p20": Case("bunny", "parallel", 20),
    "doll-c20": Case("doll", "cone", 20),
    "headsq-p20-rgb12": Case("headsq", "parallel", 20, photographs=12),
    "headsq-p20-rgb6": Case("headsq", "parallel", 20, photographs=6),
    "doll-c20-rgb12": Case("doll", "cone", 20, photographs=12),
    "doll-c20-rgb6": Case("doll", "cone", 20, photographs=6),
}
METHODS = ("xray-only", "rgb-only", "joint", "joint-calibrated", "xray-only-equal-time", "sirt", "sirt-hull")


AIR_HU = -500.0  # a CT's voxels below this are air: headsq's air reads about -875 HU everywhere (a scanner offset,
# 0.0025 / mm), which no photograph sees and which, kept, would make every photographed bound wrong by construction


def scannable(case: Case):
    """The object: a real CT (block-averaged to 64 voxels a side, as benchmarks/ct_peers.py; its air set to 0)
    or a phantom."""
    if case.obj in ("headsq", "bunny"):
        return load_ct(case.obj, 64, air_hu=AIR_HU)
    obj = preset(case.obj)
    obj.volume_res = 64
    return obj


def scan(obj, case: Case) -> XrayScan:
    """Training views on the orbit, then HELD_OUT views between them (half a step on, over the whole orbit).
    Parallel: ct_peers' detector (rows = the grid's z slices), the orbit over 180 degrees; cone: the generator's
    (96 px, source at 4 radii), over 360."""
    vol = obj.volume()
    radius = bounding_radius(vol.aabb if case.obj in ("headsq", "bunny") else obj.aabb())
    full = 180.0 if case.beam == "parallel" else 360.0
    arc = case.arc or full * (case.views - 1) / case.views
    step = arc / max(case.views - 1, 1)
    held_arc = full * (HELD_OUT - 1) / HELD_OUT
    if case.beam == "parallel":
        nx, ny, nz = vol.values.shape
        dx = float(vol.spacing[0])
        width, height = int(np.ceil(np.hypot(nx * vol.spacing[0], ny * vol.spacing[1]) / dx)) + 2, nz
        intr = np.array([1.0 / dx, 1.0 / float(vol.spacing[2]), width / 2.0, nz / 2.0])
        distance = 2.0 * radius
    else:
        width = height = 96
        distance = 4.0 * radius
        f = 0.5 * width / np.tan(np.arcsin(1.1 * radius / distance))
        intr = np.array([f, f, width / 2.0, height / 2.0])
    c2ws = np.concatenate([circular_orbit(case.views, distance, arc),
                           circular_orbit(HELD_OUT, distance, held_arc, start_deg=step / 2)])
    values = np.empty((len(c2ws), height, width), np.float32)
    for i, c2w in enumerate(c2ws):
        o, d = pixel_rays(c2w, intr, width, height, case.beam)
        values[i] = _chunked(obj.line_integrals, o.reshape(-1, 3), d.reshape(-1, 3)).reshape(height, width)
    idx = np.arange(len(c2ws))
    splits = {"train": idx[: case.views], "val": idx[case.views :], "test": idx[case.views :]}
    return XrayScan(case.beam, width, height, np.tile(intr, (len(c2ws), 1)), c2ws, values,
                    [f"{i:04d}" for i in range(len(c2ws))], splits, vol)


def photograph_splits(scene: Path, count: int) -> None:
    """Every 7th photograph of the PHOTOGRAPHS + HELD_OUT is held out; `count` of the others, evenly spread, train."""
    meta_path = scene / "transforms.json"
    meta = json.loads(meta_path.read_text())
    names = [f["file_path"] for f in meta["frames"]]
    held = names[3::7][:HELD_OUT]
    rest = [n for n in names if n not in held]
    train = [rest[int(i)] for i in np.linspace(0, len(rest) - 1, count).round()]
    meta.update(train_filenames=train, val_filenames=held, test_filenames=held)
    meta_path.write_text(json.dumps(meta, indent=1))


def make_scene(name: str, case: Case, root: Path) -> Path:
    out = root / name
    if not (out / "ground_truth.json").exists():
        obj = scannable(case)
        opts = SceneOptions(rgb_views=PHOTOGRAPHS + HELD_OUT, xray_views=case.views, rgb_res=96, seed=7)
        generate_scene(obj, out, opts, scan=scan(obj, case))
        photograph_splits(out, case.photographs)
    return out


def calibrated(scene: Path) -> Path:
    out = scene.parent / f"{scene.name}-calibrated"
    if not out.exists():
        shutil.copytree(scene, out)
        truth = json.loads((out / "ground_truth.json").read_text())["xray_to_rgb"]
        (out / "calibration.json").write_text(json.dumps({"xray_to_rgb": truth}))
    return out


def sirt_rows(scene: Path, case: Case, with_hull: bool) -> dict:
    """ASTRA's SIRT on the training projections (parallel beam), optionally with the photographed hull as its mask."""
    from insideout_ns.dataparsers.dataparser import InsideOutDataParserConfig
    from insideout_ns.dataparsers.scene_format import read_ground_truth, read_xray_scan
    from insideout_ns.object_grid import MARGIN, dilated, hull_in_xray_frame

    whole = read_xray_scan(scene / "xray" / "transforms.json")
    keep = whole.splits["train"]
    train = XrayScan("parallel", whole.width, whole.height, whole.intrinsics[keep], whole.camtoworlds[keep],
                     whole.values[keep], [whole.names[i] for i in keep])
    vol = whole.volume
    mask = None
    if with_hull:
        import imageio.v3 as iio

        outputs = InsideOutDataParserConfig(data=scene).setup().get_dataparser_outputs("train")
        masks = [torch.from_numpy(iio.imread(f)[..., 3:4].copy()) for f in outputs.image_filenames]
        truth = torch.tensor(read_ground_truth(scene)["xray_to_rgb"], dtype=torch.float32)
        hull = hull_in_xray_frame(outputs.cameras, masks, False, truth, torch.tensor(vol.aabb, dtype=torch.float32),
                                  res=vol.values.shape)
        mask = dilated(hull, max(1, round(MARGIN * max(hull.shape)))).numpy()  # the joint model's margin
    start = time.perf_counter()
    rec = astra_reconstructions(train, vol.values.shape, vol.spacing, algorithms=("SIRT",), mask=mask)["astra-sirt"][0]
    return {**{f"volume_{k}": v for k, v in score(rec, vol.values).items()}, "wall_s": time.perf_counter() - start}


def run(name: str, method: str, root: Path, results: dict, steps: Optional[int]) -> dict:
    case = CASES[name]
    scene = make_scene(name, case, root / "scenes")
    runs = root / "runs" / name / method
    if method in ("sirt", "sirt-hull"):
        if case.beam != "parallel":
            return {"skipped": "ASTRA's CPU build reconstructs parallel beams only"}
        return sirt_rows(scene, case, method == "sirt-hull")
    if method == "xray-only-equal-time":
        joint, alone = results.get(name, {}).get("joint", {}), results.get(name, {}).get("xray-only", {})
        if "wall_s" not in joint or "wall_s" not in alone:
            return {"skipped": "needs the joint and xray-only rows first"}
        if joint["wall_s"] <= alone["wall_s"]:
            return {"skipped": "the joint took no longer than X-ray only"}
        from insideout_ns.method_configs import insideout_lite_method

        base = steps or insideout_lite_method.config.max_num_iterations
        steps = round(base * joint["wall_s"] / alone["wall_s"])
    alone = {"xray-only": "xray", "xray-only-equal-time": "xray", "rgb-only": "rgb"}.get(method)
    source = strip(scene, alone, scene.parent) if alone else calibrated(scene) if method == "joint-calibrated" else scene
    metrics = train_and_eval(source, runs, steps)
    metrics["steps"] = steps or "preset"
    return metrics


COLUMNS = [("volume_psnr", "volume PSNR"), ("volume_ssim", "SSIM"), ("xray_psnr", "X-ray"), ("psnr", "RGB"),
           ("psnr_object", "object"), ("alignment_rotation_deg", "deg"), ("alignment_scale_rel", "scale"),
           ("wall_s", "s")]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", nargs="*", default=list(CASES), choices=list(CASES))
    ap.add_argument("--methods", nargs="*", default=list(METHODS), choices=METHODS)
    ap.add_argument("--steps", type=int, default=None, help="training steps (default: the preset's)")
    ap.add_argument("--work", type=Path, default=Path("benchmarks/work/cross_modal"))
    ap.add_argument("--json", type=Path, default=Path("benchmarks/cross_modal.json"))
    args = ap.parse_args()
    results = json.loads(args.json.read_text()) if args.json.exists() else {}
    for name in args.cases:
        for method in args.methods:
            print(f"== {name}: {method}", flush=True)
            results.setdefault(name, {})[method] = run(name, method, args.work, results, args.steps)
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(results, indent=1))
    print("| case | method | " + " | ".join(label for _, label in COLUMNS) + " |")
    print("|---" * (len(COLUMNS) + 2) + "|")
    for name, rows in results.items():
        for method, m in rows.items():
            cells = [f"{m[k]:.3g}" if isinstance(m.get(k), (int, float)) else "–" for k, _ in COLUMNS]
            print(f"| {name} | {method} | " + " | ".join(cells) + " |")
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
