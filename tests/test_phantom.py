"""Analytic phantom: exact chord lengths against ray marching of the voxelised phantom."""

import numpy as np
import pytest
import torch

from insideout_ns.dataparsers.scene_format import Volume
from insideout_ns.dataparsers.synth.from_ct import CtObject
from insideout_ns.dataparsers.synth.phantom import PRESETS, Ellipsoid, Phantom, preset


def test_sphere_chords_are_exact():
    ball = Phantom([Ellipsoid(np.zeros(3), np.full(3, 10.0), np.eye(3), 0.5)])
    o = np.array([[-50.0, 0, 0], [-50.0, 6.0, 0], [-50.0, 11.0, 0], [0.0, 0, 0]])
    d = np.array([[1.0, 0, 0]] * 4)
    # chord = 2 sqrt(r^2 - b^2); a ray starting at the centre sees one radius only (half-line)
    expect = 0.5 * np.array([20.0, 2 * np.sqrt(100 - 36), 0.0, 10.0])
    np.testing.assert_allclose(ball.line_integrals(o, d), expect, rtol=1e-12, atol=1e-12)


def test_rotated_ellipsoid_chord_matches_its_axis():
    rot = np.linalg.qr(np.random.default_rng(0).normal(size=(3, 3)))[0]
    e = Ellipsoid(np.array([1.0, 2.0, 3.0]), np.array([7.0, 3.0, 5.0]), rot, 1.0)
    for k, a in enumerate(e.semi_axes):  # along each of its own axes, through the centre: 2 a
        o = e.centre - 100 * rot[:, k]
        assert e.chord(o[None], rot[:, k][None])[0] == pytest.approx(2 * a, rel=1e-12)


@pytest.mark.parametrize("name", PRESETS)
def test_analytic_line_integrals_match_ray_marching_of_voxelised_phantom(name):
    """Ray marching the trilinear interpolant of the voxelised phantom (voxel size h, step dt <= h/2) can
    only differ from the exact integral where the 8 voxel centres around a sample are not all on the same
    side of a surface, i.e. within w = sqrt(3) h of it. The ellipsoid norm f(x) = |A^-1 R^T (x - c)| is
    (1 / a_min)-Lipschitz, so that shell lies between the ellipsoid scaled by 1 -/+ w / a_min, whose chords
    are analytic. Per ellipsoid i, with interpolant values in [0, 1] and both crossings:
        |marched - exact| <= |delta_i| * (2 * L_shell_i + 4 dt),
    L_shell_i = chord(scale 1 + w/a_min) - chord(scale 1 - w/a_min). The bound is summed over ellipsoids.
    """
    ph = preset(name)
    ph.volume_res = 96
    vol = ph.volume()
    h = float(vol.spacing.max())
    ct = CtObject(vol, iso=1.0)
    rng = np.random.default_rng(1)
    n = 400
    target = rng.uniform(-20, 20, size=(n, 3))
    dirs = rng.normal(size=(n, 3))
    dirs /= np.linalg.norm(dirs, axis=-1, keepdims=True)
    origins = target - 200.0 * dirs
    exact = ph.line_integrals(origins, dirs)
    marched = ct.line_integrals(origins, dirs)
    w = np.sqrt(3.0) * h
    bound = np.zeros(n)
    for e in ph.parts:
        g = w / e.semi_axes.min()
        shell = e.chord(origins, dirs, 1.0 + g) - e.chord(origins, dirs, max(1.0 - g, 1e-9))
        bound += abs(e.density) * (2.0 * shell + 4.0 * ct.step)
    err = np.abs(marched - exact)
    assert np.all(err <= bound + 1e-6), f"worst excess {np.max(err - bound)}"
    assert exact.max() > 0.3  # rays do cross the object
    # and the discretisation error is a small fraction of the signal on average
    assert err.mean() < 0.05 * exact.mean()


def test_voxelise_samples_voxel_centres():
    ph = Phantom([Ellipsoid(np.zeros(3), np.full(3, 1.0), np.eye(3), 2.0)])
    aabb = np.array([[-2.0, -2.0, -2.0], [2.0, 2.0, 2.0]])
    v = ph.voxelise((4, 4, 4), aabb)  # centres at -1.5, -0.5, 0.5, 1.5
    assert v[1, 1, 1] == 2.0 and v[0, 1, 1] == 0.0 and v.sum() == 2.0 * 8


def test_ct_sample_is_trilinear_on_the_format_grid():
    vals = np.arange(8, dtype=np.float32).reshape(2, 2, 2)
    vol = Volume(vals, np.array([[0.0, 0.0, 0.0], [2.0, 2.0, 2.0]]))  # centres at 0.5 and 1.5
    ct = CtObject(vol, iso=1.0)
    pts = torch.tensor([[0.5, 0.5, 0.5], [1.5, 0.5, 1.5], [1.0, 1.0, 1.0]], dtype=torch.float64)
    np.testing.assert_allclose(ct.sample(pts).numpy(), [vals[0, 0, 0], vals[1, 0, 1], vals.mean()], rtol=1e-6)


def test_detector_offset_moves_the_image_and_its_declared_principal_point_together(tmp_path):
    """A scan with the principal point off centre: in every view the object's image centroid, in units of
    the focal length from the declared principal point, is where the centred scan puts it."""
    from insideout_ns.dataparsers.scene_format import read_xray_scan
    from insideout_ns.dataparsers.synth.generate import SceneOptions, generate_scene

    def centroids(offset):
        opts = SceneOptions(rgb_views=0, xray_views=4, xray_res=40, seed=1, detector_offset=offset)
        scan = read_xray_scan(generate_scene(preset("doll"), tmp_path / f"s{offset}", opts) / "xray/transforms.json")
        v = scan.values  # [N, H, W]
        u_idx, v_idx = np.arange(v.shape[2]) + 0.5, np.arange(v.shape[1]) + 0.5
        mass = v.sum(axis=(1, 2))
        cu, cv = (v.sum(1) * u_idx).sum(1) / mass, (v.sum(2) * v_idx).sum(1) / mass
        fx, fy, cx, cy = scan.intrinsics.T
        assert (v[:, :, 0] == 0).all() and (v[:, :, -1] == 0).all() and (v[:, 0] == 0).all() and (v[:, -1] == 0).all()
        return np.stack([(cu - cx) / fx, (cv - cy) / fy], -1), scan.intrinsics

    centred, intr0 = centroids((0.0, 0.0))
    shifted, intr1 = centroids((6.0, -4.0))
    np.testing.assert_allclose(intr1[:, 2:] - 20.0, np.tile([6.0, -4.0], (4, 1)))
    np.testing.assert_allclose(shifted, centred, atol=0.3 / intr1[0, 0])  # within a third of a pixel
