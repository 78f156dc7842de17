"""The two frames of a paired scene: the X-ray frame (the data's units, a CT's grid axes) and the RGB frame (the
photographs'), and the similarity `xray_to_rgb` (p_rgb = s R p_xray + t) that phase 2 finds. Until then each
population lives in its own frame; in phase 3 everything is in the RGB frame.

Example:
    >>> import torch
    >>> from insideout_ns.frames import Frames
    >>> m = torch.eye(4); m[:3, :3] *= 2.0; m[:3, 3] = torch.tensor([1.0, 0, 0])
    >>> f = Frames(m, joint=True, box_xray=torch.tensor([[-1.0] * 3, [1.0] * 3]), extent_rgb=2.0, extent_xray=1.0)
    >>> f.in_xray_frame(torch.tensor([[3.0, 0, 0]])).tolist(), f.scanned_sphere()[1]
    ([[1.0, 0.0, 0.0]], 2.0)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Tuple

import torch
from torch import Tensor

from .gaussians import RGB
from .transforms import similarity_parts, viewmat_from_c2w


@dataclass
class Frames:
    xray_to_rgb: Tensor  # [4, 4] the similarity X-ray -> RGB (the calibration, or identity, until phase 2)
    joint: bool  # phase 3: every Gaussian and camera is in the RGB frame
    box_xray: Tensor  # [2, 3] the scanned region in the X-ray frame
    extent_rgb: float  # half the diagonal of the RGB scene box
    extent_xray: float  # half the diagonal of the scanned region

    def in_xray_frame(self, points: Tensor) -> Tensor:  # [P, 3] -> [P, 3]
        """Points of the frame the Gaussians are in, in the X-ray frame (the inverse similarity in phase 3)."""
        if not self.joint:
            return points
        s, rot, t = similarity_parts(self.xray_to_rgb)
        return (points - t) @ rot / s

    def extents(self, population: Tensor) -> Tensor:  # [N] -> [N]
        """The scene extent of the frame each Gaussian lives in (RGB; X-ray for radiative ones until joint)."""
        rgb = torch.as_tensor(self.extent_rgb, device=population.device)
        if self.joint:
            return rgb.expand(len(population))
        return torch.where(population == RGB, rgb, torch.as_tensor(self.extent_xray, device=population.device))

    def scanned_sphere(self) -> Tuple[Tensor, float]:
        """Centre [3] and radius of the scanned region in the frame the model renders in."""
        centre, radius = self.box_xray.mean(0), self.extent_xray
        if self.joint:  # carried into the RGB frame
            s, rot, t = similarity_parts(self.xray_to_rgb)
            return s * rot @ centre + t.to(centre), s * radius
        return centre, radius

    def xray_view(self, c2w: Tensor, K: Tensor, projection: str) -> Tuple[Tensor, Tensor]:
        """viewmat [4, 4] and K [3, 3] of a camera of the data's X-ray frame (c2w [3, 4], K [3, 3]) in the frame the
        Gaussians are in."""
        if self.joint:  # moved into the RGB frame
            s, rot, t = similarity_parts(self.xray_to_rgb)
            c2w = torch.cat([rot @ c2w[:, :3], (s * rot @ c2w[:, 3] + t)[:, None]], dim=1)
            if projection == "parallel":  # pixels of a parallel detector are lengths: they scale with the frame
                K = K.clone()
                K[0, 0], K[1, 1] = K[0, 0] / s, K[1, 1] / s
        return viewmat_from_c2w(c2w), K


def bulk_sphere(means: Tensor) -> Tuple[Tensor, float]:  # [N, 3] -> [3], radius
    """Centre and radius of the bulk of a set of points (median; 90 % of them within the radius)."""
    centre = means.median(dim=0).values
    return centre, float((means - centre).norm(dim=-1).quantile(0.9))
