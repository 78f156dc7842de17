"""Analytic phantoms made of ellipsoids: exact line integrals, exact first hits, exact voxel samples.

The attenuation is `mu(x) = sum_i delta_i * [x inside E_i]` (additive, as in the Shepp-Logan phantom:
a negative delta hollows out what an outer ellipsoid filled). Lengths are X-ray-frame units (mm).

Example:
    >>> import numpy as np
    >>> from insideout_ns.dataparsers.synth.phantom import Ellipsoid, Phantom
    >>> ball = Phantom([Ellipsoid(np.zeros(3), np.full(3, 10.0), np.eye(3), 0.02)])
    >>> round(float(ball.line_integrals(np.array([[-50.0, 0, 0]]), np.array([[1.0, 0, 0]]))[0]), 9)  # 20 mm * 0.02
    0.4
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np

from ..scene_format import Volume


@dataclass
class Ellipsoid:
    centre: np.ndarray  # [3]
    semi_axes: np.ndarray  # [3]
    rotation: np.ndarray  # [3, 3], columns are the ellipsoid's axes in the world
    density: float  # attenuation added inside, 1 / length unit
    paint: Optional[Tuple[str, Tuple[float, float, float], Tuple[float, float, float]]] = None  # visible surface

    def to_unit(self, points: np.ndarray) -> np.ndarray:  # [..., 3] -> [..., 3]
        """Coordinates in which this ellipsoid is the unit ball."""
        return ((points - self.centre) @ self.rotation) / self.semi_axes

    def chord_interval(self, origins: np.ndarray, dirs: np.ndarray, grow: float = 1.0):
        """Entry and exit parameters t0 <= t1 of the rays o + t d (|d| = 1) through the ellipsoid scaled
        by `grow` about its centre; NaN where the ray misses."""
        o = self.to_unit(origins) / grow  # [R, 3]
        d = (dirs @ self.rotation) / self.semi_axes / grow  # [R, 3]
        a = np.einsum("ij,ij->i", d, d)  # |o + t d|^2 = 1 is the quadratic a t^2 + 2 b t + c = 0
        b = np.einsum("ij,ij->i", o, d)
        c = np.einsum("ij,ij->i", o, o) - 1.0
        disc = b * b - a * c
        hit = disc > 0
        root = np.sqrt(np.where(hit, disc, 0.0))
        t0 = np.where(hit, (-b - root) / a, np.nan)
        t1 = np.where(hit, (-b + root) / a, np.nan)
        return t0, t1

    def chord(self, origins: np.ndarray, dirs: np.ndarray, grow: float = 1.0) -> np.ndarray:  # [R]
        """Length of each ray's half-line t >= 0 inside the (scaled) ellipsoid."""
        t0, t1 = self.chord_interval(origins, dirs, grow)
        return np.nan_to_num(np.clip(t1 - np.maximum(t0, 0.0), 0.0, None))

    def normal(self, points: np.ndarray) -> np.ndarray:  # [R, 3] unit outward normals
        g = (self.to_unit(points) / self.semi_axes) @ self.rotation.T  # gradient of |to_unit(x)|^2 / 2
        return g / np.linalg.norm(g, axis=-1, keepdims=True)


# ---------------------------------------------------------------------------------------------
# Procedural paint: an albedo as a function of the surface point in the ellipsoid's unit frame
# ---------------------------------------------------------------------------------------------


def _pattern_stripes(p: np.ndarray) -> np.ndarray:
    return 0.5 + 0.5 * np.sign(np.sin(9.0 * p[:, 2] + 2.0 * np.sin(4.0 * np.arctan2(p[:, 1], p[:, 0]))))


def _pattern_checker(p: np.ndarray) -> np.ndarray:
    k = np.floor(4.0 * p[:, 0]) + np.floor(4.0 * p[:, 1]) + np.floor(4.0 * p[:, 2])
    return np.mod(k, 2.0)


def _pattern_dots(p: np.ndarray) -> np.ndarray:
    q = 5.0 * p
    return (np.linalg.norm(q - np.round(q), axis=-1) < 0.3).astype(np.float64)


def _pattern_mottle(p: np.ndarray) -> np.ndarray:
    w = np.sin(7.0 * p[:, 0] + 3.0 * np.sin(5.0 * p[:, 1])) * np.sin(6.0 * p[:, 2] + 2.0 * np.sin(8.0 * p[:, 0]))
    return np.clip(0.5 + 0.9 * w, 0.0, 1.0)


PATTERNS: Dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "stripes": _pattern_stripes,
    "checker": _pattern_checker,
    "dots": _pattern_dots,
    "mottle": _pattern_mottle,
}

LIGHT_DIR = np.array([0.4, -0.5, 0.75]) / np.linalg.norm([0.4, -0.5, 0.75])  # fixed in the object's frame


@dataclass
class Phantom:
    parts: List[Ellipsoid]
    volume_res: int = 64  # voxels per side of the ground-truth volume

    def volume(self) -> Volume:
        """The ground-truth volume: a cube of isotropic voxels around the object, 5 % margin."""
        box = self.aabb()
        half = 0.525 * (box[1] - box[0]).max()
        aabb = box.mean(axis=0) + np.array([[-half], [half]])
        n = self.volume_res
        return Volume(self.voxelise((n, n, n), aabb), aabb)

    @property
    def visible(self) -> List[Ellipsoid]:
        return [e for e in self.parts if e.paint is not None]

    def line_integrals(self, origins: np.ndarray, dirs: np.ndarray) -> np.ndarray:  # [R]
        """Exact `int_0^inf mu(o + t d) dt` for unit directions: densities times chord lengths."""
        return sum(e.density * e.chord(origins, dirs) for e in self.parts)

    def density(self, points: np.ndarray) -> np.ndarray:  # [..., 3] -> [...]
        inside = [(np.sum(e.to_unit(points) ** 2, axis=-1) <= 1.0) * e.density for e in self.parts]
        return np.sum(inside, axis=0)

    def voxelise(self, shape: Tuple[int, int, int], aabb: np.ndarray) -> np.ndarray:  # [nx, ny, nz] float32
        """The attenuation sampled at voxel centres (the scene format's volume)."""
        axes = [aabb[0, k] + (np.arange(shape[k]) + 0.5) * (aabb[1, k] - aabb[0, k]) / shape[k] for k in range(3)]
        grid = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1)
        return self.density(grid.reshape(-1, 3)).reshape(shape).astype(np.float32)

    def first_hit(self, origins: np.ndarray, dirs: np.ndarray):
        """Nearest entry into any visible ellipsoid: (hit [R] bool, point [R, 3], part index [R])."""
        best_t = np.full(len(origins), np.inf)
        best_i = np.full(len(origins), -1)
        for i, e in enumerate(self.parts):
            if e.paint is None:
                continue
            t0, _ = e.chord_interval(origins, dirs)
            closer = np.nan_to_num(t0, nan=np.inf) < best_t
            closer &= np.nan_to_num(t0, nan=-1.0) > 0.0
            best_t = np.where(closer, t0, best_t)
            best_i = np.where(closer, i, best_i)
        hit = np.isfinite(best_t)
        points = origins + np.where(hit, best_t, 0.0)[:, None] * dirs
        return hit, points, best_i

    def shade(self, origins: np.ndarray, dirs: np.ndarray) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Ray-cast colour [R, 3] in [0, 1] (Lambert under a fixed light), coverage [R] and the hit's distance
        along the ray [R] (inf where it misses)."""
        hit, points, part = self.first_hit(origins, dirs)
        rgb = np.zeros((len(origins), 3))
        for i in np.unique(part[hit]):
            e, sel = self.parts[i], hit & (part == i)
            name, c0, c1 = e.paint
            m = PATTERNS[name](e.to_unit(points[sel]))[:, None]
            albedo = (1 - m) * np.array(c0) + m * np.array(c1)
            lambert = np.clip(e.normal(points[sel]) @ LIGHT_DIR, 0.0, 1.0)[:, None]
            rgb[sel] = albedo * (0.35 + 0.65 * lambert)
        depth = np.where(hit, np.einsum("ij,ij->i", points - origins, dirs), np.inf)
        return rgb, hit.astype(np.float64), depth

    def aabb(self, transform: Optional[np.ndarray] = None) -> np.ndarray:  # [2, 3]
        """Exact bounding box of the union of all parts, after an optional 4x4 affine transform."""
        transform = np.eye(4) if transform is None else transform
        lo, hi = np.full(3, np.inf), np.full(3, -np.inf)
        for e in self.parts:
            m = transform[:3, :3] @ e.rotation @ np.diag(e.semi_axes)  # the unit ball maps through m
            c = transform[:3, :3] @ e.centre + transform[:3, 3]
            half = np.linalg.norm(m, axis=1)  # support of the ellipsoid along each world axis
            lo, hi = np.minimum(lo, c - half), np.maximum(hi, c + half)
        return np.stack([lo, hi])


def _rot(axis: str, deg: float) -> np.ndarray:
    c, s = np.cos(np.deg2rad(deg)), np.sin(np.deg2rad(deg))
    i, j = {"x": (1, 2), "y": (2, 0), "z": (0, 1)}[axis]
    r = np.eye(3)
    r[i, i], r[i, j], r[j, i], r[j, j] = c, -s, s, c
    return r


def _e(centre, axes, density, rot=None, paint=None) -> Ellipsoid:
    return Ellipsoid(np.array(centre, float), np.array(axes, float), np.eye(3) if rot is None else rot, density, paint)


def preset(name: str) -> Phantom:
    """The built-in phantoms (lengths in mm, attenuation in 1/mm, roughly diagnostic-energy values)."""
    if name == "doll":  # a painted nested doll: wooden shell, hollow, a smaller doll inside
        red, cream = (0.78, 0.12, 0.10), (0.96, 0.88, 0.70)
        return Phantom([
            _e([0, 0, -12], [30, 30, 38], 0.012, paint=("stripes", red, cream)),  # body
            _e([0, 0, 30], [20, 20, 19], 0.012, paint=("dots", cream, (0.15, 0.25, 0.6))),  # head
            _e([0, 0, -12], [26, 26, 34], -0.012),  # hollow body
            _e([0, 0, 30], [16, 16, 15], -0.012),  # hollow head
            _e([0, 0, -14], [14, 14, 20], 0.02),  # the inner doll
            _e([0, 0, 10], [10, 10, 9], 0.02),
            _e([0, 0, -14], [11, 11, 17], -0.014),  # its own cavity (partly hollow)
            _e([0, 0, -33], [16, 16, 4], 0.01),  # a weighted base plate
            _e([0, -18, 32], [6, 8, 6], 0.012, paint=("checker", red, red)),  # a nose and a bow on the side:
            _e([21, 19, -2], [15, 8, 13], 0.012, rot=_rot("z", 40), paint=("dots", cream, red)),  # no symmetry
        ])
    if name == "box":  # a rounded case with dense metal parts inside
        return Phantom([
            _e([0, 0, 0], [45, 30, 22], 0.008, paint=("checker", (0.20, 0.45, 0.30), (0.85, 0.80, 0.55))),
            _e([0, 0, 0], [41, 26, 18], -0.006),  # thin-walled, light filling
            _e([-20, 5, 0], [14, 3, 3], 0.12, rot=_rot("z", 25)),  # steel pins
            _e([18, -6, 2], [3, 3, 12], 0.12, rot=_rot("x", 30)),
            _e([5, 12, -6], [6, 6, 2], 0.09),  # a coin
            _e([8, -4, 6], [10, 7, 5], 0.02, rot=_rot("y", 40)),  # a plastic block
            _e([24, 10, 19], [7, 6, 5], 0.05, paint=("stripes", (0.6, 0.6, 0.65), (0.3, 0.3, 0.35))),  # a knob
            _e([-40, -8, 2], [8, 4, 6], 0.02, rot=_rot("z", 20), paint=("checker", (0.5, 0.2, 0.1), (0.7, 0.4, 0.2))),
        ])
    if name == "fruit":  # a peach: skin and flesh, a dense stone with a hollow seed
        return Phantom([
            _e([0, 0, 0], [34, 33, 31], 0.012, paint=("mottle", (0.93, 0.55, 0.15), (0.75, 0.15, 0.20))),
            _e([0, 0, 0], [33, 32, 30], -0.003),  # the outer 1 mm (skin) is denser than the flesh
            _e([0, 0, 2], [11, 9, 16], 0.03, rot=_rot("z", 20)),  # stone
            _e([0, 0, 2], [5, 3, 9], -0.025, rot=_rot("z", 20)),  # seed cavity
            _e([6, -14, -8], [5, 5, 5], -0.005),  # a bruise
            _e([14, -10, 12], [20, 17, 17], 0.01, paint=("mottle", (0.95, 0.65, 0.2), (0.8, 0.25, 0.2))),  # a lobe
            _e([3, 2, 31], [2, 2, 6], 0.015, rot=_rot("x", 20), paint=("stripes", (0.35, 0.22, 0.1), (0.25, 0.15, 0.05))),
        ])
    if name == "egg":  # an outside whose outline fits four ways (three unequal semi-axes), an asymmetric inside
        return Phantom([
            _e([0, 0, 0], [40, 28, 20], 0.01, paint=("stripes", (0.85, 0.75, 0.30), (0.30, 0.35, 0.70))),
            _e([0, 0, 0], [37, 25, 17], -0.008),  # a shell
            _e([18, 8, 5], [8, 6, 5], 0.05),  # a dense yolk off the centre
            _e([-15, -10, -4], [4, 4, 9], 0.08, rot=_rot("x", 30)),  # a pin on the other side
        ])
    raise ValueError(f"unknown phantom preset {name!r}; choose one of {PRESETS}")


PRESETS = ("doll", "box", "fruit", "egg")
