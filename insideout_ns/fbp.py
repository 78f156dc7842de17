"""Filtered back-projection of the scene format's projections, in torch on any device: FBP for a parallel
beam, FDK (Feldkamp-Davis-Kress) for a cone beam on a flat detector (Kak & Slaney, ch. 3). It starts the
radiative population (R2-Gaussian's recipe) and is the classical baseline volume of a scan.

Both assume a circular orbit covering 180 degrees (parallel) or 360 degrees (either), views evenly spaced:
each view then weighs pi / N. Rows of the detector are filtered along u (the orbit's tangent).

Example:
    >>> import torch
    >>> from insideout_ns.fbp import ramp_filter
    >>> rows = torch.zeros(1, 32); rows[0, 16] = 1.0  # one unit sample, spacing 1
    >>> q = ramp_filter(rows, 1.0)
    >>> round(float(q[0, 16]), 4), round(float(q[0, 17]), 4)  # Ram-Lak: 1/4 at 0, -1/pi^2 at +-1
    (0.25, -0.1013)
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from nerfstudio.cameras.cameras import Cameras

from .projection_geometry import grid_points, project, sample_images


def ramp_filter(rows: Tensor, spacing: float) -> Tensor:  # [..., W] -> [..., W]
    """Convolution of each row (samples `spacing` apart) with the band-limited ramp (Ram-Lak) kernel,
    times the spacing: the discrete form of the continuous filter, zero-padded (no wrap-around)."""
    w = rows.shape[-1]
    n = 2 ** math.ceil(math.log2(2 * w))
    k = torch.arange(n, device=rows.device)
    k = torch.where(k < n // 2, k, k - n).double()  # signed offsets of the circular kernel
    h = torch.where(k % 2 == 1, -1.0 / (math.pi**2 * k**2 * spacing**2), torch.zeros_like(k))  # odd offsets
    h[0] = 1.0 / (4 * spacing**2)
    kernel = torch.fft.rfft(h) * spacing  # the convolution sum times the sample spacing
    spectrum = torch.fft.rfft(rows.double(), n=n) * kernel
    return torch.fft.irfft(spectrum, n=n)[..., :w].to(rows.dtype)


def filtered_backprojection(cameras: Cameras, projections: Tensor, box: Tensor, shape, parallel: bool,
                            chunk: int = 8) -> Tensor:
    """FBP (parallel) or FDK (cone) of projections [V, H, W] (line integrals) from `cameras` [V] onto the
    cell centres of a grid of `shape` (nx, ny, nz) over `box` [2, 3]: attenuation [nx, ny, nz].

    Cone beam: each ray's value is first weighted by D / sqrt(D^2 + t^2 + z^2) (t, z on a virtual detector
    through the rotation axis, D the source's distance to it), filtered with that detector's spacing, and
    each voxel gets the filtered value times (D / depth)^2. Parallel beam: filtered with the pixel size."""
    V, H, W = projections.shape
    device, dtype = projections.device, projections.dtype
    centre = box.mean(dim=0).to(device, dtype)
    c2w = cameras.camera_to_worlds.to(device, dtype)  # [V, 3, 4]
    fx, fy = cameras.fx.reshape(-1).to(device, dtype), cameras.fy.reshape(-1).to(device, dtype)
    cx, cy = cameras.cx.reshape(-1).to(device, dtype), cameras.cy.reshape(-1).to(device, dtype)
    if parallel:
        dist = torch.ones(V, device=device, dtype=dtype)  # pixel sizes are 1 / f: the "distance" is 1
        weighted = projections
    else:
        axis = -c2w[:, :3, 2]  # optical axes (OpenGL: the camera looks along -Z)
        dist = ((centre - c2w[:, :3, 3]) * axis).sum(-1)  # D: source to the rotation axis, along the axis
        u = (torch.arange(W, device=device, dtype=dtype) + 0.5)[None] - cx[:, None]  # [V, W] pixels
        v = (torch.arange(H, device=device, dtype=dtype) + 0.5)[None] - cy[:, None]  # [V, H]
        t = u * (dist / fx)[:, None]  # on the virtual detector (isocentre units)
        z = v * (dist / fy)[:, None]
        cosine = dist[:, None, None] / torch.sqrt(dist[:, None, None] ** 2 + t[:, None, :] ** 2 + z[:, :, None] ** 2)
        weighted = projections * cosine
    filtered = torch.stack([ramp_filter(weighted[i], float(dist[i] / fx[i])) for i in range(V)])  # [V, H, W]
    pts = grid_points(box.to(device, dtype), shape)  # [P, 3] cell centres
    out = torch.zeros(len(pts), device=device, dtype=dtype)
    for s in range(0, V, chunk):
        cams = cameras[s : s + chunk]
        uv, depth = project(pts, cams, parallel)  # [v, P, 2], [v, P]
        vals = sample_images(filtered[s : s + chunk, ..., None], uv)[..., 0]  # [v, P]
        if not parallel:
            vals = vals * (dist[s : s + chunk, None] / depth.clamp(min=1e-9)) ** 2
        out += vals.sum(dim=0)
    return (out * math.pi / V).reshape(*shape)
