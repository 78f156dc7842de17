"""Camera geometry of the scene format (numpy, float64): orbits, rays and poses for the generators, the readers
and a CT scene's virtual scan.

Cameras are OpenGL camera-to-world 4x4 matrices (the camera looks along its -Z axis, +X right, +Y up);
pixel (u, v) has its centre at (u + 0.5, v + 0.5), v growing downward.
"""

from __future__ import annotations

from typing import Tuple

import numpy as np


def look_at(eye: np.ndarray, target: np.ndarray, up: np.ndarray) -> np.ndarray:  # [4, 4]
    """OpenGL camera-to-world matrix of a camera at `eye` looking at `target`."""
    back = eye - target  # the camera's +Z points away from what it looks at
    back = back / np.linalg.norm(back)
    right = np.cross(up, back)
    if np.linalg.norm(right) < 1e-9:  # looking straight along `up`: pick any perpendicular
        right = np.cross(np.array([1.0, 0.0, 0.0]), back)
    right = right / np.linalg.norm(right)
    true_up = np.cross(back, right)
    c2w = np.eye(4)
    c2w[:3, 0], c2w[:3, 1], c2w[:3, 2], c2w[:3, 3] = right, true_up, back, eye
    return c2w


def circular_orbit(n: int, radius: float, arc_deg: float = 360.0, start_deg: float = 0.0) -> np.ndarray:  # [n, 4, 4]
    """A scanner orbit: sources on a circle around the z axis, all looking at the origin (z is up)."""
    end = arc_deg if arc_deg < 360.0 else 360.0 * (1 - 1 / n)  # a full circle does not repeat its first view
    angles = np.deg2rad(start_deg + np.linspace(0.0, end, n))
    eyes = radius * np.stack([np.cos(angles), np.sin(angles), np.zeros(n)], axis=-1)
    return np.stack([look_at(e, np.zeros(3), np.array([0.0, 0.0, 1.0])) for e in eyes])


def _frame_around(up: np.ndarray) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`up` normalised and two unit vectors that complete it to a right-handed orthonormal frame."""
    up = up / np.linalg.norm(up)
    a = np.cross(up, [1.0, 0.0, 0.0])
    a = a if np.linalg.norm(a) > 1e-6 else np.cross(up, [0.0, 1.0, 0.0])
    a = a / np.linalg.norm(a)
    return up, a, np.cross(up, a)


def ring_orbit(n: int, radius: float, centre: np.ndarray, up: np.ndarray, elev_deg: float = 20.0) -> np.ndarray:  # [n, 4, 4]
    """A turntable: n cameras evenly round `centre` at one elevation above the plane normal to `up`,
    all looking at `centre` (for videos)."""
    up, a, b = _frame_around(up)
    e = np.deg2rad(elev_deg)
    phis = 2 * np.pi * np.arange(n) / n
    eyes = [centre + radius * (np.cos(e) * (np.cos(p) * a + np.sin(p) * b) + np.sin(e) * up) for p in phis]
    return np.stack([look_at(eye, centre, up) for eye in eyes])


def sphere_orbit(n: int, radius: float, centre: np.ndarray, up: np.ndarray, elev_deg=(-25.0, 65.0)) -> np.ndarray:  # [n, 4, 4]
    """Photographs around an object: a spiral over a band of elevations (as a photographer walks
    round it), every camera looking at `centre`, with `up` the world's up direction."""
    up, a, b = _frame_around(up)
    golden = np.pi * (3.0 - np.sqrt(5.0))
    lo, hi = np.sin(np.deg2rad(elev_deg[0])), np.sin(np.deg2rad(elev_deg[1]))
    out = []
    for i in range(n):
        s = lo + (hi - lo) * (i + 0.5) / n  # uniform in sin(elevation): uniform area on the band
        c = np.sqrt(1.0 - s * s)
        phi = i * golden
        eye = centre + radius * (c * np.cos(phi) * a + c * np.sin(phi) * b + s * up)
        out.append(look_at(eye, centre, up))
    return np.stack(out)


def pixel_rays(c2w: np.ndarray, intr, width: int, height: int, projection: str = "cone", supersample: int = 1
               ) -> Tuple[np.ndarray, np.ndarray]:
    """Rays of every pixel in world coordinates: origins [H*s, W*s, 3] and unit directions [H*s, W*s, 3].

    `intr` = (fx, fy, cx, cy); for parallel beam fx = 1 / pixel_size_x (see XrayScan). With
    `supersample` s > 1, each pixel gets an s x s grid of sub-pixel rays (row-major inside the pixel).
    """
    fx, fy, cx, cy = intr
    offs = (np.arange(supersample) + 0.5) / supersample  # sub-pixel sample positions; 0.5 = the centre
    u = (np.arange(width)[:, None] + offs[None, :]).reshape(-1)  # [W*s]
    v = (np.arange(height)[:, None] + offs[None, :]).reshape(-1)  # [H*s]
    uu, vv = np.meshgrid(u, v, indexing="xy")  # [H*s, W*s]
    x, y = (uu - cx) / fx, -(vv - cy) / fy  # camera-frame offsets (OpenGL: +y up)
    rot, eye = c2w[:3, :3], c2w[:3, 3]
    if projection == "cone":
        d = np.stack([x, y, -np.ones_like(x)], axis=-1)
        d = d / np.linalg.norm(d, axis=-1, keepdims=True)
        dirs = d @ rot.T
        origins = np.broadcast_to(eye, dirs.shape).copy()
    elif projection == "parallel":
        o = np.stack([x, y, np.zeros_like(x)], axis=-1)
        origins = o @ rot.T + eye
        dirs = np.broadcast_to(-rot[:, 2], origins.shape).copy()
    else:
        raise ValueError(f"projection must be 'cone' or 'parallel', got {projection!r}")
    return origins, dirs


def random_similarity(rng: np.random.Generator, scale_range=(0.5, 2.0), max_translation: float = 0.5) -> np.ndarray:  # [4, 4]
    """A random similarity p' = s R p + t: R uniform over rotations, s log-uniform, t uniform in a cube."""
    q = rng.normal(size=4)
    q /= np.linalg.norm(q)
    w, x, y, z = q
    rot = np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
        [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
        [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
    ])
    s = float(np.exp(rng.uniform(np.log(scale_range[0]), np.log(scale_range[1]))))
    m = np.eye(4)
    m[:3, :3] = s * rot
    m[:3, 3] = rng.uniform(-max_translation, max_translation, size=3)
    return m
