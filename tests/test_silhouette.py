"""Silhouette refinement of the alignment, against an analytic support: rays through a union of balls."""

import numpy as np
import pytest
import torch

from insideout_ns.alignment import alignment_error, apply
from insideout_ns.dataparsers.cameras import circular_orbit, pixel_rays, random_similarity
from insideout_ns.silhouette import MAX_MISMATCH, coarser_views, pinhole_views, refine_similarity, rigid_about
from insideout_ns.transforms import transform_gaussians, viewmat_from_c2w

# a ball with three lobes of different sizes: no symmetry, but nearly round (as the fruit phantom)
BALLS = [((0.0, 0.0, 0.0), 1.0), ((1.15, 0.0, 0.0), 0.5), ((0.0, 1.15, 0.0), 0.45), ((0.0, 0.0, 1.15), 0.55)]
SIGMA = 0.05  # the Gaussians' size
INSET = SIGMA + 0.1  # how far inside the surface they sit: the rasterizer's footprint (>= 0.3 px^2) and the rim's
# many Gaussians along a grazing ray widen the alpha by about a pixel (0.1 here), which an RGB population's
# training takes back by fitting the photographs' masks
RES = 48


def analytic_support(c2ws, intr, projection, grow=1.0):  # [V, RES, RES]: 1 where the pixel's ray meets a ball
    out = []
    for c2w in c2ws:
        o, d = pixel_rays(c2w, intr, RES, RES, projection)
        hit = np.zeros(o.shape[:2], dtype=bool)
        for c, r in BALLS:
            v = np.asarray(c) - o
            hit |= (v**2).sum(-1) - (v * d).sum(-1) ** 2 < (grow * r) ** 2  # the ball's centre is that near the ray
        out.append(hit)
    return torch.from_numpy(np.stack(out)).float()


def ball_gaussians(n, rng):
    """Small opaque Gaussians on the surface of the union, INSET inside it (as an RGB population)."""
    pts = []
    for c, r in BALLS:
        d = rng.normal(size=(n, 3))
        p = np.asarray(c) + (r - INSET) * d / np.linalg.norm(d, axis=1, keepdims=True)
        pts.append(p[~np.any([np.linalg.norm(p - np.asarray(c2), axis=1) < r2 - INSET for c2, r2 in BALLS], axis=0)])
    pts = np.concatenate(pts)
    return (torch.from_numpy(pts).float(), torch.tensor([[1.0, 0, 0, 0]]).repeat(len(pts), 1),
            torch.full((len(pts), 3), SIGMA), torch.full((len(pts),), 0.95))


def refine_from_off_truth(projection, grow=1.0):
    """The RGB population at a random similarity; the refinement from 4 degrees and 3 % of the diameter
    off it, against the support of the balls grown by `grow`: (fit, error before, error after)."""
    rng = np.random.default_rng(3)
    c2ws = circular_orbit(16, 4.0)
    intr = (40.0, 40.0, RES / 2, RES / 2) if projection == "cone" else (RES / 4.4, RES / 4.4, RES / 2, RES / 2)
    support = analytic_support(c2ws, intr, projection, grow)
    viewmats = torch.stack([viewmat_from_c2w(torch.from_numpy(c[:3]).float()) for c in c2ws])
    Ks = torch.tensor([[intr[0], 0, intr[2]], [0, intr[1], intr[3]], [0, 0, 1]]).repeat(len(c2ws), 1, 1)
    viewmats, Ks = pinhole_views(viewmats, Ks, projection, distance=400.0)

    truth = random_similarity(rng, (0.5, 2.0), 0.5)  # X-ray -> RGB
    means, quats, scales, opacities = ball_gaussians(800, rng)
    means, quats, scales, _ = transform_gaussians(torch.from_numpy(truth).float(), means, quats, scales, opacities)
    centre = torch.tensor([0.2, 0.2, 0.2])
    start = truth @ rigid_about(torch.tensor([0.04, -0.05, 0.03]), torch.tensor([0.02, -0.02, 0.0]), centre, 1.5).double().numpy()
    diameter = 2.6 * float(np.cbrt(np.linalg.det(truth[:3, :3])))
    with torch.no_grad():  # as at the phase boundary
        fit = refine_similarity(means, quats, scales, opacities, viewmats, Ks, RES, RES, support, start, centre, 1.5,
                                backend="cpu")
    return fit, start, alignment_error(start, truth, centre.numpy(), diameter), \
        alignment_error(fit.matrix, truth, centre.numpy(), diameter)


@pytest.mark.parametrize("projection", ["cone", "parallel"])
def test_refinement_recovers_a_perturbed_similarity(projection, cpu_kernels):
    fit, _, before, after = refine_from_off_truth(projection)
    assert before["rotation_deg"] > 3.5
    assert fit.used and fit.loss_after < 0.5 * fit.loss_before, (fit.loss_before, fit.loss_after)
    assert after["rotation_deg"] < 0.75 and after["translation_frac"] < 0.0075, after  # from 4 deg, 3 %
    assert after["scale_rel"] == pytest.approx(before["scale_rel"], abs=1e-6)  # the scale is the start's


def test_outlines_of_another_object_keep_the_start(cpu_kernels):
    """X-rays of a 25 % bigger object (as a CT's background around the photographed surface): the
    outlines cannot agree, and the start is kept."""
    fit, start, _, _ = refine_from_off_truth("cone", grow=1.25)
    assert fit.mismatch > MAX_MISMATCH and not fit.used
    np.testing.assert_array_equal(fit.matrix, start)


def test_rigid_about_turns_about_the_centre():
    centre = torch.tensor([1.0, -2.0, 0.5])
    m = rigid_about(torch.tensor([0.3, 0.1, -0.2]), torch.tensor([0.5, 0.0, 0.0]), centre, 2.0).double().numpy()
    np.testing.assert_allclose(apply(m, centre.double().numpy()[None])[0], centre.numpy() + [1.0, 0.0, 0.0], atol=1e-6)
    r = m[:3, :3]  # a rotation by |omega|
    np.testing.assert_allclose(r @ r.T, np.eye(3), atol=1e-6)
    assert np.degrees(np.arccos((np.trace(r) - 1) / 2)) == pytest.approx(np.degrees(np.sqrt(0.14)), abs=1e-3)


def test_coarser_views_keep_where_points_land():
    """Averaging the support 3 x 3 (600 x 520 px over MAX_RES 256) keeps its area and maps a point's pixel
    coordinates to a third of themselves."""
    support = torch.zeros(2, 600, 520)
    support[:, 150:450, 90:390] = 1.0
    K = torch.tensor([[[800.0, 0, 260.0], [0, 800.0, 300.0], [0, 0, 1]]]).repeat(2, 1, 1)
    coarse, Kc = coarser_views(support, K)
    assert coarse.shape == (2, 200, 173)
    assert torch.isclose(coarse.sum() * 9, support.sum())
    x = torch.tensor([0.1, -0.2, 1.0])
    assert torch.allclose((Kc[0] @ x)[:2], (K[0] @ x)[:2] / 3)
