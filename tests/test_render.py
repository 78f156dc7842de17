"""Rendering a trained model for users: `insideout-render` on camera files of the scene format, and
Nerfstudio's own `ns-render` with the X-ray output (displayable, grey)."""

import json

import imageio.v3 as iio
import numpy as np
import pytest
import torch

from insideout_ns.dataparsers.scene_format import SceneFormatError, read_xray_scan
from insideout_ns.losses import psnr
from insideout_ns.render import output_path, render_camera_file


def test_output_names_stay_inside_the_output_folder(tmp_path):
    assert output_path(tmp_path, "proj/0003.npy", ".npy") == tmp_path / "proj" / "0003.npy"
    assert output_path(tmp_path, "images/r_1.jpg", ".png") == tmp_path / "images" / "r_1.png"
    assert output_path(tmp_path, "../../etc/x.tif", ".npy") == tmp_path / "etc" / "x.npy"
    assert output_path(tmp_path, "/abs/y.png", ".png") == tmp_path / "abs" / "y.png"


@pytest.mark.slow
def test_xray_camera_file_gives_the_line_integrals_of_the_data(trained, tmp_path):
    """Every frame of xray/transforms.json (X-ray frame, as in the data) rendered through the model's
    alignment: named after the frames, equal to what the evaluation renders for the same views, and
    close to the measured projections."""
    scene, _, trainer, _ = trained
    model = trainer.pipeline.model
    written = render_camera_file(model, scene / "xray" / "transforms.json", tmp_path / "out")
    scan = read_xray_scan(scene / "xray" / "transforms.json")
    assert [p.relative_to(tmp_path / "out").with_suffix("").as_posix() for p in written] == \
        [n.rsplit(".", 1)[0] for n in scan.names]
    renders = np.stack([np.load(p) for p in written])
    assert renders.dtype == np.float32 and renders.shape == scan.values.shape
    dm = trainer.pipeline.datamanager
    for view in dm.eval_views["xray"]:
        name = dm.eval_dataparser_outputs.metadata["xray"].names[view.batch["index"]]
        cam = view.camera
        with torch.no_grad():
            expect = model.get_outputs_for_camera(cam)["xray_integral"][..., 0].cpu().numpy()
        np.testing.assert_allclose(renders[scan.names.index(name)], expect, rtol=1e-5, atol=1e-6)
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
    model.has_xray = False
    try:
        with pytest.raises(SceneFormatError, match="trained without X-rays"):
            render_camera_file(model, scene / "xray" / "transforms.json", tmp_path)
    finally:
        model.has_xray = True


@pytest.mark.slow
@pytest.mark.parametrize("output_format", ["images", "video"])
def test_ns_render_writes_rgb_and_xray(trained, tmp_path, output_format):
    """`ns-render interpolate --rendered-output-names rgb xray`: frames are RGB | X-ray side by side,
    the X-ray half grey and not empty."""
    import shutil

    from nerfstudio.scripts.render import RenderInterpolated

    if shutil.which("ffmpeg") is None:
        pytest.fail("ns-render needs ffmpeg on PATH (scripts/setup.sh installs Debian's)")
    _, config, _, _ = trained
    out = tmp_path / ("frames" if output_format == "images" else "orbit.mp4")
    RenderInterpolated(load_config=config.get_base_dir() / "config.yml", output_path=out,
                       rendered_output_names=["rgb", "xray"], interpolation_steps=2, frame_rate=4,
                       output_format=output_format, image_format="png").main()
    if output_format == "images":
        frames = [iio.imread(p) for p in sorted(out.glob("*.png"))]
    else:
        frames = list(iio.imiter(out, plugin="FFMPEG"))  # imageio-ffmpeg
    assert len(frames) >= 4
    for f in frames:
        f = f[..., :3].astype(float)
        rgb, xray = np.split(f, 2, axis=1)
        tol = 1 if output_format == "images" else 12  # video compression mixes the channels a little
        assert np.abs(xray - xray.mean(-1, keepdims=True)).max() <= tol, "the X-ray output is not grey"
        assert xray.max() > 40 and xray.std() > 3
        assert np.abs(rgb - rgb.mean(-1, keepdims=True)).mean() > 1, "the RGB output has no colour"

