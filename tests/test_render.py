"""Rendering a trained model for users: `insideout-render` on camera files of the scene format, and
Nerfstudio's own `ns-render` with the X-ray output (displayable, grey)."""

import dataclasses
import json

import imageio.v3 as iio
import numpy as np
import pytest
import torch
from pictures import colourfulness

from insideout_ns.dataparsers.scene_format import SceneFormatError, read_xray_scan
from insideout_ns.kernels.xray import rasterize_xray
from insideout_ns.losses import psnr
from insideout_ns.transforms import transform_gaussians, viewmat_from_c2w
from insideout_ns.render import output_path, render_camera_file


def test_output_names_stay_inside_the_output_folder(tmp_path):
    assert output_path(tmp_path, "proj/0003.npy", ".npy") == tmp_path / "proj" / "0003.npy"
    assert output_path(tmp_path, "images/r_1.jpg", ".png") == tmp_path / "images" / "r_1.png"
    assert output_path(tmp_path, "../../etc/x.tif", ".npy") == tmp_path / "etc" / "x.npy"
    assert output_path(tmp_path, "/abs/y.png", ".png") == tmp_path / "abs" / "y.png"


@pytest.mark.slow
def test_xray_camera_file_gives_the_line_integrals_of_the_data(trained, tmp_path):
    """Every frame of xray/transforms.json (X-ray frame, as in the data) rendered through the model's
    alignment: named after the frames, equal to an independent render (the Gaussians moved back into the
    X-ray frame, the data's cameras as they are, the torch rasterizer), and close to the measured
    projections."""
    scene, _, trainer, _ = trained
    model = trainer.pipeline.model
    written = render_camera_file(model, scene / "xray" / "transforms.json", tmp_path / "out")
    scan = read_xray_scan(scene / "xray" / "transforms.json")
    assert [p.relative_to(tmp_path / "out").with_suffix("").as_posix() for p in written] == \
        [n.rsplit(".", 1)[0] for n in scan.names]
    renders = np.stack([np.load(p) for p in written])
    assert renders.dtype == np.float32 and renders.shape == scan.values.shape
    p = model.gaussians.params
    with torch.no_grad():  # the joint model's Gaussians, carried back into the X-ray frame
        gaussians = transform_gaussians(torch.linalg.inv(model.xray_to_rgb), p["means"], p["quats"],
                                        torch.exp(p["scales"]), torch.nn.functional.softplus(p["densities"]))
        for i in range(0, len(scan.names), 5):
            fx, fy, cx, cy = scan.intrinsics[i]
            K = torch.tensor([[fx, 0, cx], [0, fy, cy], [0, 0, 1]], dtype=torch.float32)
            viewmat = viewmat_from_c2w(torch.from_numpy(scan.camtoworlds[i][:3]).float())
            expect, _ = rasterize_xray(*gaussians, viewmat[None], K[None], renders.shape[2], renders.shape[1],
                                       scan.projection, backend="torch", cutoff=model.config.xray.cutoff)
            np.testing.assert_allclose(renders[i], expect[0, ..., 0].numpy(), rtol=1e-3, atol=1e-4 * float(expect.max()))
    peak = float(scan.values.max())
    quality = psnr(torch.from_numpy(renders), torch.from_numpy(scan.values), peak)
    assert quality > 25.0, quality  # a 240-step run; the lite preset's figure is in the README


@pytest.mark.slow
def test_rgb_camera_file_gives_rgba_pngs(trained, tmp_path):
    scene, _, trainer, _ = trained
    model = trainer.pipeline.model
    meta = json.loads((scene / "transforms.json").read_text())
    meta["frames"] = meta["frames"][:3]
    meta["frames"][0]["file_path"] = "novel/a.jpg"  # a camera file's images need not exist
    cams = tmp_path / "cams.json"
    cams.write_text(json.dumps(meta))
    written = render_camera_file(model, cams, tmp_path / "out")
    assert written[0] == tmp_path / "out" / "novel" / "a.png"
    for path, frame in zip(written, meta["frames"]):
        img = iio.imread(path)
        assert img.shape == (meta["h"], meta["w"], 4) and img.dtype == np.uint8
        alpha = img[..., 3]
        assert alpha[0, 0] < 30 and alpha.max() > 200  # empty corner, opaque object
        if frame["file_path"].startswith("images"):  # a training photograph: the mask agrees with alpha
            truth = iio.imread(scene / frame["file_path"])[..., 3]
            assert np.abs(alpha.astype(float) - truth).mean() < 25


@pytest.mark.slow
def test_xray_cameras_for_a_model_without_xrays_are_refused(trained, tmp_path):
    scene, _, trainer, _ = trained
    model = trainer.pipeline.model
    schedule = model.schedule
    model.schedule = dataclasses.replace(schedule, has_xray=False)
    try:
        with pytest.raises(SceneFormatError, match="trained without X-rays"):
            render_camera_file(model, scene / "xray" / "transforms.json", tmp_path)
    finally:
        model.schedule = schedule


def _check_rgb_and_xray(rgb: np.ndarray, xray: np.ndarray, tol: float) -> None:
    """An RGB picture with colour and a grey, non-empty X-ray picture (uint8 [H, W, 3])."""
    assert colourfulness(rgb) > 5, f"the RGB output has no colour ({colourfulness(rgb):.1f})"
    xray = xray[..., :3].astype(float)
    assert np.abs(xray - xray.mean(-1, keepdims=True)).max() <= tol, "the X-ray output is not grey"
    assert xray.max() > 40 and xray.std() > 3, "the X-ray output is empty"


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["interpolate-images", "interpolate-video", "camera-path", "dataset"])
def test_ns_render_writes_rgb_and_xray(trained, tmp_path, mode):
    """`ns-render ... --rendered-output-names rgb xray`: trajectories give frames with RGB | X-ray side by
    side (images or an H.264 video); `dataset` gives one folder per output. The X-ray is grey."""
    import shutil

    from nerfstudio.scripts.render import DatasetRender, RenderCameraPath, RenderInterpolated

    if shutil.which("ffmpeg") is None:
        pytest.fail("ns-render needs ffmpeg on PATH (scripts/setup.sh installs Debian's)")
    _, config, trainer, _ = trained
    load = config.get_base_dir() / "config.yml"
    names = ["rgb", "xray"]
    if mode == "dataset":
        DatasetRender(load_config=load, output_path=tmp_path, rendered_output_names=names, split="test").main()
        pairs = [(iio.imread(p), iio.imread(tmp_path / "test" / "xray" / p.name))
                 for p in sorted((tmp_path / "test" / "rgb").glob("*"))]
        assert len(pairs) == len(trainer.pipeline.datamanager.eval_dataset)
        for rgb, xray in pairs:
            _check_rgb_and_xray(rgb, xray, tol=12)  # JPEG files
        return
    video = mode.endswith("video")
    out = tmp_path / ("orbit.mp4" if video else "frames")
    common = dict(load_config=load, output_path=out, rendered_output_names=names, image_format="png",
                  output_format="video" if video else "images")
    if mode == "camera-path":
        cams = trainer.pipeline.datamanager.eval_dataset.cameras
        path = {"render_height": 40, "render_width": 48, "seconds": 1.0, "camera_type": "perspective",
                "camera_path": [{"camera_to_world": torch.cat([c, torch.tensor([[0.0, 0, 0, 1]])]).reshape(-1).tolist(),
                                 "fov": 40.0, "aspect": 1.2} for c in cams.camera_to_worlds[:4]]}
        (tmp_path / "path.json").write_text(json.dumps(path))
        RenderCameraPath(camera_path_filename=tmp_path / "path.json", **common).main()
    else:
        RenderInterpolated(interpolation_steps=2, frame_rate=4, **common).main()
    frames = list(iio.imiter(out, plugin="FFMPEG")) if video else [iio.imread(p) for p in sorted(out.glob("*.png"))]
    assert len(frames) >= 3
    for f in frames:
        rgb, xray = np.split(f, 2, axis=1)
        _check_rgb_and_xray(rgb, xray, tol=12 if video else 1)  # video compression mixes the channels a little
