"""Frames and cameras: nerfstudio cameras to gsplat's view matrices, and similarity transforms of
Gaussians (the X-ray frame to the RGB frame and back)."""

from __future__ import annotations

from typing import Tuple

import torch
from torch import Tensor

from nerfstudio.cameras.cameras import Cameras

OPENGL_TO_OPENCV = torch.tensor([1.0, -1.0, -1.0])


def viewmat_from_c2w(c2w: Tensor) -> Tensor:  # [3, 4] OpenGL camera-to-world -> [4, 4] OpenCV world-to-camera
    rot = c2w[:3, :3] * OPENGL_TO_OPENCV.to(c2w)  # flip the camera's y and z axes
    view = torch.eye(4, device=c2w.device, dtype=c2w.dtype)
    view[:3, :3] = rot.T
    view[:3, 3] = -rot.T @ c2w[:3, 3]
    return view


def camera_intrinsics(camera: Cameras) -> Tensor:  # [3, 3] of the first camera
    fx, fy, cx, cy = (float(getattr(camera, k).reshape(-1)[0]) for k in ("fx", "fy", "cx", "cy"))
    return torch.tensor([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]])


def similarity_parts(m: Tensor) -> Tuple[float, Tensor, Tensor]:
    """A similarity 4x4 as (s, R, t) with p' = s R p + t."""
    s = float(torch.linalg.det(m[:3, :3].double()) ** (1.0 / 3.0))
    return s, m[:3, :3] / s, m[:3, 3]


def rotmat_to_quat(r: Tensor) -> Tensor:  # [3, 3] -> [4] (w, x, y, z)
    w = torch.sqrt((1.0 + r[0, 0] + r[1, 1] + r[2, 2]).clamp(min=1e-12)) / 2
    if w > 1e-3:
        return torch.stack([w, (r[2, 1] - r[1, 2]) / (4 * w), (r[0, 2] - r[2, 0]) / (4 * w), (r[1, 0] - r[0, 1]) / (4 * w)])
    # near a half turn: take the largest diagonal term
    i = int(torch.argmax(torch.diagonal(r)))
    j, k = (i + 1) % 3, (i + 2) % 3
    v = torch.sqrt((1.0 + r[i, i] - r[j, j] - r[k, k]).clamp(min=1e-12)) / 2
    q = torch.zeros(4, dtype=r.dtype, device=r.device)
    q[0] = (r[k, j] - r[j, k]) / (4 * v)
    q[1 + i] = v
    q[1 + j] = (r[j, i] + r[i, j]) / (4 * v)
    q[1 + k] = (r[k, i] + r[i, k]) / (4 * v)
    return q


def quat_multiply(a: Tensor, b: Tensor) -> Tensor:  # [..., 4] x [..., 4], (w, x, y, z)
    aw, ax, ay, az = a.unbind(-1)
    bw, bx, by, bz = b.unbind(-1)
    return torch.stack([aw * bw - ax * bx - ay * by - az * bz, aw * bx + ax * bw + ay * bz - az * by,
                        aw * by - ax * bz + ay * bw + az * bx, aw * bz + ax * by - ay * bx + az * bw], dim=-1)


def transform_gaussians(m: Tensor, means: Tensor, quats: Tensor, scales: Tensor, densities: Tensor):
    """Gaussians under the similarity m (p' = s R p + t): means move, rotations compose, scales grow by s,
    and densities shrink by s so that every line integral stays the same (mu' = mu / s)."""
    s, rot, t = similarity_parts(m)
    q = rotmat_to_quat(rot.to(quats))
    return (means @ rot.T.to(means) * s + t.to(means), quat_multiply(q.expand_as(quats), quats), scales * s,
            densities / s)
