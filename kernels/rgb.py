"""The RGB rasterizer: gsplat 1.4.0's `rasterization` on CUDA; elsewhere gsplat's torch projection and a
tile compositor, in C++ (backend "cpu", csrc/rgb_cpu.cpp) or pure PyTorch (backend "torch", its twin),
with the same semantics (so the RGB branch trains on a CPU).

The torch backend reuses gsplat's own torch projection (`_fully_fused_projection`: the 0.3 low-pass,
the 3-sigma radius, the near/far culling) and spherical harmonics, and composites front to back per
tile exactly as gsplat's CUDA kernel does: alpha = min(0.999, o exp(-sigma)), Gaussians with
alpha < 1/255 skipped, a pixel stops (exclusively) once its transmittance would fall to 1e-4 or below.

Example:
    >>> import torch
    >>> from insideout_ns.kernels.rgb import rasterize_rgb
    >>> K = torch.tensor([[[20.0, 0, 8], [0, 20.0, 8], [0, 0, 1]]])
    >>> rgb, alpha, info = rasterize_rgb(torch.tensor([[0.0, 0, 3]]), torch.tensor([[1.0, 0, 0, 0]]),
    ...     torch.full((1, 3), 0.2), torch.tensor([0.9]), torch.tensor([[1.0, 0.5, 0.0]]),
    ...     torch.eye(4)[None], K, 16, 16, backend="torch")
    >>> rgb.shape, alpha.shape, round(float(alpha.max()), 2)  # the mean falls between four pixel centres
    (torch.Size([1, 16, 16, 3]), torch.Size([1, 16, 16, 1]), 0.8)
"""

from __future__ import annotations

from typing import Dict, Optional, Tuple

import torch
from torch import Tensor

from ._backend import load_extension, resolve
from .tiles import box_pairs, covar_and_precision

ALPHA_MIN = 1.0 / 255.0  # gsplat: Gaussians fainter than this at a pixel are skipped
SH_C0 = 0.28209479177387814  # the degree-0 spherical harmonic: colour = SH_C0 * features_dc + 0.5
ALPHA_MAX = 0.999  # gsplat: the alpha clamp
T_MIN = 1e-4  # gsplat: a pixel is done once its transmittance would reach this (exclusive)


def _tile_pairs_sorted(means2d: Tensor, radii: Tensor, depths: Tensor, width: int, height: int, tile_size: int):
    """(tile, Gaussian) pairs of gsplat's tile assignment (the square of side 2 radius around each mean),
    sorted by tile and, within a tile, front to back."""
    C, N = radii.shape
    th, tw = -(-height // tile_size), -(-width // tile_size)
    tmin = torch.floor((means2d - radii[..., None]) / tile_size).long()  # [C, N, 2] as gsplat's isect_tiles
    tmax = torch.ceil((means2d + radii[..., None]) / tile_size).long()
    tmin[..., 0].clamp_(0, tw), tmin[..., 1].clamp_(0, th)
    tmax[..., 0].clamp_(0, tw), tmax[..., 1].clamp_(0, th)
    cam = torch.arange(C, device=radii.device)[:, None].expand(C, N)
    lo = torch.stack([cam, tmin[..., 1], tmin[..., 0]], -1).reshape(-1, 3)
    hi = torch.stack([cam, tmax[..., 1] - 1, tmax[..., 0] - 1], -1).reshape(-1, 3)
    hi[(radii <= 0).reshape(-1)] = lo[(radii <= 0).reshape(-1)] - 1
    # order Gaussians front to back first; box_pairs' stable sort by tile keeps that order inside a tile
    order = torch.argsort(depths.reshape(-1), stable=True)
    pair_tile, k = box_pairs(lo[order], hi[order], (C, th, tw))
    return pair_tile, order[k], (th, tw)


def _absgrad_hook(absgrad: Tensor, gauss: Tensor, valid: Tensor):
    """Accumulates, per Gaussian, the sum over pixels of |d loss / d means2d| (gsplat's `absgrad`)."""

    def hook(grad: Tensor) -> None:  # grad [B, T2, K, 2]: one row per pixel and Gaussian
        absgrad.index_add_(0, gauss[valid], grad.abs().sum(1)[valid].to(absgrad.dtype))

    return hook


def _chunks(counts, pixels: int, budget: int):
    """Consecutive slices of tiles (sorted by length) whose padded [tiles, pixels, K] block fits the budget."""
    begin = 0
    for i, k in enumerate(counts):
        if i > begin and (i - begin + 1) * pixels * k > budget:
            yield slice(begin, i)
            begin = i
    yield slice(begin, len(counts))


def _composite(
    means2d: Tensor, conics: Tensor, opacities: Tensor, colors: Tensor,  # [C*N, 2], [C*N, 3], [C*N], [C*N, D]
    pair_tile: Tensor, pair_gauss: Tensor, C: int, th: int, tw: int, width: int, height: int, tile_size: int,
    absgrad: Optional[Tensor], budget: int = 1 << 22,
) -> Tuple[Tensor, Tensor]:
    """Front-to-back compositing of each tile's depth-sorted list: colours [C, H, W, D], alphas [C, H, W, 1]."""
    D = colors.shape[-1]
    T2 = tile_size * tile_size
    n_tiles = C * th * tw
    out_c = colors.new_zeros(n_tiles, T2, D)
    out_t = colors.new_ones(n_tiles, T2)
    if pair_tile.numel():
        tiles, counts = torch.unique_consecutive(pair_tile, return_counts=True)
        starts = torch.cumsum(counts, 0) - counts
        by_count = torch.argsort(counts)  # tiles of similar length share a chunk: little padding
        tiles, counts, starts = tiles[by_count], counts[by_count], starts[by_count]
        local = torch.arange(T2, device=colors.device)
        for chunk in _chunks(counts.tolist(), T2, budget):
            tl, cnt, st = tiles[chunk], counts[chunk], starts[chunk]
            kmax = int(cnt.max())
            slot = torch.arange(kmax, device=colors.device)
            valid = slot[None] < cnt[:, None]  # [B, K]
            g = pair_gauss[(st[:, None] + slot[None]).clamp(max=len(pair_gauss) - 1)]  # [B, K]
            cam_tile = tl % (th * tw)
            px = ((cam_tile % tw)[:, None] * tile_size + local % tile_size).to(colors.dtype) + 0.5  # [B, T2]
            py = ((cam_tile // tw)[:, None] * tile_size + local // tile_size).to(colors.dtype) + 0.5
            m2 = means2d[g][:, None].expand(-1, T2, -1, -1)  # [B, T2, K, 2]
            if absgrad is not None and m2.requires_grad:
                m2.register_hook(_absgrad_hook(absgrad, g, valid))
            dx = m2[..., 0] - px[..., None]
            dy = m2[..., 1] - py[..., None]
            con = conics[g][:, None]  # [B, 1, K, 3]
            sigma = 0.5 * (con[..., 0] * dx * dx + con[..., 2] * dy * dy) + con[..., 1] * dx * dy
            alpha = torch.clamp(opacities[g][:, None] * torch.exp(-sigma), max=ALPHA_MAX)
            alpha = torch.where((sigma >= 0) & (alpha >= ALPHA_MIN) & valid[:, None], alpha, torch.zeros_like(alpha))
            t_incl = torch.cumprod(1.0 - alpha, dim=-1)
            keep = torch.cumsum((t_incl <= T_MIN).int(), dim=-1) == 0  # stop before the Gaussian that ends it
            alpha = alpha * keep
            t_incl = torch.cumprod(1.0 - alpha, dim=-1)
            t_excl = torch.cat([torch.ones_like(t_incl[..., :1]), t_incl[..., :-1]], dim=-1)
            weights = alpha * t_excl  # [B, T2, K]
            out_c = out_c.index_copy(0, tl, torch.einsum("btk,bkd->btd", weights, colors[g]))
            out_t = out_t.index_copy(0, tl, t_incl[..., -1])
    img = out_c.reshape(C, th, tw, tile_size, tile_size, D).permute(0, 1, 3, 2, 4, 5)
    img = img.reshape(C, th * tile_size, tw * tile_size, D)[:, :height, :width]
    trans = out_t.reshape(C, th, tw, tile_size, tile_size).permute(0, 1, 3, 2, 4)
    trans = trans.reshape(C, th * tile_size, tw * tile_size)[:, :height, :width]
    return img, 1.0 - trans[..., None]


class _CompositeCpu(torch.autograd.Function):
    """The C++ compositor (csrc/rgb_cpu.cpp) with its backward; same inputs and outputs as `_composite`."""

    @staticmethod
    def forward(ctx, means2d, conics, opacities, colors, tile_offsets, pair_gauss, C, width, height, tile_size,
                absgrad):
        ext = load_extension("cpu")
        args = (means2d.contiguous(), conics.contiguous(), opacities.contiguous(), colors.contiguous(),
                tile_offsets, pair_gauss)
        img, trans, last = ext.rgb_composite_forward(*args, C, width, height, tile_size)
        ctx.save_for_backward(*args, trans, last)
        ctx.sizes = (C, width, height, tile_size)
        ctx.absgrad = absgrad  # [C * N, 2] or None: gsplat's absgrad, summed here in the backward pass
        return img, (1.0 - trans)[..., None]

    @staticmethod
    def backward(ctx, v_img, v_alpha):
        means2d, conics, opacities, colors, tile_offsets, pair_gauss, trans, last = ctx.saved_tensors
        D = colors.shape[1]
        rows = load_extension("cpu").rgb_composite_backward(
            means2d, conics, opacities, colors, tile_offsets, pair_gauss, *ctx.sizes, trans, last,
            v_img.contiguous().float(), v_alpha[..., 0].contiguous().float())
        per_gauss = rows.new_zeros(len(means2d), rows.shape[1]).index_add_(0, pair_gauss, rows)  # pairs -> Gaussians
        if ctx.absgrad is not None:
            ctx.absgrad += per_gauss[:, 6 + D :]
        return (per_gauss[:, 0:2], per_gauss[:, 2:5], per_gauss[:, 5], per_gauss[:, 6 : 6 + D],
                None, None, None, None, None, None, None)


def rasterize_rgb(
    means: Tensor,  # [N, 3]
    quats: Tensor,  # [N, 4]
    scales: Tensor,  # [N, 3]
    opacities: Tensor,  # [N]
    colors: Tensor,  # [N, D], or SH coefficients [N, K, 3] with sh_degree
    viewmats: Tensor,  # [C, 4, 4]
    Ks: Tensor,  # [C, 3, 3]
    width: int,
    height: int,
    near_plane: float = 0.01,
    far_plane: float = 1e10,
    eps2d: float = 0.3,
    sh_degree: Optional[int] = None,
    tile_size: Optional[int] = None,
    backgrounds: Optional[Tensor] = None,  # [C, D]
    render_mode: str = "RGB",
    absgrad: bool = False,
    backend: str = "auto",
) -> Tuple[Tensor, Tensor, Dict]:
    """gsplat 1.4.0's `rasterization` (unpacked, pinhole, classic) with a backend choice.

    Returns colours [C, H, W, D (+1 with depth)], alphas [C, H, W, 1] and gsplat's `info` dict
    (`means2d`, `radii`, `depths`, `conics`, `width`, `height`, `n_cameras`, `gaussian_ids`, ...),
    which gsplat's DefaultStrategy consumes unchanged on either backend.
    """
    N, C = means.shape[0], viewmats.shape[0]
    assert means.shape == (N, 3) and quats.shape == (N, 4) and scales.shape == (N, 3), (means.shape, quats.shape)
    assert opacities.shape == (N,), opacities.shape
    assert viewmats.shape == (C, 4, 4) and Ks.shape == (C, 3, 3), (viewmats.shape, Ks.shape)
    if render_mode not in ("RGB", "RGB+D", "RGB+ED"):
        raise ValueError(f"render_mode must be 'RGB', 'RGB+D' or 'RGB+ED', got {render_mode!r}")
    backend = resolve(backend, means.device)
    tile_size = tile_size or (16 if backend == "cuda" else 8)  # smaller tiles waste less work on a CPU
    if backend == "cuda":
        from gsplat import rasterization

        return rasterization(means, quats, scales, opacities, colors, viewmats, Ks, width, height,
                             near_plane=near_plane, far_plane=far_plane, eps2d=eps2d, sh_degree=sh_degree,
                             packed=False, tile_size=tile_size, backgrounds=backgrounds, render_mode=render_mode,
                             absgrad=absgrad)
    from gsplat.cuda._torch_impl import _fully_fused_projection, _spherical_harmonics

    covars, _ = covar_and_precision(quats, scales)
    radii, means2d, depths, conics, _ = _fully_fused_projection(
        means, covars, viewmats, Ks, width, height, eps2d=eps2d, near_plane=near_plane, far_plane=far_plane)
    if sh_degree is not None:
        campos = torch.linalg.inv(viewmats)[:, :3, 3]
        dirs = means[None] - campos[:, None]  # [C, N, 3]
        cols = _spherical_harmonics(sh_degree, dirs, colors.expand(C, -1, -1, -1))
        cols = torch.clamp_min(cols + 0.5, 0.0)  # as gsplat (Inria's convention)
    else:
        cols = colors.expand(C, -1, -1)
    if render_mode in ("RGB+D", "RGB+ED"):
        cols = torch.cat([cols, depths[..., None]], dim=-1)
    pair_tile, pair_gauss, (th, tw) = _tile_pairs_sorted(means2d.detach(), radii, depths.detach(), width, height, tile_size)
    absgrad_buf = torch.zeros(C * N, 2, device=means.device, dtype=means.dtype) if absgrad else None
    flat = (means2d.reshape(-1, 2), conics.reshape(-1, 3), opacities.repeat(C), cols.reshape(C * N, cols.shape[-1]))
    if backend == "cpu":
        offsets = torch.cumsum(torch.bincount(pair_tile, minlength=C * th * tw), 0)
        offsets = torch.cat([offsets.new_zeros(1), offsets])  # [C * TH * TW + 1]: each tile's slice of the pairs
        img, alphas = _CompositeCpu.apply(*flat, offsets, pair_gauss.contiguous(), C, width, height, tile_size,
                                          absgrad_buf)
    else:
        img, alphas = _composite(*flat, pair_tile, pair_gauss, C, th, tw, width, height, tile_size, absgrad_buf)
    if backgrounds is not None:
        bg = backgrounds if render_mode == "RGB" else torch.cat([backgrounds, backgrounds.new_zeros(C, 1)], -1)
        img = img + (1.0 - alphas) * bg[:, None, None, :]
    if render_mode == "RGB+ED":
        img = torch.cat([img[..., :-1], img[..., -1:] / alphas.clamp(min=1e-10)], dim=-1)
    if means2d.requires_grad:
        means2d.retain_grad()
    if absgrad_buf is not None:
        means2d.absgrad = absgrad_buf.reshape(C, N, 2)  # filled by the backward hooks, read by DefaultStrategy
    tiles_per_gauss = torch.bincount(pair_gauss, minlength=C * N).reshape(C, N).int()
    info = {
        "camera_ids": None, "gaussian_ids": None, "radii": radii, "means2d": means2d, "depths": depths,
        "conics": conics, "opacities": opacities[None].expand(C, -1), "tile_width": tw, "tile_height": th,
        "tiles_per_gauss": tiles_per_gauss, "isect_ids": None, "flatten_ids": pair_gauss, "width": width,
        "height": height, "tile_size": tile_size, "n_cameras": C,
    }
    return img, alphas, info
