"""A CT's surface fitted to photographs' masks (ct_outline.py), against an analytic reference: an ellipsoid whose
masks are the exact coverage of each pixel by its silhouette (rays against the quadric, 4 x 4 per pixel)."""

import numpy as np
import pytest
import torch
from nerfstudio.cameras.cameras import Cameras, CameraType
from scipy.spatial.transform import Rotation

from insideout_ns.alignment import alignment_error
from insideout_ns.ct_outline import air_boundary, fit_to_masks, mask_views, similarity_of
from insideout_ns.dataparsers.cameras import pixel_rays, random_similarity, sphere_orbit

AXES = np.array([0.9, 0.6, 0.4])  # the ellipsoid's semi-axes (X-ray frame)
AIR = 0.01  # its surface's value


def ellipsoid_ct(n: int = 48):
    """A CT of the ellipsoid over [-1, 1]^3: values linear in |x / AXES|^2, AIR exactly on the surface."""
    c = (np.arange(n) + 0.5) / n * 2 - 1
    x, y, z = np.meshgrid(c, c, c, indexing="ij")
    f = (x / AXES[0]) ** 2 + (y / AXES[1]) ** 2 + (z / AXES[2]) ** 2
    return (AIR * np.clip(2.0 - f, 0.0, 4.0)).astype(np.float32), np.array([[-1.0] * 3, [1.0] * 3])


def exact_masks(c2ws: np.ndarray, intr, res: int, xray_to_rgb: np.ndarray):
    """Each pixel's covered fraction: 16 rays (RGB frame), carried into the X-ray frame, against the quadric."""
    inv = np.linalg.inv(xray_to_rgb)
    masks = []
    for c2w in c2ws:
        o, d = pixel_rays(c2w, intr, res, res, "cone", supersample=4)
        o, d = o @ inv[:3, :3].T + inv[:3, 3], d @ inv[:3, :3].T
        o, d = o / AXES, d / AXES  # the unit sphere: |o + t d|^2 = 1 has a root
        b, a, c = (o * d).sum(-1), (d * d).sum(-1), (o * o).sum(-1) - 1
        hit = (b * b - a * c >= 0).astype(np.float32)
        masks.append(torch.from_numpy(hit.reshape(res, 4, res, 4).mean(axis=(1, 3))[..., None]))
    return masks


@pytest.mark.parametrize("res,views", [(96, 24), (288, 12)])  # at 288 px a voxel of the CT spans 3 pixels
def test_the_ct_surface_fitted_to_exact_masks_finds_the_similarity(res, views):
    rng = np.random.default_rng(4)
    truth = random_similarity(rng, (0.4, 0.6), 0.3)
    f = 1.25 * res
    centre = truth[:3, 3]
    c2ws = sphere_orbit(views, 3.0, centre, np.array([0.0, 0.0, 1.0]))
    intr = (f, f, res / 2, res / 2)
    masks = exact_masks(c2ws, intr, res, truth)
    cams = Cameras(camera_to_worlds=torch.from_numpy(c2ws[:, :3]).float(), fx=f, fy=f, cx=res / 2, cy=res / 2,
                   width=res, height=res, camera_type=CameraType.PERSPECTIVE)
    values, aabb = ellipsoid_ct()
    verts, normals = air_boundary(values, aabb, AIR)
    assert np.abs((verts / AXES) ** 2 @ np.ones(3) - 1).max() < 0.05  # on the ellipsoid
    start = truth @ similarity_of(np.array([0.02, -0.03, 0.01, 0.03, -0.02, 0.02, np.log(1.03)]))  # 2 deg, 3 %
    diameter = 2 * AXES.max() * float(np.cbrt(np.linalg.det(truth[:3, :3])))
    before = alignment_error(start, truth, np.zeros(3), diameter)
    fit = fit_to_masks(verts, normals, mask_views(cams, masks), start)
    after = alignment_error(fit.matrix, truth, np.zeros(3), diameter)
    assert fit.used and fit.rms_after < 0.5 * fit.rms_before and fit.rms_after < 0.15, fit
    assert before["rotation_deg"] > 1.5 and before["scale_rel"] > 0.025
    # measured: 0.01 / 0.04 deg, 0.015 / 0.007 %, 0.14 / 0.20 % (96 / 288 px)
    assert after["rotation_deg"] < 0.1 and after["translation_frac"] < 0.001 and after["scale_rel"] < 0.003, after


def test_a_surface_that_is_not_the_photographed_objects_is_not_kept():
    """The photographs show a ball; the CT an elongated ellipsoid: no similarity puts its rims on the outlines."""
    res, f = 48, 50.0
    c2ws = sphere_orbit(8, 3.0, np.zeros(3), np.array([0.0, 0.0, 1.0]))
    cams = Cameras(camera_to_worlds=torch.from_numpy(c2ws[:, :3]).float(), fx=f, fy=f, cx=res / 2, cy=res / 2,
                   width=res, height=res, camera_type=CameraType.PERSPECTIVE)
    to_ball = np.diag([*(0.6 / AXES), 1.0])  # the ellipsoid stretched into a ball of radius 0.6: not a similarity
    masks = exact_masks(c2ws, (f, f, res / 2, res / 2), res, to_ball)
    values, aabb = ellipsoid_ct(32)
    verts, normals = air_boundary(values, aabb, AIR)
    fit = fit_to_masks(verts, normals, mask_views(cams, masks), np.eye(4))
    assert not fit.used and np.array_equal(fit.matrix, np.eye(4)) and fit.rms_after > 1.0, fit


def ellipsoid_points(n: int, rng, noise: float) -> np.ndarray:  # [n, 3] on the ellipsoid's upper part, X-ray frame
    """What SfM sees of the ellipsoid standing on a table: points of its surface above its lowest fifth (uniform in
    direction, then pushed along the radius by `noise`, a fraction of the largest semi-axis)."""
    d = rng.normal(size=(4 * n, 3))
    p = d / np.linalg.norm(d / AXES, axis=1, keepdims=True)  # on the ellipsoid
    p = p[p[:, 2] > -0.6 * AXES[2]][:n]
    return p + rng.normal(0.0, noise * AXES.max(), (len(p), 1)) * p / np.linalg.norm(p, axis=1, keepdims=True)


def test_the_ct_surface_fitted_to_sfm_points_finds_the_similarity():
    """SfM points on the ellipsoid's visible part (noise 0.5 % of its size, as the generator's, and a tenth of them
    floaters in the air around it) carried into the RGB frame: the fit finds the similarity from 3 degrees and 3 %
    in scale off."""
    from insideout_ns.ct_outline import fit_to_points

    rng = np.random.default_rng(5)
    truth = random_similarity(rng, (0.4, 0.6), 0.3)
    pts = ellipsoid_points(3000, rng, 0.005)
    floaters = rng.uniform(-1.5, 1.5, (300, 3))
    pts = np.concatenate([pts, floaters[np.linalg.norm(floaters / AXES, axis=1) > 1.3]])
    rgb = pts @ truth[:3, :3].T + truth[:3, 3]
    values, aabb = ellipsoid_ct()
    verts, normals = air_boundary(values, aabb, AIR)
    start = truth @ similarity_of(np.array([0.03, -0.04, 0.02, 0.03, -0.02, 0.02, np.log(1.03)]))  # 3 deg, 3 %
    diameter = 2 * AXES.max() * float(np.cbrt(np.linalg.det(truth[:3, :3])))
    before = alignment_error(start, truth, np.zeros(3), diameter)
    fit = fit_to_points(verts, normals, rgb, start)
    after = alignment_error(fit.matrix, truth, np.zeros(3), diameter)
    assert before["rotation_deg"] > 2.5 and before["scale_rel"] > 0.025
    assert fit.used and fit.rms_after < 0.5 * fit.rms_before, fit
    assert after["rotation_deg"] < 0.2 and after["translation_frac"] < 0.002 and after["scale_rel"] < 0.003, after


def test_sfm_points_of_another_object_do_not_move_the_alignment():
    """The SfM points sample a ball; the CT is the elongated ellipsoid: no similarity lays them on its surface."""
    from insideout_ns.ct_outline import fit_to_points

    rng = np.random.default_rng(6)
    d = rng.normal(size=(2000, 3))
    ball = 0.6 * d / np.linalg.norm(d, axis=1, keepdims=True)
    values, aabb = ellipsoid_ct(32)
    verts, normals = air_boundary(values, aabb, AIR)
    fit = fit_to_points(verts, normals, ball, np.eye(4))
    assert not fit.used and np.array_equal(fit.matrix, np.eye(4)) and fit.rms_after > 0.01, fit


def test_a_table_captures_sfm_points_refine_a_ct_scenes_alignment():
    """merge.refine_by_sfm_points, as a CT scene without masks runs it: the object is found among the SfM points on
    the table (object_region.py), the table's points are left out, and the CT's surface fitted to the object's
    brings the alignment from 3 degrees and 5 % off to the truth."""
    from types import SimpleNamespace

    from insideout_ns.dataparsers.scene_format import Volume
    from insideout_ns.merge import ct_surface, refine_by_sfm_points
    from insideout_ns.model_config import NoMasksConfig
    from insideout_ns.object_region import SfmRegion

    rng = np.random.default_rng(7)
    truth = np.diag([0.5, 0.5, 0.5, 1.0])  # the ellipsoid halved, turned about the vertical, standing on z = 0
    truth[:3, :3] = 0.5 * Rotation.from_euler("z", 40, degrees=True).as_matrix()
    truth[2, 3] = 0.5 * AXES[2]
    obj = ellipsoid_points(1500, rng, 0.005) @ truth[:3, :3].T + truth[:3, 3]
    table = np.concatenate([rng.uniform(-2, 2, (3000, 2)), rng.normal(0, 0.002, (3000, 1))], 1)
    c2ws = sphere_orbit(24, 3.0, np.array([0.0, 0.0, 0.2]), np.array([0.0, 0.0, 1.0]))
    c2ws = c2ws[c2ws[:, 2, 3] > 0.5]  # above the table
    cams = Cameras(camera_to_worlds=torch.from_numpy(c2ws[:, :3]).float(), fx=60.0, fy=60.0, cx=32.0, cy=32.0,
                   width=64, height=64, camera_type=CameraType.PERSPECTIVE)
    points = torch.from_numpy(np.concatenate([obj, table])).float()
    values, aabb = ellipsoid_ct()
    inputs = SimpleNamespace(sfm_region=SfmRegion(points, cams).region, start=SimpleNamespace(sfm_points=points),
                             xray=SimpleNamespace(volume=Volume(values, aabb)), ct_air=AIR,
                             no_masks=NoMasksConfig())
    start = truth @ similarity_of(np.array([0.03, 0.04, -0.02, 0.02, 0.01, -0.02, np.log(1.05)]))
    notes = []
    surface = ct_surface(inputs, notes)
    fit = refine_by_sfm_points(inputs, surface, start, notes)
    diameter = 2 * AXES.max() * 0.5
    err = alignment_error(fit.matrix, truth, np.zeros(3), diameter)
    assert 0.9 * len(obj) < fit.points < len(obj) + 50, fit.points  # the object's points, not the table's
    assert fit.used and "SfM points of the object" in notes[-1], notes
    # measured: 0.11 deg, 0.04 %, 0.11 %
    assert err["rotation_deg"] < 0.2 and err["translation_frac"] < 0.002 and err["scale_rel"] < 0.003, err

    # a crop box that holds a few of the object's points only: too few to fit 7 parameters, said, the start kept
    inputs.no_masks = NoMasksConfig(object_obb_center=tuple(obj[0]), object_obb_scale=(0.05, 0.05, 0.05))
    assert refine_by_sfm_points(inputs, surface, start, notes) is None and "fewer than" in notes[-1], notes[-1]
    # a surface level above every voxel: no surface, said, nothing fitted
    inputs.ct_air = 10 * AIR
    assert ct_surface(inputs, notes) is None and "no voxel of the CT exceeds the surface level" in notes[-1], notes[-1]
