"""X-ray rasterizer: exact against numerical quadrature, conservative culling, gradients, backends."""

import math

import numpy as np
import pytest
import torch
from scipy.integrate import quad

from insideout_ns.kernels._backend import BackendUnavailable
from insideout_ns.kernels.tiles import covar_and_precision
from insideout_ns.kernels.xray import rasterize_xray


def random_gaussians(n, seed, dtype=torch.float64, centre=(0.0, 0.0, 6.0), spread=1.5, elongate=False):
    g = torch.Generator().manual_seed(seed)
    means = torch.tensor(centre, dtype=dtype) + spread * (torch.rand(n, 3, generator=g, dtype=dtype) - 0.5) * 2
    quats = torch.randn(n, 4, generator=g, dtype=dtype)
    scales = 0.15 + 0.5 * torch.rand(n, 3, generator=g, dtype=dtype)
    if elongate:
        scales[:, 0] *= 6.0  # needles and pancakes in every orientation
        scales[: n // 2, 1] *= 0.2
    dens = 0.5 + torch.rand(n, generator=g, dtype=dtype)
    return means, quats, scales, dens


def camera(width, height, parallel, dtype=torch.float64, cx_off=1.7, cy_off=-2.3):
    if parallel:
        fx, fy = 1 / 0.11, 1 / 0.09  # pixel sizes 0.11 x 0.09
    else:
        fx, fy = 9.0, 11.0
    K = torch.tensor([[fx, 0, width / 2 + cx_off], [0, fy, height / 2 + cy_off], [0, 0, 1]], dtype=dtype)
    return torch.eye(4, dtype=dtype)[None], K[None]


def quadrature_image(means, quats, scales, dens, K, width, height, parallel):
    """Numerical integral of the density along each pixel's ray, t in [0, inf), scipy.quad in float64."""
    _, prec = covar_and_precision(quats, scales)
    m, p, rho = means.numpy(), prec.numpy(), dens.numpy()
    fx, fy, cx, cy = K[0, 0, 0].item(), K[0, 1, 1].item(), K[0, 0, 2].item(), K[0, 1, 2].item()
    out = np.zeros((height, width))
    for v in range(height):
        for u in range(width):
            x, y = (u + 0.5 - cx) / fx, (v + 0.5 - cy) / fy
            if parallel:
                o, d = np.array([x, y, 0.0]), np.array([0.0, 0.0, 1.0])
            else:
                o, d = np.zeros(3), np.array([x, y, 1.0]) / math.sqrt(x * x + y * y + 1)

            def mu(t):
                delta = o + t * d - m
                return float(np.sum(rho * np.exp(-0.5 * np.einsum("ni,nij,nj->n", delta, p, delta))))

            # break the range at each Gaussian's closest approach so quad sees every peak
            tc = sorted({max(float(np.dot(mi - o, d)), 0.0) for mi in m})
            pts = [0.0] + tc + [tc[-1] + 20.0]
            out[v, u] = sum(quad(mu, a, b, epsabs=1e-13, epsrel=1e-12, limit=200)[0] for a, b in zip(pts[:-1], pts[1:]))
    return out


@pytest.mark.parametrize("parallel", [False, True])
def test_torch_backend_matches_quadrature(parallel):
    """Random Gaussians, a non-square image, an off-centre principal point, and one Gaussian that
    straddles the source plane (the half-line integral must cut it)."""
    means, quats, scales, dens = random_gaussians(6, seed=1)
    means[0] = torch.tensor([0.1, -0.1, 0.2], dtype=torch.float64)  # straddles z = 0
    W, H = 13, 9
    view, K = camera(W, H, parallel)
    img, info = rasterize_xray(means, quats, scales, dens, view, K, W, H, "parallel" if parallel else "cone",
                               backend="torch", cutoff=12.0)
    ref = quadrature_image(means, quats, scales, dens, K, W, H, parallel)
    err = np.abs(img[0, :, :, 0].numpy() - ref).max() / ref.max()
    assert err < 1e-6, err
    assert ref.max() > 1.0


@pytest.mark.parametrize("projection", ["cone", "parallel"])
def test_gradcheck_float64(projection):
    means, quats, scales, dens = random_gaussians(3, seed=2)
    view, K = camera(6, 5, projection == "parallel")
    args = [t.clone().requires_grad_(True) for t in (means, quats, scales, dens)]

    def f(m, q, s, r):
        return rasterize_xray(m, q, s, r, view, K, 6, 5, projection, backend="torch", cutoff=12.0)[0]

    assert torch.autograd.gradcheck(f, args, eps=1e-6, atol=1e-6, rtol=1e-5)


def test_parallel_beam_conserves_every_gaussians_mass():
    """Sum over the detector x pixel area = rho (2 pi)^(3/2) s1 s2 s3 (less what the footprint rule
    drops), for needles and pancakes in every orientation, including ones along the rays."""
    means, quats, _, dens = random_gaussians(40, seed=3, centre=(0.0, 0.0, 8.0), spread=1.0)
    scales = 0.12 + 0.3 * torch.rand(40, 3, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    scales[:20, 0] *= 6.0  # needles (sigma >= 1.2 pixels everywhere, so the pixel sum is a good integral)
    scales[10:30, 1] *= 4.0  # and pancakes
    W = H = 256
    view = torch.eye(4, dtype=torch.float64)[None]
    pix = 0.1
    K = torch.tensor([[[1 / pix, 0, W / 2], [0, 1 / pix, H / 2], [0, 0, 1]]], dtype=torch.float64)
    for i in range(len(means)):
        sl = slice(i, i + 1)
        img, _ = rasterize_xray(means[sl], quats[sl], scales[sl], dens[sl], view, K, W, H, "parallel", backend="torch")
        mass = float(dens[i] * (2 * math.pi) ** 1.5 * scales[i].prod())
        total = float(img.sum()) * pix * pix
        # the footprint keeps exactly 1 - exp(-cutoff^2 / 2) of a projected Gaussian's mass; sampling its
        # edge (a jump of exp(-8) of the 2D peak along a perimeter 2 pi * 4 sigma) adds at most
        # 4 exp(-8) / sigma_px of it
        sigma_px = float(scales[i].min()) / pix
        assert abs(total / mass - (1 - math.exp(-8.0))) <= 4 * math.exp(-8.0) / sigma_px, (i, total / mass)


@pytest.mark.parametrize("projection", ["cone", "parallel"])
def test_culling_is_conservative_against_dense_evaluation(projection):
    """With the default cutoff every pixel differs from evaluating every Gaussian everywhere by at most
    exp(-cutoff^2/2) * sum_i rho_i sqrt(2 pi) s_max,i, also for Gaussians partly outside the image,
    elongated along the rays, or close to the source."""
    means, quats, scales, dens = random_gaussians(60, seed=4, centre=(0.0, 0.0, 4.0), spread=3.0, elongate=True)
    W, H = 40, 28
    view, K = camera(W, H, projection == "parallel")
    culled, info = rasterize_xray(means, quats, scales, dens, view, K, W, H, projection, backend="torch")
    dense, info_dense = rasterize_xray(means, quats, scales, dens, view, K, W, H, projection, backend="torch", cutoff=40.0)
    bound = math.exp(-8.0) * float((dens * math.sqrt(2 * math.pi) * scales.max(dim=1).values).sum())
    assert (culled - dense).abs().max() <= bound
    assert info["n_pairs"] < info_dense["n_pairs"]  # and culling does skip work


def test_gaussians_behind_the_source_are_culled():
    means = torch.tensor([[0.0, 0.0, -5.0], [0.0, 0.0, 5.0]])
    quats = torch.tensor([[1.0, 0, 0, 0]] * 2)
    scales = torch.full((2, 3), 0.3)
    view, K = camera(16, 16, False, dtype=torch.float32)
    img, info = rasterize_xray(means, quats, scales, torch.ones(2), view, K, 16, 16, backend="torch")
    assert info["radii"][0, 0] == 0 and info["radii"][0, 1] > 0
    only_front, _ = rasterize_xray(means[1:], quats[1:], scales[1:], torch.ones(1), view, K, 16, 16, backend="torch")
    assert torch.equal(img, only_front)


def test_means2d_gradient_is_the_image_plane_gradient():
    """means2d.grad (what densification reads) against finite differences of the loss when a Gaussian
    moves so that its projection shifts by a thousandth of a pixel along u or v, at its depth."""
    means, quats, scales, dens = random_gaussians(5, seed=5)
    means.requires_grad_(True)
    view, K = camera(24, 20, False)
    target = torch.rand(1, 20, 24, 1, dtype=torch.float64, generator=torch.Generator().manual_seed(0))

    def loss(m):
        img, info = rasterize_xray(m, quats, scales, dens, view, K, 24, 20, backend="torch", cutoff=40.0)  # no culling
        return ((img - target) ** 2).sum(), info

    value, info = loss(means)
    value.backward()
    step = 1e-3  # pixels
    for i in range(len(means)):
        for axis in (0, 1):
            shift = torch.zeros_like(means)
            shift[i, axis] = step * float(means[i, 2]) / float(K[0, axis, axis])  # camera x / y at fixed depth
            with torch.no_grad():
                fd = (float(loss(means + shift)[0]) - float(loss(means - shift)[0])) / (2 * step)
            assert math.isclose(float(info["means2d"].grad[0, i, axis]), fd, rel_tol=1e-3, abs_tol=1e-6), (i, axis)


def compare_backends(backend, device, cutoff=4.0):
    """Forward and every gradient of a compiled backend against the torch twin (float32). At a tight
    `cutoff` a ray at the footprint's edge carries most of a Gaussian's value (exp(-1/2) at 1): a pixel
    that a backend's culling (the CPU kernels' footprint conic) wrongly drops or keeps stands out."""
    means, quats, scales, dens = random_gaussians(300, seed=6, dtype=torch.float32, centre=(0.0, 0.0, 5.0), spread=2.0)
    W, H = 50, 37  # edge tiles partly outside the image
    outs = {}
    for name in ("torch", backend):
        for projection in ("cone", "parallel"):
            view, K = camera(W, H, projection == "parallel", dtype=torch.float32)
            args = [t.to(device).clone().requires_grad_(True) for t in (means, quats, scales, dens)]
            img, info = rasterize_xray(*args, view.repeat(2, 1, 1).to(device), K.repeat(2, 1, 1).to(device), W, H,
                                       projection, backend=name, cutoff=cutoff)
            weights = torch.linspace(0.5, 1.5, img.numel(), device=device).reshape(img.shape)
            (img * weights).sum().backward()
            outs[name, projection] = [img.detach().cpu()] + [a.grad.cpu() for a in args] + [info["means2d"].grad.cpu()]
    for projection in ("cone", "parallel"):
        for got, ref in zip(outs[backend, projection], outs["torch", projection]):
            torch.testing.assert_close(got, ref, rtol=2e-4, atol=2e-4 * ref.abs().max().item())


@pytest.mark.parametrize("cutoff", [4.0, 1.0])
def test_cpu_kernels_match_torch_forward_and_backward(cpu_kernels, cutoff):
    compare_backends("cpu", "cpu", cutoff)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("cutoff", [4.0, 1.0])
def test_cuda_kernels_match_torch_forward_and_backward(cutoff):
    compare_backends("cuda", "cuda", cutoff)


def compare_small_gaussians_with_float64(backend, device):
    """Gradients of small, far Gaussians (|o - m| / scale ~ 300, as in a fitted model) against float64:
    a float32 backward that forms them as differences of large terms loses them (it once did)."""
    means, quats, scales, dens = random_gaussians(400, seed=8, dtype=torch.float64, spread=0.6)
    scales = 0.01 + 0.03 * torch.rand(400, 3, generator=torch.Generator().manual_seed(9), dtype=torch.float64)
    quats[:20] *= 0.05  # unnormalised quaternions of small norm amplify any error in the covariance gradient
    K = torch.tensor([[[160.0, 0, 23.1], [0, 160.0, 24.7], [0, 0, 1]]], dtype=torch.float64)
    grads = {}
    for name, dtype in (("torch", torch.float64), (backend, torch.float32)):
        args = [t.to(device, dtype).clone().requires_grad_(True) for t in (means, quats, scales, dens)]
        img, _ = rasterize_xray(*args, torch.eye(4, dtype=dtype, device=device)[None], K.to(device, dtype), 48, 48,
                                backend=name)
        (img * torch.linspace(0.5, 1.5, img.numel(), dtype=dtype, device=device).reshape(img.shape)).sum().backward()
        grads[name] = [a.grad.double().cpu() for a in args]
    for label, got, ref in zip(("means", "quats", "scales", "densities"), grads[backend], grads["torch"]):
        err = ((got - ref).abs().max() / ref.abs().max()).item()
        assert err < 5e-3, f"{backend} d/d{label}: max error {err:.2e} of the largest gradient"


def test_cpu_gradients_of_small_gaussians_keep_float32_precision(cpu_kernels):
    compare_small_gaussians_with_float64("cpu", "cpu")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_gradients_of_small_gaussians_keep_float32_precision():
    compare_small_gaussians_with_float64("cuda", "cuda")


def test_unknown_backend_and_projection_are_clear_errors():
    means, quats, scales, dens = random_gaussians(2, seed=7, dtype=torch.float32)
    view, K = camera(8, 8, False, dtype=torch.float32)
    with pytest.raises(ValueError, match="backend must be one of"):
        rasterize_xray(means, quats, scales, dens, view, K, 8, 8, backend="metal")
    with pytest.raises(ValueError, match="projection must be one of"):
        rasterize_xray(means, quats, scales, dens, view, K, 8, 8, projection="fan")
    if not torch.cuda.is_available():
        with pytest.raises(BackendUnavailable, match="needs CUDA tensors"):
            rasterize_xray(means, quats, scales, dens, view, K, 8, 8, backend="cuda")
