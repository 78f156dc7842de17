"""A CT's surface fitted to photographs' masks (ct_outline.py), against an analytic reference: an ellipsoid whose
masks are the exact coverage of each pixel by its silhouette (rays against the quadric, 4 x 4 per pixel)."""

import numpy as np
import pytest
import torch
from nerfstudio.cameras.cameras import Cameras, CameraType

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
