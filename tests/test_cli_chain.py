"""The command line end to end, as a user types it, in one chain of subprocesses: `ns-train` (all three
phases), `ns-train --load-dir` (resume), `ns-eval`, `insideout-export volume | mesh | splat`,
`insideout-render` and `ns-render`; every export read back by an independent reader (nibabel, plyfile,
imageio), never by this project's own code."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import torch

from run_helpers import DEVICE

STEPS, RESUMED_AT, PHASE1 = 24, 16, 8


def cli(name: str, *args, timeout: int = 600) -> str:
    """Runs a console script of this environment (beside the interpreter, else on PATH); its stdout."""
    beside = Path(sys.executable).parent / name
    exe = str(beside) if beside.exists() else shutil.which(name)
    assert exe, f"no {name} beside the interpreter or on PATH"
    out = subprocess.run([exe, *map(str, args)], capture_output=True, encoding="utf-8", errors="replace", timeout=timeout,
                         env={**os.environ, "PYTHONUNBUFFERED": "1"})
    assert out.returncode == 0, f"{name} {' '.join(map(str, args))} failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
    return out.stdout


def checkpoint_params(run: Path) -> dict:
    """The Gaussians of the run's latest checkpoint, read with torch alone (name -> tensor)."""
    latest = sorted((run / "nerfstudio_models").glob("step-*.ckpt"))[-1]
    state = torch.load(latest, map_location="cpu", weights_only=False)["pipeline"]
    return {k.rsplit(".", 1)[-1]: v for k, v in state.items() if ".gaussians.params." in k}


@pytest.mark.slow
def test_train_resume_eval_export_and_render_from_the_command_line(scene_factory, tmp_path):
    import nibabel as nib
    from plyfile import PlyData

    scene = tmp_path / "scene"
    shutil.copytree(scene_factory("doll", rgb_views=8, xray_views=8), scene)
    truth = json.loads((scene / "ground_truth.json").read_text())
    (scene / "calibration.json").write_text(json.dumps({"xray_to_rgb": truth["xray_to_rgb"]}))  # the chain, not the estimate
    train = ["insideout-lite", "--data", scene, "--output-dir", tmp_path / "outputs", "--timestamp", "run",
             "--machine.device-type", DEVICE, "--vis", "tensorboard", "--steps-per-save", 8,
             "--pipeline.model.phase1-steps", PHASE1, "--pipeline.datamanager.num-rgb-points", 300,
             "--pipeline.datamanager.num-radiative-points", 300]
    cli("ns-train", *train, "--max-num-iterations", RESUMED_AT)
    run = next((tmp_path / "outputs").glob("*/insideout-lite/run"))
    config = run / "config.yml"
    assert sorted(p.name for p in (run / "nerfstudio_models").glob("*.ckpt"))[-1] == f"step-{RESUMED_AT - 1:09d}.ckpt"
    # resume: goes on from the checkpoint and ends at --max-num-iterations
    resumed = cli("ns-train", *train, "--max-num-iterations", STEPS, "--load-dir", run / "nerfstudio_models")
    assert f"step-{RESUMED_AT - 1:09d}.ckpt" in resumed.replace("\n", "")  # it loaded the checkpoint, not a fresh start
    assert sorted(p.name for p in (run / "nerfstudio_models").glob("*.ckpt"))[-1] == f"step-{STEPS - 1:09d}.ckpt"
    params = checkpoint_params(run)

    cli("ns-eval", "--load-config", config, "--output-path", tmp_path / "eval.json")
    metrics = json.loads((tmp_path / "eval.json").read_text())["results"]
    assert {"psnr", "xray_psnr", "volume_psnr"} <= set(metrics) and all(np.isfinite(v) for v in metrics.values())

    # the volume: NIfTI with the scene volume's grid (spacing and the first voxel's centre), .npy beside it
    cli("insideout-export", "volume", "--load-config", config, "--output", tmp_path / "vol.nii.gz")
    xray_meta = json.loads((scene / "xray" / "transforms.json").read_text())
    aabb = np.array(xray_meta["volume"]["aabb"], dtype=float)
    grid = np.load(scene / "xray" / xray_meta["volume"]["file_path"]).shape
    image = nib.load(str(tmp_path / "vol.nii.gz"))
    spacing = (aabb[1] - aabb[0]) / np.array(grid)
    assert image.shape == grid
    np.testing.assert_allclose(image.header.get_zooms()[:3], spacing, rtol=1e-5)
    np.testing.assert_allclose(image.affine[:3, :3], np.diag(spacing), atol=1e-6)
    np.testing.assert_allclose(image.affine[:3, 3], aabb[0] + spacing / 2, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(np.asarray(image.dataobj), np.load(tmp_path / "vol.npy"))
    assert float(np.asarray(image.dataobj).max()) > 0

    # the splat as 3DGS viewers read it: log scales, logit opacities, quaternions (w, x, y, z), SH channel-major
    cli("insideout-export", "splat", "--load-config", config, "--output", tmp_path / "model.ply")
    vertex = PlyData.read(str(tmp_path / "model.ply"))["vertex"]
    n = len(params["means"])
    assert vertex.count == n
    column = lambda *names: np.stack([np.asarray(vertex[k]) for k in names], axis=1)  # noqa: E731
    np.testing.assert_allclose(column("x", "y", "z"), params["means"].numpy(), rtol=1e-6)
    np.testing.assert_allclose(column("scale_0", "scale_1", "scale_2"), params["scales"].numpy(), rtol=1e-6)  # log
    np.testing.assert_allclose(np.asarray(vertex["opacity"]), params["opacities"].numpy(), rtol=1e-6)  # logit
    np.testing.assert_allclose(column("rot_0", "rot_1", "rot_2", "rot_3"), params["quats"].numpy(), rtol=1e-6)  # w first
    np.testing.assert_allclose(column("f_dc_0", "f_dc_1", "f_dc_2"), params["features_dc"].numpy(), rtol=1e-6)
    rest = params["features_rest"]  # [N, K, 3]: the file holds channel 0's K coefficients, then channel 1's, ...
    k = rest.shape[1]
    np.testing.assert_allclose(column(*(f"f_rest_{i}" for i in range(3 * k))).reshape(n, 3, k),
                               rest.permute(0, 2, 1).numpy(), rtol=1e-6)
    density = np.asarray(vertex["density"])
    assert (density >= 0).all() and density.max() > 0

    # the mesh: a closed-enough triangle surface inside the scene's box, in the RGB frame
    cli("insideout-export", "mesh", "--load-config", config, "--output", tmp_path / "surface.ply")
    mesh = PlyData.read(str(tmp_path / "surface.ply"))
    faces = np.stack(mesh["face"]["vertex_indices"])
    verts = np.stack([np.asarray(mesh["vertex"][k]) for k in "xyz"], axis=1)
    assert faces.shape[1] == 3 and len(faces) > 50 and faces.max() < len(verts)
    box = np.array(truth["aabb_rgb"])  # the object's box in the RGB frame: the mesh is round the object, of its size
    size = verts.max(0) - verts.min(0)
    assert np.abs(verts.mean(0) - box.mean(0)).max() < 0.2 * (box[1] - box[0]).max(), (verts.mean(0), box)
    assert ((size > 0.5 * (box[1] - box[0])) & (size < 2.0 * (box[1] - box[0]))).all(), (size, box)

    # insideout-render: the scan's own cameras give float line integrals named after its frames
    cli("insideout-render", "--load-config", config, "--cameras", scene / "xray" / "transforms.json",
        "--output-dir", tmp_path / "renders")
    first = np.load(tmp_path / "renders" / Path(xray_meta["frames"][0]["file_path"]).with_suffix(".npy"))
    measured = np.load(scene / "xray" / xray_meta["frames"][0]["file_path"])
    assert first.dtype == np.float32 and first.shape == measured.shape and first.max() > 0

    # ns-render: RGB beside the X-ray output along an interpolated path
    cli("ns-render", "interpolate", "--load-config", config, "--output-path", tmp_path / "frames",
        "--rendered-output-names", "rgb", "xray", "--output-format", "images", "--interpolation-steps", 1, "--pose-source", "train")
    frames = sorted((tmp_path / "frames").glob("*"))
    assert frames and iio.imread(frames[0]).ndim == 3
