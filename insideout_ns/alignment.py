"""Cross-modal alignment: the similarity `p_rgb = s R p_xray + t` between the two frames, coarse to fine.

1. Centroids and spreads give translation and scale.
2. Principal axes give the rotation up to the ambiguity of PCA: every sign flip and axis order of a proper
   rotation (24 hypotheses); for near-symmetric objects (equal eigenvalues, where PCA's axes are
   arbitrary) rotations sampled over SO(3) are added. All are scored by the chamfer distance.
3. Scaled ICP (Umeyama's closed form on nearest neighbours, both ways) refines the best hypotheses; the
   final ICP is trimmed (the closest 90 % of the pairs each way): two visual hulls of one object differ
   where their views differ (a scanner's single-axis orbit leaves caps that photographs carve away).
4. What the outlines cannot decide: the result turned by 180 degrees about each principal axis of the
   X-ray surface, refined the same way; a turn that fits within AMBIGUITY_MARGIN of the best is an
   alignment the data cannot tell from it (an ellipsoid's outline fits four ways), and is reported.

Inputs are point sets: RGB surface points (the RGB Gaussians' means) and the outer surface of the
radiative density (boundary voxels of the filled, thresholded voxelised density).

Example:
    >>> import numpy as np
    >>> from insideout_ns.alignment import estimate_similarity
    >>> src = np.random.default_rng(0).normal(size=(500, 3)) * [3.0, 2.0, 1.0]
    >>> dst = 2.0 * src + [1.0, 0.0, 0.0]
    >>> result = estimate_similarity(src, dst)
    >>> bool(np.allclose(result.matrix[:3, :3], 2.0 * np.eye(3), atol=1e-3))
    True
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import List

import numpy as np
from scipy.spatial import cKDTree


TRIM = 0.9  # fraction of nearest-neighbour pairs (each way) that the final ICP fits
# A turned alignment whose residual is within this fraction of the best's is as good. Measured on the
# hulls of 24 views at 48 px: an ellipsoid's turns ("egg") 0.998-1.008 of the best; the box 1.12-1.14,
# the fruit 1.22-1.27, the doll 1.48-2.7
AMBIGUITY_MARGIN = 0.05
DISTINCT_DEG = 20.0  # turned alignments that ICP brings back within this angle of the best are the best


@dataclass
class Alignment:
    matrix: np.ndarray  # [4, 4] similarity from the source (X-ray) frame to the target (RGB) frame
    residual: float  # RMS symmetric nearest-neighbour distance after alignment, as a fraction of the target's diameter
    hypotheses: int  # how many coarse hypotheses were refined

    @property
    def scale(self) -> float:
        return float(np.cbrt(np.linalg.det(self.matrix[:3, :3])))


def umeyama(src: np.ndarray, dst: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:  # [4, 4]
    """Least-squares similarity mapping src [K, 3] onto dst [K, 3] (Umeyama 1991)."""
    w = np.ones(len(src)) if weights is None else weights
    w = w / w.sum()
    mu_s, mu_d = w @ src, w @ dst
    xs, xd = src - mu_s, dst - mu_d
    cov = (xd * w[:, None]).T @ xs  # cross-covariance
    u, sig, vt = np.linalg.svd(cov)
    fix = np.eye(3)
    fix[2, 2] = np.sign(np.linalg.det(u) * np.linalg.det(vt))  # a rotation, never a reflection
    rot = u @ fix @ vt
    var_s = (w * (xs**2).sum(1)).sum()
    s = float((sig * np.diag(fix)).sum() / var_s)
    m = np.eye(4)
    m[:3, :3] = s * rot
    m[:3, 3] = mu_d - s * rot @ mu_s
    return m


def apply(m: np.ndarray, pts: np.ndarray) -> np.ndarray:
    return pts @ m[:3, :3].T + m[:3, 3]


def chamfer_rms(a: np.ndarray, tree_b: cKDTree, b: np.ndarray, tree_a: cKDTree | None = None) -> float:
    """RMS of nearest-neighbour distances, both ways when both trees are given."""
    d_ab = tree_b.query(a)[0]
    if tree_a is None:
        return float(np.sqrt(np.mean(d_ab**2)))
    d_ba = tree_a.query(b)[0]
    return float(np.sqrt(0.5 * (np.mean(d_ab**2) + np.mean(d_ba**2))))


def pca_hypotheses(src: np.ndarray, dst: np.ndarray) -> List[np.ndarray]:
    """24 similarity hypotheses: centroids, RMS spread ratio, and every proper signed permutation of the
    principal axes."""
    cs, cd = src.mean(0), dst.mean(0)
    xs, xd = src - cs, dst - cd
    s = np.sqrt((xd**2).sum(1).mean() / (xs**2).sum(1).mean())
    _, vs = np.linalg.eigh(xs.T @ xs)  # columns: principal axes, ascending variance
    _, vd = np.linalg.eigh(xd.T @ xd)
    out = []
    for perm in itertools.permutations(range(3)):
        for signs in itertools.product((1.0, -1.0), repeat=3):
            p = np.zeros((3, 3))
            p[list(perm), range(3)] = signs
            rot = vd @ p @ vs.T
            if np.linalg.det(rot) < 0:
                continue
            m = np.eye(4)
            m[:3, :3] = s * rot
            m[:3, 3] = cd - s * rot @ cs
            out.append(m)
    return out


def sampled_hypotheses(src: np.ndarray, dst: np.ndarray, n: int, seed: int) -> List[np.ndarray]:
    """Centroid and spread as in pca_hypotheses, with `n` rotations spread over SO(3) (for shapes whose
    principal axes are ill-defined)."""
    rng = np.random.default_rng(seed)
    cs, cd = src.mean(0), dst.mean(0)
    s = np.sqrt(((dst - cd) ** 2).sum(1).mean() / ((src - cs) ** 2).sum(1).mean())
    q = rng.normal(size=(n, 4))
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    out = []
    for w, x, y, z in q:
        rot = np.array([
            [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
            [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
            [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
        ])
        m = np.eye(4)
        m[:3, :3] = s * rot
        m[:3, 3] = cd - s * rot @ cs
        out.append(m)
    return out


def icp(src: np.ndarray, dst: np.ndarray, init: np.ndarray, tree_dst: cKDTree, iters: int = 100,
        keep: float = 1.0) -> np.ndarray:
    """Symmetric scaled ICP: nearest neighbours both ways (src -> dst and dst -> src, so that features of
    either set pull), Umeyama on the union; repeat until it stops moving. With keep < 1 (trimmed ICP),
    only that fraction of the closest pairs of each direction counts: parts of one surface that the
    other lacks do not pull."""
    m = init
    for _ in range(iters):
        moved = apply(m, src)
        d_dst, to_dst = tree_dst.query(moved)
        d_src, to_src = cKDTree(moved).query(dst)
        a = d_dst <= np.quantile(d_dst, keep)  # the pairs that count, each way
        b = d_src <= np.quantile(d_src, keep)
        new = umeyama(np.concatenate([src[a], src[to_src[b]]]), np.concatenate([dst[to_dst[a]], dst[b]]))
        if np.allclose(new, m, atol=1e-10, rtol=1e-8):
            break
        m = new
    return m


def subsample(points: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """At most n of the points [K, 3], drawn without replacement."""
    return points[rng.choice(len(points), n, replace=False)] if len(points) > n else points


def estimate_similarity(src: np.ndarray, dst: np.ndarray, refine_top: int = 32, max_points: int = 2000,
                        sampled: int = 512, seed: int = 0) -> Alignment:
    """The similarity that maps the point set `src` [K, 3] onto `dst` [L, 3] (not corresponding points).

    Hypotheses: the 24 PCA ones plus `sampled` rotations over SO(3) (ICP converges from within about
    30 degrees, which 512 samples cover); the `refine_top` best by chamfer distance get a short ICP on
    few points, and the 3 best of those a full one."""
    rng = np.random.default_rng(seed)
    src, dst = subsample(src, max_points, rng), subsample(dst, max_points, rng)
    tree_d = cKDTree(dst)
    hyps = pca_hypotheses(src, dst) + sampled_hypotheses(src, dst, sampled, seed)
    probe = src[rng.choice(len(src), min(len(src), 500), replace=False)]  # scoring needs few points
    probe_d = dst[rng.choice(len(dst), min(len(dst), 500), replace=False)]
    scores = []
    for h in hyps:  # symmetric: a feature of either set that the other lacks costs
        moved = apply(h, probe)
        scores.append(chamfer_rms(moved, tree_d, probe_d, cKDTree(moved)))
    best = [hyps[i] for i in np.argsort(scores)[:refine_top]]  # near-ties (symmetric shapes) all get refined
    quick = [icp(probe, dst, h, tree_d, iters=15) for h in best]  # a short ICP ranks the basins
    quick_scores = [chamfer_rms(apply(m, probe), tree_d, probe_d, cKDTree(apply(m, probe))) for m in quick]
    # untrimmed ICP to convergence first (all pairs: a wide basin), then trimmed from there (parts of one
    # hull that the other lacks stop pulling); trimming from the short ICP's start settles short
    refined = [icp(src, dst, icp(src, dst, quick[i], tree_d), tree_d, keep=TRIM) for i in np.argsort(quick_scores)[:3]]
    final = []
    for m in refined:
        moved = apply(m, src)
        final.append(chamfer_rms(moved, tree_d, dst, cKDTree(moved)))
    i = int(np.argmin(final))
    diameter = float(np.linalg.norm(dst.max(0) - dst.min(0)))
    return Alignment(refined[i], final[i] / diameter, len(best))


@dataclass
class Candidate:
    matrix: np.ndarray  # [4, 4] the best similarity turned by 180 degrees about a principal axis, refined
    residual: float  # as Alignment.residual
    degrees_from_best: float  # rotation between it and the best


def rotation_deg(a: np.ndarray, b: np.ndarray) -> float:
    """Angle in degrees of the rotation between the rotation parts of two similarities [4, 4]."""
    ra, rb = (m[:3, :3] / np.cbrt(np.linalg.det(m[:3, :3])) for m in (a, b))
    return float(np.degrees(np.arccos(np.clip((np.trace(ra @ rb.T) - 1) / 2, -1.0, 1.0))))


def turned_candidates(src: np.ndarray, dst: np.ndarray, best: np.ndarray, max_points: int = 2000, seed: int = 0
                      ) -> list[Candidate]:
    """`best` [4, 4] composed with the 180-degree turn about each principal axis of `src` (through its
    centroid), each refined by ICP as estimate_similarity refines, with its residual and its angle from
    `best` (small where ICP fell back into the best's basin)."""
    rng = np.random.default_rng(seed)
    src, dst = subsample(src, max_points, rng), subsample(dst, max_points, rng)
    tree_d = cKDTree(dst)
    centre = src.mean(0)
    _, axes = np.linalg.eigh((src - centre).T @ (src - centre))
    diameter = float(np.linalg.norm(dst.max(0) - dst.min(0)))
    out = []
    for a in axes.T:
        turn = np.eye(4)
        turn[:3, :3] = 2.0 * np.outer(a, a) - np.eye(3)  # 180 degrees about a
        turn[:3, 3] = centre - turn[:3, :3] @ centre
        m = icp(src, dst, icp(src, dst, best @ turn, tree_d), tree_d, keep=TRIM)
        moved = apply(m, src)
        out.append(Candidate(m, chamfer_rms(moved, tree_d, dst, cKDTree(moved)) / diameter, rotation_deg(m, best)))
    return out


def ambiguous(best_residual: float, candidates: list[Candidate]) -> list[Candidate]:
    """The candidates that the data cannot tell from the best: distinct from it, and fitting as well."""
    return [c for c in candidates if c.degrees_from_best > DISTINCT_DEG
            and c.residual <= (1.0 + AMBIGUITY_MARGIN) * best_residual]


def alignment_error(estimate: np.ndarray, truth: np.ndarray, centre: np.ndarray, diameter: float) -> dict:
    """Rotation error (degrees), translation error (where the object's centre `centre` [3], in the source
    frame, lands, as a fraction of the object's diameter in the target frame) and relative scale error."""
    s_e, s_t = np.cbrt(np.linalg.det(estimate[:3, :3])), np.cbrt(np.linalg.det(truth[:3, :3]))
    angle = rotation_deg(estimate, truth)
    shift = apply(estimate, centre[None])[0] - apply(truth, centre[None])[0]
    return {"rotation_deg": angle, "translation_frac": float(np.linalg.norm(shift) / diameter),
            "scale_rel": float(abs(s_e / s_t - 1.0))}
