"""Losses and image metrics of both modalities (pure torch; SSIM from pytorch-msssim)."""

from __future__ import annotations

from typing import Dict, Optional, Tuple

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


def photograph_metrics(pred: Tensor, gt: Tensor, mask: Optional[Tensor]) -> Dict[str, float]:  # [H, W, 3] x2, [H, W, 1]
    """PSNR, SSIM (and LPIPS where installed) of a photograph, and the PSNR of the object's pixels alone where
    there is a mask (on equal terms with or without masks: the whole image's PSNR counts a masked scene's black)."""
    metrics = {"psnr": psnr(pred, gt, 1.0), "ssim": ssim_metric(pred, gt, 1.0)}
    if mask is not None:
        metrics["psnr_object"] = psnr(pred, gt, 1.0, mask)
    lpips = lpips_or_none(pred, gt)
    if lpips is not None:
        metrics["lpips"] = lpips
    return metrics


def xray_metrics(pred: Tensor, gt: Tensor, clean: Optional[Tensor]) -> Dict[str, float]:  # [H, W, 1] each
    """PSNR and SSIM of line integrals over the projection's peak; against the noise-free projection too, where a
    generated noisy scan has one (the model's truth)."""
    peak = float(gt.max())
    metrics = {"xray_psnr": psnr(pred, gt, peak), "xray_ssim": ssim_metric(pred, gt, peak)}
    if clean is not None:
        top = float(clean.max())
        metrics.update(xray_psnr_clean=psnr(pred, clean, top), xray_ssim_clean=ssim_metric(pred, clean, top))
    return metrics


def random_cube(box: Tensor, n: int, grid: int, generator: torch.Generator) -> Tensor:  # [2, 3] -> [2, 3]
    """A cube of n voxels a side, each the box's longest side / grid, at a random place in the box (drawn from
    `generator` on the CPU, so that a resumed run draws the same cubes)."""
    side = (box[1] - box[0]).max() * n / grid
    low = box[0] + torch.rand(3, generator=generator).to(box.device) * (box[1] - box[0] - side).clamp(min=0)
    return torch.stack([low, low + side])


def voxel_cube(box: Tensor, shape, n: int, generator: torch.Generator, stride: int = 1) -> Tuple[Tensor, Tuple[int, int, int]]:
    """A block of n voxels a side (fewer along an axis the grid has fewer), every `stride`-th, of the grid `shape` over
    `box` [2, 3], at a random whole-voxel place inside it (drawn from `generator` on the CPU): the box [2, 3] whose
    cells of `grid_points` are those voxels, and its shape. Its voxels are the grid's own, where the grid's values are
    exact and where a volume is scored (between them a trilinear interpolant would pull the field towards a blur of a
    sharp edge); a stride spreads the block over a fine grid (a clinical CT's 512 voxels a side).

    Example:
        >>> import torch
        >>> box, size = voxel_cube(torch.tensor([[0.0, 0, 0], [10, 20, 4]]), (10, 10, 4), 8, torch.Generator().manual_seed(0))
        >>> size, (box[1] - box[0]).tolist(), bool((box[0] >= 0).all() and (box[1] <= torch.tensor([10.0, 20, 4])).all())
        ((8, 8, 4), [8.0, 16.0, 4.0], True)
    """
    counts = torch.tensor([int(s) for s in shape])
    size = torch.clamp(-(-counts // stride), max=n)  # voxels along each axis
    reach = (size - 1) * stride + 1  # the grid's voxels from the block's first to its last
    first = (torch.rand(3, generator=generator) * (counts - reach + 1)).floor().clamp(max=counts - reach)
    spacing = (box[1] - box[0]) / counts.to(box)
    low = box[0] + (first.to(box) + 0.5 - 0.5 * stride) * spacing  # a cell of `stride` voxels about each
    return torch.stack([low, low + (size * stride).to(box) * spacing]), tuple(size.tolist())


def density_regularisers(vol: Tensor, centres: Tensor, cfg, grid=None, ct=None, scale: float = 1.0) -> Dict[str, Tensor]:
    """The density's terms on one cube (vol [a, b, c], dimensionless: density times `scale`; centres [a, b, c, 3] in
    the X-ray frame), weighted by cfg (model_config.XrayConfig): the edge-preserving TV; the density outside the
    object's grid (object_grid.ObjectGrid, where both modalities see no object); a CT scene's own voxels
    (dataparsers.ct_volume.VoxelField), squared: the volume's score is their mean squared error."""
    losses = {}
    if cfg.tv_weight > 0:
        losses["tv_loss"] = cfg.tv_weight * total_variation_3d(vol, cfg.tv_edge)
    if grid is not None:
        losses["support_loss"] = cfg.support_weight * (vol * (1.0 - grid.sample(centres))).mean()
    if ct is not None:
        losses["ct_loss"] = cfg.ct_weight * (vol - ct.sample(centres) * scale).square().mean()
    return losses
