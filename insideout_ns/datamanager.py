"""Nerfstudio glue: a datamanager that serves whole views of both modalities.

Each training step gets one view: an RGB photograph (camera + RGBA image) or an X-ray projection
(camera + float line integrals), in turn, so that both populations train at the same pace. A camera's
`metadata["modality"]` says which ("rgb" or "xray"; the viewer's cameras have none), and X-ray cameras
carry `metadata["projection"]`.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Literal, Optional, Tuple, Type

import numpy as np
import torch
from torch import Tensor

from nerfstudio.cameras.cameras import Cameras
from nerfstudio.data.datamanagers.base_datamanager import DataManager
from nerfstudio.data.datamanagers.full_images_datamanager import FullImageDatamanagerConfig
from nerfstudio.data.datasets.base_dataset import InputDataset
from nerfstudio.utils.rich_utils import CONSOLE

from .dataparsers.dataparser import InsideOutDataParserConfig, XrayViews
from .dataparsers.resolution import bin_projection
from .dataparsers.scene_format import SceneFormatError, load_mask, read_ground_truth
from .init_points import StartingData, hull_surface, radiative_init, unmasked_start, visual_hull, xray_support


@dataclass
class InsideOutDataManagerConfig(FullImageDatamanagerConfig):
    """Whole views of both modalities, loaded once. Of nerfstudio's image-caching fields, `cache_images`
    ("gpu": on the model's device when they fit, "cpu": always in host memory, moved per step),
    `cache_images_type` (photographs kept as "uint8", a quarter of float32's memory, or "float32") and
    `camera_res_scale_factor` are honoured; a FullImageDatamanagerConfig also because `ns-render dataset`
    accepts no other kind."""

    _target: Type = field(default_factory=lambda: InsideOutDataManager)
    dataparser: InsideOutDataParserConfig = field(default_factory=InsideOutDataParserConfig)
    """Reads the paired scene format, an R2-Gaussian folder or a Data Exchange file."""
    cache_images_type: Literal["uint8", "float32"] = "uint8"
    """Photographs are kept as uint8 RGBA (made float on the device, per step) or as float32."""
    device_memory_fraction: float = 0.4
    """With cache_images "gpu": the views stay in host memory and move per step when they would take more
    than this share of the device's free memory."""
    xray_fraction: float = 0.5
    """Share of training steps that use an X-ray view (when both modalities are present)."""
    xray_views_per_step: Optional[int] = None
    """Projections an X-ray step fits (their data losses averaged, the step's regularisers once). None: as many as
    make a paired run fit as many projections as an X-ray-only run of as many steps (1 / xray_fraction: 2), and 1
    for a scene of X-rays alone (benchmarks/README.md, "What each modality gives the other")."""
    rgb_views_per_step: Optional[int] = None
    """Photographs an RGB step fits, as xray_views_per_step: None makes a paired run fit as many photographs as an
    RGB-only run (1 / (1 - xray_fraction): 2), at a fraction of an X-ray step's cost (benchmarks/README.md, "What
    each modality gives the other")."""
    num_rgb_points: int = 4000
    """Initial RGB Gaussians (points of the photographs' visual hull)."""
    num_radiative_points: int = 4000
    """Initial radiative Gaussians (from a back-projection of the projections)."""


@dataclass
class View:
    camera: Cameras  # [1], on the model's device
    batch: Dict  # as kept: "image" [H, W, 4] RGBA uint8 or float32 (RGB) or "xray" [H, W, 1] float32 line
    # integrals, "modality", "index", and for evaluation "object_mask" [H, W, 1]; on the device or the CPU

    def served(self, device) -> Tuple[Cameras, Dict]:
        """The camera and the batch as the model takes them: tensors on `device`, RGBA as float in [0, 1]."""
        batch = {k: v.to(device, non_blocking=True) if isinstance(v, Tensor) else v for k, v in self.batch.items()}
        if "image" in batch and batch["image"].dtype == torch.uint8:
            batch["image"] = batch["image"].float() / 255.0
        return self.camera, batch

    @property
    def nbytes(self) -> int:
        return sum(v.nbytes for v in self.batch.values() if isinstance(v, Tensor))


class ServedViews(Sequence):
    """Views served (View.served) as they are taken, so that only one is on the device at a time."""

    def __init__(self, views: List[View], device):
        self.views, self.device = views, device

    def __len__(self) -> int:
        return len(self.views)

    def __getitem__(self, i: int) -> Tuple[Cameras, Dict]:
        return self.views[i].served(self.device)


def _with_metadata(cameras: Cameras, i: int, **meta) -> Cameras:
    cam = cameras[i : i + 1]
    cam.metadata = dict(meta)
    return cam


def rgb_views(dataset: InputDataset, device, image_type: Literal["uint8", "float32"] = "uint8") -> List[View]:
    """Every photograph of a dataset as RGBA [H, W, 4] (uint8, or float32 in [0, 1]), on the CPU: alpha
    is the image's own alpha channel times its frame's `mask_path` mask where there is one (Nerfstudio's
    convention: non-zero = object), opaque where there is neither. Photographs may differ in size where
    their frames declare it; one that cannot be read, or whose size is not its declared one, is an error
    that names the file. Cameras go to `device`."""
    outputs = dataset._dataparser_outputs
    views = []
    for i in range(len(dataset)):
        file = outputs.image_filenames[i]
        w, h = int(dataset.cameras.width[i]), int(dataset.cameras.height[i])
        try:
            img = dataset.get_image_uint8(i) if image_type == "uint8" else dataset.get_image_float32(i)
        except (OSError, ValueError, SyntaxError) as err:  # truncated or corrupt files, from PIL
            raise SceneFormatError(file, "file_path", "a readable photograph (PNG or JPEG)", f"{type(err).__name__}: {err}") from err
        if tuple(img.shape[:2]) != (h, w):
            raise SceneFormatError(file, "w, h", f"a photograph of its declared size {w} x {h}",
                                   f"{img.shape[1]} x {img.shape[0]}")
        if img.shape[-1] == 3:
            opaque = torch.full_like(img[..., :1], 255 if img.dtype == torch.uint8 else 1)
            img = torch.cat([img, opaque], dim=-1)
        if outputs.mask_filenames is not None:  # a 0 / 1 mask: exact in either type
            img[..., 3:] *= torch.from_numpy(load_mask(outputs.mask_filenames[i], h, w, dataset.scale_factor)).to(img.dtype)
        cam = _with_metadata(dataset.cameras, i, modality="rgb")
        views.append(View(cam.to(device), {"image": img, "modality": "rgb", "index": i}))
    return views


def with_truth_masks(views: List[View], dataset: InputDataset, root: Path) -> List[View]:
    """Evaluation views of a generated capture without masks get the object's true mask as "object_mask"
    [H, W, 1] (the scene `root`'s ground_truth.json "object_masks": photograph -> mask file), for the
    object's PSNR."""
    outputs = dataset._dataparser_outputs
    masks = read_ground_truth(root).get("object_masks", {})
    for view in views:
        name = Path(outputs.image_filenames[view.batch["index"]]).relative_to(root).as_posix()
        if name in masks:
            w, h = int(view.camera.width[0]), int(view.camera.height[0])
            view.batch["object_mask"] = torch.from_numpy(load_mask(root / masks[name], h, w, dataset.scale_factor))
    return views


def with_clean_projections(views: List[View], xr: Optional[XrayViews], root: Path) -> List[View]:
    """Evaluation views of a generated noisy scan get their noise-free projection as "xray_clean" [H, W, 1]
    (the scene `root`'s ground_truth.json "xray_clean": projection -> .npy file, binned as the scan is), so
    that the model's X-ray is also scored against the truth rather than against the noise alone."""
    clean = read_ground_truth(root).get("xray_clean", {}) if xr is not None else {}
    for view in views if clean else []:
        name = xr.names[view.batch["index"]]
        if name in clean:
            raw = np.load(root / clean[name])
            h, w = view.batch["xray"].shape[:2]
            binned = bin_projection(raw.astype(np.float32), raw.shape[0] // h) if raw.ndim == 2 and raw.shape[0] >= h else raw
            if binned.shape != (h, w):
                raise SceneFormatError(root / "ground_truth.json", f"xray_clean[{name!r}]", f"the projection's {w} x {h} pixels, or its size "
                                       "before binning", f"shape {raw.shape}")
            view.batch["xray_clean"] = torch.from_numpy(binned)[..., None]
    return views


def xray_views(xr: Optional[XrayViews], device) -> List[View]:
    """Every projection as line integrals [H, W, 1] float32 on the CPU; cameras on `device`."""
    if xr is None:
        return []
    return [
        View(_with_metadata(xr.cameras, i, modality="xray", projection=xr.projection).to(device),
             {"xray": xr.projections[i][..., None], "modality": "xray", "index": i})
        for i in range(len(xr))
    ]


def keep_views(views: List[View], device, cache: Literal["cpu", "gpu"], fraction: float) -> str:
    """Moves the views' tensors to `device` when `cache` is "gpu" and they take at most `fraction` of its
    free memory (else they stay in host memory, pinned on CUDA, and move per step); says where, and why."""
    total = sum(v.nbytes for v in views)
    where, why = torch.device(device), ""
    if where.type == "cuda":
        free = torch.cuda.mem_get_info(where)[0]
        if cache == "cpu":
            where, why = torch.device("cpu"), " (cache_images cpu), moved per step"
        elif total > fraction * free:
            where, why = torch.device("cpu"), (f" ({total / free:.0%} of {where}'s free memory, over "
                                               f"device_memory_fraction {fraction:.0%}), moved per step")
    for v in views:
        for k, t in v.batch.items():
            if isinstance(t, Tensor):
                v.batch[k] = t.to(where) if where.type != "cpu" else (t.pin_memory() if torch.device(device).type == "cuda" else t)
    return f"{total / 2**20:.0f} MiB on {where}{why}"


class InsideOutDataManager(DataManager):
    config: InsideOutDataManagerConfig

    def __init__(self, config: InsideOutDataManagerConfig, device="cpu", test_mode: Literal["test", "val", "inference"] = "val",
                 world_size: int = 1, local_rank: int = 0, **kwargs):
        self.config = config
        self.device = device
        self.test_mode = test_mode
        self.world_size, self.local_rank = world_size, local_rank
        if config.data is not None:
            config.dataparser.data = Path(config.data)
        self.dataparser = config.dataparser.setup()
        self.train_dataparser_outputs = self.dataparser.get_dataparser_outputs("train")
        eval_split = "val" if test_mode in ("val", "inference") else "test"
        self.eval_dataparser_outputs = self.dataparser.get_dataparser_outputs(eval_split)
        scale = config.camera_res_scale_factor * self.train_dataparser_outputs.metadata.get("photo_scale", 1.0)
        self.train_dataset = InputDataset(self.train_dataparser_outputs, scale_factor=scale)
        self.eval_dataset = InputDataset(self.eval_dataparser_outputs, scale_factor=scale)
        kind = config.cache_images_type
        self.train_views = {"rgb": rgb_views(self.train_dataset, device, kind),
                            "xray": xray_views(self.train_dataparser_outputs.metadata["xray"], device)}
        self.eval_views = {"rgb": with_truth_masks(rgb_views(self.eval_dataset, device, kind), self.eval_dataset,
                                                   Path(self.config.dataparser.data)),
                           "xray": with_clean_projections(xray_views(self.eval_dataparser_outputs.metadata["xray"], device),
                                                          self.eval_dataparser_outputs.metadata["xray"],
                                                          Path(self.config.dataparser.data))}
        self._initial_points()
        cams = self.train_dataset.cameras  # where the viewer opens (viewer_controls.opening_pose), in every mode
        self.train_dataset.metadata["first_photograph"] = cams.camera_to_worlds[0].clone() if len(cams) else None
        self._keep_views()
        self._order: Dict[str, List[int]] = {"rgb": [], "xray": []}
        self._rng = random.Random(0)
        super().__init__()

    def get_extra_state(self) -> Dict:
        """The order of the views left in each modality's epoch and the shuffling stream, so that a resumed
        run fits the views the uninterrupted one would (kept in the checkpoint's pipeline state)."""
        return {"order": {m: list(v) for m, v in self._order.items()}, "rng": self._rng.getstate()}

    def set_extra_state(self, state: Dict) -> None:
        self._order = {m: list(v) for m, v in state["order"].items()}
        self._rng.setstate(state["rng"])

    def _initial_points(self):
        """The model's starting data (init_points.StartingData), passed on in the dataset's metadata as
        "start"; every fallback it had to take is logged. Outside training (ns-eval, ns-render, the viewer,
        insideout-export: test_mode "test" or "inference") a checkpoint replaces the Gaussians at once, so
        only placeholders are made: the hulls and the back-projection of a 100-view scene at 512^2 took
        minutes on every load."""
        rgb = self.train_views["rgb"]
        has_xray = self.train_dataparser_outputs.metadata["xray"] is not None and len(self.train_views["xray"]) > 0
        if self.test_mode != "val":
            self.train_dataset.metadata["start"] = StartingData.placeholder(bool(rgb), has_xray)
            return
        start = StartingData()
        if rgb:
            cams = self.train_dataset.cameras
            alphas = [v.batch["image"][..., 3:4] for v in rgb]  # [H, W, 1] each, as kept (sizes may differ)
            opaque = 128 if alphas[0].dtype == torch.uint8 else 0.5  # alpha < opaque: alpha < 0.5
            if max(float(a.max()) for a in alphas) < opaque:
                raise SceneFormatError(self.config.dataparser.data / "transforms.json", "mask_path / alpha",
                                       "an object in at least one photograph's mask (every mask is empty)")
            box = self.train_dataparser_outputs.scene_box.aabb.float()
            start.masked = any(float(a.min()) < opaque for a in alphas)
            sfm = self.train_dataparser_outputs.metadata.get("points3D_xyz")
            start.rgb_cameras = cams
            if start.masked:
                start.rgb_points, note = visual_hull(cams, alphas, box, self.config.num_rgb_points)
                start.notes += [note] if note else []
                start.hull_rgb = hull_surface(cams, alphas, box, parallel=False)
                start.rgb_masks = [a.clone() for a in alphas]  # a quarter of the RGBA views, wherever those go
            else:
                start.rgb_points, note = unmasked_start(sfm, box, self.config.num_rgb_points)
                start.notes += [note]
                start.sfm_points = sfm
        xr = self.train_dataparser_outputs.metadata["xray"]
        box_x = self.train_dataparser_outputs.metadata["xray_box"]
        if xr is not None and len(xr) > 0:
            parallel = xr.projection == "parallel"
            start.radiative, note = radiative_init(xr.cameras, xr.projections, box_x.float(), parallel,
                                                   self.config.num_radiative_points, ct=xr.volume if xr.from_ct else None)
            start.notes += [note] if note else []
            if rgb:  # the alignment's X-ray surface: the hull of the outlines (XrayViews.outlined: a CT's without its air)
                support = xray_support(xr.outlined)[..., None]
                start.hull_xray = hull_surface(xr.cameras, support, box_x.float(), parallel)
        for note in start.notes:
            CONSOLE.log(f"[yellow]InsideOut: {note}[/yellow]")
        self.train_dataset.metadata["start"] = start

    def _keep_views(self):
        """Puts the views where they are kept (keep_views) and logs what each modality takes."""
        for m, what in (("rgb", f"photographs ({self.config.cache_images_type} RGBA)"), ("xray", "projections (float32)")):
            views = self.train_views[m] + self.eval_views[m]
            if views:
                size = {tuple(v.batch["image" if m == "rgb" else "xray"].shape[:2]) for v in views}
                sizes = ", ".join(f"{w} x {h}" for h, w in sorted(size))
                kept = keep_views(views, self.device, self.config.cache_images, self.config.device_memory_fraction)
                CONSOLE.log(f"InsideOut: {len(views)} {what} of {sizes} px: {kept}")

    @property
    def modalities(self) -> Tuple[str, ...]:
        return tuple(m for m in ("rgb", "xray") if self.train_views[m])

    def views_per_step(self, modality: str) -> int:
        """The views of `modality` a step fits: the config's, or as many as the modality alone would fit."""
        given = self.config.xray_views_per_step if modality == "xray" else self.config.rgb_views_per_step
        if given is not None:
            return max(1, given)
        share = self.config.xray_fraction if modality == "xray" else 1.0 - self.config.xray_fraction
        return max(1, round(1 / share)) if len(self.modalities) == 2 else 1

    def modality_for_step(self, step: int) -> str:
        """RGB and X-ray in a fixed interleaving (xray_fraction of the steps are X-ray)."""
        mods = self.modalities
        if len(mods) == 1:
            return mods[0]
        f = self.config.xray_fraction
        return "xray" if int((step + 1) * f) > int(step * f) else "rgb"

    def _next(self, modality: str) -> View:
        if not self._order[modality]:  # a new epoch of this modality, shuffled
            self._order[modality] = list(range(len(self.train_views[modality])))
            self._rng.shuffle(self._order[modality])
        return self.train_views[modality][self._order[modality].pop()]

    def next_train(self, step: int) -> Tuple[Cameras, Dict]:
        self.train_count += 1
        return self._next(self.modality_for_step(step)).served(self.device)

    def next_train_views(self, step: int) -> List[Tuple[Cameras, Dict]]:
        """The views step `step` fits: next_train's, and the next ones of its modality up to views_per_step."""
        modality = self.modality_for_step(step)
        more = self.views_per_step(modality) - 1
        return [self.next_train(step)] + [self._next(modality).served(self.device) for _ in range(more)]

    def _eval_list(self) -> List[View]:
        return self.eval_views["rgb"] + self.eval_views["xray"]

    def next_eval(self, step: int) -> Tuple[Cameras, Dict]:
        self.eval_count += 1
        views = self._eval_list() or (self.train_views["rgb"] + self.train_views["xray"])
        return views[step % len(views)].served(self.device)

    def next_eval_image(self, step: int) -> Tuple[Cameras, Dict]:
        return self.next_eval(step)

    @property
    def fixed_indices_eval_dataloader(self) -> Sequence[Tuple[Cameras, Dict]]:
        """Every held-out view of both modalities, for ns-eval (served one at a time)."""
        return ServedViews(self._eval_list(), self.device)

    def get_train_rays_per_batch(self) -> int:
        cams = [v.camera for m in self.modalities for v in self.train_views[m][:1]]
        return int(cams[0].width * cams[0].height) if cams else 0

    def get_eval_rays_per_batch(self) -> int:
        return self.get_train_rays_per_batch()

    def get_datapath(self) -> Path:
        return self.config.dataparser.data

    def get_param_groups(self) -> Dict[str, List[torch.nn.Parameter]]:
        return {}

    def setup_train(self):
        """Views are loaded in the constructor (nothing is streamed)."""

    def setup_eval(self):
        """Views are loaded in the constructor (nothing is streamed)."""
