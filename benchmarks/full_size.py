"""Memory and time of a full-size scene on the CPU: loading (the views, the starting data) and a few
training steps of `insideout-lite`, each with the process's peak resident memory. Prints one table
and writes JSON.

    python benchmarks/full_size.py                        # generates 100 x 1024^2 photographs + 180 x 512^2
                                                          # cone-beam projections of the doll (about 7 min), 20 steps
    python benchmarks/full_size.py --scene S --steps 20   # an existing scene
    python benchmarks/full_size.py --phase1 100           # 20 steps that stay in phase 1 (no alignment)
    python benchmarks/full_size.py --dicom                # a 512 x 512 x 300 DICOM CT series: its reading and virtual scan
"""

from __future__ import annotations

import argparse
import json
import resource
import time
from pathlib import Path

from insideout_ns.dataparsers.synth.generate import SceneOptions, generate_scene
from insideout_ns.dataparsers.synth.phantom import preset
from insideout_ns.method_configs import insideout_lite_method, scaled

HERE = Path(__file__).resolve().parent


def peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # Linux: KiB


def measure(scene: Path, out: Path, steps: int, phase1: int | None) -> dict:
    from nerfstudio.scripts.train import _set_random_seed

    config = scaled(insideout_lite_method, steps, phase1=phase1)
    config.data = config.pipeline.datamanager.data = scene
    config.output_dir, config.vis, config.machine.device_type = out, "tensorboard", "cpu"
    config.steps_per_eval_all_images = config.steps_per_eval_image = config.steps_per_save = 10**6
    config.set_timestamp()
    _set_random_seed(config.machine.seed)
    t0, rss0 = time.perf_counter(), peak_rss_gib()
    trainer = config.setup(local_rank=0, world_size=1)
    trainer.setup()
    t_load, rss_load = time.perf_counter() - t0, peak_rss_gib()
    dm = trainer.pipeline.datamanager
    t0 = time.perf_counter()
    trainer.train()
    t_train = time.perf_counter() - t0
    rgb, xray = dm.train_views["rgb"] + dm.eval_views["rgb"], dm.train_views["xray"] + dm.eval_views["xray"]
    return {
        "scene": str(scene),
        "photographs": [len(rgb), *rgb[0].batch["image"].shape[:2]] if rgb else [0, 0, 0],
        "projections": [len(xray), *xray[0].batch["xray"].shape[:2]] if xray else [0, 0, 0],
        "views_mib": sum(v.nbytes for v in rgb + xray) / 2**20,
        "peak_rss_before_gib": rss0,
        "load_s": t_load,
        "peak_rss_load_gib": rss_load,
        "steps": trainer.step + 1,
        "phase1_steps": config.pipeline.model.phase1_steps,
        "step_s": t_train / steps,
        "peak_rss_train_gib": peak_rss_gib(),
    }


def measure_dicom(folder: Path) -> dict:
    """A clinical-size DICOM CT series (512 x 512 x 300, written from the head CT scaled up, once): the time and the
    peak memory of reading it (ct_volume.read_ct_volume, in this fresh process) and of its virtual scan."""
    import numpy as np
    from scipy import ndimage

    from insideout_ns.dataparsers.ct_volume import read_ct_volume, virtual_scan, write_dicom_series

    if not folder.is_dir():
        head = read_ct_volume(HERE.parent / "data" / "ct" / "headsq.mha", values="hu", intercept=-1024)
        mu = ndimage.zoom(head.mu, np.array([512, 512, 300]) / np.array(head.mu.shape), order=1).astype(np.float32)
        write_dicom_series(folder, mu, head.spacing * np.array(head.mu.shape) / np.array(mu.shape), np.zeros(3), np.eye(3))
        del head, mu
    rss0, t0 = peak_rss_gib(), time.perf_counter()
    ct = read_ct_volume(folder)
    t_read, rss_read = time.perf_counter() - t0, peak_rss_gib()
    t0 = time.perf_counter()
    scan = virtual_scan(ct)
    return {"series": str(folder), "voxels": list(ct.mu.shape), "files": len(list(folder.iterdir())),
            "peak_rss_before_gib": rss0, "read_s": t_read, "peak_rss_read_gib": rss_read,
            "virtual_scan": list(scan.values.shape), "virtual_scan_s": time.perf_counter() - t0,
            "peak_rss_scan_gib": peak_rss_gib()}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dicom", action="store_true", help="measure a 512 x 512 x 300 DICOM series instead")
    ap.add_argument("--scene", type=Path, help="an existing scene (default: generate the full-size doll)")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--phase1", type=int, help="phase boundary (default: the preset's fraction of --steps, so that "
                    "the alignment runs; past --steps: photographs and projections only)")
    ap.add_argument("--work", type=Path, default=HERE / "work" / "full_size")
    ap.add_argument("--json", type=Path, default=HERE / "full_size.json")
    args = ap.parse_args()
    if args.dicom:
        r = measure_dicom(args.work / "dicom_512x512x300")
        print(f"{'voxels':>16} {'read s':>7} {'peak GiB':>9} {'virtual scan':>14} {'scan s':>7} {'peak GiB':>9}")
        print(f"{'x'.join(map(str, r['voxels'])):>16} {r['read_s']:>7.1f} {r['peak_rss_read_gib']:>9.2f} "
              f"{'x'.join(map(str, r['virtual_scan'])):>14} {r['virtual_scan_s']:>7.1f} {r['peak_rss_scan_gib']:>9.2f}")
        results = json.loads(args.json.read_text()) if args.json.is_file() else {}
        args.json.write_text(json.dumps({**results, "dicom": r}, indent=2))
        return
    scene = args.scene
    if scene is None:
        scene = args.work / "doll_100x1024_180x512"
        if not (scene / "transforms.json").is_file():
            generate_scene(preset("doll"), scene, SceneOptions(rgb_views=100, xray_views=180, rgb_res=1024, xray_res=512))
    r = measure(scene, args.work / "runs", args.steps, args.phase1)
    print(f"{'photographs':>18} {'projections':>16} {'views MiB':>10} {'load s':>7} {'peak load GiB':>14} "
          f"{'s / step':>9} {'peak train GiB':>15}")
    print(f"{'%d x %d x %d' % tuple(r['photographs']):>18} {'%d x %d x %d' % tuple(r['projections']):>16} "
          f"{r['views_mib']:>10.0f} {r['load_s']:>7.1f} {r['peak_rss_load_gib']:>14.2f} {r['step_s']:>9.2f} "
          f"{r['peak_rss_train_gib']:>15.2f}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    previous = json.loads(args.json.read_text()) if args.json.is_file() else {}
    args.json.write_text(json.dumps({**r, **({"dicom": previous["dicom"]} if "dicom" in previous else {})}, indent=2))


if __name__ == "__main__":
    main()
