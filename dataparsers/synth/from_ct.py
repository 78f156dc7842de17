"""A scannable object made from a real CT volume: X-rays by ray marching, photographs by ray casting
the skin iso-surface.

X-ray: `p = int mu(o + t d) dt` of the trilinear interpolant of the voxels, by the midpoint rule with a
step of at most half the smallest voxel size, over the part of each ray inside the volume.
Photographs: the first point along each ray where the interpolant reaches `iso`, refined linearly
between the two samples around it; the normal is minus the interpolant's gradient there; the colour a
procedural albedo under the same fixed light as the analytic phantoms.
"""

from __future__ import annotations

from typing import Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from ..scene_format import Volume
from .phantom import LIGHT_DIR, PATTERNS


class CtObject:
    def __init__(self, volume: Volume, iso: float, colours=((0.80, 0.45, 0.30), (0.55, 0.27, 0.18)), pattern="mottle"):
        self._volume = volume
        self.iso = iso
        self.colours, self.pattern = colours, pattern
        # grid_sample wants [1, 1, D, H, W] = [1, 1, nz, ny, nx] and (x, y, z) coordinates in [-1, 1]
        self._grid = torch.from_numpy(volume.values).permute(2, 1, 0)[None, None].float()
        self.step = 0.5 * float(volume.spacing.min())

    @classmethod
    def centred(cls, mu: np.ndarray, spacing: np.ndarray, iso: float, **kw) -> "CtObject":
        """A CT placed with its grid centred on the X-ray frame's origin (the rotation axis)."""
        half = 0.5 * np.array(mu.shape) * spacing
        return cls(Volume(mu.astype(np.float32), np.stack([-half, half])), iso, **kw)

    def volume(self) -> Volume:
        return self._volume

    def aabb(self, transform: Optional[np.ndarray] = None) -> np.ndarray:  # [2, 3]
        """Bounding box of the voxels with any attenuation, after an optional 4x4 affine transform."""
        v = self._volume
        idx = np.argwhere(v.values > 0)
        lo = v.aabb[0] + idx.min(axis=0) * v.spacing
        hi = v.aabb[0] + (idx.max(axis=0) + 1) * v.spacing
        corners = np.array([[x, y, z] for x in (lo[0], hi[0]) for y in (lo[1], hi[1]) for z in (lo[2], hi[2])])
        if transform is not None:
            corners = corners @ transform[:3, :3].T + transform[:3, 3]
        return np.stack([corners.min(axis=0), corners.max(axis=0)])

    def sample(self, points: torch.Tensor) -> torch.Tensor:  # [..., 3] -> [...]
        """Trilinear interpolant of the voxels (zero outside the grid)."""
        box = torch.from_numpy(self._volume.aabb).to(points)
        g = 2.0 * (points - box[0]) / (box[1] - box[0]) - 1.0  # voxel edges at -1 and +1 (align_corners=False)
        out = F.grid_sample(self._grid.to(points), g.reshape(1, 1, 1, -1, 3), align_corners=False, padding_mode="zeros")
        return out.reshape(points.shape[:-1])

    def _march(self, origins: np.ndarray, dirs: np.ndarray):
        """Each ray's span inside the volume cut into n equal steps of at most `self.step`:
        (sample points [R, K, 3], step lengths [R], valid [R, K])."""
        box = self._volume.aabb
        with np.errstate(divide="ignore", invalid="ignore"):
            t_a = (box[0] - origins) / dirs  # slab method: entry/exit parameters per axis
            t_b = (box[1] - origins) / dirs
        t_in = np.nanmax(np.minimum(t_a, t_b), axis=-1).clip(min=0.0)
        t_out = np.nanmin(np.maximum(t_a, t_b), axis=-1)
        length = np.clip(t_out - t_in, 0.0, None)
        n = np.ceil(length / self.step).astype(np.int64)
        k = max(int(n.max()), 1)
        dt = np.where(n > 0, length / np.maximum(n, 1), 0.0)
        j = np.arange(k)[None, :]
        t = t_in[:, None] + (j + 0.5) * dt[:, None]  # midpoints of the n steps
        pts = origins[:, None, :] + t[..., None] * dirs[:, None, :]
        return torch.from_numpy(pts), dt, torch.from_numpy(j < n[:, None]), t

    def line_integrals(self, origins: np.ndarray, dirs: np.ndarray) -> np.ndarray:  # [R]
        pts, dt, valid, _ = self._march(origins, dirs)
        mu = self.sample(pts.float()).double() * valid
        return (mu.sum(dim=1).numpy() * dt).astype(np.float64)

    def shade(self, origins: np.ndarray, dirs: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        pts, dt, valid, t = self._march(origins, dirs)
        mu = (self.sample(pts.float()).double() * valid).numpy()
        above = mu >= self.iso
        hit = above.any(axis=1)
        k = np.argmax(above, axis=1)  # first sample at or above the iso value
        r = np.arange(len(origins))
        km = np.maximum(k - 1, 0)
        m0, m1 = mu[r, km], mu[r, k]
        frac = np.where(k > 0, (self.iso - m0) / np.maximum(m1 - m0, 1e-12), 0.0)  # linear refinement
        th = t[r, km] + frac * (t[r, k] - t[r, km])
        p = origins + th[:, None] * dirs
        # Outward normal: minus the gradient of the interpolant, by central differences
        e = 0.5 * float(self._volume.spacing.min())
        pt = torch.from_numpy(p)
        grad = np.stack([
            (self.sample((pt + e * torch.eye(3, dtype=pt.dtype)[a]).float())
             - self.sample((pt - e * torch.eye(3, dtype=pt.dtype)[a]).float())).double().numpy()
            for a in range(3)
        ], axis=-1)
        normal = -grad / np.maximum(np.linalg.norm(grad, axis=-1, keepdims=True), 1e-12)
        extent = 0.5 * (self._volume.aabb[1] - self._volume.aabb[0])
        m = PATTERNS[self.pattern](p / extent)[:, None]
        albedo = (1 - m) * np.array(self.colours[0]) + m * np.array(self.colours[1])
        lambert = np.clip(normal @ LIGHT_DIR, 0.0, 1.0)[:, None]
        rgb = np.where(hit[:, None], albedo * (0.35 + 0.65 * lambert), 0.0)
        return rgb, hit.astype(np.float64)
