"""Every defect of a scene gives one clear error naming the file, the field and what was expected."""

import json
import shutil

import numpy as np
import pytest

from insideout_ns.dataparsers.dataparser import InsideOutDataParserConfig
from insideout_ns.dataparsers.scene_format import SceneFormatError, read_xray_scan


def edit_json(path, fn):
    meta = json.loads(path.read_text())
    fn(meta)
    path.write_text(json.dumps(meta))


def load(scene):
    return InsideOutDataParserConfig(data=scene).setup().get_dataparser_outputs("train")


def expect_error(scene, file_part, field, expected_part):
    with pytest.raises(SceneFormatError) as info:
        load(scene)
    err = info.value
    msg = str(err)
    assert file_part in err.path and err.field == field and expected_part in err.expected, msg
    assert msg.startswith(err.path) and f"'{field}'" in msg


def test_missing_projection_file(scene):
    (scene / "xray/proj/0003.npy").unlink()
    expect_error(scene, "xray/transforms.json", "frames[3].file_path", "existing projection file")


def test_missing_rgb_image(scene):
    (scene / "images/0002.png").unlink()
    expect_error(scene, "transforms.json", "frames[2].file_path", "existing image")


def test_wrong_projection_shape(scene):
    np.save(scene / "xray/proj/0002.npy", np.zeros((5, 7), np.float32))
    expect_error(scene, "xray/transforms.json", "frames[2].file_path", "shape [h, w] = [24, 24]")


def test_wrong_projection_dtype(scene):
    np.save(scene / "xray/proj/0002.npy", np.zeros((24, 24), np.float64))
    expect_error(scene, "xray/transforms.json", "frames[2].file_path", "float32")


def test_non_finite_line_integral(scene):
    arr = np.load(scene / "xray/proj/0001.npy")
    arr[3, 4] = np.nan
    np.save(scene / "xray/proj/0001.npy", arr)
    expect_error(scene, "xray/transforms.json", "frames[1].file_path", "finite values")


def test_measured_noise_is_data_a_sign_mistake_is_not(scene, caplog):
    """Negative line integrals and transmission above 1 (noise in air) load as they are, with one line in
    the log; a projection whose sign is flipped is refused with the file, the field and the reason."""
    arr = np.load(scene / "xray/proj/0001.npy")
    arr[0, :5] = -0.02
    np.save(scene / "xray/proj/0001.npy", arr)
    with caplog.at_level("WARNING"):
        values = load(scene).metadata["xray"].projections
    assert float(values.min()) == pytest.approx(-0.02) and (values < 0).sum() == 5  # not clipped
    assert sum("5 of" in r.getMessage() and "negative" in r.getMessage() for r in caplog.records) == 1
    np.save(scene / "xray/proj/0001.npy", -np.load(scene / "xray/proj/0002.npy"))
    expect_error(scene, "xray/transforms.json", "frames[1].file_path", "mostly >= 0")


def test_transmission_above_one_is_kept_and_at_or_below_zero_is_refused(scene):
    for i in range(9):
        p = scene / f"xray/proj/{i:04d}.npy"
        np.save(p, np.exp(-np.load(p)).astype(np.float32))
    edit_json(scene / "xray/transforms.json", lambda m: m.update(value="transmission"))
    load(scene)  # valid transmission loads
    arr = np.load(scene / "xray/proj/0004.npy")
    arr[1, 1] = 1.2
    np.save(scene / "xray/proj/0004.npy", arr)
    assert float(load(scene).metadata["xray"].projections.min()) == pytest.approx(-np.log(1.2), rel=1e-5)
    arr[1, 1] = 0.0
    np.save(scene / "xray/proj/0004.npy", arr)
    expect_error(scene, "xray/transforms.json", "frames[4].file_path", "> 0")


def test_transmission_is_converted_to_line_integrals(scene):
    ref = read_xray_scan(scene / "xray/transforms.json").values
    for i in range(9):
        p = scene / f"xray/proj/{i:04d}.npy"
        np.save(p, np.exp(-np.load(p).astype(np.float64)).astype(np.float32))
    edit_json(scene / "xray/transforms.json", lambda m: m.update(value="transmission"))
    np.testing.assert_allclose(read_xray_scan(scene / "xray/transforms.json").values, ref, atol=1e-5)


def test_singular_transform_matrix(scene):
    def zero(m):
        m["frames"][5]["transform_matrix"][0][:3] = [0.0, 0.0, 0.0]

    edit_json(scene / "xray/transforms.json", zero)
    expect_error(scene, "xray/transforms.json", "frames[5].transform_matrix", "invertible")


def test_transform_matrix_wrong_shape(scene):
    edit_json(scene / "transforms.json", lambda m: m["frames"][1].update(transform_matrix=[[1, 0, 0], [0, 1, 0]]))
    expect_error(scene, "transforms.json", "frames[1].transform_matrix", "4x4")


def test_missing_xray_intrinsic(scene):
    edit_json(scene / "xray/transforms.json", lambda m: m.pop("fl_x"))
    expect_error(scene, "xray/transforms.json", "fl_x", "global or frames[0] value")


def test_missing_parallel_pixel_size(scene_factory, tmp_path):
    dst = tmp_path / "par"
    shutil.copytree(scene_factory("doll", beam="parallel"), dst)
    edit_json(dst / "xray/transforms.json", lambda m: m.pop("pixel_size"))
    expect_error(dst, "xray/transforms.json", "pixel_size", "number or [sx, sy]")


def test_missing_rgb_intrinsic(scene):
    edit_json(scene / "transforms.json", lambda m: m.pop("cy"))
    expect_error(scene, "transforms.json", "cy", "global or frames[0] value")


def test_calibration_not_a_similarity(scene):
    shear = np.eye(4)
    shear[0, 1] = 0.3
    (scene / "calibration.json").write_text(json.dumps({"xray_to_rgb": shear.tolist()}))
    expect_error(scene, "calibration.json", "xray_to_rgb", "similarity")


def test_calibration_reflection_rejected(scene):
    (scene / "calibration.json").write_text(json.dumps({"xray_to_rgb": np.diag([2.0, 2.0, -2.0, 1.0]).tolist()}))
    expect_error(scene, "calibration.json", "xray_to_rgb", "similarity")


def test_png_without_scale(scene):
    import imageio.v3 as iio

    iio.imwrite(scene / "xray/proj/0000.png", np.zeros((24, 24), np.uint16))
    edit_json(scene / "xray/transforms.json", lambda m: m["frames"][0].update(file_path="proj/0000.png"))
    expect_error(scene, "xray/transforms.json", "png_scale", "16-bit PNG")


def test_png_and_tiff_projections_load(scene):
    import imageio.v3 as iio
    import tifffile

    ref = read_xray_scan(scene / "xray/transforms.json").values
    scale = 1e-4
    iio.imwrite(scene / "xray/proj/0000.png", np.round(np.load(scene / "xray/proj/0000.npy") / scale).astype(np.uint16))
    tifffile.imwrite(scene / "xray/proj/0001.tif", np.load(scene / "xray/proj/0001.npy"))

    def use(m):
        m["png_scale"] = scale
        m["frames"][0]["file_path"] = "proj/0000.png"
        m["frames"][1]["file_path"] = "proj/0001.tif"
        m.pop("train_filenames"), m.pop("val_filenames"), m.pop("test_filenames")

    edit_json(scene / "xray/transforms.json", use)
    got = read_xray_scan(scene / "xray/transforms.json").values
    np.testing.assert_allclose(got[0], ref[0], atol=scale / 2 + 1e-7)
    np.testing.assert_array_equal(got[1], ref[1])


def test_split_names_unknown_frame(scene):
    edit_json(scene / "xray/transforms.json", lambda m: m["val_filenames"].append("proj/9999.npy"))
    expect_error(scene, "xray/transforms.json", "val_filenames", "frames of this file")


def test_volume_wrong_aabb(scene):
    edit_json(scene / "xray/transforms.json", lambda m: m["volume"].update(aabb=[[1, 1, 1], [0, 0, 0]]))
    expect_error(scene, "xray/transforms.json", "volume.aabb", "max > min")


def test_not_a_scene(tmp_path):
    expect_error(tmp_path, str(tmp_path), "<scene>", "transforms.json")


def test_invalid_json(scene):
    (scene / "xray/transforms.json").write_text("{not json")
    expect_error(scene, "xray/transforms.json", "<file>", "valid JSON")
