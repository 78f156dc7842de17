"""RGB torch rasterizer: against a dense brute-force compositor, and driving gsplat's DefaultStrategy."""

import math

import pytest
import torch
from gsplat.cuda._torch_impl import _fully_fused_projection
from gsplat.strategy import DefaultStrategy

from insideout_ns.kernels.rgb import rasterize_rgb
from insideout_ns.kernels.tiles import covar_and_precision


def scene(n, seed, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    means = torch.empty(n, 3, dtype=dtype)
    means[:, :2] = (torch.rand(n, 2, generator=g, dtype=dtype) - 0.5) * 3.0
    means[:, 2] = 3.0 + 3.0 * torch.rand(n, generator=g, dtype=dtype)
    quats = torch.randn(n, 4, generator=g, dtype=dtype)
    scales = 0.05 + 0.3 * torch.rand(n, 3, generator=g, dtype=dtype)
    opac = 0.2 + 0.79 * torch.rand(n, generator=g, dtype=dtype)
    colors = torch.rand(n, 3, generator=g, dtype=dtype)
    view = torch.eye(4, dtype=dtype)[None]
    K = torch.tensor([[[30.0, 0, 21.3], [0, 28.0, 16.8], [0, 0, 1]]], dtype=dtype)
    return means, quats, scales, opac, colors, view, K


def brute_force(means, quats, scales, opac, colors, view, K, W, H, tile=16, bg=None):
    """Every Gaussian at every pixel, globally sorted by depth, gsplat's rules: a Gaussian reaches a pixel
    when the pixel's tile lies in the square of side 2 radius around its mean."""
    covars, _ = covar_and_precision(quats, scales)
    radii, m2, depths, conics, _ = _fully_fused_projection(means, covars, view, K, W, H)
    radii, m2, depths, conics = radii[0], m2[0], depths[0], conics[0]
    order = torch.argsort(depths)
    img = torch.zeros(H, W, 3, dtype=means.dtype)
    acc = torch.zeros(H, W, dtype=means.dtype)
    for v in range(H):
        for u in range(W):
            T, c = 1.0, torch.zeros(3, dtype=means.dtype)
            for i in order.tolist():
                if radii[i] <= 0:
                    continue
                tx0, ty0 = math.floor((m2[i, 0] - radii[i]) / tile), math.floor((m2[i, 1] - radii[i]) / tile)
                tx1, ty1 = math.ceil((m2[i, 0] + radii[i]) / tile), math.ceil((m2[i, 1] + radii[i]) / tile)
                if not (tx0 <= u // tile < tx1 and ty0 <= v // tile < ty1):
                    continue
                dx, dy = m2[i, 0] - (u + 0.5), m2[i, 1] - (v + 0.5)
                sigma = 0.5 * (conics[i, 0] * dx * dx + conics[i, 2] * dy * dy) + conics[i, 1] * dx * dy
                alpha = min(0.999, float(opac[i] * torch.exp(-sigma)))
                if sigma < 0 or alpha < 1 / 255:
                    continue
                if T * (1 - alpha) <= 1e-4:
                    break
                c = c + colors[i] * alpha * T
                T = T * (1 - alpha)
            img[v, u] = c + (T * bg if bg is not None else 0.0)
            acc[v, u] = 1 - T
    return img, acc


@pytest.mark.parametrize("tile", [8, 16])
def test_matches_brute_force_compositor(tile):
    means, quats, scales, opac, colors, view, K = scene(60, seed=0)
    opac[:10] = 0.995  # opaque ones make some pixels stop early
    W, H = 40, 30
    bg = torch.tensor([0.2, 0.3, 0.4], dtype=torch.float64)
    img, alpha, info = rasterize_rgb(means, quats, scales, opac, colors, view, K, W, H, backgrounds=bg[None],
                                     tile_size=tile, backend="torch")
    ref, acc = brute_force(means, quats, scales, opac, colors, view, K, W, H, tile=tile, bg=bg)
    torch.testing.assert_close(img[0], ref, rtol=0, atol=1e-5)
    torch.testing.assert_close(alpha[0, ..., 0], acc, rtol=0, atol=1e-5)
    assert float(acc.max()) > 0.99  # the early stop was exercised


def test_depth_and_sh_modes():
    means, quats, scales, opac, _, view, K = scene(20, seed=1, dtype=torch.float32)
    sh = torch.randn(20, 16, 3) * 0.2
    img, alpha, _ = rasterize_rgb(means, quats, scales, opac, sh, view, K, 32, 24, sh_degree=3, render_mode="RGB+ED",
                                  backend="torch")
    assert img.shape == (1, 24, 32, 4)
    hit = alpha[..., 0] > 0.5
    depth = img[..., 3][hit]
    assert depth.min() >= 3.0 - 1.5 and depth.max() <= 6.0 + 1.5  # expected depths lie among the Gaussians'


def test_gradients_flow_and_absgrad():
    means, quats, scales, opac, colors, view, K = scene(30, seed=2, dtype=torch.float32)
    params = [t.clone().requires_grad_(True) for t in (means, quats, scales, opac, colors)]
    img, alpha, info = rasterize_rgb(*params, view, K, 32, 24, absgrad=True, backend="torch")
    info["means2d"].retain_grad()
    img.sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in params)
    g, ag = info["means2d"].grad, info["means2d"].absgrad
    assert torch.all(ag >= g.abs() - 1e-6) and ag.sum() > 0


def test_info_drives_default_strategy_densification():
    """The torch backend's info runs gsplat's DefaultStrategy unchanged: after enough steps with large
    image-plane gradients it clones/splits Gaussians."""
    means, quats, scales, opac, colors, view, K = scene(50, seed=3, dtype=torch.float32)
    params = torch.nn.ParameterDict({
        "means": means, "quats": quats, "scales": torch.log(scales), "opacities": torch.logit(opac),
        "colors": colors,
    })
    optimizers = {k: torch.optim.Adam([v], lr=1e-3) for k, v in params.items()}
    strategy = DefaultStrategy(grow_grad2d=1e-8, refine_start_iter=1, refine_every=2, reset_every=10_000,
                               prune_opa=0.0, verbose=False)
    strategy.check_sanity(params, optimizers)
    state = strategy.initialize_state()
    target = torch.rand(1, 24, 32, 3)
    n0 = len(params["means"])
    for step in range(4):
        img, _, info = rasterize_rgb(params["means"], params["quats"], torch.exp(params["scales"]),
                                     torch.sigmoid(params["opacities"]), params["colors"], view, K, 32, 24, backend="torch")
        strategy.step_pre_backward(params, optimizers, state, step, info)
        ((img - target) ** 2).mean().backward()
        strategy.step_post_backward(params, optimizers, state, step, info, packed=False)
        for opt in optimizers.values():
            opt.step()
            opt.zero_grad()
    assert len(params["means"]) > n0


def test_cpp_compositor_matches_torch_forward_backward_and_absgrad(cpu_kernels):
    """The C++ compositor (backend "cpu") against its torch twin: images, alphas, the gradient of every
    input (through gsplat's torch projection) and absgrad, with early-stopping pixels and depth."""
    means, quats, scales, opac, colors, view, K = scene(80, seed=4, dtype=torch.float32)
    opac[:15] = 0.995
    weights = torch.rand(1, 30, 40, 4, generator=torch.Generator().manual_seed(0))
    results = {}
    for backend in ("torch", "cpu"):
        params = [t.clone().requires_grad_(True) for t in (means, quats, scales, opac, colors)]
        bg = torch.tensor([[0.2, 0.3, 0.4]])
        img, alpha, info = rasterize_rgb(*params, view, K, 40, 30, backgrounds=bg, render_mode="RGB+ED",
                                         absgrad=True, tile_size=8, backend=backend)
        info["means2d"].retain_grad()
        ((img * weights).sum() + (alpha * weights[..., :1]).sum()).backward()
        results[backend] = [img.detach(), alpha.detach(), *[p.grad for p in params], info["means2d"].grad,
                            info["means2d"].absgrad]
    assert float(results["cpu"][1].max()) > 0.99  # some pixels stopped early
    names = ["image", "alpha", "means", "quats", "scales", "opacities", "colors", "means2d", "absgrad"]
    for name, a, b in zip(names, results["torch"], results["cpu"]):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-5, msg=lambda m, n=name: f"{n}: {m}")


def test_cpp_compositor_matches_brute_force(cpu_kernels):
    means, quats, scales, opac, colors, view, K = scene(60, seed=0, dtype=torch.float32)
    opac[:10] = 0.995
    bg = torch.tensor([0.2, 0.3, 0.4])
    img, alpha, _ = rasterize_rgb(means, quats, scales, opac, colors, view, K, 40, 30, backgrounds=bg[None],
                                  tile_size=8, backend="cpu")
    ref, acc = brute_force(*(t.double() for t in (means, quats, scales, opac, colors, view, K)), 40, 30, tile=8,
                           bg=bg.double())
    torch.testing.assert_close(img[0].double(), ref, rtol=0, atol=1e-4)
    torch.testing.assert_close(alpha[0, ..., 0].double(), acc, rtol=0, atol=1e-4)
