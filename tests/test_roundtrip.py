"""Generator -> scene files -> dataparser: cameras and values come back exactly."""

import json

import numpy as np
import pytest
import torch

from insideout_ns.dataparsers.dataparser import InsideOutDataParserConfig
from insideout_ns.dataparsers.cameras import pixel_rays
from insideout_ns.dataparsers.synth.phantom import PRESETS, preset


def parse(path, split="train"):
    return InsideOutDataParserConfig(data=path).setup().get_dataparser_outputs(split)


def xray_truth(scene):
    meta = json.loads((scene / "xray" / "transforms.json").read_text())
    return meta, {fr["file_path"]: fr for fr in meta["frames"]}


@pytest.mark.parametrize("name", PRESETS)
@pytest.mark.parametrize("beam", ["cone", "parallel"])
def test_every_preset_loads_and_xray_cameras_reproduce_the_projections(scene_factory, name, beam):
    """Rays that nerfstudio itself generates from the parsed X-ray cameras, integrated through the
    analytic phantom, give back the stored projections: the geometry round-trips exactly."""
    scene = scene_factory(name, beam=beam)
    out = parse(scene)
    xr = out.metadata["xray"]
    assert len(out.image_filenames) == len(out.cameras) > 0
    assert xr.projection == beam and xr.projections.dtype == torch.float32
    meta, frames = xray_truth(scene)
    truth = json.loads((scene / "ground_truth.json").read_text())["xray_to_rgb"]
    S = np.linalg.inv(np.array(truth))  # the phantom is defined in the X-ray frame
    assert np.isfinite(S).all()
    ph = preset(name)
    for i in range(len(xr)):
        fr = frames[xr.names[i]]
        np.testing.assert_allclose(xr.cameras.camera_to_worlds[i].numpy(), np.array(fr["transform_matrix"])[:3], atol=1e-6)
        stored = np.load(scene / "xray" / xr.names[i])
        np.testing.assert_array_equal(xr.projections[i].numpy(), stored)
        rays = xr.cameras.generate_rays(camera_indices=i)
        o = rays.origins.reshape(-1, 3).double().numpy()
        d = rays.directions.reshape(-1, 3).double().numpy()
        recomputed = ph.line_integrals(o, d / np.linalg.norm(d, axis=-1, keepdims=True)).reshape(stored.shape)
        np.testing.assert_allclose(recomputed, stored, atol=2e-4 * stored.max(), rtol=0)


def test_pixel_rays_follow_the_format():
    """Cone: the ray of pixel (u, v) has camera direction ((u+.5-cx)/fx, -(v+.5-cy)/fy, -1). Parallel: it
    starts at ((u+.5-cx) sx, -(v+.5-cy) sy, 0) and runs along -Z."""
    c2w = np.eye(4)
    c2w[:3, 3] = [1.0, 2.0, 3.0]
    o, d = pixel_rays(c2w, (10.0, 20.0, 4.0, 3.0), 8, 6, "cone")
    expect = np.array([(2 + 0.5 - 4.0) / 10.0, -(5 + 0.5 - 3.0) / 20.0, -1.0])
    np.testing.assert_allclose(d[5, 2], expect / np.linalg.norm(expect))
    np.testing.assert_allclose(o[5, 2], [1.0, 2.0, 3.0])
    o, d = pixel_rays(c2w, (1 / 0.5, 1 / 0.25, 4.0, 3.0), 8, 6, "parallel")
    np.testing.assert_allclose(o[5, 2], [1.0 + (2.5 - 4.0) * 0.5, 2.0 - (5.5 - 3.0) * 0.25, 3.0])
    np.testing.assert_allclose(d[5, 2], [0.0, 0.0, -1.0])


def test_rgb_cameras_and_splits_round_trip(scene_factory):
    scene = scene_factory("fruit")
    meta = json.loads((scene / "transforms.json").read_text())
    train, val = parse(scene, "train"), parse(scene, "val")
    assert len(train.image_filenames) + len(val.image_filenames) == len(meta["frames"])
    assert [p.name for p in val.image_filenames] == [f.split("/")[-1] for f in meta["val_filenames"]]
    by_name = {fr["file_path"].split("/")[-1]: fr for fr in meta["frames"]}
    for i, p in enumerate(train.image_filenames):
        np.testing.assert_allclose(train.cameras.camera_to_worlds[i].numpy(), np.array(by_name[p.name]["transform_matrix"])[:3], atol=1e-6)
    assert float(train.cameras.fx[0]) == pytest.approx(meta["fl_x"])
    # the RGB frame is the file's frame: nerfstudio applied no re-orientation or re-scaling
    assert train.dataparser_scale == 1.0 and torch.allclose(train.dataparser_transform, torch.eye(4)[:3])
    # the scene box holds the object (whose true box the generator recorded)
    aabb = torch.tensor(json.loads((scene / "ground_truth.json").read_text())["aabb_rgb"])
    assert torch.all(train.scene_box.aabb[0] <= aabb[0]) and torch.all(train.scene_box.aabb[1] >= aabb[1])


def test_xray_splits_hold_out_every_eighth_frame(scene_factory):
    scene = scene_factory("doll")
    names_val = parse(scene, "val").metadata["xray"].names
    names_train = parse(scene, "train").metadata["xray"].names
    assert names_val == ["proj/0000.npy", "proj/0008.npy"]
    assert len(names_train) == 7 and not set(names_val) & set(names_train)


def test_ground_truth_volume_and_truth_files(scene_factory):
    scene = scene_factory("box")
    xr = parse(scene).metadata["xray"]
    assert xr.volume is not None and xr.volume.values.shape == (16, 16, 16)
    truth = json.loads((scene / "ground_truth.json").read_text())
    m = np.array(truth["xray_to_rgb"])
    s = np.cbrt(np.linalg.det(m[:3, :3]))
    np.testing.assert_allclose(m[:3, :3].T @ m[:3, :3], s * s * np.eye(3), atol=1e-9)
    assert not (scene / "calibration.json").exists()


def test_calibration_written_on_request_is_parsed(scene_factory):
    scene = scene_factory("doll", write_calibration=True)
    out = parse(scene)
    truth = np.array(json.loads((scene / "ground_truth.json").read_text())["xray_to_rgb"])
    np.testing.assert_allclose(out.metadata["xray_to_rgb"].numpy(), truth, rtol=1e-6, atol=1e-6)


def test_single_modality_scenes(scene_factory):
    xonly = parse(scene_factory("fruit", rgb_views=0))
    assert len(xonly.cameras) == 0 and len(xonly.metadata["xray"]) > 0
    vol = xonly.metadata["xray"].volume
    assert torch.all(xonly.scene_box.aabb[0] <= torch.tensor(vol.aabb[0], dtype=torch.float32))
    ronly = parse(scene_factory("fruit", xray_views=0))
    assert ronly.metadata["xray"] is None and len(ronly.cameras) > 0


def test_noise_options(scene_factory):
    clean = scene_factory("doll")
    noisy = scene_factory("doll", photons=2000.0, rgb_noise=0.05)
    a = np.load(clean / "xray/proj/0001.npy")
    b = np.load(noisy / "xray/proj/0001.npy")
    assert 0 < np.abs(a - b).mean() < 0.1
    # -ln(I / I0) as a detector gives it: in air about half the pixels count above the flat field
    air = a == 0
    assert 0.3 < (b[air] < 0).mean() < 0.6 and abs(float(b[air].mean())) < 3 / np.sqrt(2000.0)
    # Poisson: the variance of -ln(N / I0) is about exp(p) / I0
    inside = a > 0.05
    ratio = np.var(b[inside] - a[inside]) / np.mean(np.exp(a[inside]) / 2000.0)
    assert 0.6 < ratio < 1.6


def test_noisy_scan_keeps_its_truth_for_evaluation(scene_factory, tmp_path):
    """A simulated noisy scan writes its noise-free projections as ground truth (ground_truth.json's
    "xray_clean"), and the evaluation views carry them, binned as the scan is: the model's X-ray is scored
    against the truth, not against the noise alone."""
    import shutil

    from insideout_ns.dataparsers.scene_format import SceneFormatError
    from insideout_ns.datamanager import InsideOutDataManagerConfig

    clean, noisy = scene_factory("doll", xray_res=48), scene_factory("doll", xray_res=48, photons=2000.0)
    truth = json.loads((noisy / "ground_truth.json").read_text())["xray_clean"]
    frames = json.loads((noisy / "xray/transforms.json").read_text())["frames"]
    assert sorted(truth) == sorted(fr["file_path"] for fr in frames)
    for name, file in truth.items():  # the noise-free twin is the clean scene's projection, bit for bit
        np.testing.assert_array_equal(np.load(noisy / file), np.load(clean / "xray" / name))
    assert "xray_clean" not in json.loads((clean / "ground_truth.json").read_text())
    for binning in (1, 2):
        dm = InsideOutDataManagerConfig(dataparser=InsideOutDataParserConfig(data=noisy, xray_binning=binning)).setup(
            device="cpu", test_mode="val")
        xr = dm.eval_dataparser_outputs.metadata["xray"]
        for view in dm.eval_views["xray"]:
            name = xr.names[view.batch["index"]]
            full = np.load(noisy / truth[name])
            expect = full.reshape(24 if binning == 2 else 48, binning, -1, binning).mean(axis=(1, 3))
            assert view.batch["xray_clean"].shape == view.batch["xray"].shape == (48 // binning, 48 // binning, 1)
            np.testing.assert_allclose(view.batch["xray_clean"][..., 0].numpy(), expect, rtol=1e-5, atol=1e-6)
            assert not torch.equal(view.batch["xray_clean"], view.batch["xray"])  # the training target stays the noisy one
    broken = tmp_path / "broken"  # a truth file of another size: an error that names the file and the field
    shutil.copytree(noisy, broken)
    for file in truth.values():
        np.save(broken / file, np.zeros((5, 5), np.float32))
    with pytest.raises(SceneFormatError, match="xray_clean"):
        InsideOutDataManagerConfig(dataparser=InsideOutDataParserConfig(data=broken)).setup(device="cpu", test_mode="val")


def test_orbits(scene_factory):
    lim = parse(scene_factory("box", orbit="limited", arc_deg=90.0, xray_views=9), "train").metadata["xray"]
    pos = lim.cameras.camera_to_worlds[:, :3, 3].numpy()
    ang = np.degrees(np.arctan2(pos[:, 1], pos[:, 0]))
    assert ang.max() - ang.min() <= 90.0 + 1e-6
    sparse = scene_factory("box", orbit="sparse", sparse_views=5)
    assert len(json.loads((sparse / "xray/transforms.json").read_text())["frames"]) == 5
