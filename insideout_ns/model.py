"""Nerfstudio glue: the InsideOut model. One set of Gaussians with geometry, RGB attributes (SH colour,
opacity) and a radiative attribute (density), fitted in three phases (see DESIGN.md):

1. independent: the RGB population on photographs (RGB frame), the radiative one on projections (X-ray frame);
2. alignment at `phase1_steps`: the X-ray -> RGB similarity (calibration.json, or estimated from the
   hulls and refined by silhouettes), applied to the radiative population and, from then on, to the
   X-ray cameras;
3. joint: every Gaussian gets the other attribute group from its nearest neighbour in the other
   population, and everything is fitted to both modalities plus the X-ray reference loss.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from typing import Dict, List, Literal, Optional, Tuple, Type

import numpy as np
import torch
import torch.nn.functional as F
from scipy.spatial import cKDTree
from torch import Tensor
from torch.nn import Parameter

from nerfstudio.cameras.cameras import Cameras
from nerfstudio.engine.callbacks import TrainingCallback, TrainingCallbackAttributes, TrainingCallbackLocation
from nerfstudio.models.base_model import Model, ModelConfig
from nerfstudio.utils.rich_utils import CONSOLE
from nerfstudio.utils.colormaps import apply_float_colormap

from .alignment import TRIM, Alignment, estimate_similarity, icp
from .densify import RADIATIVE, RGB, Densifier, DensifyConfig, inverse_softplus
from .init_points import xray_support
from .kernels.rgb import rasterize_rgb
from .kernels.voxelize import voxelize_density
from .kernels.xray import rasterize_xray
from .silhouette import SilhouetteFit, pinhole_views, refine_similarity
from .losses import image_loss, psnr, ssim_metric, total_variation_3d
from .transforms import camera_intrinsics, similarity_parts, transform_gaussians, viewmat_from_c2w
from .viewer_controls import ViewerControls

SH_C0 = 0.28209479177387814
PARAM_KEYS = ("means", "scales", "quats", "features_dc", "features_rest", "opacities", "densities")


class TrainingStopped(RuntimeError):
    """Training cannot go on (a non-finite loss, a failed alignment); the message says why."""


@dataclass
class InsideOutModelConfig(ModelConfig):
    _target: Type = field(default_factory=lambda: InsideOutModel)
    enable_collider: bool = False  # whole cameras, not ray bundles
    backend: Literal["auto", "torch", "cpu", "cuda"] = "auto"
    """Rasterizer backend: auto = CUDA on a GPU, else the C++ CPU kernels (torch if they cannot build)."""
    sh_degree: int = 1
    phase1_steps: int = 1500
    """Steps of independent fitting before the alignment (phase 2) and the joint phase (3)."""
    hierarchical: bool = True
    """False: the ablation without hierarchical fitting (joint from step 0 with the calibration or identity)."""
    xray_rendering: Literal["line_integral", "alpha"] = "line_integral"
    """"alpha": the ablation that alpha-blends X-rays (density as grey colour) instead of integrating."""
    ssim_lambda: float = 0.2
    xray_weight: float = 1.0
    reference_weight: float = 0.5
    """Weight of the X-ray reference loss in phase 3 (0 disables it: the ablation)."""
    reference_res: int = 48
    cross_section_weight: float = 0.0
    """Weight of the loss against the scene's CT volume (phase 3, when the scene has one)."""
    tv_weight: float = 0.0
    """Weight of 3D total variation on the voxelised density."""
    volume_res: int = 32
    """Grid of the voxelised density for the cross-section and TV losses."""
    background: Literal["random", "black", "white"] = "random"
    refine_calibration: bool = False
    """With calibration.json: refine it by ICP (default: use it as it is)."""
    silhouette_refinement: bool = True
    """After the ICP (or the calibration, with refine_calibration): refine the similarity so that the RGB
    population's alpha, seen from the X-ray cameras, matches the projections' support (silhouette.py)."""
    silhouette_steps: int = 60
    """Adam steps of the silhouette refinement (8 X-ray views each)."""
    max_alignment_residual: float = 0.025
    """An estimated alignment whose residual (RMS distance between the two hulls, fraction of the
    diameter) exceeds this is reported as failed and stops training (unless accept_failed_alignment).
    Measured on phantoms (40 to 96 px, 16 to 60 views): one object 0.012 to 0.015, two different
    objects (doll photographs, box X-rays) 0.029."""
    accept_failed_alignment: bool = False
    densify: DensifyConfig = field(default_factory=DensifyConfig)


class InsideOutModel(Model):
    config: InsideOutModelConfig

    # ------------------------------------------------------------------------------------------
    # Set-up
    # ------------------------------------------------------------------------------------------

    def populate_modules(self):
        super().populate_modules()
        meta = self.kwargs["metadata"]
        self.has_rgb = self.num_train_data > 0
        xr = meta.get("xray")
        self.has_xray = xr is not None and len(xr) > 0
        self.paired = self.has_rgb and self.has_xray
        self.projection = xr.projection if self.has_xray else "cone"
        self.gt_volume = xr.volume if self.has_xray else None
        self.xray_train = xr if self.has_xray else None  # cameras and projections, for the silhouette refinement
        box_rgb = self.scene_box.aabb.float()
        box_x = meta["xray_box"].float() if self.has_xray else box_rgb
        self.register_buffer("xray_peak", torch.tensor(float(xr.projections.max()) if self.has_xray else 1.0))
        self.register_buffer("extent_rgb", torch.tensor(float((box_rgb[1] - box_rgb[0]).norm()) / 2))
        self.register_buffer("extent_xray", torch.tensor(float((box_x[1] - box_x[0]).norm()) / 2))
        self.register_buffer("box_xray", box_x.clone())

        means, pop, dens, opac, scales = [], [], [], [], []
        if self.has_rgb:
            pts = meta["init_rgb_points"]
            nn = torch.cdist(pts, pts).topk(4, largest=False).values[:, 1:].mean(1)  # mean distance to 3 neighbours
            means.append(pts)
            scales.append(torch.log(nn.clamp(min=1e-6))[:, None].repeat(1, 3))
            pop.append(torch.full((len(pts),), RGB))
            opac.append(torch.full((len(pts),), 0.1))
            dens.append(torch.full((len(pts),), 1e-6))
        if self.has_xray:
            m, s, d = meta["init_radiative"]
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
        # phase: 1 independent, 3 joint (2 is the instant of alignment); alignment X-ray -> RGB
        self.register_buffer("phase", torch.tensor(1 if (self.paired and self.config.hierarchical) else 3))
        calib = meta.get("xray_to_rgb")
        self.register_buffer("xray_to_rgb", calib.float().clone() if calib is not None else torch.eye(4))
        self.alignment_source = "calibration" if calib is not None else "identity"
        if self.phase == 3 and self.paired:  # the no-hierarchy ablation: both populations in the RGB frame now
            self._move_radiative_to_rgb_frame(self.population == RADIATIVE)
        for key in ("ref_means", "ref_quats", "ref_scales", "ref_densities"):
            self.register_buffer(key, torch.zeros(0))
        self.controls = ViewerControls()  # modality, X-ray window / level, cut-away (Nerfstudio's web viewer)
        # surfaces of the two hulls for the alignment (from the data; not part of the checkpoint)
        self.hull_rgb, self.hull_xray = meta.get("hull_rgb"), meta.get("hull_xray")
        self.densifier = Densifier(self.config.densify)
        self.step = 0
        self.optimizers: Dict = {}
        self.run_dir = None
        self._last: List[Tuple[Dict, Tensor]] = []

    def load_state_dict(self, state_dict, **kwargs):  # type: ignore
        """Resizes every per-Gaussian tensor to the checkpoint's count before loading (as splatfacto)."""
        n = state_dict["gauss_params.means"].shape[0]
        for name, p in self.gauss_params.items():
            self.gauss_params[name] = Parameter(torch.zeros((n,) + p.shape[1:], device=p.device))
        for key in ("population", "ref_means", "ref_quats", "ref_scales", "ref_densities"):
            setattr(self, key, torch.zeros_like(state_dict[key]))
        super().load_state_dict(state_dict, **kwargs)
        self.alignment_source = "checkpoint"

    def get_param_groups(self) -> Dict[str, List[Parameter]]:
        return {k: [self.gauss_params[k]] for k in PARAM_KEYS}

    def get_training_callbacks(self, attrs: TrainingCallbackAttributes) -> List[TrainingCallback]:
        return [
            TrainingCallback([TrainingCallbackLocation.BEFORE_TRAIN_ITERATION], self._before_step, args=[attrs]),
            TrainingCallback([TrainingCallbackLocation.AFTER_TRAIN_ITERATION], self._after_step),
        ]

    # ------------------------------------------------------------------------------------------
    # Activated attributes and selections
    # ------------------------------------------------------------------------------------------

    @property
    def num_points(self) -> int:
        return self.gauss_params["means"].shape[0]

    def _select(self, modality: str) -> Tensor:
        """Which Gaussians a modality renders: its own population in phase 1, all of them in phase 3."""
        if int(self.phase) == 3 or not self.paired:
            return torch.ones(self.num_points, dtype=torch.bool, device=self.device)
        return self.population == (RGB if modality == "rgb" else RADIATIVE)

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
        """The photograph's appearance of the selected Gaussians (default: the RGB population's)."""
        sel = self._select("rgb") if sel is None else sel
        p = self.gauss_params
        colors = torch.cat([p["features_dc"][sel][:, None], p["features_rest"][sel]], dim=1)
        bg = self._background()
        img, alpha, info = self._splat(camera, sel, colors, torch.sigmoid(p["opacities"][sel]), self.config.sh_degree, bg)
        if self.training and info["means2d"].requires_grad:
            info["means2d"].retain_grad()
            self._last.append((info, sel))
        return {"rgb": img[..., :3].clamp(0, 1), "depth": img[..., 3:4], "accumulation": alpha, "background": bg}

    def object_sphere(self) -> Tuple[Tensor, float]:
        """Centre [3] and radius of the object in the frame the model renders in: the scanned region when
        there are X-rays, else the bulk of the Gaussians."""
        if self.has_xray:
            centre, radius = self.box_xray.mean(0).to(self.device), float(self.extent_xray)
            if int(self.phase) == 3 and self.paired:  # the scanned region, carried into the RGB frame
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
        keep = (self.gauss_params["means"] - centre) @ normal.to(self.device) <= offset * radius
        if colour_by == "colour":
            return self.render_rgb(camera, keep & self._select("rgb"))["rgb"]
        bg = self._background()
        keep = keep & self._select("xray")
        rho = F.softplus(self.gauss_params["densities"][keep])
        if len(rho) == 0:
            return bg.expand(int(camera.height[0]), int(camera.width[0]), 3)
        ref = float(rho.quantile(0.99)) if len(rho) < 2**24 else float(rho.max())
        colours = apply_float_colormap((rho / max(ref, 1e-12)).clamp(0, 1)[:, None], "inferno")  # [M, 3]
        img, _, _ = self._splat(camera, keep, colours, (rho / max(0.25 * ref, 1e-12)).clamp(0, 1), None, bg)
        return img[..., :3].clamp(0, 1)

    def _xray_view(self, camera: Cameras, in_xray_frame: bool) -> Tuple[Tensor, Tensor, str]:
        """viewmat [4, 4], K [3, 3] and projection of a camera in the frame the Gaussians are in."""
        c2w = camera.camera_to_worlds[0].to(self.device)
        K = camera_intrinsics(camera).to(self.device)
        projection = (camera.metadata or {}).get("projection", "cone")
        if in_xray_frame and int(self.phase) == 3 and self.paired:  # the data's X-ray camera, moved into the RGB frame
            s, rot, t = similarity_parts(self.xray_to_rgb)
            c2w = torch.cat([rot @ c2w[:, :3], (s * rot @ c2w[:, 3] + t)[:, None]], dim=1)
            if projection == "parallel":  # pixels of a parallel detector are lengths: they scale with the frame
                K = K.clone()
                K[0, 0], K[1, 1] = K[0, 0] / s, K[1, 1] / s
        return viewmat_from_c2w(c2w), K, projection

    def render_xray(self, viewmat: Tensor, K: Tensor, W: int, H: int, projection: str, sel: Optional[Tensor] = None
                    ) -> Tensor:
        """Line integrals [H, W, 1] of the selected Gaussians (or, in the alpha-blending ablation, the
        density composited as a grey colour)."""
        sel = self._select("xray") if sel is None else sel
        means, quats, scales = self._geometry(sel)
        dens = F.softplus(self.gauss_params["densities"][sel])
        if self.config.xray_rendering == "alpha":
            img, _, info = rasterize_rgb(means, quats, scales, torch.sigmoid(self.gauss_params["opacities"][sel]),
                                         dens[:, None] * self.xray_peak, viewmat[None], K[None], W, H,
                                         backend=self.config.backend)
        else:
            img, info = rasterize_xray(means, quats, scales, dens, viewmat[None], K[None], W, H, projection,
                                       backend=self.config.backend)
        if self.training and info["means2d"].requires_grad:
            if self.config.xray_rendering == "alpha":
                info["means2d"].retain_grad()
            self._last.append((info, sel))
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

    # ------------------------------------------------------------------------------------------
    # Losses and metrics
    # ------------------------------------------------------------------------------------------

    def get_metrics_dict(self, outputs, batch) -> Dict[str, Tensor]:
        metrics = {"num_gaussians": torch.tensor(float(self.num_points)), "phase": self.phase.float()}
        if batch["modality"] == "rgb":
            gt = self._composite(batch["image"], outputs["background"])
            metrics["psnr"] = torch.tensor(psnr(outputs["rgb"].detach(), gt, 1.0))
        else:
            metrics["xray_psnr"] = torch.tensor(psnr(outputs["xray_integral"].detach(), batch["xray"], float(batch["xray"].max())))
        return metrics

    @staticmethod
    def _composite(image: Tensor, bg: Tensor) -> Tensor:
        return image[..., :3] * image[..., 3:4] + bg * (1 - image[..., 3:4])

    def get_loss_dict(self, outputs, batch, metrics_dict=None) -> Dict[str, Tensor]:
        losses = {}
        if batch["modality"] == "rgb":
            gt = self._composite(batch["image"], outputs["background"])
            losses["rgb_loss"] = image_loss(outputs["rgb"], gt, self.config.ssim_lambda)
        else:
            peak = float(self.xray_peak)
            losses["xray_loss"] = self.config.xray_weight * image_loss(outputs["xray_integral"], batch["xray"],
                                                                       self.config.ssim_lambda, data_range=peak)
        if self.training and int(self.phase) == 3 and self.paired:
            if self.config.reference_weight > 0 and self.ref_means.numel() > 0:
                losses["reference_loss"] = self.config.reference_weight * self.reference_loss()
            if self.config.cross_section_weight > 0 and self.gt_volume is not None:
                losses["cross_section_loss"] = self.config.cross_section_weight * self.cross_section_loss()
        if self.training and self.config.tv_weight > 0:
            losses["tv_loss"] = self.config.tv_weight * total_variation_3d(self.volume_in_xray_frame(self.config.volume_res))
        for name, value in losses.items():
            if not torch.isfinite(value):
                raise TrainingStopped(f"non-finite {name} ({float(value)}) in phase {int(self.phase)} at step "
                                      f"{self.step}; the last checkpoint on disk is the last good state")
        return losses

    def virtual_view(self, generator: Optional[torch.Generator] = None) -> Tuple[Tensor, Tensor]:
        """A cone-beam view from a random direction around the object (RGB frame): viewmat, K."""
        centre, radius = self.object_sphere()  # the scanned region, in the RGB frame
        d = torch.randn(3, generator=generator).to(self.device)
        eye = centre + 3.0 * radius * d / d.norm()
        forward = (centre - eye) / (centre - eye).norm()  # OpenCV camera: +z forward
        up = torch.tensor([0.0, 0.0, 1.0], device=self.device)
        right = torch.linalg.cross(forward, up)
        right = right / right.norm().clamp(min=1e-6) if right.norm() > 1e-3 else torch.tensor([1.0, 0, 0], device=self.device)
        down = torch.linalg.cross(forward, right)
        rotation = torch.stack([right, down, forward], dim=1)  # camera axes as columns (camera -> world)
        viewmat = torch.eye(4, device=self.device)
        viewmat[:3, :3] = rotation.T
        viewmat[:3, 3] = -rotation.T @ eye
        res = self.config.reference_res
        f = 0.5 * res / math.tan(math.asin(min(0.95, 1.1 / 3.0)))
        K = torch.tensor([[f, 0, res / 2], [0, f, res / 2], [0, 0, 1.0]], device=self.device)
        return viewmat, K

    def reference_loss(self) -> Tensor:
        """L1 between the joint model's X-ray and the frozen phase-1 radiative model's, from a random
        virtual viewpoint (on or off the scanner's orbit)."""
        viewmat, K = self.virtual_view()
        res = self.config.reference_res
        with torch.no_grad():
            ref, _ = rasterize_xray(self.ref_means, self.ref_quats, self.ref_scales, self.ref_densities, viewmat[None],
                                    K[None], res, res, "cone", backend=self.config.backend)
        sel = torch.ones(self.num_points, dtype=torch.bool, device=self.device)
        pred = self.render_xray(viewmat, K, res, res, "cone", sel)
        return (pred - ref[0]).abs().mean() / float(self.xray_peak)

    def volume_in_xray_frame(self, res: int = 0, aabb: Optional[Tensor] = None, shape: Optional[tuple] = None) -> Tensor:
        """The model's attenuation voxelised on a grid of the X-ray frame (units of the data): `shape`, or
        `res` voxels along the longest side of `aabb` (default: the scanned region)."""
        aabb = self.box_xray if aabb is None else aabb
        sel = self._select("xray")
        means, quats, scales = self._geometry(sel)
        dens = F.softplus(self.gauss_params["densities"][sel])
        if int(self.phase) == 3 and self.paired:  # back from the RGB frame: mu_xray = s mu_rgb
            means, quats, scales, dens = transform_gaussians(torch.linalg.inv(self.xray_to_rgb), means, quats, scales, dens)
        if shape is None:
            shape = tuple(max(1, round(res * float(e) / float((aabb[1] - aabb[0]).max()))) for e in (aabb[1] - aabb[0]))
        return voxelize_density(means, quats, scales, dens, shape, aabb.to(self.device), backend=self.config.backend)

    def cross_section_loss(self) -> Tensor:
        """L1 between the model's voxelised density and the scene's CT volume, on the CT's own grid."""
        gt = torch.from_numpy(self.gt_volume.values).to(self.device)
        pred = self.volume_in_xray_frame(shape=tuple(gt.shape), aabb=torch.tensor(self.gt_volume.aabb, dtype=torch.float32))
        return (pred - gt).abs().mean() / gt.max().clamp(min=1e-12)

    def get_image_metrics_and_images(self, outputs, batch) -> Tuple[Dict[str, float], Dict[str, Tensor]]:
        if batch["modality"] == "xray":
            gt, pred = batch["xray"], outputs["xray_integral"]
            peak = float(gt.max())
            metrics = {"xray_psnr": psnr(pred, gt, peak), "xray_ssim": ssim_metric(pred, gt, peak)}
            both = torch.cat([gt, pred], dim=1) / max(peak, 1e-12)
            return metrics, {"xray": both.clamp(0, 1).repeat(1, 1, 3)}
        bg = outputs["background"]
        gt = self._composite(batch["image"], bg)
        metrics = {"psnr": psnr(outputs["rgb"], gt, 1.0), "ssim": ssim_metric(outputs["rgb"], gt, 1.0)}
        lpips = _lpips_or_none(outputs["rgb"], gt)
        if lpips is not None:
            metrics["lpips"] = lpips
        return metrics, {"img": torch.cat([gt, outputs["rgb"]], dim=1)}

    # ------------------------------------------------------------------------------------------
    # Training callbacks: phases, alignment, densification
    # ------------------------------------------------------------------------------------------

    def _before_step(self, attrs: TrainingCallbackAttributes, step: int):
        self.step = step
        self.optimizers = attrs.optimizers.optimizers
        if attrs.trainer is not None:
            self.run_dir = attrs.trainer.base_dir
        self._last = []
        if int(self.phase) == 1 and self.paired and step >= self.config.phase1_steps:
            self.align_and_merge()

    def _after_step(self, step: int):
        cfg = self.config.densify
        for info, sel in self._last:
            self.densifier.accumulate(info, self.num_points, sel)
        self._last = []
        if cfg.start <= step < cfg.stop and step % cfg.refine_every == 0 and step > 0:
            extent = torch.where(self.population == RGB, self.extent_rgb, self.extent_xray)
            if int(self.phase) == 3 and self.paired:
                extent = torch.full_like(extent, float(self.extent_rgb))
            self.population = self.densifier.refine(self.gauss_params, self.optimizers, self.population, extent,
                                                    joint=int(self.phase) == 3)

    def alignment_surfaces(self) -> Tuple[np.ndarray, np.ndarray]:
        """X-ray-frame and RGB-frame surfaces of the object: the two hulls of the data when there are
        any, else the fitted populations' surfaces."""
        if self.hull_rgb is not None and self.hull_xray is not None and len(self.hull_rgb) > 10 and len(self.hull_xray) > 10:
            return self.hull_xray.double().numpy(), self.hull_rgb.double().numpy()
        return self.radiative_surface_points(), self.rgb_surface_points()

    @torch.no_grad()
    def rgb_surface_points(self) -> np.ndarray:
        """Means of the RGB Gaussians that a photograph would see (the more opaque ones)."""
        opa = torch.sigmoid(self.gauss_params["opacities"])
        rgb = self.population == RGB
        sel = rgb & (opa >= min(0.3, 0.5 * float(opa[rgb].max())))
        return self.gauss_params["means"][sel].cpu().numpy()

    @torch.no_grad()
    def radiative_surface_points(self, res: int = 64) -> np.ndarray:
        """The outer surface of the radiative density, as the iso-surface (marching cubes, sub-voxel) at
        half the density of the object's outer layer: where a reconstruction's blurred edge has its true
        boundary. The outer layer is the band just inside the largest region above 3 % of the peak."""
        from scipy import ndimage
        from skimage.measure import marching_cubes

        vol = self.volume_in_xray_frame(res).cpu().numpy()

        def largest_filled(mask):
            labels, n = ndimage.label(mask)
            if n == 0:
                return mask
            sizes = ndimage.sum(np.ones_like(vol), labels, range(1, n + 1))
            return ndimage.binary_fill_holes(labels == (1 + int(np.argmax(sizes))))

        region = largest_filled(vol > 0.03 * vol.max())
        band = region & ~ndimage.binary_erosion(region, iterations=3)
        if not band.any():
            return np.zeros((0, 3))
        mask = largest_filled(vol > 0.5 * np.percentile(vol[band], 90))
        verts = marching_cubes(np.pad(mask.astype(np.float32), 1), 0.5)[0] - 1  # voxel index coordinates
        box = self.box_xray.cpu().numpy()
        return box[0] + (verts + 0.5) * (box[1] - box[0]) / np.array(vol.shape)

    @torch.no_grad()
    def align_and_merge(self):
        """Phase 2: find the similarity, move the radiative population into the RGB frame, freeze the
        reference, transfer the missing attributes; phase 3 starts."""
        if self.alignment_source == "calibration" and not self.config.refine_calibration:
            result = Alignment(self.xray_to_rgb.cpu().double().numpy(), float("nan"), 0)
        else:
            src, dst = self.alignment_surfaces()
            if len(src) < 10 or len(dst) < 10:
                raise TrainingStopped(f"alignment at step {self.step}: too few surface points (X-ray {len(src)}, RGB {len(dst)})")
            result = estimate_similarity(src, dst)
            if self.alignment_source == "calibration":  # refine: start from the calibration
                start = self.xray_to_rgb.cpu().double().numpy()
                result = Alignment(icp(src, dst, start, cKDTree(dst), keep=TRIM), result.residual, 1)
            self.alignment_source = "estimated" if self.alignment_source != "calibration" else "calibration+icp"
        failed = bool(np.isfinite(result.residual) and result.residual > self.config.max_alignment_residual)
        silhouette = None
        if not failed and self.config.silhouette_refinement and self.alignment_source != "calibration":
            silhouette = self.refine_by_silhouettes(result.matrix)
            result = Alignment(silhouette.matrix, result.residual, result.hypotheses)
        self._write_alignment_json(result, failed, silhouette)
        if failed and not self.config.accept_failed_alignment:
            raise TrainingStopped(
                f"alignment failed at step {self.step}: residual {result.residual:.3f} of the object's diameter "
                f"exceeds {self.config.max_alignment_residual} (do the photographs and the X-rays show the same "
                "object?). Provide calibration.json, or pass --pipeline.model.accept-failed-alignment True")
        self.xray_to_rgb = torch.from_numpy(result.matrix).float().to(self.device)
        rad = self.population == RADIATIVE
        self._move_radiative_to_rgb_frame(rad)
        p = self.gauss_params
        self.ref_means, self.ref_quats = p["means"][rad].clone(), p["quats"][rad].clone()
        self.ref_scales, self.ref_densities = torch.exp(p["scales"][rad]).clone(), F.softplus(p["densities"][rad]).clone()
        # each Gaussian takes the missing attribute group from its nearest neighbour in the other population
        pos = p["means"].detach().cpu().numpy()
        rgb_idx, rad_idx = torch.nonzero(~rad).squeeze(-1), torch.nonzero(rad).squeeze(-1)
        if len(rgb_idx) and len(rad_idx):
            near_rgb = torch.from_numpy(cKDTree(pos[rgb_idx.cpu()]).query(pos[rad_idx.cpu()])[1]).to(self.device)
            near_rad = torch.from_numpy(cKDTree(pos[rad_idx.cpu()]).query(pos[rgb_idx.cpu()])[1]).to(self.device)
            for key in ("features_dc", "features_rest", "opacities"):
                p[key].data[rad_idx] = p[key].data[rgb_idx[near_rgb]]
            # density: a radiative Gaussian shares its mass with the RGB Gaussians that took it as nearest,
            # so the total attenuation (and so every projection, to first order) is unchanged
            unit = (2 * math.pi) ** 1.5 * torch.exp(p["scales"].data).prod(-1)  # mass of unit density
            mass = F.softplus(p["densities"].data[rad_idx]) * unit[rad_idx]
            share = mass / (torch.bincount(near_rad, minlength=len(rad_idx)) + 1)
            p["densities"].data[rad_idx] = inverse_softplus(share / unit[rad_idx])
            p["densities"].data[rgb_idx] = inverse_softplus(share[near_rad] / unit[rgb_idx])
        for opt in self.optimizers.values():  # moments of the old frame mean nothing in the new one
            opt.state.clear()
        self.phase = torch.tensor(3, device=self.device)
        CONSOLE.log(f"[bold]InsideOut[/bold]: phase 3 from step {self.step}; alignment ({self.alignment_source}) "
                    f"scale {result.scale:.4g}, residual {result.residual:.4f}")

    def refine_by_silhouettes(self, start: np.ndarray) -> SilhouetteFit:
        """The similarity X-ray -> RGB refined from `start` [4, 4] by the RGB population's alpha against the
        training projections' support (kept only where it fits them better and the outlines agree:
        silhouette.MAX_MISMATCH)."""
        xr = self.xray_train
        cams = xr.cameras.to(self.device)
        viewmats = torch.stack([viewmat_from_c2w(c2w) for c2w in cams.camera_to_worlds])
        Ks = torch.stack([camera_intrinsics(cams[i : i + 1]) for i in range(len(xr))]).to(self.device)
        viewmats, Ks = pinhole_views(viewmats, Ks, xr.projection, distance=100 * float(self.extent_xray))
        support = xray_support(xr.projections.to(self.device))
        rgb = self.population == RGB
        means, quats, scales = self._geometry(rgb)
        fit = refine_similarity(means.detach(), quats.detach(), scales.detach(),
                                torch.sigmoid(self.gauss_params["opacities"][rgb]).detach(), viewmats, Ks,
                                support.shape[2], support.shape[1], support, start, self.box_xray.mean(0),
                                float(self.extent_xray), steps=self.config.silhouette_steps, backend=self.config.backend)
        why = "" if fit.used else (" (no better: kept the ICP's)" if fit.loss_after >= fit.loss_before else
                                   f" (the outlines disagree on {100 * fit.mismatch:.0f} % of the object's area: kept the ICP's)")
        CONSOLE.log(f"InsideOut: silhouette refinement, mean squared outline difference {fit.loss_before:.5f} -> "
                    f"{fit.loss_after:.5f}" + why)
        return fit

    def _move_radiative_to_rgb_frame(self, rad: Tensor):
        p = self.gauss_params
        m, q, s, d = transform_gaussians(self.xray_to_rgb.to(p["means"].device), p["means"][rad], p["quats"][rad],
                                         torch.exp(p["scales"][rad]), F.softplus(p["densities"][rad]))
        p["means"].data[rad], p["quats"].data[rad] = m, q
        p["scales"].data[rad], p["densities"].data[rad] = torch.log(s), inverse_softplus(d)

    def _write_alignment_json(self, result: Alignment, failed: bool, silhouette: Optional[SilhouetteFit] = None):
        if self.run_dir is None:
            return
        path = os.path.join(str(self.run_dir), "alignment.json")
        os.makedirs(str(self.run_dir), exist_ok=True)
        record = {"xray_to_rgb": result.matrix.tolist(), "source": self.alignment_source, "step": self.step,
                  "scale": result.scale, "residual": None if not np.isfinite(result.residual) else result.residual,
                  "status": "failed" if failed else "ok"}
        if silhouette is not None:
            record["silhouette"] = {k: getattr(silhouette, k) for k in ("loss_before", "loss_after", "mismatch", "used", "steps")}
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(record, f, indent=1)
        os.replace(tmp, path)


def _lpips_or_none(pred: Tensor, gt: Tensor) -> Optional[float]:
    """LPIPS where AlexNet's weights are available offline; None otherwise (never downloads in tests)."""
    global _LPIPS
    if _LPIPS is False:
        return None
    try:
        if _LPIPS is None:
            from torchmetrics.image.lpip import LearnedPerceptualImagePatchSimilarity

            _LPIPS = LearnedPerceptualImagePatchSimilarity(normalize=True)
        return float(_LPIPS.to(pred.device)(pred.permute(2, 0, 1)[None].clamp(0, 1), gt.permute(2, 0, 1)[None].clamp(0, 1)))
    except Exception:  # offline: the weights cannot be fetched
        _LPIPS = False
        return None


_LPIPS = None
