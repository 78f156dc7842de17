"""Pure-PyTorch twins of the compiled kernels (csrc/xray_math.h, xray_cpu.cpp, xray_cuda.cu).

Differentiable by autograd, run on any device, and the reference every compiled kernel is tested
against. Each function takes exactly the arguments of its compiled twin.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .tiles import unpack_sym


def pixel_rays(u: Tensor, v: Tensor, intr: Tensor, parallel: bool):
    """Rays (OpenCV camera axes) of pixels (u, v) (integer indices; centres at +0.5).

    u, v: [...] int; intr: [..., 4] (fx, fy, cx, cy) broadcastable. Returns origins, unit dirs [..., 3].
    """
    x = (u.to(intr.dtype) + 0.5 - intr[..., 2]) / intr[..., 0]
    y = (v.to(intr.dtype) + 0.5 - intr[..., 3]) / intr[..., 1]
    if parallel:
        o = torch.stack([x, y, torch.zeros_like(x)], dim=-1)
        d = torch.zeros_like(o)
        d[..., 2] = 1.0
    else:
        d = torch.stack([x, y, torch.ones_like(x)], dim=-1)
        d = d / d.norm(dim=-1, keepdim=True)
        o = torch.zeros_like(d)
    return o, d


def line_geometry(o: Tensor, d: Tensor, m: Tensor, prec: Tensor):
    """(a, b, q) of the ray o + t d (|d| = 1) and the Gaussian (m, P): a = d^T P d, b = d^T P (o - m),
    q = the smallest Mahalanobis^2 along the line. o, d, m: [..., 3]; prec: [..., 3, 3]. Each [...]."""
    delta = o - m
    pd = (prec @ d[..., None])[..., 0]
    a = (d * pd).sum(-1)
    b = (delta * pd).sum(-1)
    w = delta - (b / a)[..., None] * d  # residual at the closest point, in P
    q = (w * (prec @ w[..., None])[..., 0]).sum(-1).clamp(min=0.0)
    return a, b, q


def unit_line_integral(a: Tensor, b: Tensor, q: Tensor) -> Tensor:
    """Exact half-line integral (t >= 0) of exp(-1/2 |x - m|_P^2): sqrt(pi / 2a) erfc(b / sqrt(2a)) exp(-q / 2)."""
    return torch.sqrt(math.pi / (2 * a)) * torch.erfc(b / torch.sqrt(2 * a)) * torch.exp(-0.5 * q)


def rasterize_xray_tiles(
    means_c: Tensor,  # [C, N, 3] camera-space means (OpenCV axes)
    prec_c: Tensor,  # [C, N, 6] camera-space precisions (xx, xy, xz, yy, yz, zz)
    densities: Tensor,  # [N]
    intrinsics: Tensor,  # [C, 4] fx, fy, cx, cy
    width: int,
    height: int,
    tile_size: int,
    parallel: bool,
    cutoff: float,
    pair_tile: Tensor,  # [M] int64 tile index in [0, C * TH * TW)
    pair_gauss: Tensor,  # [M] int64 Gaussian index in [0, C * N) (camera-major)
) -> Tensor:  # [C, H, W]
    """Sums each (tile, Gaussian) pair's exact line integrals over the tile's pixels whose rays pass within
    Mahalanobis distance `cutoff` of the mean."""
    C, N = means_c.shape[:2]
    th, tw = -(-height // tile_size), -(-width // tile_size)
    out = means_c.new_zeros(C * th * tw, tile_size * tile_size)
    if pair_tile.numel() > 0:
        cam = pair_tile // (th * tw)
        ty = (pair_tile % (th * tw)) // tw
        tx = pair_tile % tw
        local = torch.arange(tile_size * tile_size, device=means_c.device)
        u = tx[:, None] * tile_size + local % tile_size  # [M, T*T]
        v = ty[:, None] * tile_size + local // tile_size
        o, d = pixel_rays(u, v, intrinsics[cam][:, None, :], parallel)  # [M, T*T, 3]
        m = means_c.reshape(-1, 3)[pair_gauss][:, None, :]
        p = unpack_sym(prec_c.reshape(-1, 6)[pair_gauss])[:, None]
        rho = densities[pair_gauss % N][:, None]
        a, b, q = line_geometry(o, d, m, p)
        inside = (u < width) & (v < height) & (q <= cutoff * cutoff)  # in the image and in the footprint
        vals = torch.where(inside, rho * unit_line_integral(a, b, q), torch.zeros_like(q))
        out = out.index_add(0, pair_tile, vals)
    img = out.reshape(C, th, tw, tile_size, tile_size).permute(0, 1, 3, 2, 4).reshape(C, th * tile_size, tw * tile_size)
    return img[:, :height, :width]


def point_density(x: Tensor, m: Tensor, prec: Tensor, rho: Tensor) -> Tensor:
    """rho exp(-1/2 (x - m)^T P (x - m)); x, m [..., 3], prec [..., 3, 3], rho [...]."""
    delta = x - m
    return rho * torch.exp(-0.5 * (delta * (prec @ delta[..., None])[..., 0]).sum(-1))


def voxelize_blocks(
    means: Tensor,  # [N, 3] world means
    prec: Tensor,  # [N, 6]
    densities: Tensor,  # [N]
    origin: Tensor,  # [3] centre of voxel (0, 0, 0)
    spacing: Tensor,  # [3] voxel size
    shape: tuple,  # (nx, ny, nz)
    block: int,
    pair_block: Tensor,  # [M] int64 block index in [0, BX * BY * BZ)
    pair_gauss: Tensor,  # [M] int64
    boxes: Tensor,  # [N, 6] int: each Gaussian's voxel box, lo i, j, k, hi i, j, k (inclusive)
) -> Tensor:  # [nx, ny, nz]
    """Sums each (block, Gaussian) pair's density over the block's voxels inside the Gaussian's box."""
    bx, by, bz = (-(-n // block) for n in shape)
    out = means.new_zeros(bx * by * bz, block**3)
    if pair_block.numel() > 0:
        i0 = pair_block // (by * bz)
        j0 = (pair_block // bz) % by
        k0 = pair_block % bz
        local = torch.arange(block**3, device=means.device)
        i = i0[:, None] * block + local // (block * block)
        j = j0[:, None] * block + (local // block) % block
        k = k0[:, None] * block + local % block
        x = origin + torch.stack([i, j, k], dim=-1).to(means.dtype) * spacing  # voxel centres [M, B^3, 3]
        vals = point_density(x, means[pair_gauss][:, None], unpack_sym(prec[pair_gauss])[:, None], densities[pair_gauss][:, None])
        box = boxes[pair_gauss].long()[:, None]  # [M, 1, 6]
        inside = ((i >= box[..., 0]) & (i <= box[..., 3]) & (j >= box[..., 1]) & (j <= box[..., 4])
                  & (k >= box[..., 2]) & (k <= box[..., 5]))  # the box lies within the grid (block_pairs clamps it)
        vals = vals * inside
        out = out.index_add(0, pair_block, vals)
    vol = out.reshape(bx, by, bz, block, block, block).permute(0, 3, 1, 4, 2, 5)
    return vol.reshape(bx * block, by * block, bz * block)[: shape[0], : shape[1], : shape[2]]
