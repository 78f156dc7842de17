"""The X-ray (radiative) rasterizer: exact Beer-Lambert line integrals of 3D Gaussians.

Each pixel holds `p = int_0^inf mu(o + t d) dt` of `mu(x) = sum_i rho_i exp(-1/2 |x - m_i|^2_{Sigma_i^-1})`
along its ray, in closed form per Gaussian (see csrc/xray_math.h): no sorting, no alpha, no affine
approximation of the footprint. Only Gaussians whose `cutoff`-sigma ellipsoid the ray meets are
evaluated, through a conservative per-tile bound (kernels/tiles.py).

Example:
    >>> import torch
    >>> from insideout_ns.kernels.xray import rasterize_xray
    >>> means = torch.tensor([[0.0, 0.0, 5.0]]); quats = torch.tensor([[1.0, 0, 0, 0]])
    >>> scales = torch.full((1, 3), 0.5); dens = torch.tensor([2.0])
    >>> K = torch.tensor([[[32.0, 0, 15.5], [0, 32.0, 15.5], [0, 0, 1]]])  # pixel (15, 15) sees the centre
    >>> img, info = rasterize_xray(means, quats, scales, dens, torch.eye(4)[None], K, 32, 32, backend="torch")
    >>> img.shape, round(float(img.max()), 3)  # the peak is rho * sqrt(2 pi) * 0.5
    (torch.Size([1, 32, 32, 1]), 2.507)
"""

from __future__ import annotations

from typing import Dict, Optional, Tuple

import torch
from torch import Tensor

from . import _torch_impl
from ._backend import load_extension, resolve
from .tiles import covar_and_precision, pack_sym, tile_pairs, to_camera, xray_footprints

PROJECTIONS = ("cone", "parallel")


class _CompiledXray(torch.autograd.Function):
    """Forward and backward in the compiled kernels (C++ CPU or CUDA); the gradient of each
    (tile, Gaussian) pair comes back as its own row and is summed per Gaussian here."""

    @staticmethod
    def forward(ctx, means_c, prec_c, densities, intrinsics, width, height, tile_size, parallel, cutoff, module,
                pair_tile, pair_gauss, offsets):
        img = module.xray_forward(means_c, prec_c, densities, intrinsics, width, height, tile_size, parallel,
                                  cutoff, offsets, pair_gauss)
        ctx.save_for_backward(means_c, prec_c, densities, intrinsics, pair_tile, pair_gauss)
        ctx.args = (width, height, tile_size, parallel, cutoff, module)
        return img

    @staticmethod
    def backward(ctx, v_img):
        means_c, prec_c, densities, intrinsics, pair_tile, pair_gauss = ctx.saved_tensors
        width, height, tile_size, parallel, cutoff, module = ctx.args
        rows = module.xray_backward(means_c, prec_c, densities, intrinsics, width, height, tile_size, parallel,
                                    cutoff, pair_tile, pair_gauss, v_img.contiguous())
        C, N = means_c.shape[:2]
        per_gauss = rows.new_zeros(C * N, 10).index_add_(0, pair_gauss, rows)  # sum the pairs of each Gaussian
        v_means = per_gauss[:, :3].reshape(C, N, 3)
        v_prec = per_gauss[:, 3:9].reshape(C, N, 6)
        v_dens = per_gauss[:, 9].reshape(C, N).sum(0)
        return v_means, v_prec, v_dens, None, None, None, None, None, None, None, None, None, None


def rasterize_xray(
    means: Tensor,  # [N, 3]
    quats: Tensor,  # [N, 4] (w, x, y, z), need not be normalised
    scales: Tensor,  # [N, 3] (activated)
    densities: Tensor,  # [N] attenuation peaks rho >= 0 (activated)
    viewmats: Tensor,  # [C, 4, 4] world-to-camera, OpenCV axes (as gsplat)
    Ks: Tensor,  # [C, 3, 3] intrinsics; parallel beam: fx = 1 / pixel size
    width: int,
    height: int,
    projection: str = "cone",
    backend: str = "auto",
    tile_size: Optional[int] = None,
    cutoff: float = 4.0,
) -> Tuple[Tensor, Dict]:
    """Line-integral images [C, H, W, 1] and an `info` dict in gsplat's conventions.

    `cutoff`: a Gaussian contributes to exactly the pixels whose ray passes within `cutoff` standard
    deviations (Mahalanobis) of its mean; what is left out is below exp(-cutoff^2 / 2) of the
    Gaussian's peak line integral (3.4e-4 at the default 4), and for a parallel beam exactly that
    fraction of its mass. `tile_size`: 16 on CUDA, 8 elsewhere (less wasted work per tile on a CPU).

    `info` holds what gsplat's DefaultStrategy needs: `means2d` [C, N, 2] (the projected means; its
    `.grad` after backward is the image-plane gradient, as in gsplat), `radii` [C, N] int32 (half the
    larger side of the footprint box in pixels; 0 = not visible), `width`, `height`, `n_cameras`,
    `gaussian_ids` (None: not packed), `tile_size`, and `n_pairs` (tile-Gaussian pairs evaluated).
    Where it differs from gsplat: the footprint is the exact bounding box of the ray set, not 3 sigma
    of an affine 2D approximation; the image has no depth order and no alpha.
    """
    N, C = means.shape[0], viewmats.shape[0]
    assert means.shape == (N, 3), means.shape
    assert quats.shape == (N, 4), quats.shape
    assert scales.shape == (N, 3), scales.shape
    assert densities.shape == (N,), densities.shape
    assert viewmats.shape == (C, 4, 4), viewmats.shape
    assert Ks.shape == (C, 3, 3), Ks.shape
    if projection not in PROJECTIONS:
        raise ValueError(f"projection must be one of {PROJECTIONS}, got {projection!r}")
    backend = resolve(backend, means.device)
    parallel = projection == "parallel"
    tile_size = tile_size or (16 if backend == "cuda" else 8)

    covar, prec = covar_and_precision(quats, scales)  # [N, 3, 3] each
    means_c, covars_c = to_camera(means, covar, viewmats)  # [C, N, 3], [C, N, 3, 3]
    _, prec_c = to_camera(means, prec, viewmats)
    intr = torch.stack([Ks[:, 0, 0], Ks[:, 1, 1], Ks[:, 0, 2], Ks[:, 1, 2]], dim=-1)  # [C, 4]

    bounds = xray_footprints(means_c, covars_c, intr, width, height, parallel, cutoff)  # [C, N, 4]
    pair_tile, pair_gauss, offsets = tile_pairs(bounds, width, height, tile_size)

    # Image-plane means; a leaf whose gradient is the image-plane gradient of the loss (for densification):
    # moving the projection by du moves the camera-space mean by du * z / fx (cone) or du / fx (parallel)
    with torch.no_grad():
        z = means_c[..., 2]
        scale_x = (z if not parallel else torch.ones_like(z)) / intr[:, None, 0]
        scale_y = (z if not parallel else torch.ones_like(z)) / intr[:, None, 1]
        safe_z = torch.where(z.abs() > 1e-6, z, torch.full_like(z, 1e-6))
        proj_z = safe_z if not parallel else torch.ones_like(z)
        means2d = torch.stack([intr[:, None, 0] * means_c[..., 0] / proj_z + intr[:, None, 2],
                               intr[:, None, 1] * means_c[..., 1] / proj_z + intr[:, None, 3]], dim=-1)
    means2d = means2d.detach().requires_grad_(means.requires_grad)
    if means.requires_grad:
        shift = means2d - means2d.detach()  # zero in value
        means_c = means_c + torch.stack([shift[..., 0] * scale_x, shift[..., 1] * scale_y, torch.zeros_like(z)], -1)

    prec6 = pack_sym(prec_c)  # [C, N, 6]
    if backend == "torch":
        img = _torch_impl.rasterize_xray_tiles(means_c, prec6, densities, intr, width, height, tile_size, parallel,
                                               cutoff, pair_tile, pair_gauss)
    else:
        module = load_extension(backend)
        f32 = [t.float().contiguous() for t in (means_c, prec6, densities, intr)]
        img = _CompiledXray.apply(*f32, width, height, tile_size, parallel, cutoff, module, pair_tile, pair_gauss,
                                  offsets)
        img = img.to(means.dtype)

    extent = (bounds[..., 2:] - bounds[..., :2] + 1).clamp(min=0)  # [C, N, 2]
    radii = torch.where(extent.min(-1).values > 0, (extent.max(-1).values + 1) // 2, 0).int()
    info = {
        "means2d": means2d, "radii": radii, "width": width, "height": height, "n_cameras": C,
        "gaussian_ids": None, "tile_size": tile_size, "n_pairs": int(pair_gauss.numel()),
    }
    return img[..., None], info
