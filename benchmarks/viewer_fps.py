"""How interactive the web viewer is: the time of one viewer frame (`get_outputs_for_camera` on a viewer
camera, which renders RGB and the X-ray) of a trained model, per modality and preview resolution.
Prints a table and writes JSON.

    python benchmarks/viewer_fps.py --load-config demo_out/runs/.../config.yml

Nerfstudio's viewer renders a moving camera at a lower resolution (it aims at a target frame rate) and
a still one at "Max res" (512 by default); the rows cover both.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--load-config", type=Path, required=True)
    ap.add_argument("--sizes", type=int, nargs="*", default=[128, 256, 512])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--json", type=Path, default=Path("benchmarks/viewer_fps.json"))
    args = ap.parse_args()

    from nerfstudio.utils.eval_utils import eval_setup

    from insideout_ns.videos import orbit_cameras

    _, pipeline, _, _ = eval_setup(args.load_config, test_mode="inference")
    model = pipeline.model
    model.eval()
    like = pipeline.datamanager.train_dataset.cameras
    rows = []
    for size in args.sizes:
        cams = orbit_cameras(model, like, n=args.repeats + 1)
        cams.rescale_output_resolution(size / float(cams.width[0]))
        for modality in ("RGB", "X-ray", "Cut-away"):
            model.controls.choose_modality.value = modality
            model.get_outputs_for_camera(cams[0:1])  # warm-up
            start = time.perf_counter()
            for i in range(1, args.repeats + 1):
                model.get_outputs_for_camera(cams[i : i + 1])
            ms = (time.perf_counter() - start) / args.repeats * 1000
            rows.append({"size": size, "modality": modality, "ms_per_frame": ms, "fps": 1000 / ms,
                         "gaussians": model.num_points, "threads": torch.get_num_threads()})
            print(f"{size:>5}px  {modality:<9} {ms:8.1f} ms  {1000 / ms:6.2f} fps")
    model.controls.choose_modality.value = "RGB"
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(rows, indent=1))
    print(f"{model.num_points} Gaussians, {torch.get_num_threads()} threads; wrote {args.json}")


if __name__ == "__main__":
    main()
