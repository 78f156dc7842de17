"""Nerfstudio glue: the InsideOut model, as Nerfstudio's hooks. One Gaussian set (gaussians.py) with geometry,
RGB attributes and a radiative attribute; the model sets it up from the starting data, renders the modality a
camera asks for (rendering.py), gives the losses and metrics, and keeps its state for checkpoints. The phase
schedule is phases.py, the frames frames.py, phase 2 merge.py, densification strategy.py, the configs
model_config.py.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Dict, List, Optional, Tuple

import numpy as np
import torch
from torch import Tensor
from torch.nn import Parameter

from nerfstudio.cameras.cameras import Cameras
from nerfstudio.engine.callbacks import TrainingCallback, TrainingCallbackAttributes
from nerfstudio.models.base_model import Model
from nerfstudio.utils.rich_utils import CONSOLE

from .dataparsers.ct_volume import MU_WATER, VoxelField, attenuation_of
from .environment import EnvironmentMap
from .frames import Frames, bulk_sphere
from .gaussians import PARAM_KEYS, RADIATIVE, RGB, GaussianSet
from .init_points import StartingData
from .losses import (density_regularisers, image_loss, photograph_metrics, psnr, random_cube, total_variation_3d,
                     voxel_cube, xray_metrics)
from .merge import AlignmentInputs, aligned, merge_populations, write_alignment_json
from .model_config import AblationConfig, AlignmentConfig, InsideOutModelConfig, NoMasksConfig, XrayConfig
from .object_grid import ObjectGrid
from .object_region import SfmRegion
from .phases import Phase, Schedule, TrainingStopped, phase_callbacks
from .projection_geometry import grid_points
from .rendering import cutaway, grid_shape, line_integrals, photograph, voxelized
from .transforms import camera_intrinsics, viewmat_from_c2w
from .viewer_controls import ViewerControls, opening_pose

# the configs are importable from here too: saved runs' config.yml name them so
__all__ = ["InsideOutModel", "InsideOutModelConfig", "AlignmentConfig", "NoMasksConfig", "XrayConfig", "AblationConfig",
           "TrainingStopped"]


class InsideOutModel(Model):
    config: InsideOutModelConfig

    def populate_modules(self):
        super().populate_modules()
        meta = self.kwargs["metadata"]
        self.start: StartingData = meta["start"]
        self.tv_generator = torch.Generator().manual_seed(0)  # the TV's cubes: its own stream, not the photographs'
        xr = meta.get("xray")
        has_xray = xr is not None and len(xr) > 0
        no_masks = self.config.no_masks
        self.schedule = Schedule(has_rgb=self.num_train_data > 0, has_xray=has_xray,
                                 hierarchical=self.config.ablation.hierarchical,
                                 phase1_steps=round(self.config.phase1_steps * (1.0 if self.start.masked else no_masks.phase1_factor)))
        self.xray_train = xr if has_xray else None  # cameras and projections (phase 2's hulls and silhouettes)
        self.gt_volume = xr.volume if has_xray else None
        self.inside_is_ct = has_xray and xr.from_ct  # a CT scene: its voxels are data, not only the score's truth
        self.ct_mu_water: Optional[float] = meta.get("ct_mu_water")  # a CT scene in Hounsfield units: the rule's mu_water
        self._ct_field: Optional[VoxelField] = None
        patient = meta.get("patient_from_frame")  # a CT scene's grid axes -> its patient frame (LPS)
        self.register_buffer("patient_from_frame", torch.eye(4) if patient is None else patient.float().clone())
        box_rgb = self.scene_box.aabb.float()
        box_x = meta["xray_box"].float() if has_xray else box_rgb
        self.register_buffer("xray_peak", torch.tensor(float(xr.projections.max()) if has_xray else 1.0))
        self.register_buffer("extent_rgb", torch.tensor(float((box_rgb[1] - box_rgb[0]).norm()) / 2))
        self.register_buffer("extent_xray", torch.tensor(float((box_x[1] - box_x[0]).norm()) / 2))
        self.register_buffer("box_xray", box_x.clone())
        self.gaussians = GaussianSet.from_start(self.start, self.schedule.has_rgb, has_xray, self.config.sh_degree)
        with_room = self.schedule.has_rgb and not self.start.masked and no_masks.environment_rows > 0
        self.environment = EnvironmentMap(no_masks.environment_rows) if with_room else None
        self.register_buffer("phase", torch.tensor(int(self.schedule.initial_phase())))
        calib = meta.get("xray_to_rgb")  # calibration.json, if the scene has one
        self.calibration = calib.float().clone() if calib is not None else None
        self.register_buffer("xray_to_rgb", calib.float().clone() if calib is not None else torch.eye(4))
        self.alignment_source = "calibration" if calib is not None else "identity"
        if self.joint:  # the no-hierarchy ablation: both populations in the RGB frame now
            self.gaussians.move(self.gaussians.of(RADIATIVE), self.xray_to_rgb)
        self.register_buffer("object_occupancy", torch.zeros(0, dtype=torch.bool))  # [R, R, R] from phase 2 (object_grid.py)
        self.sfm = SfmRegion(self.start.sfm_points, self.start.rgb_cameras)  # an object on a table: its region
        # modality, X-ray window / level, cut-away (Nerfstudio's web viewer), opening on the object
        self.controls = ViewerControls(lambda: opening_pose(meta.get("first_photograph"), *self.object_sphere()))
        extra = 0 if self.start.masked or not self.schedule.has_rgb else no_masks.extra_gaussians
        self.strategy = replace(self.config.strategy, max_gaussians=self.config.strategy.max_gaussians + extra)
        self.strategy_state = self.strategy.initialize_state()
        self.step = 0
        self._means_before: Optional[Tensor] = None
        self.optimizers: Dict = {}
        self.run_dir = None

    # ------------------------------------------------------------------------------------------
    # State
    # ------------------------------------------------------------------------------------------

    def load_state_dict(self, state_dict, **kwargs):  # type: ignore
        """Resizes the Gaussian set to the checkpoint's count, in place, before loading: the Parameters stay
        the objects the trainer's optimizers hold (replacing them, as splatfacto does, leaves a resumed run's
        optimizers stepping tensors the model no longer renders). Checkpoints of earlier releases load too."""
        for key in [k for k in state_dict if k.startswith("gauss_params.")] + ["population"] * ("population" in state_dict):
            state_dict["gaussians." + key.replace("gauss_params.", "params.")] = state_dict.pop(key)  # before 2026-12-06
        state_dict.setdefault("object_occupancy", torch.zeros(0, dtype=torch.bool))
        state_dict.setdefault("patient_from_frame", torch.eye(4))
        if "environment.texture" in state_dict and self.environment is None:  # a model set up without its data
            self.environment = EnvironmentMap(state_dict["environment.texture"].shape[2]).to(self.device)
        self.gaussians.resize(state_dict["gaussians.params.means"].shape[0])
        self.object_occupancy = self.object_occupancy.new_zeros(state_dict["object_occupancy"].shape)
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
        groups = {k: [self.gaussians.params[k]] for k in PARAM_KEYS}
        if self.environment is not None:
            groups["environment"] = list(self.environment.parameters())
        return groups

    @property
    def num_points(self) -> int:
        return len(self.gaussians)

    @property
    def has_rgb(self) -> bool:
        return self.schedule.has_rgb

    @property
    def has_xray(self) -> bool:
        return self.schedule.has_xray

    @property
    def joint(self) -> bool:
        """Both populations are one set in the RGB frame (phase 3 of a paired scene)."""
        return self.schedule.joint(Phase(int(self.phase)))

    @property
    def frames(self) -> Frames:
        return Frames(self.xray_to_rgb, self.joint, self.box_xray, float(self.extent_rgb), float(self.extent_xray))

    def rendered_by(self, modality: str) -> Tensor:  # [N] bool
        return self.schedule.rendered_by(modality, Phase(int(self.phase)), self.gaussians.population)

    @property
    def ct_field(self) -> Optional[VoxelField]:
        """A CT scene's voxels (their interpolant), on the model's device once it is there; None for other scenes."""
        if self.inside_is_ct and (self._ct_field is None or self._ct_field.device != self.device):
            self._ct_field = VoxelField(self.gt_volume, self.device)
        return self._ct_field if self.inside_is_ct else None

    @property
    def ct_air(self) -> Optional[float]:
        """A CT scene: the attenuation of the surface the photographs show (alignment.ct_surface_hu, by the HU rule's
        mu_water)."""
        level = self.config.alignment.ct_surface_hu
        return float(attenuation_of(np.array([level]), self.ct_mu_water or MU_WATER)[0]) if self.inside_is_ct else None

    @property
    def object_grid(self) -> Optional[ObjectGrid]:
        """Where both modalities allow the object (phase 2 on), over the scanned region."""
        return ObjectGrid(self.object_occupancy, self.box_xray) if self.object_occupancy.numel() else None

    @property
    def density_bound(self) -> Optional[ObjectGrid]:
        """Phase 3: the object's grid, outside which the density is penalised and Gaussians pruned; none for a CT, whose
        voxels are data everywhere, its air outside the photographed hull too (benchmarks/README.md, "A CT volume as
        the inside")."""
        return self.object_grid if self.joint and not self.inside_is_ct else None

    # ------------------------------------------------------------------------------------------
    # Training: the phases, the steps
    # ------------------------------------------------------------------------------------------

    def get_training_callbacks(self, attrs: TrainingCallbackAttributes) -> List[TrainingCallback]:
        return phase_callbacks(self, attrs)

    def alignment_inputs(self) -> AlignmentInputs:
        """What phase 2 reads (a model in phase 1: each population in its own frame)."""
        cfg = self.config
        return AlignmentInputs(
            self.gaussians, self.start, self.xray_train, self.box_xray, self.scene_box.aabb, float(self.extent_xray),
            float(self.extent_rgb), self.xray_to_rgb, self.calibration is not None, cfg.alignment, cfg.no_masks,
            cfg.alignment.max_residual if self.start.masked else cfg.alignment.max_residual_without_masks,
            self.environment is not None, self.sfm.region, cfg.ablation.xray_rendering == "line_integral",
            self.patient_from_frame, self.ct_air, self.step, cfg.backend)

    @torch.no_grad()
    def align(self) -> None:
        """Phase 2 (merge.py) on a model in phase 1: the similarity and alignment.json (training stops where it
        failed), the populations merged into the RGB frame, the object's grid; the model is in phase 3 after it."""
        cfg = self.config
        inputs = self.alignment_inputs()
        report = aligned(inputs)
        self.controls.alignment_status.value = report.status
        write_alignment_json(self.run_dir, report.record)
        if report.failed and not cfg.alignment.accept_failed:
            raise TrainingStopped(report.failure)
        merge_populations(inputs, report.matrix)
        self.alignment_source, self.xray_to_rgb = report.source, report.matrix.to(self.device)
        self.object_occupancy = (torch.zeros(0, dtype=torch.bool) if report.occupancy is None else report.occupancy).to(self.device)
        for opt in self.optimizers.values():  # moments of the old frame mean nothing in the new one
            opt.state.clear()
        self.phase = torch.tensor(int(Phase.JOINT), device=self.device)
        residual = report.record["residual"]  # None for a calibration
        CONSOLE.log(f"[bold]InsideOut[/bold]: phase 3 from step {self.step}; alignment ({report.source}) scale "
                    f"{report.record['scale']:.4g}, residual {float('nan') if residual is None else residual:.4f}")

    def before_step(self) -> None:
        """Remembers the means before the optimizer moves them (for after_step)."""
        self._means_before = self.gaussians.means().detach().clone() if self.config.ablation.relative_means_lr else None

    def after_step(self, step: int) -> None:
        """After each optimizer step: each Gaussian's move scaled by its frame's extent (so the means'
        learning rate is a fraction of the scene, as 3DGS's spatial_lr_scale: one Adam step is lr times a
        unit-size update per element, so this is Adam with a per-Gaussian rate); then densification (the
        strategy's statistics and, on refine steps, clone / split / prune)."""
        g = self.gaussians
        extent = self.frames.extents(g.population)
        means = g.params["means"]
        if self._means_before is not None and self._means_before.shape == means.shape:
            means.data = self._means_before + (means.data - self._means_before) * extent[:, None]
        self._means_before = None
        state = self.strategy_state  # the per-Gaussian tensors gsplat's ops resize with the Gaussians
        state["population"], state["extent"], state["unwanted"] = g.population, extent, self.unwanted
        state["by_opacity"], state["by_density"] = self.schedule.judged_by(Phase(int(self.phase)), g.population)
        self.strategy.step_post_backward(g.params, self.optimizers, state, step)
        g.population = state["population"]

    def unwanted(self) -> Tensor:  # [N] bool
        """The Gaussians a refinement prunes whatever their attributes: RGB ones in the air around an object on a
        table (photographs without masks, with SfM points), and in phase 3, with masks, any outside the object's grid."""
        g = self.gaussians
        unwanted = torch.zeros_like(g.population, dtype=torch.bool)
        if self.config.no_masks.clear_air and self.environment is not None and self.start.sfm_points is not None:
            unwanted |= g.of(RGB) & self.sfm.in_the_air(g.means().detach())
        grid = self.density_bound
        if grid is not None and self.start.masked and self.config.xray.prune_outside_object:
            unwanted |= grid.excludes(self.frames.in_xray_frame(g.means().detach()))
        return unwanted

    # ------------------------------------------------------------------------------------------
    # Rendering
    # ------------------------------------------------------------------------------------------

    def _background(self) -> Tensor:
        if self.config.background == "random" and self.training:
            return torch.rand(3, device=self.device)
        return torch.ones(3, device=self.device) if self.config.background == "white" else torch.zeros(3, device=self.device)

    def _keep_for_densification(self, info: Dict, sel: Tensor, modality: str) -> None:
        if self.training:
            self.strategy.step_pre_backward(self.gaussians.params, self.optimizers, self.strategy_state, self.step,
                                            {**info, "selected": sel, "modality": modality})

    def render_rgb(self, camera: Cameras, sel: Optional[Tensor] = None) -> Dict[str, Tensor]:
        """The photograph's appearance of the selected Gaussians (default: those that render RGB now), in front of
        the learned room where there is one."""
        sel = self.rendered_by("rgb") if sel is None else sel
        bg = self._background() if self.environment is None else torch.zeros(3, device=self.device)
        img, alpha, info, drawn = photograph(self.gaussians, camera, sel, self.config.sh_degree, bg, self.config.backend)
        self._keep_for_densification(info, drawn, "rgb")
        rgb = img[..., :3]
        if self.environment is not None:  # the room behind what the Gaussians do not cover
            bg = self.environment.behind(camera)  # [H, W, 3]
            rgb = rgb + (1.0 - alpha) * bg
        return {"rgb": rgb.clamp(0, 1), "depth": img[..., 3:4], "accumulation": alpha, "background": bg}

    def render_xray(self, viewmat: Tensor, K: Tensor, W: int, H: int, projection: str, sel: Optional[Tensor] = None
                    ) -> Tensor:  # [H, W, 1]
        """Line integrals of the selected Gaussians (default: those that render X-rays now)."""
        sel = self.rendered_by("xray") if sel is None else sel
        peak = float(self.xray_peak) if self.config.ablation.xray_rendering == "alpha" else None
        img, info = line_integrals(self.gaussians, sel, viewmat, K, W, H, projection, self.config.backend,
                                   self.config.xray.cutoff, alpha_blended_peak=peak)
        self._keep_for_densification(info, sel, "xray")
        return img

    def object_sphere(self) -> Tuple[Tensor, float]:
        """Centre [3] and radius of the object in the frame the model renders in: the scanned region when
        there are X-rays, else the bulk of the Gaussians."""
        if self.has_xray:
            return self.frames.scanned_sphere()
        return bulk_sphere(self.gaussians.means().detach())

    def get_outputs(self, camera: Cameras) -> Dict[str, Tensor]:
        """Cameras of the data render their own modality; any other camera (viewer, ns-render) renders
        every output: `rgb` (the viewer's chosen modality, the photograph by default), `accumulation`,
        `depth`, `xray` (grey, through the viewer's window: displayable) and `xray_integral` (the line
        integrals [H, W, 1], as a cone beam from the camera's position)."""
        modality = (camera.metadata or {}).get("modality")
        W, H = int(camera.width[0]), int(camera.height[0])
        if modality == "xray":  # the data's X-ray camera, in the frame the Gaussians are in
            projection = (camera.metadata or {}).get("projection", "cone")
            c2w, K = camera.camera_to_worlds[0].to(self.device), camera_intrinsics(camera).to(self.device)
            integral = self.render_xray(*self.frames.xray_view(c2w, K, projection), W, H, projection)
            return {"xray_integral": integral, "xray": self.controls.window(integral.detach(), float(self.xray_peak))}
        out = self.render_rgb(camera) if self.has_rgb else {}
        if modality == "rgb":
            return out
        with torch.no_grad():
            if self.has_xray:  # a viewer's camera is in the frame the Gaussians are in: a cone beam from it
                viewmat = viewmat_from_c2w(camera.camera_to_worlds[0].to(self.device))
                out["xray_integral"] = self.render_xray(viewmat, camera_intrinsics(camera).to(self.device), W, H, "cone")
                out["xray"] = self.controls.window(out["xray_integral"], float(self.xray_peak))
            cut = self.render_cutaway(camera) if self.controls.modality == "Cut-away" else None
            out["rgb"] = self.controls.compose(out.get("rgb"), out.get("xray"), cut)
        return out

    def render_cutaway(self, camera: Cameras) -> Tensor:  # [H, W, 3]
        """The Gaussians on the near side of the viewer's cut plane (rendering.cutaway)."""
        normal, offset, colour_by = self.controls.cut_plane
        centre, radius = self.object_sphere()
        keep = (self.gaussians.means().detach() - centre) @ normal.to(self.device) <= offset * radius
        if colour_by == "colour" and not self.has_xray:
            return self.render_rgb(camera, keep & self.rendered_by("rgb"))["rgb"]
        return cutaway(self.gaussians, camera, keep & self.rendered_by("xray"), colour_by == "colour",
                       self.config.sh_degree, self._background(), self.config.backend)

    @torch.no_grad()
    def get_outputs_for_camera(self, camera: Cameras, obb_box=None) -> Dict[str, Tensor]:
        """Whole-camera rendering (no ray bundles), for evaluation, the viewer and ns-render."""
        return self.get_outputs(camera.to(self.device))

    def xray_frame_gaussians(self) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
        """Means [M, 3], quaternions [M, 4], scales [M, 3] and densities [M] of the Gaussians that render
        X-rays, in the X-ray frame (from the RGB frame in phase 3: mu_xray = s mu_rgb)."""
        sel = self.rendered_by("xray")
        if self.joint:
            return self.gaussians.transformed(torch.linalg.inv(self.xray_to_rgb), sel)
        return (*self.gaussians.geometry(sel), self.gaussians.densities(sel))

    def volume_in_xray_frame(self, res: int = 0, aabb: Optional[Tensor] = None, shape: Optional[tuple] = None,
                             supersample: int = 1) -> Tensor:
        """The model's attenuation on a grid of the X-ray frame (units of the data): `shape`, or `res` voxels
        along the longest side of `aabb` (default: the scanned region); rendering.voxelized."""
        aabb = self.box_xray if aabb is None else aabb
        if shape is None:
            shape = grid_shape(aabb, res)
        return voxelized(*self.xray_frame_gaussians(), shape, aabb, self.config.backend, supersample)

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
        cfg, losses = self.config.xray, {}
        if batch["modality"] == "rgb":
            gt = self._composite(batch["image"], outputs["background"])
            losses["rgb_loss"] = image_loss(outputs["rgb"], gt, self.config.ssim_lambda)
        else:
            losses["xray_loss"] = cfg.weight * image_loss(outputs["xray_integral"], batch["xray"], self.config.ssim_lambda,
                                                          data_range=float(self.xray_peak))
        once = self.training and not batch.get("repeat", False)  # the step's regularisers: with its first view only
        grid = self.density_bound if cfg.support_weight > 0 else None
        ct = self.ct_field if cfg.ct_weight > 0 else None
        if batch["modality"] != "xray":  # a CT is data on every step: a photograph's step moves the density too
            cfg, grid = replace(cfg, tv_weight=0.0), None
        if once and (cfg.tv_weight > 0 or grid is not None or ct is not None):
            vol, centres = self.density_cube()  # beside the density's data term, on one random cube
            losses.update(density_regularisers(vol, centres, cfg, grid, ct, self.density_scale))
        for name, value in losses.items():
            if not torch.isfinite(value):
                raise TrainingStopped(f"non-finite {name} ({float(value)}) in phase {int(self.phase)} at step "
                                      f"{self.step}; the last checkpoint on disk is the last good state")
        return losses

    @property
    def density_scale(self) -> float:
        """The density's scale: the projections' peak over the scanned region's diameter."""
        return 2 * float(self.extent_xray) / float(self.xray_peak)

    def density_cube(self, generator: Optional[torch.Generator] = None) -> Tuple[Tensor, Tensor]:
        """The density over its scale (dimensionless) [a, b, c] on a random cube of the scanned region (losses.random_cube;
        a CT scene's: a block of its own voxels, losses.voxel_cube), drawn from `generator`, default the model's own TV
        stream, and the voxels' centres [a, b, c, 3] (X-ray frame)."""
        n, generator = self.config.xray.tv_cube, self.tv_generator if generator is None else generator
        if self.inside_is_ct:
            grid = self.gt_volume.values.shape
            stride = max(1, max(grid) // (2 * self.config.xray.tv_grid))  # a clinical CT's 512 voxels: every 4th
            cube, shape = voxel_cube(torch.from_numpy(self.gt_volume.aabb).float(), grid, n, generator, stride)
        else:
            cube, shape = random_cube(self.box_xray, n, self.config.xray.tv_grid, generator), (n, n, n)
        cube = cube.to(self.device)
        vol = self.volume_in_xray_frame(shape=shape, aabb=cube)
        return vol * self.density_scale, grid_points(cube, shape).reshape(*shape, 3)

    def tv_loss(self, generator: Optional[torch.Generator] = None) -> Tensor:
        """3D TV of the density on a random cube (density_cube)."""
        return total_variation_3d(self.density_cube(generator)[0], self.config.xray.tv_edge)

    def get_image_metrics_and_images(self, outputs, batch) -> Tuple[Dict[str, float], Dict[str, Tensor]]:
        if batch["modality"] == "xray":
            gt, pred = batch["xray"], outputs["xray_integral"]
            both = torch.cat([gt, pred], dim=1) / max(float(gt.max()), 1e-12)
            return xray_metrics(pred, gt, batch.get("xray_clean")), {"xray": both.clamp(0, 1).repeat(1, 1, 3)}
        gt = self._composite(batch["image"], outputs["background"])
        mask = batch.get("object_mask")  # a generated capture without masks: ground_truth.json's mask of the object
        if mask is None and float(batch["image"][..., 3:].min()) < 1.0:  # photographs with masks: their own
            mask = (batch["image"][..., 3:] > 0).float()
        return photograph_metrics(outputs["rgb"], gt, mask), {"img": torch.cat([gt, outputs["rgb"]], dim=1)}
