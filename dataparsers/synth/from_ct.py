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

from ..ct_volume import VoxelField
from ..scene_format import Volume
from .phantom import LIGHT_DIR, PATTERNS


class CtObject(VoxelField):
    """A CT's voxel field (ct_volume.VoxelField: its X-rays), photographed as its skin: the iso-surface at `iso`."""

    def __init__(self, volume: Volume, iso: float, colours=((0.80, 0.45, 0.30), (0.55, 0.27, 0.18)), pattern="mottle",
                 device: str = "cpu"):
        super().__init__(volume, device)  # where the rays are marched (a GPU makes 512^2 photographs take seconds)
        self.iso = iso
        self.colours, self.pattern = colours, pattern

    @classmethod
    def centred(cls, mu: np.ndarray, spacing: np.ndarray, iso: float, **kw) -> "CtObject":
        """A CT placed with its grid centred on the X-ray frame's origin (the rotation axis)."""
        half = 0.5 * np.array(mu.shape) * spacing
        return cls(Volume(mu.astype(np.float32), np.stack([-half, half])), iso, **kw)

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

    def shade(self, origins: np.ndarray, dirs: np.ndarray) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Colour [R, 3] of the iso-surface (Lambert), coverage [R], the hit's distance along the ray [R]."""
        o, d = self.rays(origins, dirs)
        pts, dt, valid, t = self.march(o, d)
        mu = self.sample(pts.float()).double() * valid
        above = mu >= self.iso
        hit = above.any(dim=1)
        k = above.int().argmax(dim=1)  # first sample at or above the iso value
        km = (k - 1).clamp(min=0)
        m0, m1 = mu.gather(1, km[:, None])[:, 0], mu.gather(1, k[:, None])[:, 0]
        frac = torch.where(k > 0, (self.iso - m0) / (m1 - m0).clamp(min=1e-12), 0.0)  # linear refinement
        t0, t1 = t.gather(1, km[:, None])[:, 0], t.gather(1, k[:, None])[:, 0]
        depth = torch.where(hit, t0 + frac * (t1 - t0), torch.inf)
        p = o + depth.nan_to_num(posinf=0.0)[:, None] * d
        # Outward normal: minus the gradient of the interpolant, by central differences
        e = 0.5 * float(self._volume.spacing.min())
        eye = e * torch.eye(3, dtype=p.dtype, device=p.device)
        grad = torch.stack([self.sample((p + eye[a]).float()) - self.sample((p - eye[a]).float()) for a in range(3)], -1)
        normal = (-grad.double() / grad.double().norm(dim=-1, keepdim=True).clamp(min=1e-12)).cpu().numpy()
        p, hit = p.cpu().numpy(), hit.cpu().numpy()
        extent = 0.5 * (self._volume.aabb[1] - self._volume.aabb[0])
        m = PATTERNS[self.pattern](p / extent)[:, None]
        albedo = (1 - m) * np.array(self.colours[0]) + m * np.array(self.colours[1])
        lambert = np.clip(normal @ LIGHT_DIR, 0.0, 1.0)[:, None]
        rgb = np.where(hit[:, None], albedo * (0.35 + 0.65 * lambert), 0.0)
        return rgb, hit.astype(np.float64), depth.cpu().numpy()
