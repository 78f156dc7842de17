"""Readers of public layouts: TomoPy Data Exchange (the real tooth scan) and R2-Gaussian."""

import json

import h5py
import numpy as np
import pytest

from insideout_ns.dataparsers.dataparser import InsideOutDataParserConfig
from insideout_ns.dataparsers.readers import read_dxchange, read_r2gaussian
from insideout_ns.dataparsers.scene_format import SceneFormatError, read_xray_scan
from insideout_ns.dataparsers.scene_writer import write_scene
from insideout_ns.dataparsers.cameras import pixel_rays
from insideout_ns.dataparsers.synth.phantom import preset

from conftest import data_file


def test_tooth_flat_dark_correction():
    path = data_file("xray/tooth.h5")
    scan = read_dxchange(path)
    with h5py.File(path) as f:
        data, white, dark = (np.asarray(f[f"exchange/{k}"], np.float64) for k in ("data", "data_white", "data_dark"))
    assert scan.projection == "parallel" and scan.values.shape == (181, 2, 640)
    t = (data[17, 1, 300] - dark[:, 1, 300].mean()) / (white[:, 1, 300].mean() - dark[:, 1, 300].mean())
    assert scan.values[17, 1, 300] == pytest.approx(-np.log(t), rel=1e-5)
    assert np.isfinite(scan.values).all()
    # air counts above the flat field stay as measured: slightly negative line integrals, not clipped to 0
    trans = (data - dark.mean(0)) / (white.mean(0) - dark.mean(0))
    assert (scan.values < 0).sum() == (trans > 1).sum() > 0
    assert scan.values.min() == pytest.approx(-np.log(trans.max()), rel=1e-5)
    # a tooth absorbs: the middle of the detector sees far more than its edges
    assert scan.values[:, :, 280:360].mean() > 5 * scan.values[:, :, :20].mean()
    # angles in degrees become poses on a half circle about z
    pos = scan.camtoworlds[:, :3, 3]
    ang = np.degrees(np.arctan2(pos[:, 1], pos[:, 0]))
    assert ang[0] == pytest.approx(0.0, abs=1e-9) and ang[-1] == pytest.approx(179.0055, abs=1e-3)


def test_tooth_through_the_dataparser_and_as_a_scene(tmp_path):
    out = InsideOutDataParserConfig(data=data_file("xray/tooth.h5")).setup().get_dataparser_outputs("train")
    assert len(out.cameras) == 0 and out.metadata["xray"].projections.shape[1:] == (2, 640)
    scene = write_scene(tmp_path / "tooth", None, read_dxchange(data_file("xray/tooth.h5")))
    again = read_xray_scan(scene / "xray/transforms.json")
    np.testing.assert_array_equal(again.values, read_dxchange(data_file("xray/tooth.h5")).values)


def test_dxchange_missing_dataset(tmp_path):
    path = tmp_path / "bad.h5"
    with h5py.File(path, "w") as f:
        f["exchange/data"] = np.ones((3, 2, 4), np.float32)
    with pytest.raises(SceneFormatError, match="exchange/data_white"):
        read_dxchange(path)


def r2_pose_from_their_rotations(dso, angle):
    """R2-Gaussian's documented pose: rotate -90 deg about x, then 90 deg about z, then `angle` about z
    (fixed axes), source at (DSO cos, DSO sin, 0); an OpenCV camera (looks along +z, y down)."""
    def rx(a):
        return np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])

    def rz(a):
        return np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])

    m = np.eye(4)
    m[:3, :3] = rz(angle) @ rz(np.pi / 2) @ rx(-np.pi / 2)
    m[:3, 3] = [dso * np.cos(angle), dso * np.sin(angle), 0.0]
    return m @ np.diag([1.0, -1.0, -1.0, 1.0])  # OpenCV -> OpenGL axes


def make_r2_scene(root, mode="cone", off_detector=(0.0, 0.0)):
    """An R2-Gaussian folder whose projections are the analytic phantom's, made with R2-Gaussian's poses."""
    ph = preset("fruit")
    n_vu, s_vu = [20, 30], [120.0, 180.0]
    dso, dsd = 200.0, 300.0
    (root / "proj_train").mkdir(parents=True)
    (root / "proj_test").mkdir()
    meta = {"scanner": {"mode": mode, "DSD": dsd, "DSO": dso, "nDetector": n_vu, "sDetector": s_vu,
                        "offOrigin": [0, 0, 0], "offDetector": list(off_detector), "nVoxel": [8, 8, 8], "sVoxel": [80.0] * 3},
            "vol": "vol_gt.npy", "proj_train": [], "proj_test": []}
    du, dv = s_vu[1] / n_vu[1], s_vu[0] / n_vu[0]
    for split, angles in (("train", [0.0, 0.7, 2.0]), ("test", [3.5])):
        for i, a in enumerate(angles):
            c2w = r2_pose_from_their_rotations(dso, a)
            cx = n_vu[1] / 2 - off_detector[1] / du
            cy = n_vu[0] / 2 - off_detector[0] / dv
            intr = (dsd / du, dsd / dv, cx, cy) if mode == "cone" else (1 / du, 1 / dv, cx, cy)
            o, d = pixel_rays(c2w, intr, n_vu[1], n_vu[0], mode)
            proj = ph.line_integrals(o.reshape(-1, 3), d.reshape(-1, 3)).reshape(n_vu).astype(np.float32)
            name = f"proj_{split}/{i:04d}.npy"
            np.save(root / name, proj)
            meta[f"proj_{split}"].append({"file_path": name, "angle": a})
    np.save(root / "vol_gt.npy", np.zeros((8, 8, 8), np.float32))
    (root / "meta_data.json").write_text(json.dumps(meta))
    return ph


@pytest.mark.parametrize("mode", ["cone", "parallel"])
def test_r2gaussian_poses_match_their_convention(tmp_path, mode):
    make_r2_scene(tmp_path, mode, off_detector=(6.0, -9.0))
    scan = read_r2gaussian(tmp_path)
    assert scan.values.shape == (4, 20, 30) and scan.width == 30 and scan.height == 20
    assert list(scan.splits["train"]) == [0, 1, 2] and list(scan.splits["test"]) == [3]
    for c2w, a in zip(scan.camtoworlds, [0.0, 0.7, 2.0, 3.5]):
        np.testing.assert_allclose(c2w, r2_pose_from_their_rotations(200.0, a), atol=1e-12)
    np.testing.assert_allclose(scan.intrinsics[0, 2:], [15 + 9.0 / 6.0, 10 - 6.0 / 6.0])
    np.testing.assert_allclose(scan.volume.aabb, [[-40.0] * 3, [40.0] * 3])


def test_r2gaussian_scene_through_dataparser(tmp_path):
    make_r2_scene(tmp_path)
    out = InsideOutDataParserConfig(data=tmp_path).setup().get_dataparser_outputs("val")
    assert out.metadata["xray"].names == ["proj_test/0000.npy"]
