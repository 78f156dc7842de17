"""Bad input to the readers (R2-Gaussian, Data Exchange) and to the scene format's less-travelled fields:
each is one SceneFormatError that names the file, the field and what was expected."""

import json
import shutil

import h5py
import imageio.v3 as iio
import numpy as np
import pytest

from insideout_ns.datamanager import InsideOutDataManagerConfig
from insideout_ns.dataparsers.readers import read_dxchange, read_r2gaussian
from insideout_ns.dataparsers.scene_format import SceneFormatError, load_mask

from conftest import data_file
from test_bad_input import edit_json, load


def check(err, file_part, field, expected_part):
    """The error names the file, the field and what was expected, in its attributes and its message."""
    msg = str(err)
    assert err.path.endswith(file_part) and err.field == field and expected_part in err.expected, msg
    assert msg.startswith(err.path) and f"'{field}'" in msg and expected_part in msg


# ----------------------------------------------------------------------------------------------
# R2-Gaussian folders
# ----------------------------------------------------------------------------------------------

R2_SHAPE = (4, 6)  # nDetector [v, u]


def make_r2(root):
    """A minimal valid R2-Gaussian folder: cone beam, 2 training and 1 test projection of 4 x 6 pixels."""
    (root / "proj_train").mkdir(parents=True)
    (root / "proj_test").mkdir()
    rng = np.random.default_rng(0)
    meta = {"scanner": {"mode": "cone", "DSD": 150.0, "DSO": 100.0, "nDetector": list(R2_SHAPE), "sDetector": [8.0, 12.0]},
            "proj_train": [], "proj_test": []}
    for split, angles in (("train", [0.0, 1.0]), ("test", [2.0])):
        for i, a in enumerate(angles):
            name = f"proj_{split}/{i:04d}.npy"
            np.save(root / name, rng.uniform(0.1, 1.0, R2_SHAPE).astype(np.float32))
            meta[f"proj_{split}"].append({"file_path": name, "angle": a})
    (root / "meta_data.json").write_text(json.dumps(meta))
    return root


def test_r2gaussian_minimal_folder_loads(tmp_path):
    """The minimal folder the broken ones start from is valid."""
    scan = read_r2gaussian(make_r2(tmp_path))
    assert scan.values.shape == (3, *R2_SHAPE) and list(scan.splits["train"]) == [0, 1]


def test_r2gaussian_meta_data_missing(tmp_path):
    """The user pointed the reader at a folder without meta_data.json."""
    make_r2(tmp_path)
    (tmp_path / "meta_data.json").unlink()
    with pytest.raises(SceneFormatError) as info:
        read_r2gaussian(tmp_path)
    check(info.value, "meta_data.json", "<file>", "an existing JSON file")


def test_r2gaussian_meta_data_not_json(tmp_path):
    """The user's meta_data.json is truncated (not JSON)."""
    make_r2(tmp_path)
    (tmp_path / "meta_data.json").write_text('{"scanner": {"mode": "cone",')
    with pytest.raises(SceneFormatError) as info:
        read_r2gaussian(tmp_path)
    check(info.value, "meta_data.json", "<file>", "valid JSON")


def test_r2gaussian_scanner_missing(tmp_path):
    """The user's meta_data.json has no scanner object."""
    edit_json(make_r2(tmp_path) / "meta_data.json", lambda m: m.pop("scanner"))
    with pytest.raises(SceneFormatError) as info:
        read_r2gaussian(tmp_path)
    check(info.value, "meta_data.json", "scanner", "the scanner geometry object (the field is missing)")


@pytest.mark.parametrize("key, expected", [("DSD", "source-to-detector distance"), ("DSO", "source-to-origin distance"),
                                           ("nDetector", "[v, u] pair"), ("sDetector", "[v, u] pair"),
                                           ("mode", '"cone" or "parallel"')])
def test_r2gaussian_scanner_key_missing(tmp_path, key, expected):
    """The user's scanner object lacks one of the keys the geometry needs."""
    edit_json(make_r2(tmp_path) / "meta_data.json", lambda m: m["scanner"].pop(key))
    with pytest.raises(SceneFormatError) as info:
        read_r2gaussian(tmp_path)
    check(info.value, "meta_data.json", f"scanner.{key}", expected)
    assert "the field is missing" in info.value.expected


@pytest.mark.parametrize("value", [5, "cone", [150.0, 100.0]], ids=["number", "string", "list"])
def test_r2gaussian_scanner_not_an_object(tmp_path, value):
    """The user's scanner is a number, a string or a list instead of an object."""
    edit_json(make_r2(tmp_path) / "meta_data.json", lambda m: m.update(scanner=value))
    with pytest.raises(SceneFormatError) as info:
        read_r2gaussian(tmp_path)
    check(info.value, "meta_data.json", "scanner", "the scanner geometry object")


@pytest.mark.parametrize("key, value, expected", [("mode", "fan", '"cone" or "parallel"'), ("mode", "Cone", '"cone" or "parallel"'),
                                                  ("DSO", 0.0, "finite positive number"), ("DSD", -150.0, "finite positive number")])
def test_r2gaussian_scanner_bad_value(tmp_path, key, value, expected):
    """The user's scanner has an unknown beam mode or a non-positive distance."""
    edit_json(make_r2(tmp_path) / "meta_data.json", lambda m: m["scanner"].update({key: value}))
    with pytest.raises(SceneFormatError) as info:
        read_r2gaussian(tmp_path)
    check(info.value, "meta_data.json", f"scanner.{key}", expected)


@pytest.mark.parametrize("value", [[4], [4, 6, 1], None], ids=["one", "three", "null"])
def test_r2gaussian_ndetector_not_a_pair(tmp_path, value):
    """The user's nDetector is not a [v, u] pair."""
    edit_json(make_r2(tmp_path) / "meta_data.json", lambda m: m["scanner"].update(nDetector=value))
    with pytest.raises(SceneFormatError) as info:
        read_r2gaussian(tmp_path)
    check(info.value, "meta_data.json", "scanner.nDetector", "[v, u] pair")


BAD_DETECTOR_PAIRS = [("nDetector", v, "positive integers") for v in ([0, 6], [-4, 6], [4.5, 6], ["4", 6], ["a", 6], [True, 6])] + \
    [("sDetector", v, "positive finite numbers") for v in ([0.0, 12.0], [8.0, -12.0], [8.0, float("inf")], ["8", 12.0], [8.0, None])]


@pytest.mark.parametrize("key,value,expected", BAD_DETECTOR_PAIRS, ids=[f"{k}={v}" for k, v, _ in BAD_DETECTOR_PAIRS])
def test_r2gaussian_detector_pair_of_bad_numbers(tmp_path, key, value, expected):
    """The user's nDetector (pixels) or sDetector (size) is a pair, but not of positive integers / finite numbers."""
    edit_json(make_r2(tmp_path) / "meta_data.json", lambda m: m["scanner"].update({key: value}))
    with pytest.raises(SceneFormatError) as info:
        read_r2gaussian(tmp_path)
    check(info.value, "meta_data.json", f"scanner.{key}", expected)


def test_r2gaussian_ndetector_of_integral_floats_loads(tmp_path):
    """A writer that stored nDetector as floats ([4.0, 6.0]) still gives a 4 x 6 detector."""
    edit_json(make_r2(tmp_path) / "meta_data.json", lambda m: m["scanner"].update(nDetector=[4.0, 6.0]))
    scan = read_r2gaussian(tmp_path)
    assert (scan.height, scan.width) == R2_SHAPE


def test_r2gaussian_no_projections_at_all(tmp_path):
    """The user's meta_data.json lists no projections in either split."""
    edit_json(make_r2(tmp_path) / "meta_data.json", lambda m: m.update(proj_train=[], proj_test=[]))
    with pytest.raises(SceneFormatError) as info:
        read_r2gaussian(tmp_path)
    check(info.value, "meta_data.json", "proj_train", "a non-empty list of projections")


def test_r2gaussian_proj_train_not_a_list(tmp_path):
    """The user's proj_train is an object, not a list."""
    edit_json(make_r2(tmp_path) / "meta_data.json", lambda m: m.update(proj_train={"file_path": "proj_train/0000.npy"}))
    with pytest.raises(SceneFormatError) as info:
        read_r2gaussian(tmp_path)
    check(info.value, "meta_data.json", "proj_train", "a list of {file_path, angle}")


@pytest.mark.parametrize("edit", [lambda m: m.pop("proj_train"), lambda m: m.update(proj_train=[])], ids=["missing", "empty"])
def test_r2gaussian_no_training_projection(tmp_path, edit):
    """The user's meta_data.json has test projections but proj_train is missing or empty."""
    edit_json(make_r2(tmp_path) / "meta_data.json", edit)
    with pytest.raises(SceneFormatError) as info:
        read_r2gaussian(tmp_path)
    check(info.value, "meta_data.json", "proj_train", "at least one training projection")


def test_r2gaussian_projection_file_missing(tmp_path):
    """The user's proj_train names a .npy that is not in the folder."""
    (make_r2(tmp_path) / "proj_train/0001.npy").unlink()
    with pytest.raises(SceneFormatError) as info:
        read_r2gaussian(tmp_path)
    check(info.value, "meta_data.json", "proj_train[1].file_path", "an existing .npy")
    assert "proj_train/0001.npy not found" in info.value.expected


def test_r2gaussian_projection_wrong_shape(tmp_path):
    """The user's projection is transposed relative to nDetector [v, u]."""
    np.save(make_r2(tmp_path) / "proj_test/0000.npy", np.ones(R2_SHAPE[::-1], np.float32))
    with pytest.raises(SceneFormatError) as info:
        read_r2gaussian(tmp_path)
    check(info.value, "meta_data.json", "proj_test[0].file_path", "shape nDetector = [4, 6]")


@pytest.mark.parametrize("frame, field", [({"file_path": 5, "angle": 0.0}, "proj_train[0]"),
                                          ({"file_path": "proj_train/0000.npy", "angle": "zero"}, "proj_train[0].angle")],
                         ids=["file_path-number", "angle-string"])
def test_r2gaussian_projection_entry_bad(tmp_path, frame, field):
    """The user's proj_train entry has a number for file_path or a string for angle."""
    edit_json(make_r2(tmp_path) / "meta_data.json", lambda m: m["proj_train"].__setitem__(0, frame))
    with pytest.raises(SceneFormatError) as info:
        read_r2gaussian(tmp_path)
    check(info.value, "meta_data.json", field, "file_path (a string)" if field == "proj_train[0]" else "a finite number")


def test_r2gaussian_vol_file_missing(tmp_path):
    """The user's meta_data.json names a ground-truth volume ("vol") that is not in the folder."""
    edit_json(make_r2(tmp_path) / "meta_data.json", lambda m: m.update(vol="vol_gt.npy"))
    with pytest.raises(SceneFormatError) as info:
        read_r2gaussian(tmp_path)
    check(info.value, "meta_data.json", "vol", "an existing .npy")
    assert "vol_gt.npy not found" in info.value.expected


def _write_text(file):
    file.write_text("0.1 0.2 0.3\n")


def _write_pickle(file):
    np.save(file, np.array([{"a": 1}], dtype=object), allow_pickle=True)


@pytest.mark.parametrize("write", [_write_text, _write_pickle, lambda f: f.write_bytes(b"")], ids=["text", "pickle", "empty"])
@pytest.mark.parametrize("name, field", [("proj_train/0001.npy", "proj_train[1].file_path"), ("vol_gt.npy", "vol")],
                         ids=["projection", "vol"])
def test_r2gaussian_npy_not_an_array(tmp_path, write, name, field):
    """The user's projection or ground-truth volume .npy is a text file, a pickle or empty."""
    edit_json(make_r2(tmp_path) / "meta_data.json", lambda m: m.update(vol="vol_gt.npy"))
    np.save(tmp_path / "vol_gt.npy", np.zeros((3, 3, 3), np.float32))
    write(tmp_path / name)
    with pytest.raises(SceneFormatError) as info:
        read_r2gaussian(tmp_path)
    check(info.value, "meta_data.json", field, f"a .npy array file in {name.split('/')[-1]}")


def test_r2gaussian_vol_not_3d(tmp_path):
    """The user's ground-truth volume is one 2-D slice, not [nx, ny, nz]."""
    edit_json(make_r2(tmp_path) / "meta_data.json", lambda m: m.update(vol="vol_gt.npy"))
    np.save(tmp_path / "vol_gt.npy", np.zeros((3, 3), np.float32))
    with pytest.raises(SceneFormatError) as info:
        read_r2gaussian(tmp_path)
    check(info.value, "meta_data.json", "vol", "a 3-D array [nx, ny, nz]")


# ----------------------------------------------------------------------------------------------
# TomoPy Data Exchange files
# ----------------------------------------------------------------------------------------------

DX_N, DX_H, DX_W = 5, 3, 8


def dx_arrays():
    """A valid scan's datasets: projections of line integrals >= 0 under a flat field of 1000, dark of 100."""
    rng = np.random.default_rng(1)
    white = np.full((2, DX_H, DX_W), 1000.0) + rng.normal(0, 1, (2, DX_H, DX_W))
    dark = np.full((2, DX_H, DX_W), 100.0) + rng.normal(0, 1, (2, DX_H, DX_W))
    line = rng.uniform(0.0, 2.0, (DX_N, DX_H, DX_W))
    data = dark.mean(0) + (white.mean(0) - dark.mean(0)) * np.exp(-line)
    theta = np.linspace(0.0, 180.0, DX_N, endpoint=False)
    return {"data": data.astype(np.float32), "data_white": white.astype(np.float32), "data_dark": dark.astype(np.float32),
            "theta": theta}


def write_dx(path, arrays):
    with h5py.File(path, "w") as f:
        for key, value in arrays.items():
            f[f"exchange/{key}"] = value
    return path


def test_dxchange_minimal_file_loads(tmp_path):
    """The small file the broken ones start from is valid."""
    scan = read_dxchange(write_dx(tmp_path / "ok.h5", dx_arrays()))
    assert scan.projection == "parallel" and scan.values.shape == (DX_N, DX_H, DX_W)


def test_dxchange_file_missing(tmp_path):
    """The user gave a path to an .h5 file that does not exist."""
    with pytest.raises(SceneFormatError) as info:
        read_dxchange(tmp_path / "nowhere.h5")
    check(info.value, "nowhere.h5", "<file>", "an existing Data Exchange HDF5 file")


@pytest.mark.parametrize("key", ["data", "data_dark", "theta"])
def test_dxchange_dataset_missing(tmp_path, key):
    """The user's file lacks one of the four exchange datasets."""
    arrays = dx_arrays()
    arrays.pop(key)
    with pytest.raises(SceneFormatError) as info:
        read_dxchange(write_dx(tmp_path / "bad.h5", arrays))
    check(info.value, "bad.h5", f"exchange/{key}", "a dataset (missing)")


def test_dxchange_data_not_3d(tmp_path):
    """The user's exchange/data is a single 2-D projection, not [angles, rows, columns]."""
    arrays = dx_arrays()
    arrays["data"] = arrays["data"][0]
    with pytest.raises(SceneFormatError) as info:
        read_dxchange(write_dx(tmp_path / "bad.h5", arrays))
    check(info.value, "bad.h5", "exchange/data", "[angles, rows, columns]")


@pytest.mark.parametrize("key", ["data_white", "data_dark"])
@pytest.mark.parametrize("shape", [(2, DX_H, DX_W + 1), (2, DX_W, DX_H), (DX_H, DX_W)], ids=["wider", "transposed", "2d"])
def test_dxchange_flat_or_dark_of_another_detector(tmp_path, key, shape):
    """The user's flat or dark frames are not of the projections' detector shape."""
    arrays = dx_arrays()
    arrays[key] = np.full(shape, 500.0, np.float32)
    with pytest.raises(SceneFormatError) as info:
        read_dxchange(write_dx(tmp_path / "bad.h5", arrays))
    check(info.value, "bad.h5", f"exchange/{key}", f"[frames, {DX_H}, {DX_W}]")


@pytest.mark.parametrize("count", [DX_N - 1, DX_N + 1])
def test_dxchange_theta_count_differs(tmp_path, count):
    """The user's theta has a different number of angles than there are projections."""
    arrays = dx_arrays()
    arrays["theta"] = np.linspace(0.0, 180.0, count)
    with pytest.raises(SceneFormatError) as info:
        read_dxchange(write_dx(tmp_path / "bad.h5", arrays))
    check(info.value, "bad.h5", "exchange/theta", f"{DX_N} angles in degrees")


def test_dxchange_dead_flat_field_pixel(tmp_path):
    """The user's flat field is no brighter than the dark field at one (dead) pixel."""
    arrays = dx_arrays()
    arrays["data_white"][:, 1, 2] = arrays["data_dark"][:, 1, 2].mean()
    with pytest.raises(SceneFormatError) as info:
        read_dxchange(write_dx(tmp_path / "bad.h5", arrays))
    check(info.value, "bad.h5", "exchange/data_white", "flat fields brighter than the dark fields at every pixel")


def test_dxchange_real_tooth_with_truncated_theta(tmp_path):
    """The user's real scan (the tooth) lost its last angle in theta."""
    path = tmp_path / "tooth.h5"
    shutil.copy(data_file("xray/tooth.h5"), path)
    with h5py.File(path, "r+") as f:
        theta = np.asarray(f["exchange/theta"])
        del f["exchange/theta"]
        f["exchange/theta"] = theta[:-1]
    with pytest.raises(SceneFormatError) as info:
        read_dxchange(path)
    check(info.value, "tooth.h5", "exchange/theta", "181 angles in degrees")


# ----------------------------------------------------------------------------------------------
# The scene format
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("key, value, expected", [("modality", "ct", '"xray"'), ("modality", "rgb", '"xray"'),
                                                  ("projection", "fan", '"cone" or "parallel"'),
                                                  ("projection", "Cone", '"cone" or "parallel"'),
                                                  ("value", "attenuation", '"line_integral" or "transmission"'),
                                                  ("value", "intensity", '"line_integral" or "transmission"')])
def test_xray_unknown_keyword(scene, key, value, expected):
    """The user's xray/transforms.json has an unknown modality, projection or value keyword."""
    edit_json(scene / "xray/transforms.json", lambda m: m.update({key: value}))
    with pytest.raises(SceneFormatError) as info:
        load(scene)
    check(info.value, "scene/xray/transforms.json", key, expected)


@pytest.mark.parametrize("file, frame, value", [("transforms.json", None, 0.0), ("transforms.json", 2, -42.0),
                                                ("xray/transforms.json", None, -1.0), ("xray/transforms.json", 3, 0)])
def test_non_positive_focal_length(scene, file, frame, value):
    """The user's RGB or X-ray transforms.json has a zero or negative fl_x (globally or in one frame)."""
    edit_json(scene / file, lambda m: (m if frame is None else m["frames"][frame]).update(fl_x=value))
    with pytest.raises(SceneFormatError) as info:
        load(scene)
    check(info.value, f"scene/{file}", "fl_x" if frame is None else f"frames[{frame}].fl_x", "a finite positive number")


def test_mask_path_names_a_missing_file(scene):
    """The user's transforms.json gives every frame a mask_path, but one mask file is not there."""
    (scene / "masks").mkdir()
    for i in range(6):
        iio.imwrite(scene / f"masks/{i:04d}.png", np.full((32, 32), 255, np.uint8))
    edit_json(scene / "transforms.json", lambda m: [fr.update(mask_path=f"masks/{i:04d}.png") for i, fr in enumerate(m["frames"])])
    (scene / "masks/0003.png").unlink()
    with pytest.raises(SceneFormatError) as info:
        InsideOutDataManagerConfig(data=scene, num_rgb_points=200, num_radiative_points=200).setup(device="cpu")
    check(info.value, "scene/transforms.json", "frames[3].mask_path", "an existing image")
    assert "masks/0003.png not found" in info.value.expected


def test_load_mask_of_a_missing_file(tmp_path):
    """A mask file (e.g. one named by ground_truth.json's object_masks) that is not there."""
    with pytest.raises(SceneFormatError) as info:
        load_mask(tmp_path / "masks/0000.png", 32, 32)
    check(info.value, "masks/0000.png", "mask_path", "a readable single-channel mask image")
    assert "FileNotFoundError" in str(info.value)


@pytest.mark.parametrize("file", ["transforms.json", "xray/transforms.json"])
@pytest.mark.parametrize("edit", [lambda m: m.update(train_filenames=[]), lambda m: m.pop("train_filenames")],
                         ids=["empty", "missing"])
def test_split_lists_leave_no_training_frame(scene, file, edit):
    """The user's split lists put every frame in val/test (train_filenames empty or left out)."""
    edit_json(scene / file, edit)
    with pytest.raises(SceneFormatError) as info:
        load(scene)
    check(info.value, f"scene/{file}", "train_filenames", "at least one training frame")
