"""Frame changes keep X-rays equal; densification conserves attenuation mass."""

import math

import numpy as np
import torch
import torch.nn.functional as F

from insideout_ns.dataparsers.cameras import random_similarity
from insideout_ns.frames import Frames
from insideout_ns.gaussians import RADIATIVE, RGB, inverse_softplus
from insideout_ns.strategy import InsideOutStrategy
from insideout_ns.kernels.xray import rasterize_xray
from insideout_ns.transforms import quat_multiply, rotmat_to_quat, similarity_parts, transform_gaussians, viewmat_from_c2w
from insideout_ns.kernels.tiles import quat_to_rotmat


def gaussians(n=30, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(n, 3, generator=g), torch.randn(n, 4, generator=g), 0.2 + 0.3 * torch.rand(n, 3, generator=g),
            0.5 + torch.rand(n, generator=g))


def test_rotmat_quat_round_trip_including_half_turns():
    for q in [torch.tensor([0.3, -0.5, 0.2, 0.7]), torch.tensor([0.0, 1.0, 0.0, 0.0]), torch.tensor([0.01, 0.0, 0.7, 0.7])]:
        q = q / q.norm()
        back = rotmat_to_quat(quat_to_rotmat(q[None])[0])
        assert torch.allclose(quat_to_rotmat(back[None]), quat_to_rotmat(q[None]), atol=1e-5)
    a, b = F.normalize(torch.randn(4), dim=0), F.normalize(torch.randn(4), dim=0)
    assert torch.allclose(quat_to_rotmat(quat_multiply(a, b)[None])[0], quat_to_rotmat(a[None])[0] @ quat_to_rotmat(b[None])[0], atol=1e-5)


def test_similarity_keeps_every_line_integral():
    """Gaussians and camera moved by p' = s R p + t (frames.Frames.xray_view; parallel beam: pixel size times s):
    same image."""
    means, quats, scales, dens = gaussians()
    m = torch.from_numpy(random_similarity(np.random.default_rng(3), (0.02, 50.0), 3.0)).float()
    c2w = torch.eye(4)[:3]
    c2w[:, 3] = torch.tensor([0.0, 0.0, 6.0])
    for projection, f in (("cone", 20.0), ("parallel", 8.0)):
        K = torch.tensor([[f, 0, 16.0], [0, f, 16.0], [0, 0, 1]])
        img, _ = rasterize_xray(means, quats, scales, dens, viewmat_from_c2w(c2w)[None], K[None], 32, 32, projection, backend="torch")
        viewmat2, K2 = Frames(m, True, torch.zeros(2, 3), 1.0, 1.0).xray_view(c2w, K, projection)
        if projection == "parallel":
            assert math.isclose(float(K2[0, 0]), f / float(similarity_parts(m)[0]), rel_tol=1e-6)
        moved = transform_gaussians(m, means, quats, scales, dens)
        img2, _ = rasterize_xray(*moved, viewmat2[None], K2[None], 32, 32, projection, backend="torch")
        torch.testing.assert_close(img2, img, rtol=2e-3, atol=2e-3 * float(img.max()))


def test_split_and_clone_conserve_mass():
    """A parallel projection's total is the mass; cloning and splitting must keep it."""
    n = 40
    means, quats, scales, dens = gaussians(n, seed=1)
    params = torch.nn.ParameterDict({
        "means": means, "scales": torch.log(scales), "quats": quats, "opacities": torch.zeros(n),
        "densities": inverse_softplus(dens), "features_dc": torch.zeros(n, 3),
    })
    opts = {k: torch.optim.Adam([v], lr=1e-3) for k, v in params.items()}

    def mass():
        s = torch.exp(params["scales"])
        return float((F.softplus(params["densities"]) * (2 * math.pi) ** 1.5 * s.prod(-1)).sum())

    before = mass()
    strategy = InsideOutStrategy(grow_grad2d=0.0, grow_scale3d=0.35, prune_opa=0.0, prune_density_frac=0.0,
                                 prune_scale3d=1e9, refine_start_iter=1, refine_every=1)
    state = strategy.initialize_state()
    state["grad2d"], state["count"] = torch.ones(n), torch.ones(n)
    pop = torch.where(torch.arange(n) % 2 == 0, RGB, RADIATIVE)
    extent = torch.ones(n)
    small = torch.exp(params["scales"]).max(-1).values <= 0.35
    assert small.any() and (~small).any()  # both clones and splits happen
    both = torch.ones(n, dtype=torch.bool)
    state.update(population=pop, extent=extent, by_opacity=both, by_density=both)  # as the model keeps them
    strategy.step_post_backward(params, opts, state, 1)
    new_pop = state["population"]  # resized by gsplat's ops with the Gaussians
    assert len(params["means"]) == n + n and len(new_pop) == 2 * n
    assert math.isclose(mass(), before, rel_tol=1e-4)
    assert (new_pop == RADIATIVE).sum() == (pop == RADIATIVE).sum() * 2  # tags travel with their Gaussians


def test_unwanted_gaussians_are_pruned_on_refine_steps_only():
    """The model's `unwanted` (RGB Gaussians in the air) go at a refinement whatever their attributes, and
    the strategy asks for them only then."""
    n = 6
    params = torch.nn.ParameterDict({"means": torch.zeros(n, 3), "scales": torch.full((n, 3), -3.0),
                                     "quats": torch.tensor([[1.0, 0, 0, 0]]).repeat(n, 1),
                                     "opacities": torch.full((n,), 3.0), "densities": torch.zeros(n)})
    opts = {k: torch.optim.Adam([v], lr=1e-3) for k, v in params.items()}
    strategy = InsideOutStrategy(refine_start_iter=2, refine_every=2, prune_scale3d=1e9)
    pop, extent, yes = torch.full((n,), RGB), torch.ones(n), torch.ones(n, dtype=torch.bool)
    asked = []

    def unwanted():
        asked.append(True)
        return torch.tensor([False, True, False, True, False, False])

    state = strategy.initialize_state()
    state.update(population=pop, extent=extent, by_opacity=yes, by_density=~yes, unwanted=unwanted)
    strategy.step_post_backward(params, opts, state, 1)
    assert len(state["population"]) == n and not asked  # not a refine step
    strategy.step_post_backward(params, opts, state, 2)
    assert len(state["population"]) == n - 2 and len(params["means"]) == n - 2 and asked == [True]
    assert len(state["extent"]) == n - 2 and "pruned" not in state  # every per-Gaussian tensor followed



def test_the_gaussian_set_moves_its_selection_and_keeps_the_optimizers_tensors():
    """GaussianSet.move carries the selected Gaussians by a similarity as transform_gaussians does (the others stay)
    and its inverse brings them back; resize (a checkpoint's count) keeps the Parameter objects the optimizers hold."""
    from insideout_ns.gaussians import GaussianSet
    from insideout_ns.init_points import StartingData

    means, _, scales, dens = gaussians(12)
    start = StartingData(rgb_points=means[:6], radiative=(means[6:], scales[6:, 0], dens[6:]))
    g = GaussianSet.from_start(start, rgb=True, xray=True, sh_degree=1)
    assert g.of(RGB).tolist() == [True] * 6 + [False] * 6 and torch.allclose(g.densities()[6:], dens[6:])
    m = torch.from_numpy(random_similarity(np.random.default_rng(3), (0.5, 2.0), 0.6)).float()
    before = {k: v.detach().clone() for k, v in g.params.items()}
    rad = g.of(RADIATIVE)
    expect = transform_gaussians(m, *g.geometry(rad), g.densities(rad))
    g.move(rad, m)
    for got, want in zip((*g.geometry(rad), g.densities(rad)), expect):
        torch.testing.assert_close(got, want)
    assert all(torch.equal(g.params[k][~rad], before[k][~rad]) for k in before)
    g.move(rad, torch.linalg.inv(m))
    for k in ("means", "scales", "densities"):
        torch.testing.assert_close(g.params[k], before[k], atol=1e-4, rtol=1e-4)
    held = {k: id(v) for k, v in g.params.items()}
    g.resize(20)
    assert len(g) == 20 and len(g.population) == 20 and {k: id(v) for k, v in g.params.items()} == held
