"""What a photograph shows far behind the object: a learned environment at infinity.

A capture without masks shows the room around the object. Without a background model the Gaussians must
cover every ray (the random background behind them is unpredictable), so they put the room's colours
on a haze inside the scene, which stands in front of the object in a held-out view. Here the room is a
colour per direction (an equirectangular map in the RGB frame, z up), composited behind the Gaussians:
C = C_gaussians + (1 - alpha) env(d).

Example:
    >>> import torch
    >>> from insideout_ns.environment import EnvironmentMap
    >>> env = EnvironmentMap(rows=8)
    >>> env(torch.tensor([[[0.0, 0.0, 1.0], [1.0, 0.0, 0.0]]])).shape  # directions [H, W, 3] -> colours
    torch.Size([1, 2, 3])
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nerfstudio.cameras.cameras import Cameras


class EnvironmentMap(nn.Module):
    """Colours [rows, 2 rows] of the directions at infinity (logits; grey at the start)."""

    def __init__(self, rows: int):
        super().__init__()
        if rows < 1:
            raise ValueError(f"an environment map needs at least one row, got {rows}")
        self.texture = nn.Parameter(torch.zeros(1, 3, rows, 2 * rows))  # [1, 3, rows, 2 rows]

    def forward(self, directions: Tensor) -> Tensor:  # [..., 3] -> [..., 3]
        d = F.normalize(directions, dim=-1)
        u = torch.atan2(d[..., 1], d[..., 0]) / math.pi  # azimuth -> [-1, 1] across the map
        v = -torch.asin(d[..., 2].clamp(-1.0, 1.0)) * (2.0 / math.pi)  # elevation: up (z) at the top row
        grid = torch.stack([u, v], dim=-1).reshape(1, 1, -1, 2)
        colour = F.grid_sample(self.texture, grid, mode="bilinear", padding_mode="border", align_corners=False)
        return torch.sigmoid(colour[0, :, 0].T).reshape(directions.shape)

    def behind(self, camera: Cameras) -> Tensor:  # [H, W, 3]
        """The environment seen through each pixel of the (single) camera."""
        rays = camera.generate_rays(camera_indices=0, keep_shape=True)
        return self(rays.directions.to(self.texture.device))
