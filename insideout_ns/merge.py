"""Phase 2: find the X-ray -> RGB similarity and merge the two populations into one set (phases.py).

1. The similarity: `calibration.json` as it is; or estimated from the two hulls of the data (or, without
   hulls, the fitted populations' surfaces; for photographs without masks, masks of the object found by
   object_region.py) by alignment.estimate_similarity (seeded by the calibration
   with `alignment.refine_calibration`), then refined by silhouettes (silhouette.py) and, for a CT scene, by the
   CT's own surface against the photographs' masks, or without masks against the SfM points of the object
   (ct_outline.py). A residual above
   `alignment.max_residual` (`..._without_masks`) stops training with the reason.
2. `alignment.json` in the run folder records it (source, scale, residual, status, the refinement, and
   any fallback the starting data took).
3. The radiative population moves into the RGB frame (attenuation scales by 1 / s).
4. Each Gaussian takes the attribute group it lacks from its nearest neighbour in the other population;
   density is shared by mass so that every projection stays the same (to first order); the inside takes the
   colour of the surface the photographs see, and the radiative Gaussians no photograph sees are hidden.
5. Where the object is, as both modalities see it (object_grid.py): the density is held inside it in phase 3.

Phase 2 takes what it needs as `AlignmentInputs` (the Gaussian set, the starting data, the training projections,
the frames' boxes, the configs) and reads nothing else: `find_alignment` returns the similarity and its report
(`Report`: alignment.json's record, the viewer's status, the object's grid) and `merge_populations` moves and merges
the set in place; the model applies the rest (model.InsideOutModel.align).
"""

from __future__ import annotations

import copy
import json
import math
import os
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from scipy.spatial import cKDTree
from torch import Tensor

from nerfstudio.utils.rich_utils import CONSOLE

from .ct_outline import MIN_POINTS, OutlineFit, PointFit, air_boundary, fit_to_masks, fit_to_points, mask_views
from .alignment import TRIM, Alignment, Candidate, ambiguous, apply, chamfer_rms, estimate_similarity, icp, turned_candidates
from .init_points import SUPPORT_FRACTION, SUPPORT_FRACTIONS, hull_surface, inside_hull, outline_steepness, xray_support
from .dataparsers.dataparser import XrayViews
from .gaussians import RADIATIVE, RGB, GaussianSet, densities_of, scales_of, set_densities, unit_mass
from .init_points import StartingData
from .kernels.rgb import ALPHA_MIN
from .model_config import AlignmentConfig, NoMasksConfig
from .object_grid import hull_in_xray_frame, object_grid
from .object_region import Region, crop_region, find_ground, standing_region
from .phases import TrainingStopped
from .projection_geometry import project, sample_images
from .rendering import grid_shape, splat, voxelized
from .solids import largest_part, surface_points
from .silhouette import SilhouetteFit, coarser_views, pinhole_views, refine_similarity
from .transforms import camera_intrinsics, viewmat_from_c2w


@dataclass
class AlignmentInputs:
    """What phase 2 reads: a paired scene's Gaussians in their own frames (phase 1), and its data."""

    gaussians: GaussianSet  # both populations; merged in place by merge_populations
    start: StartingData  # the hulls, the photographs' cameras and masks, the SfM points, the starting notes
    xray: XrayViews  # the training projections and cameras (their outlines for the hulls and silhouettes)
    box_xray: Tensor  # [2, 3] the scanned region (X-ray frame)
    box_rgb: Tensor  # [2, 3] the RGB scene box
    extent_xray: float  # half the scanned region's diagonal
    extent_rgb: float  # half the RGB box's diagonal
    xray_to_rgb: Tensor  # [4, 4] the calibration, where `calibrated`, else the identity
    calibrated: bool  # the scene has calibration.json
    alignment: AlignmentConfig
    no_masks: NoMasksConfig
    residual_limit: float  # an estimate whose residual exceeds this failed (with or without masks)
    with_room: bool  # a learned environment stands behind the Gaussians (the masks' alpha threshold)
    sfm_region: Callable[[], Optional[Region]]  # what stands on the table among the SfM points (ValueError: nothing)
    hide_unseen: bool  # the radiative Gaussians no photograph sees become transparent (not in the alpha ablation)
    patient_from_frame: Tensor  # [4, 4] a CT's grid axes -> its patient frame (identity otherwise)
    ct_air: Optional[float]  # a CT scene: the attenuation of its surface (alignment.ct_surface_hu); None otherwise
    step: int
    backend: str

    @property
    def device(self) -> torch.device:
        return self.gaussians.params["means"].device


def nearest(pos: np.ndarray, sources: Tensor, targets: Tensor) -> Tensor:  # -> [T] places in sources
    """For each target index [T], the place in `sources` [S] (indices of pos [N, 3]) of its nearest point."""
    found = cKDTree(pos[sources.cpu()]).query(pos[targets.cpu()])[1]
    return torch.from_numpy(np.asarray(found)).to(sources.device)


@torch.no_grad()
def transfer_attributes(params, radiative: Tensor, seen: Optional[Tensor] = None) -> None:
    """Every Gaussian takes the attribute group it lacks from its nearest neighbour in the other population
    (radiative [N] bool): colour and opacity for the radiative ones; density for the RGB ones, shared by
    mass: a radiative Gaussian's mass is split equally between itself and the RGB Gaussians that took it
    as nearest, so the total attenuation, and so every projection to first order, is unchanged. Colours come
    from the RGB Gaussians a photograph sees (`seen` [N] bool, where given), to the radiative ones and to the
    hidden RGB ones too, which kept the random colours they were born with: inside, an object takes the colour
    of its nearest surface (the method's 1-nearest-neighbour transfer)."""
    rgb_idx, rad_idx = torch.nonzero(~radiative).squeeze(-1), torch.nonzero(radiative).squeeze(-1)
    if len(rgb_idx) == 0 or len(rad_idx) == 0:
        return
    pos = params["means"].detach().cpu().numpy()
    params["opacities"].data[rad_idx] = params["opacities"].data[rgb_idx[nearest(pos, rgb_idx, rad_idx)]]
    surface = torch.nonzero(~radiative & seen).squeeze(-1) if seen is not None else rgb_idx
    surface = surface if len(surface) else rgb_idx
    hidden = torch.nonzero(~torch.isin(torch.arange(len(radiative), device=radiative.device), surface)).squeeze(-1)
    if len(hidden):
        source = surface[nearest(pos, surface, hidden)]
        for key in ("features_dc", "features_rest"):
            params[key].data[hidden] = params[key].data[source]
    near_rad = nearest(pos, rad_idx, rgb_idx)  # [R] each RGB Gaussian's nearest radiative one
    unit = unit_mass(scales_of(params).detach())
    mass = densities_of(params).detach()[rad_idx] * unit[rad_idx]
    share = mass / (torch.bincount(near_rad, minlength=len(rad_idx)) + 1)
    set_densities(params, rad_idx, share / unit[rad_idx])
    set_densities(params, rgb_idx, share[near_rad] / unit[rgb_idx])


@torch.no_grad()
def rgb_surface_points(gaussians: GaussianSet) -> np.ndarray:  # [K, 3]
    """Means of the RGB Gaussians that a photograph would see (the more opaque ones)."""
    opa = gaussians.opacities()
    rgb = gaussians.of(RGB)
    sel = rgb & (opa >= min(0.3, 0.5 * float(opa[rgb].max())))
    return gaussians.means(sel).cpu().numpy()


@torch.no_grad()
def radiative_surface_points(inputs: AlignmentInputs, res: int = 64) -> np.ndarray:  # [K, 3]
    """The outer surface of the radiative density, as the iso-surface (marching cubes, sub-voxel) at half
    the density of the object's outer layer: where a reconstruction's blurred edge has its true boundary.
    The outer layer is the band just inside the largest region above 3 % of the peak."""
    from scipy import ndimage

    g, box = inputs.gaussians, inputs.box_xray
    rad = g.of(RADIATIVE)
    vol = voxelized(*g.geometry(rad), g.densities(rad), grid_shape(box, res), box, inputs.backend).cpu().numpy()
    region = largest_part(vol > 0.03 * vol.max())
    band = region & ~ndimage.binary_erosion(region, iterations=3)
    if not band.any():
        return np.zeros((0, 3))
    return surface_points(largest_part(vol > 0.5 * np.percentile(vol[band], 90)), box.cpu().numpy())


@dataclass
class Surfaces:
    """What the alignment fits: the object's surface in each frame, and which RGB Gaussians are the object."""

    xray: np.ndarray  # [K, 3] X-ray frame
    rgb: np.ndarray  # [K', 3] RGB frame
    from_hulls: bool  # both are hulls of silhouettes (else the fitted populations' surfaces)
    rgb_object: Tensor  # [N] bool: the RGB Gaussians of the object (the silhouette refinement renders them)
    floor: Optional[Tuple[np.ndarray, float]] = None  # (normal, offset): the photographs' masks hold only p . normal > offset
    masks: Optional[List[Tensor]] = None  # [H, W, 1] per photograph: the object's masks rendered (photographs without masks)


def alignment_surfaces(inputs: AlignmentInputs, notes: List[str]) -> Surfaces:
    """X-ray-frame and RGB-frame surfaces of the object: the two hulls when there are any; for photographs
    without masks, the X-ray hull and the hull of the object's rendered masks (object_surfaces); else both
    fitted populations' surfaces. Each fallback is said in `notes`."""
    hull_rgb, hull_xray = inputs.start.hull_rgb, inputs.start.hull_xray
    rgb = inputs.gaussians.of(RGB)
    if hull_rgb is not None and hull_xray is not None and len(hull_rgb) > 10 and len(hull_xray) > 10:
        return Surfaces(hull_xray.double().numpy(), hull_rgb.double().numpy(), True, rgb)
    if not inputs.start.masked:
        return object_surfaces(inputs, notes)
    notes.append("no usable hull of the data (empty, or filling its box): aligned the fitted populations' surfaces")
    CONSOLE.log(f"[yellow]InsideOut: {notes[-1]}[/yellow]")
    return Surfaces(radiative_surface_points(inputs), rgb_surface_points(inputs.gaussians), False, rgb)


MASK_ALPHA = 0.7  # a photograph's pixel is the object's where its Gaussians' alpha exceeds this (0.5 widens the hull,
# 0.9 eats its bottom: benchmarks/README.md, "Captures without masks")
MASK_ALPHA_WITH_ROOM = 0.5  # the same where a learned environment stands behind the Gaussians (inputs.with_room):
# their outline is less opaque when the room need not be covered


def object_surfaces(inputs: AlignmentInputs, notes: List[str]) -> Surfaces:
    """For photographs without masks: the object's region (object_region.py: the crop box given, or what
    stands on the table where the cameras look, found among the SfM points or else the opaque Gaussians),
    the masks of the RGB Gaussians in it rendered in every photograph (object_masks), and the visual hull
    of those masks against the X-ray hull, as with masks given."""
    cfg, g, start = inputs.no_masks, inputs.gaussians, inputs.start
    rgb = g.of(RGB)
    cams = start.rgb_cameras
    try:
        if cfg.crop is not None:
            region = crop_region(cfg.crop, g.means(rgb))
        elif start.sfm_points is not None:
            region = inputs.sfm_region()
        else:
            points = torch.from_numpy(rgb_surface_points(g))
            region = standing_region(points, find_ground(points, cams), "opaque Gaussians")
    except ValueError as err:
        raise TrainingStopped(f"alignment at step {inputs.step}: {err}") from err
    rgb_object = rgb & region.contains(g.means().detach())
    masks = object_masks(inputs, rgb_object)
    hull = hull_surface(cams, masks, inputs.box_rgb.float().cpu(), parallel=False)
    coverage = float(torch.stack([m.mean() for m in masks]).mean())
    notes.append(f"{region.how}; its masks, rendered, cover {100 * coverage:.1f} % of the photographs")
    CONSOLE.log(f"InsideOut: {notes[-1]}")
    if len(hull) <= 10 or start.hull_xray is None or len(start.hull_xray) <= 10:
        raise TrainingStopped(f"alignment at step {inputs.step}: the object's rendered masks carve no hull "
                              f"({region.how}); give a crop box around the object")
    chosen = torch.nonzero(rgb_object)[:, 0]  # of those, the ones inside the masks' hull (floaters carved away)
    rgb_object[chosen] = inside_hull(g.means(chosen).detach().cpu().float(), cams, masks, parallel=False).to(rgb.device)
    floor = None if region.ground is None else (region.ground.normal, region.ground.offset + region.floor)
    return Surfaces(start.hull_xray.double().numpy(), hull.double().numpy(), True, rgb_object, floor, masks)


CAP_MARGIN = 0.02  # above the floor, this fraction of the object's height is the RGB hull's cap (carved, not seen)


def above_the_floor(first: Alignment, xray: np.ndarray, rgb: np.ndarray, floor: Tuple[np.ndarray, float],
                    rounds: int = 3) -> Alignment:
    """The masks of an object standing on a table stop at the region's floor (object_region.ABOVE over the
    plane): the RGB hull is cut there and capped by the carving, the X-ray hull is whole. Both cut at the
    floor (plus CAP_MARGIN of the height), the alignment is refined by trimmed ICP from `first`, `rounds`
    times (the X-ray hull's cut moves with it)."""
    normal, offset = floor
    height = rgb @ normal - offset
    cut = CAP_MARGIN * float(height.max())  # height above the floor where both hulls start
    dst = rgb[height > cut]
    tree, matrix = cKDTree(dst), first.matrix
    for _ in range(rounds):
        src = xray[apply(matrix, xray) @ normal - offset > cut]
        matrix = icp(src, dst, matrix, tree, keep=TRIM)
    moved = apply(matrix, src)
    residual = chamfer_rms(moved, tree, dst, cKDTree(moved)) / float(np.linalg.norm(dst.max(0) - dst.min(0)))
    return Alignment(matrix, residual, first.hypotheses)


MASK_SUPERSAMPLE = 3  # the masks' alpha is rendered at 3 x the photographs' resolution and averaged down: at their
# own, the rasterizer's smallest footprint (gsplat's eps2d, 0.3 px^2) widens every outline by about a pixel, and the
# hull and the estimated scale with it (test_object_region.py::test_supersampled_masks_follow_the_exact_alpha)


def object_masks(inputs: AlignmentInputs, sel: Tensor) -> List[Tensor]:  # sel [N] bool -> [H, W, 1] per photograph
    """Masks of the selected RGB Gaussians in every training photograph: alpha (rendered at MASK_SUPERSAMPLE x
    the resolution, averaged down) above MASK_ALPHA (or MASK_ALPHA_WITH_ROOM, in front of a learned
    environment), the largest blob, holes filled."""
    cams = inputs.start.rgb_cameras
    threshold = MASK_ALPHA_WITH_ROOM if inputs.with_room else MASK_ALPHA
    return [largest_blob(supersampled_alpha(inputs.gaussians, cams[i : i + 1], sel, MASK_SUPERSAMPLE, inputs.backend)[..., 0]
                         > threshold)[..., None].float() for i in range(len(cams))]


def supersampled_alpha(gaussians: GaussianSet, camera, sel: Tensor, k: int, backend: str) -> Tensor:  # -> [H, W, 1]
    """rendered_alpha at k x the camera's [1] resolution, averaged over each k x k block."""
    fine = copy.deepcopy(camera)
    fine.rescale_output_resolution(k)
    alpha = rendered_alpha(gaussians, fine, sel, backend)  # [k H, k W, 1]
    return F.avg_pool2d(alpha.permute(2, 0, 1)[None], k)[0].permute(1, 2, 0)


def largest_blob(mask: Tensor) -> Tensor:  # [H, W] bool -> [H, W] bool
    """The largest connected part of a mask, holes filled: the object is one blob in a photograph, and a
    floater apart from it would only widen the hull."""
    return torch.from_numpy(np.asarray(largest_part(mask.numpy())))


@torch.no_grad()
def rendered_alpha(gaussians: GaussianSet, camera, sel: Tensor, backend: str) -> Tensor:  # -> [H, W, 1]
    """The alpha of the selected Gaussians sel [N] (bool) in one photograph (camera [1])."""
    device = gaussians.params["means"].device
    colors = torch.zeros(int(sel.sum()), 3, device=device)
    _, alpha, _ = splat(gaussians, camera.to(device), sel, colors, gaussians.opacities(sel), None, colors.new_zeros(3), backend)
    return alpha.cpu()


HIDDEN = math.log(0.5 * ALPHA_MIN / (1 - 0.5 * ALPHA_MIN))  # an opacity logit under the rasterizers' alpha cut


@torch.no_grad()
def hide(params, selected: Tensor) -> None:
    """The selected Gaussians [N] bool (radiative ones no photograph sees) become transparent: under the alpha cut
    they draw nothing, RGB renders leave them out (rendering.photograph) and the photographs' loss does not reach them;
    drawn, they cost every RGB step of phase 3 a render of the whole interior (3 x its time on the head CT)."""
    params["opacities"].data[selected] = HIDDEN


SEEN_DEPTH = 0.02  # a Gaussian at most this fraction of the scene's extent behind a photograph's rendered depth is seen


@torch.no_grad()
def seen_in_photographs(inputs: AlignmentInputs, sel: Tensor) -> Tensor:  # sel [N] bool -> [N] bool
    """Which of the selected Gaussians a training photograph sees: the mean projects where the photograph's
    rendered alpha exceeds 0.5, no more than SEEN_DEPTH of the scene's extent behind its rendered depth."""
    g, device = inputs.gaussians, inputs.device
    means = g.means(sel).detach()
    colors = torch.zeros(len(means), 3, device=device)
    seen = torch.zeros(len(means), dtype=torch.bool, device=device)
    cams = inputs.start.rgb_cameras
    for i in range(len(cams)):
        camera = cams[i : i + 1].to(device)
        image, alpha, _ = splat(g, camera, sel, colors, g.opacities(sel), None, colors.new_zeros(3), inputs.backend)
        uv, depth = project(means, camera, parallel=False)  # [1, M, 2], [1, M]
        drawn = sample_images(torch.cat([alpha, image[..., 3:4]], dim=-1)[None], uv)[0]  # [M, 2]: alpha, depth
        seen |= (depth[0] > 0) & (drawn[:, 0] > 0.5) & (depth[0] <= drawn[:, 1] + SEEN_DEPTH * inputs.extent_rgb)
    out = torch.zeros_like(sel)
    out[sel] = seen
    return out


SUPPORT_TIE = 0.02  # support thresholds whose residuals are within 2 % of the least fit as well
STEEPER = 1.1  # among those, a larger threshold is taken where its outline rises at least 10 % faster


def fitted_support(inputs: AlignmentInputs, hull_rgb: np.ndarray, floor: Optional[Tuple[np.ndarray, float]] = None
                   ) -> Tuple[Alignment, np.ndarray, float, Dict[float, float], Dict[float, float]]:
    """The estimate from the X-ray hull whose shape fits the photographs' hull best, among the support
    thresholds init_points.SUPPORT_FRACTIONS: a scan sees what photographs do not (faint tissue past the skin, a
    couch), which a higher threshold trims (a CT scene's outlines are its object's without the air:
    XrayViews.outlined). Where several residuals are within SUPPORT_TIE of the least, the outline fit cannot tell
    them apart and the scan decides: the smallest whose outline rises
    (init_points.outline_steepness) within STEEPER of the steepest (a sharp support is equally steep at every
    threshold; noise or tissue past the skin rise slowly). With a `floor` (photographs without masks of an object
    on a table) the residuals compared are those of the fit that will be kept, both hulls cut at the floor
    (above_the_floor), since the whole hulls differ there by the table's band and the carving's cap
    (benchmarks/README.md, "Captures without masks"). Returns (estimate, X-ray hull, threshold, every threshold's residual, every threshold's outline
    steepness); the estimate is the whole hulls' (the turned candidates and the floor's cut start from it)."""
    xr = inputs.xray
    box, parallel = inputs.box_xray.cpu().float(), xr.projection == "parallel"
    tried = []
    for fraction in SUPPORT_FRACTIONS:
        hull = inputs.start.hull_xray if fraction == SUPPORT_FRACTION else hull_surface(
            xr.cameras, xray_support(xr.outlined, fraction)[..., None], box, parallel)
        if len(hull) > 10:
            src = hull.double().numpy()
            estimate = estimate_similarity(src, hull_rgb)
            kept = estimate if floor is None else above_the_floor(estimate, src, hull_rgb, floor)
            tried.append((estimate, src, fraction, kept.residual))
    residuals = {t[2]: t[3] for t in tried}
    steepness = dict(zip(residuals, outline_steepness(xr.outlined, list(residuals))))
    CONSOLE.log("InsideOut: X-ray support thresholds, residual" + (" (both hulls cut at the floor)" if floor else "")
                + " / outline steepness: " + ", ".join(f"{k}: {v:.4f} / {steepness[k]:.3f}" for k, v in residuals.items()))
    tied = [t for t in tried if t[3] <= (1.0 + SUPPORT_TIE) * min(residuals.values())]
    steepest = max(steepness[t[2]] for t in tied)
    return next(t[:3] for t in tied if STEEPER * steepness[t[2]] >= steepest) + (residuals, steepness)


def refine_by_silhouettes(inputs: AlignmentInputs, start: np.ndarray, fraction: float, rgb: Tensor) -> SilhouetteFit:
    """The similarity X-ray -> RGB refined from `start` [4, 4] by the alpha of the RGB Gaussians `rgb` [N]
    (bool: the object's) against the training projections' support above `fraction` of each view's peak
    (kept only where it fits them better and the outlines agree: silhouette.MAX_MISMATCH)."""
    xr, device, g = inputs.xray, inputs.device, inputs.gaussians
    cams = xr.cameras.to(device)
    viewmats = torch.stack([viewmat_from_c2w(c2w) for c2w in cams.camera_to_worlds])
    Ks = torch.stack([camera_intrinsics(cams[i : i + 1]) for i in range(len(xr))]).to(device)
    viewmats, Ks = pinhole_views(viewmats, Ks, xr.projection, distance=100 * inputs.extent_xray)
    support, Ks = coarser_views(xray_support(xr.outlined.to(device), fraction), Ks)
    means, quats, scales = (x.detach() for x in g.geometry(rgb))
    fit = refine_similarity(means, quats, scales, g.opacities(rgb).detach(), viewmats, Ks, support.shape[2], support.shape[1],
                            support, start, inputs.box_xray.mean(0), inputs.extent_xray,
                            steps=inputs.alignment.silhouette_steps, backend=inputs.backend)
    why = "" if fit.used else (" (no better: kept the ICP's)" if fit.loss_after >= fit.loss_before else
                               f" (the outlines disagree on {100 * fit.mismatch:.0f} % of the object's area: kept the ICP's)")
    CONSOLE.log(f"InsideOut: silhouette refinement, mean squared outline difference {fit.loss_before:.5f} -> "
                f"{fit.loss_after:.5f}" + why)
    return fit


@dataclass
class Found:
    """What phase 2 found: the similarity and how."""

    result: Alignment
    source: str  # "calibration", "calibration+icp" or "estimated"
    silhouette: Optional[SilhouetteFit]  # the silhouette refinement's record (None where it did not run)
    rivals: List[Candidate]  # alignments that fit as well (alignment.ambiguous); never for a calibration
    support_fraction: float  # the X-ray support threshold its hull and outlines used (fitted_support)
    support_residuals: Dict[float, float]  # each threshold tried and its fit's residual (empty where none was)
    support_steepness: Dict[float, float]  # each threshold tried and how fast the scan rises on its outline
    masks: Optional[List[Tensor]] = None  # the photographs' masks of the object ([H, W, 1] each), where there are any
    outline: Optional[OutlineFit] = None  # a CT scene's surface fitted to the masks (None where it did not run)
    points: Optional[PointFit] = None  # a CT scene's surface fitted to the SfM points, without masks (None: not run)


def find_alignment(inputs: AlignmentInputs, notes: List[str]) -> Found:
    """The similarity X-ray -> RGB: the calibration as given, the calibration refined by ICP, or an estimate
    from the data's hulls (support threshold fitted) refined by the silhouettes, with its rivals."""
    cfg = inputs.alignment
    if inputs.calibrated and not cfg.refine_calibration:
        return Found(Alignment(inputs.xray_to_rgb.cpu().double().numpy(), float("nan"), 0), "calibration", None, [],
                     SUPPORT_FRACTION, {}, {}, inputs.start.rgb_masks)
    surfaces = alignment_surfaces(inputs, notes)
    src, dst, from_hulls = surfaces.xray, surfaces.rgb, surfaces.from_hulls
    if len(src) < 10 or len(dst) < 10:
        raise TrainingStopped(f"alignment at step {inputs.step}: too few surface points (X-ray {len(src)}, RGB {len(dst)})")
    fraction, source, tried, steepness = SUPPORT_FRACTION, "estimated", {}, {}
    if inputs.calibrated:  # refine: start from the calibration
        residual = estimate_similarity(src, dst).residual
        start = inputs.xray_to_rgb.cpu().double().numpy()
        result, source = Alignment(icp(src, dst, start, cKDTree(dst), keep=TRIM), residual, 1), "calibration+icp"
    elif from_hulls:
        result, src, fraction, tried, steepness = fitted_support(inputs, dst, surfaces.floor)
    else:
        result = estimate_similarity(src, dst)
    rivals = ambiguous(result.residual, turned_candidates(src, dst, result.matrix)) if source == "estimated" else []
    if cfg.candidate:  # the user's choice among the turns alignment.json listed
        k = cfg.candidate
        if k > len(rivals):
            raise TrainingStopped(f"--pipeline.model.alignment.candidate {k}: this alignment has {len(rivals)} candidate(s) "
                                  "that fit as well (alignment.json lists them; 0 takes the best fit)")
        result = Alignment(rivals[k - 1].matrix, rivals[k - 1].residual, result.hypotheses)
        notes.append(f"candidate {k} of the ambiguous alignment taken, as asked (--pipeline.model.alignment.candidate)")
    if surfaces.floor is not None:  # after the rivals: a turn the whole hulls cannot tell apart stays reported
        cut = above_the_floor(result, src, dst, surfaces.floor)
        notes.append(f"both hulls cut at the floor of the photographs' masks: residual {result.residual:.4f} -> {cut.residual:.4f}")
        CONSOLE.log(f"InsideOut: {notes[-1]}")
        result = cut
    silhouette = None
    if not alignment_failed(result, inputs.residual_limit) and cfg.silhouette_refinement:
        silhouette = refine_by_silhouettes(inputs, result.matrix, fraction, surfaces.rgb_object)
        result = Alignment(silhouette.matrix, result.residual, result.hypotheses)
    masks = inputs.start.rgb_masks if surfaces.masks is None else surfaces.masks
    outline, points = None, None
    # given masks only: the masks rendered for a capture without them took the head's table capture from 3.3 to 4.9 %
    # in scale (benchmarks/README.md, "A CT volume as the inside"); without them, the SfM points of the object
    given = inputs.start.masked and inputs.start.rgb_masks is not None
    ct_step = inputs.ct_air is not None and cfg.ct_outline and not alignment_failed(result, inputs.residual_limit)
    surface = ct_surface(inputs, notes) if ct_step and (given or inputs.start.sfm_points is not None) else None
    if surface is not None and given:
        outline = refine_by_ct_surface(inputs, surface, result.matrix, inputs.start.rgb_masks)
        result = Alignment(outline.matrix, result.residual, result.hypotheses)
    elif surface is not None:
        points = refine_by_sfm_points(inputs, surface, result.matrix, notes)
        result = result if points is None else Alignment(points.matrix, result.residual, result.hypotheses)
    return Found(result, source, silhouette, rivals, fraction, tried, steepness, masks, outline, points)


def ct_surface(inputs: AlignmentInputs, notes: List[str]) -> Optional[Tuple[np.ndarray, np.ndarray]]:
    """A CT scene's surface at its level (ct_outline.air_boundary: vertices [K, 3], normals [K, 3]); None, said in
    `notes`, where the level cuts no voxel."""
    vol = inputs.xray.volume
    try:
        return air_boundary(vol.values, vol.aabb, inputs.ct_air)
    except ValueError as err:
        notes.append(f"the CT's surface was not fitted to the photographs: {err}")
        CONSOLE.log(f"[yellow]InsideOut: {notes[-1]}[/yellow]")
        return None


def refine_by_ct_surface(inputs: AlignmentInputs, surface: Tuple[np.ndarray, np.ndarray], start: np.ndarray,
                         masks: List[Tensor]) -> OutlineFit:
    """The similarity X-ray -> RGB refined from `start` [4, 4], scale included, by the CT's surface (ct_surface)
    against the photographs' masks (ct_outline.py; kept where its rims end closer to the outlines)."""
    verts, normals = surface
    fit = fit_to_masks(verts, normals, mask_views(inputs.start.rgb_cameras, masks), start)
    why = "" if fit.used else " (kept the start's)"
    CONSOLE.log(f"InsideOut: the CT's surface against the photographs' masks ({fit.views} views, {len(verts)} surface "
                f"points): rims {fit.rms_before:.3f} -> {fit.rms_after:.3f} px from the outlines (RMS)" + why)
    return fit


def refine_by_sfm_points(inputs: AlignmentInputs, surface: Tuple[np.ndarray, np.ndarray], start: np.ndarray,
                         notes: List[str]) -> Optional[PointFit]:
    """The similarity X-ray -> RGB refined from `start` [4, 4], scale included, by the CT's surface (ct_surface)
    against the SfM points of the object (ct_outline.fit_to_points; those in the crop box given, or standing on the
    table): None, said in `notes`, where too few are found."""
    sfm, cfg = inputs.start.sfm_points, inputs.no_masks
    try:
        if cfg.crop is not None:
            region = Region("the crop box given", crop=cfg.crop)
        else:
            region = inputs.sfm_region()  # not None: the scene has SfM points
    except ValueError as err:
        notes.append(f"the CT's surface was not fitted to the SfM points: {err}")
        return None
    chosen = sfm[region.contains(sfm)].double().cpu().numpy()
    if len(chosen) < MIN_POINTS:
        notes.append(f"the CT's surface was not fitted to the SfM points: {len(chosen)} of them in the object's region "
                     f"({region.how}), fewer than {MIN_POINTS}")
        CONSOLE.log(f"[yellow]InsideOut: {notes[-1]}[/yellow]")
        return None
    fit = fit_to_points(*surface, chosen, start)
    why = "" if fit.used else " (kept the start's)"
    notes.append(f"the CT's surface against {fit.points} SfM points of the object: {100 * fit.rms_before:.2f} -> "
                 f"{100 * fit.rms_after:.2f} % of its diameter from it (RMS)" + why)
    CONSOLE.log(f"InsideOut: {notes[-1]}")
    return fit


def alignment_failed(result: Alignment, limit: float) -> bool:
    return bool(np.isfinite(result.residual) and result.residual > limit)


def write_alignment_json(run_dir, record: Dict) -> None:
    """alignment.json in the run folder, written atomically (nothing where there is no run folder)."""
    if run_dir is None:
        return
    os.makedirs(str(run_dir), exist_ok=True)
    path = os.path.join(str(run_dir), "alignment.json")
    with open(path + ".tmp", "w") as f:
        json.dump(record, f, indent=1)
    os.replace(path + ".tmp", path)


def found_object_grid(inputs: AlignmentInputs, found: Found, xray_to_rgb: Tensor, notes: List[str]) -> Optional[Tensor]:  # [R, R, R] bool
    """Where both modalities allow the object (object_grid.py), in the X-ray frame: the photographs' masks of the
    object (given, or rendered) carried by the alignment (the similarity `xray_to_rgb` [4, 4]), and the X-ray hull of
    every ray that met anything. None where the photographs have no masks of the object (a
    calibration without masks): said in `notes`."""
    if found.masks is None:
        notes.append("no masks of the object (a calibration, photographs without masks): the density is not bounded by the photographs")
        return None
    xr, box = inputs.xray, inputs.box_xray.cpu().float()
    photographed = hull_in_xray_frame(inputs.start.rgb_cameras, found.masks, False, xray_to_rgb, box)
    # every ray that met anything (the lowest support threshold, not the alignment's): a bound must not cut faint tissue,
    # nor a CT's air above 0 (its projections, not its outlines: the CT's voxels are data the model fits)
    scanned = hull_in_xray_frame(xr.cameras, xray_support(xr.projections, SUPPORT_FRACTION)[..., None],
                                 xr.projection == "parallel", torch.eye(4), box)
    grid = object_grid(photographed, scanned, box)
    CONSOLE.log(f"InsideOut: the object's grid: the photographs' hull holds {100 * float(photographed.float().mean()):.0f} % "
                f"of the scanned region, the X-ray hull {100 * float(scanned.float().mean()):.0f} %, both (dilated) "
                f"{100 * float(grid.occupancy.float().mean()):.0f} %")
    return grid.occupancy


@dataclass
class Report:
    """Phase 2's answer: the similarity and how it was found."""

    matrix: Tensor  # [4, 4] X-ray -> RGB (the X-ray frame: a CT's grid axes)
    source: str  # "calibration", "calibration+icp" or "estimated"
    record: Dict  # alignment.json's contents (its matrices map a CT's patient frame)
    status: str  # one line for the viewer: ok / ambiguous / failed, and how
    failed: bool  # the residual exceeds the limit
    failure: str  # why training stops, where it failed
    occupancy: Optional[Tensor]  # [R, R, R] bool: where both modalities allow the object (None: unbounded)


@torch.no_grad()
def aligned(inputs: AlignmentInputs) -> Report:
    """The similarity X-ray -> RGB and its report (alignment.json's record, the viewer's status), and the
    object's grid where it did not fail; nothing is moved."""
    notes = list(inputs.start.notes)
    found = find_alignment(inputs, notes)
    result, source, silhouette, rivals = found.result, found.source, found.silhouette, found.rivals
    failed = alignment_failed(result, inputs.residual_limit)
    frame = np.linalg.inv(inputs.patient_from_frame.cpu().double().numpy())  # a CT's patient frame -> its grid's axes
    candidate = inputs.alignment.candidate
    record = {"xray_to_rgb": (result.matrix @ frame).tolist(), "source": source, "step": inputs.step, "scale": result.scale,
              "residual": None if not np.isfinite(result.residual) else result.residual,
              "status": "failed" if failed else "ambiguous" if rivals else "ok", "notes": notes,
              "support_fraction": found.support_fraction,
              "support_residuals": {str(k): v for k, v in found.support_residuals.items()},
              "support_steepness": {str(k): v for k, v in found.support_steepness.items()}, "ambiguous": bool(rivals),
              "candidates": [{"xray_to_rgb": (c.matrix @ frame).tolist(), "residual": c.residual,
                              "degrees_from_chosen": c.degrees_from_best} for c in rivals]}
    status = f"{record['status']} ({source}, scale {result.scale:.4g})"
    if rivals:
        status = (f"AMBIGUOUS: {len(rivals)} turned alignment(s) fit the outlines as well (residuals "
                  + ", ".join(f"{c.residual:.4f}" for c in rivals) + f" vs {result.residual:.4f}); the photographs "
                  "cannot tell which way the inside faces. Give calibration.json, or --pipeline.model.alignment.candidate K "
                  "to take the K-th (alignment.json lists them)")
        if candidate:
            status = f"ambiguous: candidate {candidate} taken, as asked ({source}, scale {result.scale:.4g})"
        CONSOLE.log(f"[bold yellow]InsideOut: alignment {status}[/bold yellow]")
    if silhouette is not None:
        record["silhouette"] = {k: getattr(silhouette, k) for k in ("loss_before", "loss_after", "mismatch", "used", "steps")}
    if found.outline is not None:
        fit = found.outline  # no rim at all: no distance (strict JSON has no Infinity)
        record["ct_outline"] = {"rms_before": fit.rms_before if np.isfinite(fit.rms_before) else None,
                                "rms_after": fit.rms_after if np.isfinite(fit.rms_after) else None,
                                "used": fit.used, "views": fit.views}
    if found.points is not None:
        fit = found.points
        record["ct_sfm_points"] = {"rms_before": fit.rms_before, "rms_after": fit.rms_after, "used": fit.used,
                                   "points": fit.points}
    matrix = torch.from_numpy(result.matrix).float()
    occupancy = None if failed else found_object_grid(inputs, found, matrix, notes)
    failure = (f"alignment failed at step {inputs.step}: residual {result.residual:.3f} of the object's diameter "
               f"exceeds {inputs.residual_limit} (do the photographs and the X-rays show the same "
               "object?). Provide calibration.json, or pass --pipeline.model.alignment.accept-failed True")
    return Report(matrix, source, record, status, failed, failure if failed else "", occupancy)


@torch.no_grad()
def merge_populations(inputs: AlignmentInputs, xray_to_rgb: Tensor) -> None:
    """The radiative population moved into the RGB frame by xray_to_rgb [4, 4], and the attribute transfer
    (with the radiative Gaussians no photograph sees hidden), on inputs.gaussians in place."""
    g = inputs.gaussians
    rad = g.of(RADIATIVE)
    g.move(rad, xray_to_rgb.to(inputs.device))
    if inputs.start.rgb_cameras is not None:
        transfer_attributes(g.params, rad, seen_in_photographs(inputs, ~rad))
        if inputs.hide_unseen:
            hide(g.params, rad & ~seen_in_photographs(inputs, torch.ones_like(rad)))
    else:
        transfer_attributes(g.params, rad)
