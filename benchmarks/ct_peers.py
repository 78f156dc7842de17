"""The inside against classical CT on the same projections (issue: "the inside as good as a CT").

A real CT of the repository (data/ct: headsq, the bunny) is scanned by a parallel beam about z: N views over 180 degrees, a
detector whose rows are the CT grid's z slices and whose columns have the grid's x spacing, optionally
with Poisson noise. Every method reconstructs the same (all) projections on the CT's grid and is scored
against it (PSNR with the truth's peak, 3D SSIM: R2-Gaussian's protocol):

- ASTRA Toolbox (CPU, 2D, each detector row a slice): FBP (Ram-Lak), SIRT (200 iterations, >= 0), CGLS
  (50 iterations); parallel beam only (ASTRA's cone-beam algorithms need its CUDA build);
- our own FBP in torch (insideout_ns.fbp, the radiative population's start), FDK on a cone beam
  (`--beam cone`: a full circle, source at 4 object radii, a square detector of `--cone-res` px);
- `insideout-lite` on the X-rays alone, its volume as voxel averages (2 x 2 x 2 samples per voxel);
- `insideout-lite` on the paired scene (the same scan plus photographs of the CT's skin).

    pip install astra-toolbox                             # the benchmark extra: pip install -e ".[bench]"
    python benchmarks/ct_peers.py                          # headsq at 60 and 20 views
    python benchmarks/ct_peers.py --cts headsq bunny --views 60 20 10 --photons 1e5
    python benchmarks/ct_peers.py --methods astra fbp      # classical rows only (seconds)
    python benchmarks/ct_peers.py --beam cone --methods fbp xray-only   # FDK and ours on a cone beam

Prints one table and writes benchmarks/ct_peers.json (and central slices, --figures).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from insideout_ns.dataparsers.scene_format import XrayScan  # noqa: E402
from insideout_ns.dataparsers.cameras import circular_orbit, pixel_rays  # noqa: E402
from insideout_ns.dataparsers.synth.from_ct import CtObject  # noqa: E402
from insideout_ns.dataparsers.synth.generate import (SceneOptions, _chunked, bounding_radius, generate_scene,  # noqa: E402
                                                     scan_xray)
from insideout_ns.dataparsers.ct_volume import ct_to_attenuation, read_ct  # noqa: E402
from insideout_ns.losses import psnr, ssim_metric  # noqa: E402

CT_DIR = Path(__file__).resolve().parents[1] / "data" / "ct"  # the repository's real CTs (data/README.md)
CTS = {"headsq": (CT_DIR / "headsq.mha", {}), "bunny": (CT_DIR / "bunny_ct_128.npy.gz", {"axis_order": "zyx", "spacing": (1.35,) * 3})}
METHODS = ("astra", "fbp", "xray-only", "joint")


def load_ct(name: str, max_side: int, air_hu: float = -900.0) -> CtObject:
    """The CT as attenuation (1/mm), block-averaged in x and y to at most `max_side` voxels a side; voxels below
    `air_hu` are air (attenuation 0)."""
    path, kw = CTS[name]
    values, spacing = read_ct(path, kw.get("spacing"), kw.get("axis_order", "xyz"))
    mu = ct_to_attenuation(values, air_hu=air_hu)
    f = int(np.ceil(max(mu.shape[0], mu.shape[1]) / max_side))
    if f > 1:
        nx, ny = (mu.shape[0] // f) * f, (mu.shape[1] // f) * f
        mu = mu[:nx, :ny].reshape(nx // f, f, ny // f, f, -1).mean(axis=(1, 3))
        spacing = np.array([spacing[0] * f, spacing[1] * f, spacing[2]])
    return CtObject.centred(mu, np.asarray(spacing, dtype=np.float64), iso=0.02 * (1.0 - 0.4))


def every_view_trains(views: int) -> dict:
    """The splits of a benchmark scan: every view trains (the classical methods use them all), the first evaluates."""
    every = np.arange(views)
    return {"train": every, "val": every[:1], "test": every[:1]}


def parallel_scan(obj: CtObject, views: int, photons: float | None, seed: int = 0) -> XrayScan:
    """N views over 180 degrees; detector rows = the grid's z slices, columns at the grid's x spacing
    covering its diagonal, centred on the rotation axis (the z axis through the grid's centre)."""
    vol = obj.volume()
    nx, ny, nz = vol.values.shape
    dx, dz = float(vol.spacing[0]), float(vol.spacing[2])
    width = int(np.ceil(np.hypot(nx * vol.spacing[0], ny * vol.spacing[1]) / dx)) + 2
    radius = bounding_radius(vol.aabb)
    c2ws = circular_orbit(views, 2.0 * radius, arc_deg=180.0 * (views - 1) / views)
    intr = np.array([1.0 / dx, 1.0 / dz, width / 2.0, nz / 2.0])
    values = np.empty((views, nz, width), np.float32)
    for i, c2w in enumerate(c2ws):
        o, d = pixel_rays(c2w, intr, width, nz, "parallel")
        values[i] = _chunked(obj.line_integrals, o.reshape(-1, 3), d.reshape(-1, 3)).reshape(nz, width)
    if photons is not None:
        counts = np.random.default_rng(seed).poisson(photons * np.exp(-values.astype(np.float64)))
        values = (-np.log(np.maximum(counts, 1) / photons)).astype(np.float32)
    return XrayScan("parallel", width, nz, np.tile(intr, (views, 1)), c2ws, values, [f"{i:04d}" for i in range(views)],
                    every_view_trains(views), vol)


def cone_scan(obj: CtObject, views: int, photons: float | None, res: int, seed: int = 0) -> XrayScan:
    """N cone-beam views over a full circle about z (the scene generator's scanner: source at 4 radii of the
    grid's bounding ball, a res x res detector that holds the whole object)."""
    opts = SceneOptions(rgb_views=0, xray_views=views, xray_res=res, beam="cone", photons=photons)
    scan = scan_xray(obj, opts, bounding_radius(obj.volume().aabb), np.random.default_rng(seed))
    scan.splits = every_view_trains(views)
    return scan


def astra_reconstructions(scan: XrayScan, shape, spacing, iterations=(200, 50), algorithms=("FBP", "SIRT", "CGLS"),
                          mask: np.ndarray | None = None) -> dict:
    """ASTRA's FBP, SIRT and CGLS of every detector row as a 2D slice; volumes [nx, ny, nz] and seconds. A `mask`
    [nx, ny, nz] (bool) restricts the iterative ones to its voxels (ASTRA's ReconstructionMaskId)."""
    import astra

    nx, ny, nz = shape
    vg = astra.create_vol_geom(ny, nx, -nx * spacing[0] / 2, nx * spacing[0] / 2, -ny * spacing[1] / 2, ny * spacing[1] / 2)
    u_axis = scan.camtoworlds[:, :3, 0]  # the detector's columns run along the camera's +x
    angles = np.arctan2(u_axis[:, 1], u_axis[:, 0])  # ASTRA: detector u = (cos a, sin a), through the axis
    pg = astra.create_proj_geom("parallel", 1.0 / scan.intrinsics[0, 0], scan.width, angles)
    projector = astra.create_projector("linear", pg, vg)
    out = {}
    for alg, its, extra in (("FBP", 1, {"FilterType": "ram-lak"}), ("SIRT", iterations[0], {"MinConstraint": 0.0}),
                            ("CGLS", iterations[1], {})):
        if alg not in algorithms:
            continue
        start = time.perf_counter()
        vol = np.zeros(shape, np.float32)
        for v in range(nz):  # detector row v is the slice k = nz - 1 - v (rows go down, z up)
            sid = astra.data2d.create("-sino", pg, scan.values[:, v, :])
            rid = astra.data2d.create("-vol", vg)
            ids, option = [sid, rid], dict(extra)
            if mask is not None and alg != "FBP":  # ASTRA's image layout: rows run down in y
                ids.append(astra.data2d.create("-vol", vg, mask[:, :, nz - 1 - v].T[::-1, :].astype(np.float32)))
                option["ReconstructionMaskId"] = ids[-1]
            cfg = astra.astra_dict(alg)
            cfg.update(ProjectorId=projector, ProjectionDataId=sid, ReconstructionDataId=rid, option=option)
            aid = astra.algorithm.create(cfg)
            astra.algorithm.run(aid, its)
            vol[:, :, nz - 1 - v] = astra.data2d.get(rid)[::-1, :].T  # ASTRA rows run down in y
            astra.algorithm.delete(aid)
            astra.data2d.delete(ids)
        out[f"astra-{alg.lower()}"] = (vol, time.perf_counter() - start)
    astra.projector.delete(projector)
    return out


def our_fbp(scene: Path, shape) -> tuple:
    from insideout_ns.dataparsers.dataparser import InsideOutDataParserConfig
    from insideout_ns.fbp import filtered_backprojection

    xr = InsideOutDataParserConfig(data=scene).setup().get_dataparser_outputs("train").metadata["xray"]
    start = time.perf_counter()
    vol = filtered_backprojection(xr.cameras, xr.projections, torch.tensor(xr.volume.aabb, dtype=torch.float32), shape,
                                  parallel=xr.projection == "parallel")
    return vol.numpy(), time.perf_counter() - start


def trained_volume(scene: Path, out: Path, steps: int | None, radiative_points: int | None = None,
                   xray_views_per_step: int | None = None) -> tuple:
    from nerfstudio.scripts.train import main as ns_train
    from nerfstudio.utils.eval_utils import eval_setup

    from insideout_ns.method_configs import insideout_lite_method, scaled

    config = scaled(insideout_lite_method, steps, radiative_points=radiative_points)
    config.data, config.output_dir = scene, out
    config.pipeline.datamanager.xray_views_per_step = xray_views_per_step
    config.machine.device_type = "cpu"
    config.vis = "tensorboard"
    config.steps_per_eval_all_images = 10**9
    config.set_timestamp()
    start = time.perf_counter()
    ns_train(config)
    wall = time.perf_counter() - start
    _, pipeline, _, _ = eval_setup(config.get_base_dir() / "config.yml", test_mode="val")
    model = pipeline.model
    gt = model.gt_volume
    with torch.no_grad():
        vol = model.volume_in_xray_frame(shape=gt.values.shape, aabb=torch.tensor(gt.aabb, dtype=torch.float32))
    return vol.cpu().numpy(), wall


def slices_figure(path: Path, truth: np.ndarray, recs: dict, case: str) -> None:
    """The central axial slice of the truth and of every reconstruction, one row, on the truth's scale."""
    from insideout_ns.figures import _grid

    k, peak = truth.shape[2] // 2, float(truth.max())
    names = ["truth"] + list(recs)
    images = [truth[:, :, k].T[::-1] / peak] + [np.asarray(v)[:, :, k].T[::-1] / peak for v, _ in recs.values()]
    _grid(path / f"ct_peers_{case}.png", [images], [[f"{case}: {n}" if i == 0 else n for i, n in enumerate(names)]])


def score(vol: np.ndarray, truth: np.ndarray) -> dict:
    t, v = torch.from_numpy(truth), torch.from_numpy(np.asarray(vol, dtype=np.float32))
    peak = float(t.max())
    return {"psnr": psnr(v, t, peak), "ssim": ssim_metric(v, t, peak)}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cts", nargs="*", default=["headsq"], choices=list(CTS))
    ap.add_argument("--views", nargs="*", type=int, default=[60, 20])
    ap.add_argument("--photons", type=float, default=None, help="Poisson noise (photons per pixel); default none")
    ap.add_argument("--beam", choices=("parallel", "cone"), default="parallel")
    ap.add_argument("--cone-res", type=int, default=96, help="the cone beam's detector, pixels a side")
    ap.add_argument("--methods", nargs="*", default=list(METHODS), choices=METHODS)
    ap.add_argument("--max-side", type=int, default=64, help="the CT grid's x and y size at most (block averages)")
    ap.add_argument("--steps", type=int, default=None, help="insideout-lite's steps (default: the preset's)")
    ap.add_argument("--radiative-points", type=int, default=None, help="radiative starting points (default: the preset's)")
    ap.add_argument("--xray-views-per-step", type=int, default=None, help="projections per X-ray step (default: the preset's)")
    ap.add_argument("--work", type=Path, default=Path("benchmarks/work/ct_peers"))
    ap.add_argument("--json", type=Path, default=Path("benchmarks/ct_peers.json"))
    ap.add_argument("--figures", type=Path, default=None, help="folder for central slices side by side")
    args = ap.parse_args()
    results = json.loads(args.json.read_text()) if args.json.exists() else {}
    for ct in args.cts:
        obj = load_ct(ct, args.max_side)
        truth = obj.volume().values
        for views in args.views:
            case = f"{ct}-{views}v" + (f"-{args.photons:g}ph" if args.photons else "") + ("-cone" if args.beam == "cone" else "")
            scan = parallel_scan(obj, views, args.photons) if args.beam == "parallel" else cone_scan(obj, views, args.photons,
                                                                                                    args.cone_res)
            xray_scene = args.work / "scenes" / case
            if not (xray_scene / "xray" / "transforms.json").exists():
                generate_scene(obj, xray_scene, SceneOptions(rgb_views=0, xray_views=views), scan=scan)
            rows = results.setdefault(case, {})
            recs = {}
            tag = f"-{args.radiative_points // 1000}k" if args.radiative_points else ""  # rows of another budget
            tag += f"-{args.xray_views_per_step}views" if args.xray_views_per_step else ""
            if "astra" in args.methods and args.beam == "cone":
                print(f"{case}: no ASTRA rows (its CPU build reconstructs parallel and fan beams in 2D only)")
            elif "astra" in args.methods:
                recs.update(astra_reconstructions(scan, truth.shape, obj.volume().spacing))
            if "fbp" in args.methods:
                recs["ours-fbp"] = our_fbp(xray_scene, truth.shape)
            if "xray-only" in args.methods:
                recs[f"insideout-xray-only{tag}"] = trained_volume(xray_scene, args.work / "runs" / case, args.steps,
                                                                   args.radiative_points, args.xray_views_per_step)
            if "joint" in args.methods:
                paired = args.work / "scenes" / f"{case}-paired"
                if not (paired / "transforms.json").exists():
                    generate_scene(obj, paired, SceneOptions(rgb_views=48, xray_views=views, rgb_res=96, seed=7), scan=scan)
                recs[f"insideout-joint{tag}"] = trained_volume(paired, args.work / "runs" / f"{case}-paired", args.steps,
                                                            args.radiative_points, args.xray_views_per_step)
            (args.work / "volumes").mkdir(parents=True, exist_ok=True)
            for name, (vol, seconds) in recs.items():
                rows[name] = {**score(vol, truth), "seconds": seconds}
                np.save(args.work / "volumes" / f"{case}-{name}.npy", vol.astype(np.float32))
            if args.figures:
                args.figures.mkdir(parents=True, exist_ok=True)
                saved = {n: (np.load(args.work / "volumes" / f"{case}-{n}.npy"), 0.0) for n in rows
                         if (args.work / "volumes" / f"{case}-{n}.npy").exists()}
                slices_figure(args.figures, truth, saved, case)
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(results, indent=1))
    print("| case | method | PSNR dB | SSIM | seconds |\n|---|---|---|---|---|")
    for case, rows in results.items():
        for name, m in rows.items():
            print(f"| {case} | {name} | {m['psnr']:.2f} | {m['ssim']:.3f} | {m['seconds']:.1f} |")
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
