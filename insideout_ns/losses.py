"""Losses and image metrics of both modalities (pure torch; SSIM from pytorch-msssim)."""

from __future__ import annotations

from typing import Optional

import torch
from pytorch_msssim import ssim
from torch import Tensor


def image_loss(pred: Tensor, target: Tensor, ssim_lambda: float, data_range: float = 1.0) -> Tensor:
    """(1 - lambda) L1 + lambda (1 - SSIM) of images [H, W, C] (3DGS's photometric loss); for X-ray the
    images are line integrals and `data_range` their scale."""
    l1 = (pred - target).abs().mean() / data_range
    if ssim_lambda == 0:
        return l1
    s = ssim(pred.permute(2, 0, 1)[None], target.permute(2, 0, 1)[None], data_range=data_range, size_average=True,
             win_size=min(11, _odd(min(pred.shape[:2]))))
    return (1 - ssim_lambda) * l1 + ssim_lambda * (1 - s)


def _odd(n: int) -> int:
    return n if n % 2 == 1 else n - 1


def psnr(pred: Tensor, target: Tensor, peak: float, mask: Optional[Tensor] = None) -> float:
    """PSNR with an explicit peak (X-ray: the ground truth's maximum; RGB: 1), over the pixels where mask
    [H, W, 1] (optional) is set."""
    err = (pred - target) ** 2
    mse = torch.mean(err) if mask is None else (err * mask).sum() / (mask.sum() * err.shape[-1]).clamp(min=1)
    return float(10 * torch.log10(peak**2 / mse.clamp(min=1e-20)))


def ssim_metric(pred: Tensor, target: Tensor, data_range: float) -> float:
    """SSIM of images [H, W, C], or of volumes [X, Y, Z] (then the z slices are the channels)."""
    pred, target = pred.permute(2, 0, 1), target.permute(2, 0, 1)
    win = min(11, _odd(min(pred.shape[1:])))
    return float(ssim(pred[None], target[None], data_range=data_range, size_average=True, win_size=win))


def total_variation_3d(vol: Tensor, edge: float = 0.0) -> Tensor:
    """Mean penalty of the differences d of neighbouring voxels along each axis (anisotropic 3D TV): |d|, or
    with an `edge` c > 0 the edge-preserving c log(1 + |d| / c), which is |d| for small d and grows only
    logarithmically past c (a jump 7 c is penalised 2.1 c, not 7 c), so that small dense parts keep their
    contrast while noise and streaks are smoothed as by TV.

    Example:
        >>> import torch
        >>> vol = torch.zeros(2, 2, 2); vol[1] = 7.0  # a jump of 7 along x
        >>> round(float(total_variation_3d(vol)), 3), round(float(total_variation_3d(vol, edge=1.0)), 3)
        (7.0, 2.079)
    """
    def penalty(d: Tensor) -> Tensor:
        return (edge * torch.log1p(d.abs() / edge) if edge > 0 else d.abs()).mean()

    return (penalty(vol[1:] - vol[:-1]) + penalty(vol[:, 1:] - vol[:, :-1])
            + penalty(vol[:, :, 1:] - vol[:, :, :-1]))


_LPIPS = None  # the metric once built; False where its weights cannot be had offline


def lpips_or_none(pred: Tensor, gt: Tensor) -> Optional[float]:
    """LPIPS of images [H, W, 3] where AlexNet's weights are available offline; None otherwise (never
    downloads in tests). Only a failure to get the weights (no network: OSError, or torchmetrics'
    optional dependencies missing: ImportError) switches it off; any other error is raised."""
    global _LPIPS
    if _LPIPS is False:
        return None
    if _LPIPS is None:
        try:
            from torchmetrics.image.lpip import LearnedPerceptualImagePatchSimilarity

            _LPIPS = LearnedPerceptualImagePatchSimilarity(normalize=True)
        except (OSError, ImportError):
            _LPIPS = False
            return None
    return float(_LPIPS.to(pred.device)(pred.permute(2, 0, 1)[None].clamp(0, 1), gt.permute(2, 0, 1)[None].clamp(0, 1)))
