"""The model's configuration: the Nerfstudio config (`InsideOutModelConfig`, what `ns-train insideout` takes under
`--pipeline.model.*`) and its nested groups, one per subsystem (tyro's nested flags: `--pipeline.model.xray.tv-weight`).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Literal, Optional, Tuple, Type

from nerfstudio.models.base_model import ModelConfig

from .strategy import InsideOutStrategy


def _model_class() -> Type:
    from .model import InsideOutModel  # the config names its model; the model module imports this one

    return InsideOutModel


@dataclass
class AlignmentConfig:
    """Phase 2: the X-ray -> RGB similarity (merge.py)."""

    refine_calibration: bool = False
    """With calibration.json: refine it by ICP (default: use it as it is)."""
    silhouette_refinement: bool = True
    """After the ICP: refine the similarity so that the RGB population's alpha, seen from the X-ray cameras, matches
    the projections' support (silhouette.py)."""
    silhouette_steps: int = 60
    """Adam steps of the silhouette refinement (8 X-ray views each)."""
    ct_outline: bool = True
    """A CT scene: last, refine the similarity, scale included, so that the CT's own surface outlines the photographs'
    masks, or without masks passes through the SfM points of the object (ct_outline.py)."""
    ct_surface_hu: float = -500.0
    """The CT's level (HU) that the photographs show as the object's surface, for ct_outline: halfway between air
    and water by default; a dense object's edge blurred by the scanner lies halfway between air and its material
    (industrial CT's ISO-50), e.g. about 0 HU for ceramic, which this sets."""
    max_residual: float = 0.025
    """An estimated alignment whose residual (RMS distance between the two hulls, fraction of the diameter) exceeds
    this failed, and stops training: one object measures 0.012-0.015, two different objects 0.029."""
    max_residual_without_masks: float = 0.04
    """As max_residual, for photographs without masks (their masks are rendered from the fitted Gaussians: the right
    object measures 0.017-0.034)."""
    candidate: int = 0
    """Where the outlines cannot decide (alignment.json: "ambiguous", with its candidates): 0 takes the best fit,
    k the k-th candidate listed."""
    accept_failed: bool = False
    """Train on with an alignment whose residual exceeds max_residual (it is still recorded)."""


@dataclass
class NoMasksConfig:
    """Photographs without masks (a phone capture of the object on a table, object_region.py)."""

    phase1_factor: float = 2.5
    """Phase 1 lasts this many times phase1_steps: the table and the room are fitted too before the object can be
    found among them (benchmarks/README.md, "Captures without masks")."""
    environment_rows: int = 32
    """Rows of the learned environment at infinity behind the Gaussians (the room; environment.py); 0: none."""
    clear_air: bool = True
    """With SfM points: at every refinement, prune the RGB Gaussians in the air around the object (floaters that
    veil the photographs taken near them)."""
    extra_gaussians: int = 17_000
    """The strategy's Gaussian cap grows by this many, for the table and the near room."""
    object_obb_center: Optional[Tuple[float, float, float]] = None
    """An oriented box around the object in the RGB frame (Nerfstudio's crop, as ns-export's --obb-center), whose
    Gaussians the alignment takes for the object; with none, what stands on the dominant plane the cameras see."""
    object_obb_rotation: Tuple[float, float, float] = (0.0, 0.0, 0.0)
    """The box's rotation (roll, pitch, yaw in radians, as ns-export's --obb-rotation)."""
    object_obb_scale: Tuple[float, float, float] = (1.0, 1.0, 1.0)
    """The box's side lengths (as ns-export's --obb-scale)."""

    @property
    def crop(self) -> Optional[Tuple]:
        """The crop box as object_region takes it, (center, rotation, scale), or None where none is given."""
        return None if self.object_obb_center is None else (self.object_obb_center, self.object_obb_rotation,
                                                            self.object_obb_scale)


@dataclass
class XrayConfig:
    """The X-ray loss and the density's regularisers (on X-ray steps; a CT scene's voxel loss on every step)."""

    weight: float = 1.0
    """Weight of the X-ray image loss (the RGB loss has weight 1)."""
    cutoff: float = 3.0
    """A Gaussian's line integral is evaluated on the rays within this many standard deviations of its mean (gsplat's
    3-sigma footprint: 30 % less time than the exact-as-float32 4 for the same volume)."""
    tv_weight: float = 0.005
    """Weight of the 3D total variation of the density (over its scale: the projections' peak over the scanned
    region's diameter) on a random cube of tv_cube^3 voxels (a CT scene: a block of its own), as R2-Gaussian's (+0.9 dB
    at 20 views of the head)."""
    tv_edge: float = 1.0
    """The TV's penalty of a neighbour difference d is c log(1 + |d| / c) with this c, so that small dense parts keep
    their contrast (the box phantom's steel pins: +2.3 dB); 0: plain TV."""
    tv_cube: int = 32
    """Voxels a side of the TV's random cube."""
    tv_grid: int = 64
    """The TV's voxels are the scanned region's longest side / tv_grid (a CT scene: its own voxels, every k-th where
    its longest side has k x 2 x tv_grid of them or more)."""
    support_weight: float = 0.1
    """Phase 3: weight of the density outside the object's grid (object_grid.py: where the photographs and the
    projections both allow the object), its mean over the TV's cube; not for a CT scene (model.density_bound)."""
    prune_outside_object: bool = True
    """Phase 3, photographs with masks: Gaussians outside the object's grid are pruned at each refinement; not for a
    CT scene (model.density_bound)."""
    ct_weight: float = 10.0
    """A CT scene: weight of the mean squared difference between the density (over its scale) and the CT's own voxels
    on a block of them (the TV's cube), each step, beside the loss on its virtual projections."""


@dataclass
class AblationConfig:
    """Switches that take a part of the method away, to measure what it gives (benchmarks/quality.py)."""

    hierarchical: bool = True
    """False: no hierarchical fitting (joint from step 0, with the calibration or the identity)."""
    xray_rendering: Literal["line_integral", "alpha"] = "line_integral"
    """"alpha": X-rays alpha-blended (density as a grey colour) instead of integrated."""
    relative_means_lr: bool = True
    """The means' learning rate is a fraction of the extent of each Gaussian's frame (3DGS's spatial_lr_scale), so
    the X-ray frame's millimetres and the RGB frame's SfM units move alike."""


# Flags of the flat config that users typed (README until 2026-12): accepted for one release, with a warning
RENAMED = {"phase1_without_masks": "no_masks.phase1_factor", "environment_rows": "no_masks.environment_rows",
           "clear_air": "no_masks.clear_air", "gaussians_without_masks": "no_masks.extra_gaussians",
           "object_obb_center": "no_masks.object_obb_center", "object_obb_rotation": "no_masks.object_obb_rotation",
           "object_obb_scale": "no_masks.object_obb_scale", "silhouette_refinement": "alignment.silhouette_refinement",
           "refine_calibration": "alignment.refine_calibration", "alignment_candidate": "alignment.candidate",
           "accept_failed_alignment": "alignment.accept_failed", "tv_weight": "xray.tv_weight"}


@dataclass
class InsideOutModelConfig(ModelConfig):
    _target: Type = field(default_factory=_model_class)
    enable_collider: bool = False
    """Off: the model renders whole cameras, not ray bundles."""
    backend: Literal["auto", "torch", "cpu", "cuda"] = "auto"
    """Rasterizer backend: auto = CUDA on a GPU (torch where nvcc is missing), else the C++ CPU kernels (torch where
    they cannot build)."""
    sh_degree: int = 1
    """Degree of the spherical harmonics of the RGB colour."""
    phase1_steps: int = 1500
    """Steps of independent fitting before the alignment (phase 2) and the joint phase (3)."""
    ssim_lambda: float = 0.2
    """Weight of D-SSIM against L1 in the image losses of both modalities."""
    background: Literal["random", "black", "white"] = "random"
    """Background behind the photographs' alpha while training (evaluation uses black, or white)."""
    xray: XrayConfig = field(default_factory=XrayConfig)
    """The X-ray loss and the density's regularisers."""
    alignment: AlignmentConfig = field(default_factory=AlignmentConfig)
    """Phase 2: the X-ray -> RGB similarity."""
    no_masks: NoMasksConfig = field(default_factory=NoMasksConfig)
    """Photographs without masks."""
    ablation: AblationConfig = field(default_factory=AblationConfig)
    """Parts of the method switched off, to measure them."""
    strategy: InsideOutStrategy = field(default_factory=InsideOutStrategy)
    """Densification (clone / split / prune) of both populations."""
    phase1_without_masks: Optional[float] = None
    """Renamed --pipeline.model.no-masks.phase1-factor (accepted for one release)."""
    environment_rows: Optional[int] = None
    """Renamed --pipeline.model.no-masks.environment-rows (accepted for one release)."""
    clear_air: Optional[bool] = None
    """Renamed --pipeline.model.no-masks.clear-air (accepted for one release)."""
    gaussians_without_masks: Optional[int] = None
    """Renamed --pipeline.model.no-masks.extra-gaussians (accepted for one release)."""
    object_obb_center: Optional[Tuple[float, float, float]] = None
    """Renamed --pipeline.model.no-masks.object-obb-center (accepted for one release)."""
    object_obb_rotation: Optional[Tuple[float, float, float]] = None
    """Renamed --pipeline.model.no-masks.object-obb-rotation (accepted for one release)."""
    object_obb_scale: Optional[Tuple[float, float, float]] = None
    """Renamed --pipeline.model.no-masks.object-obb-scale (accepted for one release)."""
    silhouette_refinement: Optional[bool] = None
    """Renamed --pipeline.model.alignment.silhouette-refinement (accepted for one release)."""
    refine_calibration: Optional[bool] = None
    """Renamed --pipeline.model.alignment.refine-calibration (accepted for one release)."""
    alignment_candidate: Optional[int] = None
    """Renamed --pipeline.model.alignment.candidate (accepted for one release)."""
    accept_failed_alignment: Optional[bool] = None
    """Renamed --pipeline.model.alignment.accept-failed (accepted for one release)."""
    tv_weight: Optional[float] = None
    """Renamed --pipeline.model.xray.tv-weight (accepted for one release)."""

    def __post_init__(self):
        for old, new in RENAMED.items():
            value = getattr(self, old)
            if value is not None:  # the old flag: its value goes to the new place, once, with a warning
                group, name = new.split(".")
                setattr(getattr(self, group), name, value)
                setattr(self, old, None)
                warnings.warn(f"--pipeline.model.{old.replace('_', '-')} is now --pipeline.model.{new.replace('_', '-')}; "
                              "the old name goes in the next release", FutureWarning, stacklevel=2)
