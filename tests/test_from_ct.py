"""The CT-derived generator: its projector against independent sums over voxels; the repository's CTs load."""

import json

import numpy as np
import pytest

from insideout_ns.dataparsers.dataparser import InsideOutDataParserConfig
from insideout_ns.dataparsers.scene_format import Volume
from insideout_ns.dataparsers.cameras import look_at, pixel_rays
from insideout_ns.dataparsers.synth.cli import FromCtCommand
from insideout_ns.dataparsers.synth.from_ct import CtObject
from insideout_ns.dataparsers.synth.generate import SceneOptions
from insideout_ns.dataparsers.ct_volume import ct_to_attenuation, read_ct

from conftest import data_file


def random_volume(shape=(12, 10, 14), spacing=(1.0, 1.5, 0.75), seed=0):
    vals = np.random.default_rng(seed).uniform(0, 1, shape).astype(np.float32)
    vals[[0, -1]] = 0.0  # a border of air: the interpolant then integrates to exactly sum(v) * voxel volume
    vals[:, [0, -1]] = 0.0
    vals[:, :, [0, -1]] = 0.0
    half = 0.5 * np.array(shape) * np.array(spacing)
    return Volume(vals, np.stack([-half, half]))


def test_axis_aligned_rays_equal_the_sum_along_the_voxel_column():
    """A ray through voxel centres along z: the midpoint rule with half-voxel steps integrates the
    piecewise-linear interpolant exactly, so p = sum_k v[i, j, k] * dz."""
    vol = random_volume()
    ct = CtObject(vol, iso=0.5)
    xs, ys = vol.centres(0), vol.centres(1)
    X, Y = np.meshgrid(xs, ys, indexing="ij")
    o = np.stack([X.ravel(), Y.ravel(), np.full(X.size, -50.0)], axis=-1)
    d = np.tile([0.0, 0.0, 1.0], (len(o), 1))
    got = ct.line_integrals(o, d).reshape(X.shape)
    ref = vol.values.sum(axis=2) * vol.spacing[2]
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("seed", [0, 1])
def test_oblique_parallel_projection_conserves_mass(seed):
    """Any parallel projection of a smooth volume integrates (over the detector) to the volume's mass."""
    axis = np.linspace(-1, 1, 24)
    X, Y, Z = np.meshgrid(axis, axis, axis, indexing="ij")
    rng = np.random.default_rng(seed)
    c = rng.uniform(-0.2, 0.2, 3)
    vals = np.exp(-((X - c[0]) ** 2 + 2 * (Y - c[1]) ** 2 + (Z - c[2]) ** 2) / 0.08).astype(np.float32)
    vol = Volume(vals, np.array([[-24.0] * 3, [24.0] * 3]))
    ct = CtObject(vol, iso=0.5)
    eye = rng.normal(size=3)
    c2w = look_at(100.0 * eye / np.linalg.norm(eye), np.zeros(3), np.array([0.0, 0.0, 1.0]))
    n, pix = 96, 1.0
    o, d = pixel_rays(c2w, (1 / pix, 1 / pix, n / 2, n / 2), n, n, "parallel")
    proj = ct.line_integrals(o.reshape(-1, 3), d.reshape(-1, 3))
    mass = vals.sum() * np.prod(vol.spacing)
    assert proj.sum() * pix * pix == pytest.approx(mass, rel=2e-3)


def test_headsq_reads_with_its_spacing():
    vals, spacing = read_ct(data_file("ct/headsq.mha"))
    assert vals.shape == (64, 64, 93) and np.allclose(spacing, [3.2, 3.2, 1.5])
    raw = data_file("ct/headsq.mha").read_bytes()
    data = np.frombuffer(raw[raw.index(b"LOCAL\n") + 6:], "<u2").reshape(93, 64, 64)
    assert vals[10, 20, 30] == data[30, 20, 10]  # x varies fastest in the file


def test_bunny_attenuation_treats_the_fov_mask_as_air():
    vals, spacing = read_ct(data_file("ct/bunny_ct_128.npy.gz"), spacing=[1.35] * 3, axis_order="zyx")
    assert vals.shape == (128, 128, 134)
    mu = ct_to_attenuation(vals)
    assert mu[vals == -2000].max() == 0.0 and mu.max() > 0.04


@pytest.mark.parametrize(
    "rel,kw",
    [("ct/headsq.mha", {}), ("ct/bunny_ct_128.npy.gz", {"axis_order": "zyx", "spacing": (1.35, 1.35, 1.35)})],
)
def test_from_ct_scene_of_each_real_ct_loads(tmp_path, rel, kw):
    opts = SceneOptions(rgb_views=3, xray_views=4, rgb_res=24, xray_res=24)
    scene = FromCtCommand(volume=data_file(rel), out=tmp_path / "s", scene=opts, **kw).main()
    out = InsideOutDataParserConfig(data=scene).setup().get_dataparser_outputs("train")
    xr = out.metadata["xray"]
    assert len(out.cameras) == 2 and len(xr) == 3 and xr.projections.max() > 0.5  # frame 0 is held out
    import imageio.v3 as iio

    alpha = iio.imread(out.image_filenames[0])[..., 3]
    assert 0.05 < (alpha > 0).mean() < 0.9  # the skin is photographed, and the background is empty
    truth = json.loads((scene / "ground_truth.json").read_text())
    assert np.array(truth["aabb_rgb"]).shape == (2, 3)
