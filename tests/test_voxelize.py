"""Voxeliser: dense reference, mass, and compiled backends against the torch twin."""

import math

import pytest
import torch

from insideout_ns.kernels.tiles import covar_and_precision
from insideout_ns.kernels.voxelize import voxelize_density


def gaussians(n, seed, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    means = (torch.rand(n, 3, generator=g, dtype=dtype) - 0.5) * 4.0  # some near or past the grid's edge
    quats = torch.randn(n, 4, generator=g, dtype=dtype)
    scales = 0.2 + 0.6 * torch.rand(n, 3, generator=g, dtype=dtype)
    dens = 0.5 + torch.rand(n, generator=g, dtype=dtype)
    return means, quats, scales, dens


def dense_reference(means, quats, scales, dens, shape, aabb):
    """Every Gaussian at every voxel centre."""
    axes = [aabb[0, k] + (torch.arange(shape[k], dtype=means.dtype) + 0.5) * (aabb[1, k] - aabb[0, k]) / shape[k] for k in range(3)]
    x = torch.stack(torch.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 1, 3)
    _, prec = covar_and_precision(quats, scales)
    delta = x - means
    q = torch.einsum("vni,nij,vnj->vn", delta, prec, delta)
    return (dens * torch.exp(-0.5 * q)).sum(-1).reshape(shape)


def test_voxelise_matches_dense_evaluation_within_the_cutoff_bound():
    means, quats, scales, dens = gaussians(30, seed=0)
    shape, aabb = (19, 13, 22), torch.tensor([[-2.0, -1.5, -2.2], [2.0, 1.5, 2.2]], dtype=torch.float64)
    vol = voxelize_density(means, quats, scales, dens, shape, aabb, backend="torch")
    ref = dense_reference(means, quats, scales, dens, shape, aabb)
    assert (vol - ref).abs().max() <= math.exp(-8.0) * float(dens.sum())
    exact = voxelize_density(means, quats, scales, dens, shape, aabb, backend="torch", cutoff=40.0)
    torch.testing.assert_close(exact, ref, rtol=1e-12, atol=1e-12)


def test_voxel_sum_is_the_mass():
    means = torch.zeros(1, 3, dtype=torch.float64)
    quats = torch.tensor([[0.9, 0.2, -0.3, 0.1]], dtype=torch.float64)
    scales = torch.tensor([[0.5, 0.3, 0.8]], dtype=torch.float64)
    dens = torch.tensor([2.0], dtype=torch.float64)
    aabb = torch.tensor([[-5.0] * 3, [5.0] * 3], dtype=torch.float64)
    vol = voxelize_density(means, quats, scales, dens, (100, 100, 100), aabb, backend="torch")
    mass = 2.0 * (2 * math.pi) ** 1.5 * 0.5 * 0.3 * 0.8
    assert float(vol.sum()) * 0.1**3 == pytest.approx(mass, rel=1e-3)


def test_gradcheck_float64():
    means, quats, scales, dens = gaussians(3, seed=1)
    aabb = torch.tensor([[-2.0] * 3, [2.0] * 3], dtype=torch.float64)
    args = [t.clone().requires_grad_(True) for t in (means, quats, scales, dens)]
    assert torch.autograd.gradcheck(lambda *a: voxelize_density(*a, (5, 4, 6), aabb, backend="torch"), args, eps=1e-6, atol=1e-6)


def compare_backends(backend, device):
    means, quats, scales, dens = gaussians(200, seed=2, dtype=torch.float32)
    aabb = torch.tensor([[-2.0, -1.5, -2.2], [2.0, 1.5, 2.2]], device=device)
    outs = {}
    for name in ("torch", backend):
        args = [t.to(device).clone().requires_grad_(True) for t in (means, quats, scales, dens)]
        vol = voxelize_density(*args, (21, 15, 18), aabb, backend=name)
        (vol * torch.linspace(0.5, 1.5, vol.numel(), device=device).reshape(vol.shape)).sum().backward()
        outs[name] = [vol.detach().cpu()] + [a.grad.cpu() for a in args]
    for got, ref in zip(outs[backend], outs["torch"]):
        torch.testing.assert_close(got, ref, rtol=2e-4, atol=2e-4 * ref.abs().max().item())


def test_cpu_kernels_match_torch_forward_and_backward(cpu_kernels):
    compare_backends("cpu", "cpu")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_kernels_match_torch_forward_and_backward():
    compare_backends("cuda", "cuda")
