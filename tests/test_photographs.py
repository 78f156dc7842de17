"""Photographs as real exports give them: separate mask files, per-frame sizes, and the defects that used
to fail deep inside a library (each now an error naming the file and the field)."""

import json
import pickle

import imageio.v3 as iio
import numpy as np
import pytest
import torch

from insideout_ns.datamanager import InsideOutDataManagerConfig
from insideout_ns.dataparsers.scene_format import SceneFormatError


def datamanager(scene):
    return InsideOutDataManagerConfig(data=scene, num_rgb_points=200, num_radiative_points=200).setup(device="cpu")


def edit_frames(scene, fn):
    path = scene / "transforms.json"
    meta = json.loads(path.read_text())
    for i, frame in enumerate(meta["frames"]):
        fn(i, frame, meta)
    path.write_text(json.dumps(meta))


def split_masks(scene, mask_of=lambda i, alpha: alpha):
    """RGBA photographs -> RGB photographs and separate 8-bit masks (mask_path), as Nerfstudio exports them."""
    (scene / "masks").mkdir()

    def split(i, frame, meta):
        rgba = iio.imread(scene / frame["file_path"])
        iio.imwrite(scene / frame["file_path"], rgba[..., :3])
        mask = np.where(rgba[..., 3] > 127, 255, 0).astype(np.uint8)
        iio.imwrite(scene / f"masks/{i:04d}.png", mask_of(i, mask))
        frame["mask_path"] = f"masks/{i:04d}.png"

    edit_frames(scene, split)


def alpha(view):  # [H, W] float in [0, 1]
    return view.served("cpu")[1]["image"][..., 3]


def expect_error(scene, path_part, field, expected_part):
    with pytest.raises(SceneFormatError) as info:
        datamanager(scene)
    err = info.value
    assert path_part in err.path and err.field == field and expected_part in err.expected, str(err)


def test_mask_files_give_the_same_start_as_alpha_channels(scene_factory, scene):
    twin = datamanager(scene_factory("doll"))
    split_masks(scene)
    dm = datamanager(scene)
    for a, b in zip(twin.train_views["rgb"], dm.train_views["rgb"]):
        assert b.batch["image"].shape == a.batch["image"].shape
        assert torch.equal(alpha(b) > 0.5, alpha(a) > 0.5)  # the same object pixels
    s_twin, s_mask = twin.train_dataset.metadata["start"], dm.train_dataset.metadata["start"]
    assert not s_mask.notes  # the masks carved a hull: no uniform fallback
    d = torch.cdist(s_mask.hull_rgb, s_twin.hull_rgb).min(dim=1).values  # the alignment's RGB surfaces agree
    diameter = float((s_twin.hull_rgb.amax(0) - s_twin.hull_rgb.amin(0)).norm())
    assert float(d.mean()) < 0.01 * diameter


def test_photographs_without_any_mask_load_opaque(scene):
    edit_frames(scene, lambda i, fr, m: iio.imwrite(scene / fr["file_path"], iio.imread(scene / fr["file_path"])[..., :3]))
    dm = datamanager(scene)
    assert all(float(alpha(v).min()) == 1.0 for v in dm.train_views["rgb"])


def test_mask_of_the_wrong_size(scene):
    split_masks(scene, lambda i, m: m[:-2] if i == 1 else m)
    expect_error(scene, "masks/0001.png", "mask_path", "mask of its photograph's size 32 x 32")


def test_masks_empty_in_every_view(scene):
    split_masks(scene, lambda i, m: np.zeros_like(m))
    expect_error(scene, "transforms.json", "mask_path / alpha", "every mask is empty")


def test_mask_path_in_some_frames_only(scene):
    split_masks(scene)
    edit_frames(scene, lambda i, fr, m: fr.pop("mask_path") if i == 2 else None)
    with pytest.raises(SceneFormatError, match=r"frames\[2\].mask_path.*every frame or in none"):
        datamanager(scene)


def test_photograph_not_of_its_declared_size(scene):
    img = iio.imread(scene / "images/0001.png")
    iio.imwrite(scene / "images/0001.png", img[:30, :28])
    expect_error(scene, "images/0001.png", "w, h", "declared size 32 x 32")


def test_per_frame_sizes_load_where_declared(scene):
    keys = ("fl_x", "fl_y", "cx", "cy", "w", "h")

    def per_frame(i, frame, meta):
        frame.update({k: meta[k] for k in keys})
        if i == 1:
            img = iio.imread(scene / frame["file_path"])
            iio.imwrite(scene / frame["file_path"], img[2:30, 4:28])  # a crop: 24 x 28, principal point moves
            frame.update(w=24, h=28, cx=meta["cx"] - 4, cy=meta["cy"] - 2)
    edit_frames(scene, per_frame)
    edit_frames(scene, lambda i, fr, meta: [meta.pop(k, None) for k in keys])
    dm = datamanager(scene)
    sizes = {tuple(v.batch["image"].shape[:2]) for v in dm.train_views["rgb"]}
    assert sizes == {(32, 32), (28, 24)}
    assert not dm.train_dataset.metadata["start"].notes


def test_per_frame_value_beside_a_different_global_one(scene):
    edit_frames(scene, lambda i, fr, meta: fr.update(w=24) if i == 1 else None)
    expect_error(scene, "transforms.json", "frames[1].w", "no per-frame w beside a different global w")


def test_truncated_photograph(scene):
    data = (scene / "images/0002.png").read_bytes()
    (scene / "images/0002.png").write_bytes(data[: len(data) // 2])
    expect_error(scene, "images/0002.png", "file_path", "readable photograph")


def test_projection_that_is_not_an_array_file(scene):
    with open(scene / "xray/proj/0001.npy", "wb") as f:  # a pickle under the .npy name
        pickle.dump({"not": "an array"}, f)
    with pytest.raises(SceneFormatError) as info:
        datamanager(scene)
    err = info.value
    assert "xray/transforms.json" in err.path and err.field == "frames[1].file_path" and "0001.npy" in err.expected
    assert "pickled" in str(err)
