"""Where points of a frame land in the scene format's cameras, and the grids and image samples the
back-projections and hulls are built from (pure torch)."""

from __future__ import annotations

from typing import Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from nerfstudio.cameras.cameras import Cameras


def project(points: Tensor, cameras: Cameras, parallel: bool) -> Tuple[Tensor, Tensor]:
    """Pixel coordinates [V, P, 2] (pixel centres at +0.5) and depths [V, P] of world points [P, 3] in
    each (OpenGL) camera, in the scene format's conventions."""
    c2w = cameras.camera_to_worlds.to(points)  # [V, 3, 4]
    cam = torch.einsum("vji,vpj->vpi", c2w[:, :3, :3], points[None] - c2w[:, None, :3, 3])  # R^T (p - t)
    depth = -cam[..., 2]
    scale = depth.clamp(min=1e-9) if not parallel else torch.ones_like(depth)
    u = cameras.fx.to(points) * cam[..., 0] / scale + cameras.cx.to(points)
    v = -cameras.fy.to(points) * cam[..., 1] / scale + cameras.cy.to(points)
    return torch.stack([u, v], dim=-1), depth


def grid_points(box: Tensor, n) -> Tensor:  # [nx * ny * nz, 3] cell centres, x slowest
    """Cell centres of a grid over box [2, 3]: n cells along each axis, or a shape (nx, ny, nz)."""
    shape = (n, n, n) if isinstance(n, int) else tuple(n)
    axes = [box[0, k] + (torch.arange(shape[k], dtype=box.dtype, device=box.device) + 0.5) * (box[1, k] - box[0, k]) / shape[k]
            for k in range(3)]
    return torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1).reshape(-1, 3)


def sample_images(images: Tensor, uv: Tensor) -> Tensor:
    """Bilinear samples of images [V, H, W, C] at pixel coordinates uv [V, P, 2] -> [V, P, C] (0 outside)."""
    V, H, W, C = images.shape
    g = torch.stack([2 * uv[..., 0] / W - 1, 2 * uv[..., 1] / H - 1], dim=-1)[:, :, None]  # align_corners=False
    out = F.grid_sample(images.permute(0, 3, 1, 2), g.to(images), align_corners=False, padding_mode="zeros")
    return out[..., 0].permute(0, 2, 1)
