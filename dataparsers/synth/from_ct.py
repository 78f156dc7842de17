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
    def __init__(self, volume: Volume, iso: float, colours=((0.80, 0.45, 0.30), (0.55, 0.27, 0.18)), pattern="mottle",
                 device: str = "cpu"):
        self._volume = volume
        self.device = torch.device(device)  # where the rays are marched (a GPU makes 512^2 photographs take seconds)
        self.iso = iso
        self.colours, self.pattern = colours, pattern
        # grid_sample wants [1, 1, D, H, W] = [1, 1, nz, ny, nx] and (x, y, z) coordinates in [-1, 1]
        self._grid = torch.from_numpy(volume.values).permute(2, 1, 0)[None, None].float().to(self.device)
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

    def _march(self, origins: torch.Tensor, dirs: torch.Tensor):
        """Each ray's span inside the volume cut into n equal steps of at most `self.step`: (sample points
        [R, K, 3], step lengths [R], valid [R, K], sample parameters [R, K]); origins, dirs [R, 3] float64."""
        box = torch.from_numpy(self._volume.aabb).to(origins)
        t_a = (box[0] - origins) / dirs  # slab method: entry/exit parameters per axis (inf or nan where d = 0)
        t_b = (box[1] - origins) / dirs
        t_in = torch.minimum(t_a, t_b).nan_to_num(nan=-torch.inf).amax(dim=-1).clamp(min=0.0)
        t_out = torch.maximum(t_a, t_b).nan_to_num(nan=torch.inf).amin(dim=-1)
        length = (t_out - t_in).clamp(min=0.0)
        n = torch.ceil(length / self.step).long()
        k = max(int(n.max()), 1)
        dt = torch.where(n > 0, length / n.clamp(min=1), 0.0)
        j = torch.arange(k, device=origins.device)[None, :]
        t = t_in[:, None] + (j + 0.5) * dt[:, None]  # midpoints of the n steps
        pts = origins[:, None, :] + t[..., None] * dirs[:, None, :]
        return pts, dt, j < n[:, None], t

    def _rays(self, origins: np.ndarray, dirs: np.ndarray) -> Tuple[torch.Tensor, torch.Tensor]:
        """Ray origins and directions [R, 3] as float64 tensors on the marching device."""
        return tuple(torch.from_numpy(np.ascontiguousarray(a, np.float64)).to(self.device) for a in (origins, dirs))

    def line_integrals(self, origins: np.ndarray, dirs: np.ndarray) -> np.ndarray:  # [R]
        pts, dt, valid, _ = self._march(*self._rays(origins, dirs))
        mu = self.sample(pts.float()).double() * valid
        return (mu.sum(dim=1) * dt).cpu().numpy()

    def shade(self, origins: np.ndarray, dirs: np.ndarray) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Colour [R, 3] of the iso-surface (Lambert), coverage [R], the hit's distance along the ray [R]."""
        o, d = self._rays(origins, dirs)
        pts, dt, valid, t = self._march(o, d)
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
