"""How far to shrink views that are larger than training needs or than memory holds.

A real capture brings 200-600 photographs of 12-24 megapixels and 360 projections of 2048^2 floats
(6 GB). Photographs follow nerfstudio's convention: a `downscale_factor` N uses `images_N/` where it
exists and otherwise resizes on load; unset, N is the smallest power of two that brings the longest
side to at most 1600 px (nerfstudio's rule) and the photographs' uint8 RGBA to at most a quarter of
the machine's memory. Projections are *binned* as CT users do (the mean of b x b detector pixels,
the geometry scaled by 1 / b), chosen by the same rule for float32 values.

Example:
    >>> from insideout_ns.dataparsers.resolution import auto_factor
    >>> auto_factor(360, 2048, 2048, bytes_per_pixel=4, budget=8 << 30)[0]
    2
"""

from __future__ import annotations

import os
from typing import Tuple

import numpy as np

MAX_AUTO_RESOLUTION = 1600  # nerfstudio's: a longer side is downscaled by a power of two


def memory_budget() -> int:
    """Bytes one modality's views may take in host memory: a quarter of the machine's physical memory
    (fixed per machine, so that training and every later load of a run choose the same factor)."""
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 4


def auto_factor(n_views: int, height: int, width: int, bytes_per_pixel: int, budget: int) -> Tuple[int, str]:
    """The smallest power of two N with max(height, width) / N <= 1600 and the views' bytes / N^2 <= budget,
    and why it is not 1 ("" if it is)."""
    factor, reasons = 1, []
    while max(height, width) / factor > MAX_AUTO_RESOLUTION:
        factor *= 2
    if factor > 1:
        reasons.append(f"{width} x {height} px is over {MAX_AUTO_RESOLUTION} px")
    size = n_views * height * width * bytes_per_pixel
    if size / factor**2 > budget:
        while size / factor**2 > budget:
            factor *= 2
        reasons.append(f"{n_views} views would take {size / 2**30:.1f} GiB, over a quarter of memory "
                       f"({budget / 2**30:.1f} GiB)")
    return factor, " and ".join(reasons)


def binned_detector(width: int, height: int, intrinsics: np.ndarray, b: int) -> Tuple[int, int, np.ndarray]:
    """The detector of bin_projection's images: b x b times larger pixels, the ragged last rows and columns
    dropped, fx, fy, cx, cy ([N, 4]) scaled by 1 / b (both beams: a parallel beam's fx is 1 / pixel size)."""
    return width // b, height // b, intrinsics / b


def bin_projection(values: np.ndarray, b: int) -> np.ndarray:  # [..., H, W] -> [..., H // b, W // b]
    """The mean over b x b detector pixels (the last rows and columns that do not fill a bin are dropped,
    which keeps the principal point's pixel coordinates / b exact)."""
    if b == 1:
        return values
    h, w = values.shape[-2] // b * b, values.shape[-1] // b * b
    cropped = values[..., :h, :w]
    return cropped.reshape(*values.shape[:-2], h // b, b, w // b, b).mean(axis=(-3, -1), dtype=np.float64).astype(values.dtype)
