"""The voxeliser: the density field of all Gaussians sampled on a grid (a CT volume), differentiable.

`mu(x) = sum_i rho_i exp(-1/2 |x - m_i|^2_{Sigma_i^-1})` at every voxel centre, with the grid convention
of the scene format (index [i, j, k] along x, y, z; centre aabb[0] + (index + 0.5) * size / shape). Each
Gaussian is evaluated at the voxel centres inside its `cutoff`-sigma axis-aligned box only (and so visits only
the blocks of voxels that box touches).

Example:
    >>> import torch
    >>> from insideout_ns.kernels.voxelize import voxelize_density
    >>> vol = voxelize_density(torch.zeros(1, 3), torch.tensor([[1.0, 0, 0, 0]]), torch.ones(1, 3),
    ...                        torch.tensor([3.0]), (5, 5, 5), torch.tensor([[-2.5] * 3, [2.5] * 3]), backend="torch")
    >>> vol.shape, float(vol[2, 2, 2])
    (torch.Size([5, 5, 5]), 3.0)
"""

from __future__ import annotations

from typing import Tuple

import torch
from torch import Tensor

from . import _torch_impl
from ._backend import load_extension, resolve
from .tiles import box_pairs, covar_and_precision, pack_sym


class _CompiledVoxelize(torch.autograd.Function):
    @staticmethod
    def forward(ctx, means, prec, densities, origin, spacing, shape, block, module, pair_block, pair_gauss, offsets, boxes):
        vol = module.voxelize_forward(means, prec, densities, origin, spacing, *shape, block, offsets, pair_gauss, boxes)
        ctx.save_for_backward(means, prec, densities, origin, spacing, pair_block, pair_gauss, boxes)
        ctx.args = (shape, block, module)
        return vol

    @staticmethod
    def backward(ctx, v_vol):
        means, prec, densities, origin, spacing, pair_block, pair_gauss, boxes = ctx.saved_tensors
        shape, block, module = ctx.args
        rows = module.voxelize_backward(means, prec, densities, origin, spacing, *shape, block, pair_block, pair_gauss,
                                        boxes, v_vol.contiguous())
        per_gauss = rows.new_zeros(means.shape[0], 10).index_add_(0, pair_gauss, rows)
        return per_gauss[:, :3], per_gauss[:, 3:9], per_gauss[:, 9], None, None, None, None, None, None, None, None, None


@torch.no_grad()
def block_pairs(means: Tensor, covar: Tensor, origin: Tensor, spacing: Tensor, shape: Tuple[int, int, int], block: int,
                cutoff: float):
    """(block, Gaussian) pairs of the voxel blocks each Gaussian's cutoff-sigma box touches, the block offsets
    of the pairs, and the box itself: [N, 6] int32 voxel indices lo i, j, k, hi i, j, k (inclusive), the voxel
    centres inside the ellipsoid's axis-aligned box, the only voxels the Gaussian is evaluated at."""
    half = cutoff * torch.diagonal(covar, dim1=-2, dim2=-1).sqrt()  # [N, 3] the ellipsoid's axis-aligned box
    n = torch.tensor(shape, device=means.device)
    lo = torch.ceil((means - half - origin) / spacing).long().clamp(min=0)  # first voxel centre inside
    hi = torch.floor((means + half - origin) / spacing).long()
    hi = torch.minimum(hi, n - 1)
    grid = tuple(-(-s // block) for s in shape)
    pair_block, pair_gauss = box_pairs(lo // block, torch.where(hi >= lo, hi // block, lo // block - 1), grid)
    offsets = torch.searchsorted(pair_block, torch.arange(grid[0] * grid[1] * grid[2] + 1, device=means.device))
    return pair_block, pair_gauss, offsets, torch.cat([lo, hi], dim=-1).int().contiguous()


def voxelize_density(
    means: Tensor,  # [N, 3]
    quats: Tensor,  # [N, 4]
    scales: Tensor,  # [N, 3]
    densities: Tensor,  # [N]
    shape: Tuple[int, int, int],
    aabb: Tensor,  # [2, 3]
    backend: str = "auto",
    block: int = 8,
    cutoff: float = 4.0,
) -> Tensor:  # [nx, ny, nz]
    """Density on the grid; what `cutoff` leaves out is below exp(-cutoff^2 / 2) of each Gaussian's peak."""
    N = means.shape[0]
    assert means.shape == (N, 3) and quats.shape == (N, 4) and scales.shape == (N, 3), (means.shape, quats.shape)
    assert densities.shape == (N,), densities.shape
    assert aabb.shape == (2, 3), aabb.shape
    shape = tuple(int(s) for s in shape)
    backend = resolve(backend, means.device)
    aabb = aabb.to(means)
    spacing = (aabb[1] - aabb[0]) / torch.tensor(shape, device=means.device, dtype=means.dtype)
    origin = aabb[0] + 0.5 * spacing  # centre of voxel (0, 0, 0)
    covar, prec = covar_and_precision(quats, scales)
    pair_block, pair_gauss, offsets, boxes = block_pairs(means, covar, origin, spacing, shape, block, cutoff)
    prec6 = pack_sym(prec)
    if backend == "torch":
        return _torch_impl.voxelize_blocks(means, prec6, densities, origin, spacing, shape, block, pair_block, pair_gauss,
                                           boxes)
    module = load_extension(backend)
    f32 = [t.float().contiguous() for t in (means, prec6, densities, origin, spacing)]
    vol = _CompiledVoxelize.apply(*f32, shape, block, module, pair_block, pair_gauss, offsets, boxes)
    return vol.to(means.dtype)
