"""Geometry shared by every backend: Gaussians into camera space, conservative footprints, and the
(tile, Gaussian) pairs that culling leaves. Pure torch, on any device; no gradients flow through the
footprints and pairs (they only choose which pixels to evaluate).
"""

from __future__ import annotations

from typing import Tuple

import torch
from torch import Tensor

_SYM = (0, 1, 2, 1, 3, 4, 2, 4, 5)  # 3x3 symmetric matrix from (xx, xy, xz, yy, yz, zz)


def pack_sym(m: Tensor) -> Tensor:  # [..., 3, 3] -> [..., 6]
    return torch.stack([m[..., 0, 0], m[..., 0, 1], m[..., 0, 2], m[..., 1, 1], m[..., 1, 2], m[..., 2, 2]], dim=-1)


def unpack_sym(p: Tensor) -> Tensor:  # [..., 6] -> [..., 3, 3]
    return p[..., list(_SYM)].reshape(*p.shape[:-1], 3, 3)


def quat_to_rotmat(quats: Tensor) -> Tensor:  # [N, 4] (w, x, y, z), any norm -> [N, 3, 3]
    w, x, y, z = torch.unbind(quats / quats.norm(dim=-1, keepdim=True), dim=-1)
    return torch.stack([
        1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
        2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
        2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
    ], dim=-1).reshape(-1, 3, 3)


def covar_and_precision(quats: Tensor, scales: Tensor) -> Tuple[Tensor, Tensor]:
    """Sigma = R S^2 R^T and P = R S^-2 R^T (precision from the scales directly, no matrix inverse).

    quats [N, 4], scales [N, 3] -> covars [N, 3, 3], precisions [N, 3, 3]."""
    rot = quat_to_rotmat(quats)
    covar = (rot * scales[:, None, :] ** 2) @ rot.transpose(-1, -2)
    prec = (rot / scales[:, None, :] ** 2) @ rot.transpose(-1, -2)
    return covar, prec


def to_camera(means: Tensor, mats: Tensor, viewmats: Tensor):
    """World means [N, 3] and symmetric matrices [N, 3, 3] into each camera (world-to-camera
    viewmats [C, 4, 4], rigid): means [C, N, 3], matrices [C, N, 3, 3]."""
    rot, t = viewmats[:, None, :3, :3], viewmats[:, None, :3, 3]
    means_c = (rot @ means[None, :, :, None])[..., 0] + t
    mats_c = rot @ mats[None] @ rot.transpose(-1, -2)
    return means_c, mats_c


@torch.no_grad()
def xray_footprints(means_c: Tensor, covars_c: Tensor, intrinsics: Tensor, width: int, height: int, parallel: bool,
                    cutoff: float) -> Tensor:
    """Pixel bounds [C, N, 4] = (u_lo, v_lo, u_hi, v_hi), inclusive pixel indices (empty when lo > hi),
    of every pixel whose ray comes within Mahalanobis distance `cutoff` of the mean.

    Cone beam: the rays through the ellipsoid E_k = {|x - m|_Sigma <= k} form a cone whose image is the conic
    with dual matrix K (k^2 Sigma - m m^T) K^T; its tangent lines bound it exactly. An ellipsoid that
    straddles the source's plane (z = 0) may reach every pixel; one wholly behind it reaches none.
    Parallel beam: the projection of E_k along z is the ellipse with covariance k^2 Sigma_xy.
    """
    k2 = cutoff * cutoff
    fx, fy, cx, cy = (intrinsics[:, None, i] for i in range(4))  # [C, 1]
    mx, my, mz = means_c.unbind(-1)
    sxx, syy, szz = covars_c[..., 0, 0], covars_c[..., 1, 1], covars_c[..., 2, 2]
    depth_reach = cutoff * szz.sqrt()
    if parallel:
        hx, hy = cutoff * sxx.sqrt(), cutoff * syy.sqrt()
        x_lo, x_hi, y_lo, y_hi = mx - hx, mx + hx, my - hy, my + hy
        visible = mz + depth_reach >= 0
    else:
        m22 = k2 * szz - mz * mz  # < 0 exactly when the whole of E_k has z > 0 or z < 0
        in_front = (m22 < 0) & (mz > 0)
        straddles = mz.abs() <= depth_reach
        m00 = k2 * sxx - mx * mx
        m11 = k2 * syy - my * my
        m02 = k2 * covars_c[..., 0, 2] - mx * mz
        m12 = k2 * covars_c[..., 1, 2] - my * mz
        safe = torch.where(in_front, m22, -torch.ones_like(m22))
        rx = (m02 * m02 - m00 * safe).clamp(min=0).sqrt()
        ry = (m12 * m12 - m11 * safe).clamp(min=0).sqrt()
        # roots of m22 x^2 - 2 m02 x + m00 = 0 (m22 < 0, so the order flips)
        x_lo, x_hi = (m02 + rx) / safe, (m02 - rx) / safe
        y_lo, y_hi = (m12 + ry) / safe, (m12 - ry) / safe
        big = torch.full_like(mx, 1e12)
        x_lo, y_lo = torch.where(straddles, -big, x_lo), torch.where(straddles, -big, y_lo)
        x_hi, y_hi = torch.where(straddles, big, x_hi), torch.where(straddles, big, y_hi)
        visible = in_front | straddles
    # pixel i is in when its centre i + 0.5 lies inside [u_lo, u_hi]
    u_lo = torch.ceil((fx * x_lo + cx - 0.5).clamp(-1.0, width + 1.0))
    u_hi = torch.floor((fx * x_hi + cx - 0.5).clamp(-1.0, width + 1.0))
    v_lo = torch.ceil((fy * y_lo + cy - 0.5).clamp(-1.0, height + 1.0))
    v_hi = torch.floor((fy * y_hi + cy - 0.5).clamp(-1.0, height + 1.0))
    bounds = torch.stack([u_lo.clamp(min=0), v_lo.clamp(min=0), u_hi.clamp(max=width - 1), v_hi.clamp(max=height - 1)], -1)
    empty = ~visible | (bounds[..., 0] > bounds[..., 2]) | (bounds[..., 1] > bounds[..., 3])
    bounds[empty] = torch.tensor([0.0, 0.0, -1.0, -1.0], device=bounds.device, dtype=bounds.dtype)
    return bounds.long()


@torch.no_grad()
def box_pairs(lo: Tensor, hi: Tensor, grid: Tuple[int, ...]) -> Tuple[Tensor, Tensor]:
    """Every (cell, box) pair for boxes of cells lo..hi (inclusive, [K, D]) on a row-major grid.

    Returns cell indices [M] and box indices [M], sorted by cell (stable: boxes in order within a cell).
    """
    ext = (hi - lo + 1).clamp(min=0)  # [K, D]
    counts = ext.prod(dim=-1)
    box = torch.repeat_interleave(torch.arange(len(lo), device=lo.device), counts)
    start = torch.cumsum(counts, 0) - counts
    local = torch.arange(int(counts.sum()), device=lo.device) - start[box]
    cell = torch.zeros_like(local)
    for dim in range(lo.shape[1] - 1, -1, -1):  # peel the fastest-varying dimension first
        e = ext[box, dim]
        cell = cell + (lo[box, dim] + local % e) * _stride(grid, dim)
        local = local // e
    order = torch.argsort(cell, stable=True)
    return cell[order], box[order]


def _stride(grid: Tuple[int, ...], dim: int) -> int:
    s = 1
    for n in grid[dim + 1 :]:
        s *= n
    return s


@torch.no_grad()
def tile_pairs(bounds: Tensor, width: int, height: int, tile_size: int) -> Tuple[Tensor, Tensor, Tensor]:
    """(tile, Gaussian) pairs from pixel bounds [C, N, 4]: pair tiles [M] (index c * TH * TW + ty * TW + tx),
    pair Gaussians [M] (index c * N + n), and per-tile offsets [C * TH * TW + 1] into the pairs."""
    C, N = bounds.shape[:2]
    th, tw = -(-height // tile_size), -(-width // tile_size)
    cam = torch.arange(C, device=bounds.device).repeat_interleave(N)
    b = bounds.reshape(-1, 4) // tile_size
    lo = torch.stack([cam, b[:, 1], b[:, 0]], dim=-1)  # (camera, tile row, tile column)
    hi = torch.stack([cam, b[:, 3], b[:, 2]], dim=-1)
    empty = bounds.reshape(-1, 4)[:, 2] < bounds.reshape(-1, 4)[:, 0]
    hi[empty] = lo[empty] - 1
    pair_tile, pair_gauss = box_pairs(lo, hi, (C, th, tw))
    offsets = torch.searchsorted(pair_tile, torch.arange(C * th * tw + 1, device=bounds.device))
    return pair_tile, pair_gauss, offsets
