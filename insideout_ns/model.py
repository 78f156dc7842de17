"""Nerfstudio glue: the InsideOut model. One set of Gaussians with geometry, RGB attributes (SH colour,
opacity) and a radiative attribute (density). The model sets them up, renders both modalities, and
defines the losses and metrics; the phase schedule is phases.py (independent -> align -> joint), the
alignment and merge merge.py, densification strategy.py (the model forwards to them).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field, replace
from typing import Dict, List, Literal, Optional, Tuple, Type

import numpy as np
import torch
import torch.nn.functional as F
from scipy.spatial import cKDTree
from torch import Tensor
from torch.nn import Parameter

from nerfstudio.cameras.cameras import Cameras
from nerfstudio.engine.callbacks import TrainingCallback, TrainingCallbackAttributes
from nerfstudio.models.base_model import Model, ModelConfig
from nerfstudio.utils.colormaps import apply_float_colormap

from .dataparsers.ct_volume import VoxelField
from .environment import EnvironmentMap
from .init_points import StartingData
from .kernels.rgb import ALPHA_MIN, SH_C0, rasterize_rgb
from .kernels.voxelize import voxelize_density
from .kernels.xray import rasterize_xray
from .losses import image_loss, lpips_or_none, psnr, ssim_metric, total_variation_3d
from .merge import align_and_merge, move_gaussians
from .object_grid import ObjectGrid
from .object_region import Region, find_ground, standing_region
from .projection_geometry import grid_points
from .phases import Phase, Schedule, TrainingStopped, phase_callbacks
from .strategy import RADIATIVE, RGB, InsideOutStrategy, inverse_softplus
from .transforms import camera_intrinsics, similarity_parts, transform_gaussians, viewmat_from_c2w
from .viewer_controls import ViewerControls

__all__ = ["InsideOutModel", "InsideOutModelConfig", "TrainingStopped"]

INVISIBLE = math.log(ALPHA_MIN / (1 - ALPHA_MIN))  # an opacity logit below this never reaches the rasterizers' alpha cut
PARAM_KEYS = ("means", "scales", "quats", "features_dc", "features_rest", "opacities", "densities")


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


@dataclass
class XrayConfig:
    """The X-ray loss and the density's regularisers (all on X-ray steps)."""

    weight: float = 1.0
    """Weight of the X-ray image loss (the RGB loss has weight 1)."""
    cutoff: float = 3.0
    """A Gaussian's line integral is evaluated on the rays within this many standard deviations of its mean (gsplat's
    3-sigma footprint: 30 % less time than the exact-as-float32 4 for the same volume)."""
    tv_weight: float = 0.005
    """Weight of the 3D total variation of the density (over its scale: the projections' peak over the scanned
    region's diameter) on a random cube of tv_cube^3 voxels, as R2-Gaussian's (+0.9 dB at 20 views of the head)."""
    tv_edge: float = 1.0
    """The TV's penalty of a neighbour difference d is c log(1 + |d| / c) with this c, so that small dense parts keep
    their contrast (the box phantom's steel pins: +2.3 dB); 0: plain TV."""
    tv_cube: int = 32
    """Voxels a side of the TV's random cube."""
    tv_grid: int = 64
    """The TV's voxels are the scanned region's longest side / tv_grid."""
    support_weight: float = 0.1
    """Phase 3: weight of the density outside the object's grid (object_grid.py: where the photographs and the
    projections both allow the object), its mean over the TV's cube."""
    prune_outside_object: bool = True
    """Phase 3, photographs with masks: Gaussians outside the object's grid are pruned at each refinement."""
    ct_weight: float = 1.0
    """A CT scene: weight of the L1 between the density and the CT's own voxels on the TV's cube, beside the loss on
    its virtual projections."""


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
    _target: Type = field(default_factory=lambda: InsideOutModel)
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


class InsideOutModel(Model):
    config: InsideOutModelConfig

    # ------------------------------------------------------------------------------------------
    # Set-up and state
    # ------------------------------------------------------------------------------------------

    def populate_modules(self):
        super().populate_modules()
        meta = self.kwargs["metadata"]
        self.start: StartingData = meta["start"]
        self.tv_generator = torch.Generator().manual_seed(0)  # the TV's cubes: its own stream, not the photographs'
        xr = meta.get("xray")
        has_xray = xr is not None and len(xr) > 0
        self.schedule = Schedule(has_rgb=self.num_train_data > 0, has_xray=has_xray,
                                 hierarchical=self.config.ablation.hierarchical,
                                 phase1_steps=round(self.config.phase1_steps * (1.0 if self.start.masked else self.config.no_masks.phase1_factor)))
        self.projection = xr.projection if has_xray else "cone"
        self.gt_volume = xr.volume if has_xray else None
        self.inside_is_ct = has_xray and xr.from_ct  # a CT scene: its voxels are data, not only the score's truth
        self.ct_mu_water: Optional[float] = meta.get("ct_mu_water")  # a CT scene in Hounsfield units: the rule's mu_water
        self._ct_field: Optional[VoxelField] = None
        patient = meta.get("patient_from_frame")  # a CT scene's grid axes -> its patient frame (LPS)
        self.register_buffer("patient_from_frame", torch.eye(4) if patient is None else patient.float().clone())
        self.xray_train = xr if has_xray else None  # cameras and projections, for the silhouette refinement
        box_rgb = self.scene_box.aabb.float()
        box_x = meta["xray_box"].float() if has_xray else box_rgb
        self.register_buffer("xray_peak", torch.tensor(float(xr.projections.max()) if has_xray else 1.0))
        self.register_buffer("extent_rgb", torch.tensor(float((box_rgb[1] - box_rgb[0]).norm()) / 2))
        self.register_buffer("extent_xray", torch.tensor(float((box_x[1] - box_x[0]).norm()) / 2))
        self.register_buffer("box_xray", box_x.clone())
        self._init_gaussians()
        with_room = self.schedule.has_rgb and not self.start.masked and self.config.no_masks.environment_rows > 0
        self.environment = EnvironmentMap(self.config.no_masks.environment_rows) if with_room else None
        self.register_buffer("phase", torch.tensor(int(self.schedule.initial_phase())))
        calib = meta.get("xray_to_rgb")  # calibration.json, if the scene has one
        self.calibration = calib.float().clone() if calib is not None else None
        self.register_buffer("xray_to_rgb", calib.float().clone() if calib is not None else torch.eye(4))
        self.alignment_source = "calibration" if calib is not None else "identity"
        if self.schedule.joint(self.current_phase):  # the no-hierarchy ablation: both populations in the RGB frame now
            move_gaussians(self.gauss_params, self.population == RADIATIVE, self.xray_to_rgb)
        self.register_buffer("object_occupancy", torch.zeros(0, dtype=torch.bool))  # [R, R, R] from phase 2 (object_grid.py)
        self.controls = ViewerControls(self.opening_pose)  # modality, X-ray window / level, cut-away (Nerfstudio's web viewer)
        extra = 0 if self.start.masked or not self.schedule.has_rgb else self.config.no_masks.extra_gaussians
        self.strategy = replace(self.config.strategy, max_gaussians=self.config.strategy.max_gaussians + extra)
        self.strategy_state = self.strategy.initialize_state()
        self._sfm_region: Optional[Region] = None  # what stands on the table among the SfM points: looked for once
        self._sfm_region_error: Optional[str] = None  # why they show nothing standing, where they do not
        self.step = 0
        self._means_before: Optional[Tensor] = None
        self.optimizers: Dict = {}
        self.run_dir = None

    def _init_gaussians(self):
        """Parameters and population tags from the starting data: RGB points (scale: the mean distance to
        their 3 nearest neighbours) and the radiative population."""
        means, pop, dens, opac, scales = [], [], [], [], []
        if self.schedule.has_rgb:
            pts = self.start.rgb_points
            nn = cKDTree(pts.numpy()).query(pts.numpy(), k=4)[0][:, 1:].mean(1)  # mean distance to 3 neighbours
            means.append(pts)
            scales.append(torch.log(torch.from_numpy(nn).float().clamp(min=1e-6))[:, None].repeat(1, 3))
            pop.append(torch.full((len(pts),), RGB))
            opac.append(torch.full((len(pts),), 0.1))
            dens.append(torch.full((len(pts),), 1e-6))
        if self.schedule.has_xray:
            m, s, d = self.start.radiative
            means.append(m)
            scales.append(torch.log(s)[:, None].repeat(1, 3))
            pop.append(torch.full((len(m),), RADIATIVE))
            opac.append(torch.full((len(m),), 0.1))
            dens.append(d)
        means = torch.cat(means).float()
        n = len(means)
        dim_sh = (self.config.sh_degree + 1) ** 2
        self.gauss_params = torch.nn.ParameterDict({
            "means": Parameter(means),
            "scales": Parameter(torch.cat(scales).float()),
            "quats": Parameter(F.normalize(torch.randn(n, 4), dim=-1)),
            "features_dc": Parameter((torch.rand(n, 3) - 0.5) / SH_C0 * 0.5),
            "features_rest": Parameter(torch.zeros(n, dim_sh - 1, 3)),
            "opacities": Parameter(torch.logit(torch.cat(opac))),
            "densities": Parameter(inverse_softplus(torch.cat(dens).float())),
        })
        self.register_buffer("population", torch.cat(pop))

    def load_state_dict(self, state_dict, **kwargs):  # type: ignore
        """Resizes every per-Gaussian tensor to the checkpoint's count, in place, before loading: the
        Parameters stay the objects the trainer's optimizers hold (replacing them, as splatfacto does,
        leaves a resumed run's optimizers stepping tensors the model no longer renders)."""
        n = state_dict["gauss_params.means"].shape[0]
        # a checkpoint of an earlier release: what it did not keep is what a model without it had
        state_dict.setdefault("object_occupancy", torch.zeros(0, dtype=torch.bool))
        state_dict.setdefault("patient_from_frame", torch.eye(4))
        if "environment.texture" in state_dict and self.environment is None:  # a model set up without its data
            self.environment = EnvironmentMap(state_dict["environment.texture"].shape[2]).to(self.device)
        for p in self.gauss_params.values():
            p.data = p.data.new_zeros((n,) + p.shape[1:])
        for key in ("population", "object_occupancy"):  # buffers on the model's device, at the checkpoint's size
            setattr(self, key, getattr(self, key).new_zeros(state_dict[key].shape))
        super().load_state_dict(state_dict, **kwargs)
        if self.joint:
            self.alignment_source = "checkpoint"
            self.controls.alignment_status.value = "from the checkpoint (alignment.json in the run folder says how it was found)"
        elif self.calibration is not None:  # phase 1: the alignment is to come, and the data's calibration rules
            self.xray_to_rgb = self.calibration.to(self.xray_to_rgb)

    def get_extra_state(self) -> Dict:
        """What a resumed run needs beyond the tensors to go on as the uninterrupted one would: the TV's
        random stream and the densification statistics gathered since the last refinement."""
        grad2d, count = self.strategy_state["grad2d"], self.strategy_state["count"]
        return {"tv_generator": self.tv_generator.get_state(), "grad2d": grad2d, "count": count}

    def set_extra_state(self, state: Dict) -> None:
        self.tv_generator.set_state(state["tv_generator"])
        for key in ("grad2d", "count"):  # [N] each, or None right after a refinement
            self.strategy_state[key] = None if state[key] is None else state[key].to(self.device)

    def get_param_groups(self) -> Dict[str, List[Parameter]]:
        groups = {k: [self.gauss_params[k]] for k in PARAM_KEYS}
        if self.environment is not None:
            groups["environment"] = list(self.environment.parameters())
        return groups

    def get_training_callbacks(self, attrs: TrainingCallbackAttributes) -> List[TrainingCallback]:
        return phase_callbacks(self, attrs, align=align_and_merge)

    @property
    def residual_limit(self) -> float:
        """The alignment residual above which it failed (config: with masks, or without)."""
        return self.config.alignment.max_residual if self.start.masked else self.config.alignment.max_residual_without_masks

    @property
    def current_phase(self) -> Phase:
        return Phase(int(self.phase))

    @property
    def num_points(self) -> int:
        return self.gauss_params["means"].shape[0]

    @property
    def has_rgb(self) -> bool:
        return self.schedule.has_rgb

    @property
    def has_xray(self) -> bool:
        return self.schedule.has_xray

    @property
    def joint(self) -> bool:
        """Both populations are one set in the RGB frame (phase 3 of a paired scene)."""
        return self.schedule.joint(self.current_phase)

    def rendered_by(self, modality: str) -> Tensor:  # [N] bool
        return self.schedule.rendered_by(modality, self.current_phase, self.population)

    @property
    def ct_field(self) -> Optional[VoxelField]:
        """A CT scene's voxels (their interpolant), on the model's device once it is there; None for other scenes."""
        if self.inside_is_ct and (self._ct_field is None or self._ct_field.device != self.device):
            self._ct_field = VoxelField(self.gt_volume, self.device)
        return self._ct_field if self.inside_is_ct else None

    def set_object_grid(self, occupancy: Optional[Tensor]) -> None:
        """Phase 2: where both modalities allow the object ([R, R, R] bool over the scanned region), or None."""
        self.object_occupancy = (torch.zeros(0, dtype=torch.bool) if occupancy is None else occupancy).to(self.device)

    @property
    def object_grid(self) -> Optional[ObjectGrid]:
        return ObjectGrid(self.object_occupancy, self.box_xray) if self.object_occupancy.numel() else None

    def in_xray_frame(self, points: Tensor) -> Tensor:  # [P, 3] -> [P, 3]
        """Points of the frame the Gaussians are in, in the X-ray frame (the inverse alignment in phase 3)."""
        if not self.joint:
            return points
        s, rot, t = similarity_parts(self.xray_to_rgb)
        return (points - t) @ rot / s

    def frame_extents(self) -> Tensor:  # [N]
        """The scene extent of the frame each Gaussian lives in (RGB; X-ray for radiative ones until joint)."""
        if self.joint:
            return self.extent_rgb.expand(self.num_points)
        return torch.where(self.population == RGB, self.extent_rgb, self.extent_xray)

    def before_step(self) -> None:
        """Remembers the means before the optimizer moves them (for after_step)."""
        self._means_before = self.gauss_params["means"].detach().clone() if self.config.ablation.relative_means_lr else None

    def after_step(self, step: int) -> None:
        """After each optimizer step: each Gaussian's move scaled by its frame's extent (so the means'
        learning rate is a fraction of the scene, as 3DGS's spatial_lr_scale: one Adam step is lr times a
        unit-size update per element, so this is Adam with a per-Gaussian rate); then densification (the
        strategy's statistics and, on refine steps, clone / split / prune)."""
        extent = self.frame_extents()
        means = self.gauss_params["means"]
        if self._means_before is not None and self._means_before.shape == means.shape:
            means.data = self._means_before + (means.data - self._means_before) * extent[:, None]
        self._means_before = None
        state = self.strategy_state  # the per-Gaussian tensors gsplat's ops resize with the Gaussians
        state["population"], state["extent"], state["unwanted"] = self.population, extent, self._unwanted
        state["by_opacity"], state["by_density"] = self.schedule.judged_by(self.current_phase, self.population)
        self.strategy.step_post_backward(self.gauss_params, self.optimizers, state, step)
        self.population = state["population"]

    def _unwanted(self) -> Tensor:  # [N] bool
        """The Gaussians a refinement prunes whatever their attributes: RGB ones in the air around an object on a
        table (photographs without masks, with SfM points), and in phase 3, with masks, any outside the object's grid."""
        unwanted = torch.zeros_like(self.population, dtype=torch.bool)
        if self.config.no_masks.clear_air and self.environment is not None and self.start.sfm_points is not None:
            unwanted |= self._in_the_air()
        grid = self.object_grid
        if self.joint and grid is not None and self.start.masked and self.config.xray.prune_outside_object:
            unwanted |= grid.excludes(self.in_xray_frame(self.gauss_params["means"].detach()))
        return unwanted

    def sfm_region(self) -> Optional[Region]:
        """What stands on the table among the capture's SfM points (object_region.standing_region), found once a
        run (the air clearing and the alignment both ask); None without SfM points; ValueError where they show
        nothing standing there."""
        if self.start.sfm_points is None:
            return None
        if self._sfm_region is None and self._sfm_region_error is None:
            points = self.start.sfm_points
            try:
                self._sfm_region = standing_region(points, find_ground(points, self.start.rgb_cameras), "SfM points")
            except ValueError as err:
                self._sfm_region_error = str(err)
        if self._sfm_region_error is not None:
            raise ValueError(self._sfm_region_error)
        return self._sfm_region

    def _in_the_air(self) -> Tensor:  # [N] bool
        """The RGB Gaussians in the air around the object that the SfM points show standing on the table."""
        rgb = self.population == RGB
        try:
            region = self.sfm_region()
        except ValueError:  # nothing stands there: nothing is cleared (the alignment says why, or has a crop box)
            return torch.zeros_like(rgb)
        centres = self.start.rgb_cameras.camera_to_worlds[:, :3, 3]
        return rgb & region.in_the_air(self.gauss_params["means"], centres)

    def _geometry(self, sel: Tensor):
        p = self.gauss_params
        return p["means"][sel], p["quats"][sel], torch.exp(p["scales"][sel])

    # ------------------------------------------------------------------------------------------
    # Rendering
    # ------------------------------------------------------------------------------------------

    def _background(self) -> Tensor:
        if self.config.background == "random" and self.training:
            return torch.rand(3, device=self.device)
        return torch.ones(3, device=self.device) if self.config.background == "white" else torch.zeros(3, device=self.device)

    def _keep_for_densification(self, info: Dict, sel: Tensor, modality: str) -> None:
        if self.training:
            self.strategy.step_pre_backward(self.gauss_params, self.optimizers, self.strategy_state, self.step,
                                            {**info, "selected": sel, "modality": modality})

    def _splat(self, camera: Cameras, sel: Tensor, colors: Tensor, opacities: Tensor, sh_degree: Optional[int],
               background: Tensor):
        """Alpha-composited image of the selected Gaussians with the given colours [M, 3] (or SH
        coefficients [M, K, 3] with sh_degree), opacities [M] and background [3]: colour + depth [H, W, 4],
        alpha [H, W, 1], gsplat's info."""
        means, quats, scales = self._geometry(sel)
        W, H = int(camera.width[0]), int(camera.height[0])
        viewmat = viewmat_from_c2w(camera.camera_to_worlds[0]).to(self.device)
        img, alpha, info = rasterize_rgb(means, quats, scales, opacities, colors, viewmat[None],
                                         camera_intrinsics(camera).to(self.device)[None], W, H, sh_degree=sh_degree,
                                         backgrounds=background[None], render_mode="RGB+ED", backend=self.config.backend)
        return img[0], alpha[0], info

    def render_rgb(self, camera: Cameras, sel: Optional[Tensor] = None) -> Dict[str, Tensor]:
        """The photograph's appearance of the selected Gaussians (default: those that render RGB now; those whose
        opacity is below the rasterizer's 1/255 cut draw nothing and are left out, which is exact)."""
        p = self.gauss_params
        sel = self.rendered_by("rgb") if sel is None else sel
        sel = sel & (p["opacities"].detach() >= INVISIBLE)
        colors = torch.cat([p["features_dc"][sel][:, None], p["features_rest"][sel]], dim=1)
        bg = self._background() if self.environment is None else torch.zeros(3, device=self.device)
        img, alpha, info = self._splat(camera, sel, colors, torch.sigmoid(p["opacities"][sel]), self.config.sh_degree, bg)
        self._keep_for_densification(info, sel, "rgb")
        rgb = img[..., :3]
        if self.environment is not None:  # the room behind what the Gaussians do not cover
            bg = self.environment.behind(camera)  # [H, W, 3]
            rgb = rgb + (1.0 - alpha) * bg
        return {"rgb": rgb.clamp(0, 1), "depth": img[..., 3:4], "accumulation": alpha, "background": bg}

    @torch.no_grad()
    def opening_pose(self) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Where the viewer opens (position [3], look-at point [3], up [3]): where the first photograph was taken,
        looking at the object; without photographs, 3 object radii away, a little above, z up."""
        centre, radius = self.object_sphere()
        centre = centre.cpu().numpy()
        c2w = self.kwargs["metadata"].get("first_photograph")  # [3, 4] (datamanager)
        if c2w is not None:
            c2w = c2w.cpu().numpy()
            return c2w[:, 3], centre, c2w[:, 1]
        way = np.array([1.0, -1.0, 0.5]) / 1.5
        return centre + 3.0 * radius * way, centre, np.array([0.0, 0.0, 1.0])

    def object_sphere(self) -> Tuple[Tensor, float]:
        """Centre [3] and radius of the object in the frame the model renders in: the scanned region when
        there are X-rays, else the bulk of the Gaussians."""
        if self.has_xray:
            centre, radius = self.box_xray.mean(0).to(self.device), float(self.extent_xray)
            if self.joint:  # the scanned region, carried into the RGB frame
                s, rot, t = similarity_parts(self.xray_to_rgb)
                return s * rot @ centre + t, s * radius
            return centre, radius
        means = self.gauss_params["means"].detach()
        centre = means.median(dim=0).values
        return centre, float((means - centre).norm(dim=-1).quantile(0.9))

    @torch.no_grad()
    def render_cutaway(self, camera: Cameras) -> Tensor:  # [H, W, 3]
        """The Gaussians on the near side of the viewer's cut plane, coloured by density (inferno map of
        the attenuation, opaque where dense) or by their RGB colour."""
        normal, offset, colour_by = self.controls.cut_plane
        centre, radius = self.object_sphere()
        p = self.gauss_params
        keep = (p["means"] - centre) @ normal.to(self.device) <= offset * radius
        if colour_by == "colour" and not self.has_xray:
            return self.render_rgb(camera, keep & self.rendered_by("rgb"))["rgb"]
        bg = self._background()
        keep = keep & self.rendered_by("xray")
        rho = F.softplus(p["densities"][keep])
        if len(rho) == 0:
            return bg.expand(int(camera.height[0]), int(camera.width[0]), 3)
        ref = float(rho.quantile(0.99)) if len(rho) < 2**24 else float(rho.max())
        opacity = (rho / max(0.25 * ref, 1e-12)).clamp(0, 1)  # opaque where dense
        if colour_by == "colour":  # each Gaussian's colour (inside: its nearest surface's, merge.transfer_attributes)
            sh = torch.cat([p["features_dc"][keep][:, None], p["features_rest"][keep]], dim=1)
            img, _, _ = self._splat(camera, keep, sh, torch.maximum(opacity, torch.sigmoid(p["opacities"][keep])),
                                    self.config.sh_degree, bg)
        else:
            colours = apply_float_colormap((rho / max(ref, 1e-12)).clamp(0, 1)[:, None], "inferno")  # [M, 3]
            img, _, _ = self._splat(camera, keep, colours, opacity, None, bg)
        return img[..., :3].clamp(0, 1)

    def _xray_view(self, camera: Cameras, in_xray_frame: bool) -> Tuple[Tensor, Tensor, str]:
        """viewmat [4, 4], K [3, 3] and projection of a camera in the frame the Gaussians are in."""
        c2w = camera.camera_to_worlds[0].to(self.device)
        K = camera_intrinsics(camera).to(self.device)
        projection = (camera.metadata or {}).get("projection", "cone")
        if in_xray_frame and self.joint:  # the data's X-ray camera, moved into the RGB frame
            s, rot, t = similarity_parts(self.xray_to_rgb)
            c2w = torch.cat([rot @ c2w[:, :3], (s * rot @ c2w[:, 3] + t)[:, None]], dim=1)
            if projection == "parallel":  # pixels of a parallel detector are lengths: they scale with the frame
                K = K.clone()
                K[0, 0], K[1, 1] = K[0, 0] / s, K[1, 1] / s
        return viewmat_from_c2w(c2w), K, projection

    def render_xray(self, viewmat: Tensor, K: Tensor, W: int, H: int, projection: str, sel: Optional[Tensor] = None
                    ) -> Tensor:  # [H, W, 1]
        """Line integrals of the selected Gaussians (or, in the alpha-blending ablation, the density
        composited as a grey colour)."""
        sel = self.rendered_by("xray") if sel is None else sel
        means, quats, scales = self._geometry(sel)
        dens = F.softplus(self.gauss_params["densities"][sel])
        if self.config.ablation.xray_rendering == "alpha":
            img, _, info = rasterize_rgb(means, quats, scales, torch.sigmoid(self.gauss_params["opacities"][sel]),
                                         dens[:, None] * self.xray_peak, viewmat[None], K[None], W, H,
                                         backend=self.config.backend)
        else:
            img, info = rasterize_xray(means, quats, scales, dens, viewmat[None], K[None], W, H, projection,
                                       backend=self.config.backend, cutoff=self.config.xray.cutoff)
        self._keep_for_densification(info, sel, "xray")
        return img[0]

    def get_outputs(self, camera: Cameras) -> Dict[str, Tensor]:
        """Cameras of the data render their own modality; any other camera (viewer, ns-render) renders
        every output: `rgb` (the viewer's chosen modality, the photograph by default), `accumulation`,
        `depth`, `xray` (grey, through the viewer's window: displayable) and `xray_integral` (the line
        integrals [H, W, 1], as a cone beam from the camera's position)."""
        modality = (camera.metadata or {}).get("modality")
        W, H = int(camera.width[0]), int(camera.height[0])
        if modality == "xray":
            viewmat, K, projection = self._xray_view(camera, in_xray_frame=True)
            integral = self.render_xray(viewmat, K, W, H, projection)
            return {"xray_integral": integral, "xray": self.controls.window(integral.detach(), float(self.xray_peak))}
        out = self.render_rgb(camera) if self.has_rgb else {}
        if modality == "rgb":
            return out
        with torch.no_grad():
            if self.has_xray:
                viewmat, K, _ = self._xray_view(camera, in_xray_frame=not self.has_rgb)
                out["xray_integral"] = self.render_xray(viewmat, K, W, H, "cone")
                out["xray"] = self.controls.window(out["xray_integral"], float(self.xray_peak))
            cutaway = self.render_cutaway(camera) if self.controls.modality == "Cut-away" else None
            out["rgb"] = self.controls.compose(out.get("rgb"), out.get("xray"), cutaway)
        return out

    @torch.no_grad()
    def get_outputs_for_camera(self, camera: Cameras, obb_box=None) -> Dict[str, Tensor]:
        """Whole-camera rendering (no ray bundles), for evaluation, the viewer and ns-render."""
        return self.get_outputs(camera.to(self.device))

    def xray_frame_gaussians(self) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
        """Means [M, 3], quaternions [M, 4], scales [M, 3] and densities [M] of the Gaussians that render
        X-rays, in the X-ray frame (from the RGB frame in phase 3: mu_xray = s mu_rgb)."""
        sel = self.rendered_by("xray")
        means, quats, scales = self._geometry(sel)
        dens = F.softplus(self.gauss_params["densities"][sel])
        if self.joint:
            return transform_gaussians(torch.linalg.inv(self.xray_to_rgb), means, quats, scales, dens)
        return means, quats, scales, dens

    def volume_in_xray_frame(self, res: int = 0, aabb: Optional[Tensor] = None, shape: Optional[tuple] = None,
                             supersample: int = 1) -> Tensor:
        """The model's attenuation voxelised on a grid of the X-ray frame (units of the data): `shape`, or
        `res` voxels along the longest side of `aabb` (default: the scanned region). Each voxel holds the
        mean of supersample^3 point samples (1: its centre's value, as the scene format's volume; export.py
        says why that is the default)."""
        aabb = self.box_xray if aabb is None else aabb
        means, quats, scales, dens = self.xray_frame_gaussians()
        if shape is None:
            shape = tuple(max(1, round(res * float(e) / float((aabb[1] - aabb[0]).max()))) for e in (aabb[1] - aabb[0]))
        fine = tuple(int(n) * supersample for n in shape)
        vol = voxelize_density(means, quats, scales, dens, fine, aabb.to(self.device), backend=self.config.backend)
        return F.avg_pool3d(vol[None, None], supersample)[0, 0] if supersample > 1 else vol

    # ------------------------------------------------------------------------------------------
    # Losses and metrics
    # ------------------------------------------------------------------------------------------

    @staticmethod
    def _composite(image: Tensor, bg: Tensor) -> Tensor:
        return image[..., :3] * image[..., 3:4] + bg * (1 - image[..., 3:4])

    def get_metrics_dict(self, outputs, batch) -> Dict[str, Tensor]:
        metrics = {"num_gaussians": torch.tensor(float(self.num_points)), "phase": self.phase.float()}
        if batch["modality"] == "rgb":
            gt = self._composite(batch["image"], outputs["background"])
            metrics["psnr"] = torch.tensor(psnr(outputs["rgb"].detach(), gt, 1.0))
        else:
            metrics["xray_psnr"] = torch.tensor(psnr(outputs["xray_integral"].detach(), batch["xray"], float(batch["xray"].max())))
        return metrics

    def get_loss_dict(self, outputs, batch, metrics_dict=None) -> Dict[str, Tensor]:
        losses = {}
        if batch["modality"] == "rgb":
            gt = self._composite(batch["image"], outputs["background"])
            losses["rgb_loss"] = image_loss(outputs["rgb"], gt, self.config.ssim_lambda)
        else:
            peak = float(self.xray_peak)
            losses["xray_loss"] = self.config.xray.weight * image_loss(outputs["xray_integral"], batch["xray"],
                                                                       self.config.ssim_lambda, data_range=peak)
        once = self.training and not batch.get("repeat", False)  # the step's regularisers: with its first view only
        grid = self.object_grid if self.joint and self.config.xray.support_weight > 0 else None
        ct = self.ct_field if self.config.xray.ct_weight > 0 else None
        if once and batch["modality"] == "xray" and (self.config.xray.tv_weight > 0 or grid is not None or ct is not None):
            vol, centres = self.density_cube()  # beside the density's data term, on one random cube
            if self.config.xray.tv_weight > 0:
                losses["tv_loss"] = self.config.xray.tv_weight * total_variation_3d(vol, self.config.xray.tv_edge)
            if grid is not None:  # the density where the photographs and the projections see no object
                losses["support_loss"] = self.config.xray.support_weight * (vol * (1.0 - grid.sample(centres))).mean()
            if ct is not None:  # a CT scene: the voxels themselves, on the cube's scale
                target = ct.sample(centres) * 2 * float(self.extent_xray) / float(self.xray_peak)
                losses["ct_loss"] = self.config.xray.ct_weight * (vol - target).abs().mean()
        for name, value in losses.items():
            if not torch.isfinite(value):
                raise TrainingStopped(f"non-finite {name} ({float(value)}) in phase {int(self.phase)} at step "
                                      f"{self.step}; the last checkpoint on disk is the last good state")
        return losses

    def density_cube(self, generator: Optional[torch.Generator] = None) -> Tuple[Tensor, Tensor]:
        """The density [n, n, n] on a cube of n = xray.tv_cube voxels (the box's longest side / xray.tv_grid each) at a
        random place in the scanned region (drawn from `generator`, default the model's own TV stream), over its
        scale (xray_peak / diameter): dimensionless; and the voxels' centres [n, n, n, 3] in the X-ray frame."""
        box = self.box_xray.to(self.device)
        side = (box[1] - box[0]).max() * self.config.xray.tv_cube / self.config.xray.tv_grid
        where = torch.rand(3, generator=self.tv_generator if generator is None else generator).to(self.device)
        low = box[0] + where * (box[1] - box[0] - side).clamp(min=0)
        n = self.config.xray.tv_cube
        cube = torch.stack([low, low + side])
        vol = self.volume_in_xray_frame(shape=(n, n, n), aabb=cube)
        return vol * 2 * float(self.extent_xray) / float(self.xray_peak), grid_points(cube, n).reshape(n, n, n, 3)

    def tv_loss(self, generator: Optional[torch.Generator] = None) -> Tensor:
        """3D TV of the density on a random cube (density_cube)."""
        return total_variation_3d(self.density_cube(generator)[0], self.config.xray.tv_edge)

    def get_image_metrics_and_images(self, outputs, batch) -> Tuple[Dict[str, float], Dict[str, Tensor]]:
        if batch["modality"] == "xray":
            gt, pred = batch["xray"], outputs["xray_integral"]
            peak = float(gt.max())
            metrics = {"xray_psnr": psnr(pred, gt, peak), "xray_ssim": ssim_metric(pred, gt, peak)}
            clean = batch.get("xray_clean")  # a generated noisy scan: the noise-free projection, the model's truth
            if clean is not None:
                top = float(clean.max())
                metrics.update(xray_psnr_clean=psnr(pred, clean, top), xray_ssim_clean=ssim_metric(pred, clean, top))
            both = torch.cat([gt, pred], dim=1) / max(peak, 1e-12)
            return metrics, {"xray": both.clamp(0, 1).repeat(1, 1, 3)}
        gt = self._composite(batch["image"], outputs["background"])
        metrics = {"psnr": psnr(outputs["rgb"], gt, 1.0), "ssim": ssim_metric(outputs["rgb"], gt, 1.0)}
        mask = batch.get("object_mask")  # a generated capture without masks: ground_truth.json's mask of the object
        if mask is None and float(batch["image"][..., 3:].min()) < 1.0:  # photographs with masks: their own
            mask = (batch["image"][..., 3:] > 0).float()
        if mask is not None:  # the object's pixels alone, on equal terms with or without masks (the whole image's
            metrics["psnr_object"] = psnr(outputs["rgb"], gt, 1.0, mask)  # PSNR counts a masked scene's black too)
        lpips = lpips_or_none(outputs["rgb"], gt)
        if lpips is not None:
            metrics["lpips"] = lpips
        return metrics, {"img": torch.cat([gt, outputs["rgb"]], dim=1)}
