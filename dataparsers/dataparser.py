"""Nerfstudio glue: the `insideout-data` dataparser.

`--data` may be
- a paired scene folder (docs/scene_format.md): `transforms.json` and/or `xray/transforms.json` (or a CT volume,
  `ct/` or `ct.nii.gz`, whose exact projections from every side stand in for a scan: ct_volume.py),
  optional `calibration.json`;
- an R2-Gaussian scene folder (`meta_data.json`), X-ray only;
- a TomoPy Data Exchange `.h5` file, X-ray only.

The RGB views come out as nerfstudio's usual `image_filenames` + `cameras` (parsed by nerfstudio's own
`nerfstudio-data` parser with every re-orientation and re-scaling switched off, so the RGB frame stays the
file's frame); the X-ray views, in float precision and in the X-ray frame, in `metadata["xray"]`
(an :class:`XrayViews`); the calibration, if any, in `metadata["xray_to_rgb"]`. A scene without RGB has
zero RGB cameras; its model lives in the X-ray frame.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import List, Literal, Optional, Type

import numpy as np
import torch
from torch import Tensor

from nerfstudio.cameras.cameras import Cameras, CameraType
from nerfstudio.data.dataparsers.base_dataparser import DataParser, DataParserConfig, DataparserOutputs
from nerfstudio.data.dataparsers.nerfstudio_dataparser import Nerfstudio, NerfstudioDataParserConfig
from nerfstudio.data.scene_box import SceneBox
from nerfstudio.plugins.registry_dataparser import DataParserSpecification
from nerfstudio.utils.rich_utils import CONSOLE

from .ct_volume import MU_WATER, VIRTUAL_RES, VIRTUAL_VIEWS, CtVolume, Values, ct_in_scene, read_ct_volume, virtual_scan
from .readers import read_dxchange, read_r2gaussian
from .resolution import auto_factor, memory_budget
from .scene_format import (SceneFormatError, Volume, XrayScan, check_rgb_transforms, load_json, read_calibration,
                           read_point_cloud, read_rgb_cameras, read_xray_cameras, read_xray_scan)


class _Photographs(Nerfstudio):
    """Nerfstudio's parser of `transforms.json`, its SfM points read with plyfile rather than open3d (which
    Nerfstudio imports for this alone, and which a machine may lack: the GPU images this project is checked on do)."""

    def _load_3D_points(self, ply_file_path: Path, transform_matrix: Tensor, scale_factor: float):
        points, colours = (torch.from_numpy(a) for a in read_point_cloud(ply_file_path))  # [P, 3] each
        # into Nerfstudio's frame as its own reader does: scale * (R p + t), transform_matrix [3, 4]
        points = scale_factor * (points @ transform_matrix[:3, :3].T + transform_matrix[:3, 3])
        return {"points3D_xyz": points, "points3D_rgb": colours}


@dataclass
class XrayViews:
    """The X-ray views of one split, ready for a model (torch, float32)."""

    cameras: Cameras  # [N] OpenGL c2w in the X-ray frame; PERSPECTIVE (cone) or ORTHOPHOTO (parallel, fx = 1/pixel size)
    projections: Tensor  # [N, H, W] float32 line integrals in X-ray-frame units
    names: List[str]  # [N]
    projection: Literal["cone", "parallel"]
    volume: Optional[Volume] = None  # attenuation in the X-ray frame: a generated scene's truth, or a CT scene's inside
    from_ct: bool = False  # the views are a CT's virtual scan, and `volume` is that CT: data to fit, not only to score
    seen: Optional[Tensor] = None  # [N, H, W] the line integrals of what photographs see, where the views show more (XrayScan.seen)

    def __len__(self) -> int:
        return len(self.names)

    @property
    def outlined(self) -> Tensor:  # [N, H, W]
        """The line integrals whose outlines are the object's, as photographs see it: the alignment's hulls and silhouettes."""
        return self.projections if self.seen is None else self.seen


def nerfstudio_cameras(projection: str, intrinsics: np.ndarray, camtoworlds: np.ndarray, widths, heights) -> Cameras:
    """Nerfstudio cameras of the format's cameras: intrinsics [N, 4] (fx, fy, cx, cy), camtoworlds [N, 4, 4],
    widths / heights [N] or one int. Cone beam (and photographs) -> PERSPECTIVE; parallel -> ORTHOPHOTO,
    whose ray generator puts the ray of pixel (u, v) at ((u + 0.5 - cx) / fx, -(v + 0.5 - cy) / fy, 0),
    exactly the format's parallel beam."""
    intr = torch.from_numpy(np.asarray(intrinsics)).float()
    size = [torch.as_tensor(np.asarray(v)).long().reshape(-1, 1) if np.ndim(v) else int(v) for v in (widths, heights)]
    return Cameras(
        camera_to_worlds=torch.from_numpy(np.asarray(camtoworlds)[:, :3, :]).float(),
        fx=intr[:, 0:1], fy=intr[:, 1:2], cx=intr[:, 2:3], cy=intr[:, 3:4], width=size[0], height=size[1],
        camera_type=CameraType.PERSPECTIVE if projection == "cone" else CameraType.ORTHOPHOTO,
    )


def xray_cameras(scan: XrayScan, indices: np.ndarray) -> Cameras:
    """Nerfstudio cameras of the chosen views of a scan."""
    return nerfstudio_cameras(scan.projection, scan.intrinsics[indices], scan.camtoworlds[indices], scan.width, scan.height)


def field_of_view_points(scan: XrayScan, n: int = 33) -> np.ndarray:  # [M, 3]
    """Points of a grid around the origin that every view sees (the region a scan can reconstruct)."""
    # The detector's corners carried back to the depth of the origin bound the grid, axis by axis
    corners = []
    for c2w, (fx, fy, cx, cy) in zip(scan.camtoworlds, scan.intrinsics):
        depth = float(np.linalg.norm(c2w[:3, 3])) if scan.projection == "cone" else 1.0
        for u, v in ((0, 0), (scan.width, 0), (0, scan.height), (scan.width, scan.height)):
            cam = np.array([(u - cx) / fx * depth, -(v - cy) / fy * depth, 0.0])
            corners.append(c2w[:3, :3] @ cam)
    reach = np.abs(np.array(corners)).max(axis=0)
    axes = [np.linspace(-r, r, n) for r in reach]
    pts = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, 3)
    seen = np.ones(len(pts), dtype=bool)
    for c2w, (fx, fy, cx, cy) in zip(scan.camtoworlds, scan.intrinsics):
        cam = (pts - c2w[:3, 3]) @ c2w[:3, :3]  # OpenGL camera coordinates
        depth = -cam[:, 2]
        scale = depth if scan.projection == "cone" else np.ones_like(depth)
        u = fx * cam[:, 0] / np.maximum(scale, 1e-9) + cx
        v = -fy * cam[:, 1] / np.maximum(scale, 1e-9) + cy
        seen &= (depth > 0) & (u >= 0) & (u <= scan.width) & (v >= 0) & (v <= scan.height)
    if not seen.any():
        raise SceneFormatError("<x-ray views>", "transform_matrix", "views that share a common field of view")
    return pts[seen]


def _empty_cameras() -> Cameras:
    z = torch.zeros(0, 1)
    return Cameras(camera_to_worlds=torch.zeros(0, 3, 4), fx=z, fy=z, cx=z, cy=z,
                   width=torch.zeros(0, 1, dtype=torch.long), height=torch.zeros(0, 1, dtype=torch.long))


def _box_around(points: np.ndarray) -> SceneBox:
    lo, hi = points.min(axis=0), points.max(axis=0)
    pad = 0.05 * (hi - lo) + 1e-6 * max(float((hi - lo).max()), 1.0)
    return SceneBox(aabb=torch.tensor(np.stack([lo - pad, hi + pad]), dtype=torch.float32))


@dataclass
class InsideOutDataParserConfig(DataParserConfig):
    """Paired RGB + X-ray scenes (and X-ray-only public layouts)."""

    _target: Type = field(default_factory=lambda: InsideOutDataParser)
    data: Path = Path()
    """Scene folder, R2-Gaussian folder, or Data Exchange .h5 file."""
    downscale_factor: Optional[int] = None
    """Downscale factor of the photographs, nerfstudio's convention (images_N/ where it exists, else resized
    on load); None: automatic, the smallest power of two that brings them within 1600 px and a quarter of
    memory (logged when it is not 1)."""
    xray_binning: Optional[int] = None
    """Bin the projections b x b (the mean; the detector geometry follows), as CT users do with large
    detectors; None: automatic, by the photographs' rule (float32 values; logged when it is not 1)."""
    dxchange_pixel_size: float = 1.0
    """Detector pixel size of a Data Exchange scan (its files do not say)."""
    dxchange_rotation_center: Optional[float] = None
    """Rotation-axis column of a Data Exchange scan (TomoPy convention); default the middle."""
    ct_values: Values = "auto"
    """A CT scene's values: "hu" (Hounsfield units), "attenuation" (per mm), or "auto" (HU for a DICOM CT or where
    air is near -1000, attenuation where every value is within 0-10; anything else asks)."""
    ct_intercept: float = 0.0
    """Added to a CT's values before they are read as HU (-1024 for CT numbers stored with air at 0)."""
    mu_water: float = MU_WATER
    """Attenuation of water per mm: HU become mu_water (1 + HU / 1000)."""
    ct_views: int = VIRTUAL_VIEWS
    """Directions of a CT scene's virtual scan (its exact projections, over the whole sphere)."""
    ct_resolution: int = VIRTUAL_RES
    """The virtual scan's detector, pixels a side at most."""


class InsideOutDataParser(DataParser):
    config: InsideOutDataParserConfig

    def __init__(self, config: InsideOutDataParserConfig):
        super().__init__(config)
        self._scan: Optional[XrayScan] = None  # read once, shared by every split
        self._ct: Optional[CtVolume] = None  # a CT scene's volume
        self._photo_factor: Optional[int] = None

    def _factor(self, given: Optional[int], name: str, what: str, n: int, h: int, w: int, bytes_per_pixel: int) -> int:
        """A given factor (checked), or the automatic one, logged with its reason when it is not 1."""
        if given is not None:
            if not isinstance(given, int) or given < 1:
                raise ValueError(f"--pipeline.datamanager.dataparser.{name} must be a positive integer, got {given!r}")
            return given
        factor, why = auto_factor(n, h, w, bytes_per_pixel, memory_budget())
        if factor > 1:
            CONSOLE.log(f"InsideOut: {what} {factor} x {factor} ({why}; --pipeline.datamanager.dataparser.{name} to choose)")
        return factor

    def _read_scan(self) -> Optional[XrayScan]:
        if self._scan is None:
            data, c = self.config.data, self.config
            scan, ours = None, data / "xray" / "transforms.json"
            ct = ct_in_scene(data) if data.is_dir() else None
            if ct is not None and ours.is_file():
                raise SceneFormatError(data, "xray/ and ct", "the inside as projections or as a CT volume, not both",
                                       [str(ours), str(ct)])
            if ct is not None:
                return self._read_ct(ct)
            if data.is_file() and data.suffix.lower() in (".h5", ".hdf5"):
                scan = read_dxchange(data, c.dxchange_pixel_size, c.dxchange_rotation_center)
            elif (data / "meta_data.json").is_file():
                scan = read_r2gaussian(data)
            elif not ours.is_file():
                return None
            if scan is None:  # the scene format: its projections are binned as each is read
                cams = read_xray_cameras(ours)
                shape = (len(cams.names), int(cams.heights[0]), int(cams.widths[0]))
            else:
                shape = scan.values.shape
            b = self._factor(c.xray_binning, "xray-binning", "X-ray projections binned", *shape, 4)
            self._scan = read_xray_scan(ours, binning=b) if scan is None else scan.binned(b)
        return self._scan

    def _read_ct(self, path: Path) -> XrayScan:
        """A CT scene's volume (ct_volume.py) and its virtual scan, said in the log."""
        c = self.config
        self._ct = read_ct_volume(path, c.ct_values, c.mu_water, c.ct_intercept)
        CONSOLE.log(f"InsideOut: the CT {path.name} ({' x '.join(map(str, self._ct.mu.shape))} voxels of "
                    f"{' x '.join(f'{s:.3g}' for s in self._ct.spacing)} mm): {self._ct.rule}")
        self._scan = virtual_scan(self._ct, c.ct_views, c.ct_resolution)
        CONSOLE.log(f"InsideOut: its virtual scan: {c.ct_views} parallel projections of {self._scan.width} px from "
                    "every side, exact (--pipeline.datamanager.dataparser.ct-views / ct-resolution)")
        return self._scan

    def _photograph_factor(self) -> int:
        """The photographs' downscale factor (chosen once, for every split), from their declared sizes."""
        if self._photo_factor is None:
            cams = read_rgb_cameras(self.config.data / "transforms.json")
            self._photo_factor = self._factor(self.config.downscale_factor, "downscale-factor", "photographs downscaled",
                                              len(cams.names), int(cams.heights.max()), int(cams.widths.max()), 4)
        return self._photo_factor

    def _generate_dataparser_outputs(self, split: str = "train", **kwargs) -> DataparserOutputs:
        data = self.config.data
        has_rgb = data.is_dir() and (data / "transforms.json").is_file()
        scan = self._read_scan() if data.exists() else None
        if not has_rgb and scan is None:
            raise SceneFormatError(
                data, "<scene>",
                "a folder with transforms.json and/or xray/transforms.json, an R2-Gaussian folder with "
                "meta_data.json, or a Data Exchange .h5 file",
            )
        metadata = {"xray": None, "xray_to_rgb": None, "xray_box": None}
        if scan is not None:
            box = scan.volume.aabb if scan.volume is not None else field_of_view_points(scan)
            metadata["xray_box"] = _box_around(box).aabb  # where the scan can see, in the X-ray frame
            idx = scan.splits[split if split in scan.splits else "test"]
            metadata["xray"] = XrayViews(
                cameras=xray_cameras(scan, idx),
                projections=torch.from_numpy(scan.values[idx]),
                names=[scan.names[i] for i in idx],
                projection=scan.projection,
                volume=scan.volume,
                from_ct=self._ct is not None,
                seen=None if scan.seen is None else torch.from_numpy(scan.seen[idx]),
            )
        # a CT's frame is its grid's axes; what users read and write is in its patient frame (ct_volume.py)
        patient = self._ct.patient_from_frame if self._ct is not None else np.eye(4)
        metadata["patient_from_frame"] = torch.from_numpy(patient).float()
        metadata["ct_mu_water"] = self._ct.mu_water if self._ct is not None else None  # a CT in HU: exports write HU
        if (data / "calibration.json").is_file():
            metadata["xray_to_rgb"] = torch.from_numpy(read_calibration(data / "calibration.json") @ patient).float()

        if has_rgb:
            check_rgb_transforms(data / "transforms.json")
            meta = load_json(data / "transforms.json")
            sfm = meta.get("ply_file_path")  # SfM points (ns-process-data's sparse_pc.ply)
            factor = self._photograph_factor()
            folder = factor > 1 and all((data / f"images_{factor}" / Path(fr["file_path"]).name).is_file()
                                        for fr in meta["frames"])  # nerfstudio's pre-shrunk copies
            scale = 1.0 if folder else 1.0 / factor
            ns_config = NerfstudioDataParserConfig(
                _target=_Photographs, data=data, scale_factor=1.0, scene_scale=1.0,
                downscale_factor=factor if folder else 1, orientation_method="none", center_method="none",
                auto_scale_poses=False, eval_mode="interval", eval_interval=8, load_3D_points=sfm is not None,
            )
            rgb = ns_config.setup().get_dataparser_outputs(split)
            if scale != 1.0:  # no images_N/ folder: InputDataset resizes each photograph (and its cameras) on load
                rgb.metadata["photo_scale"] = scale
            # The box that the cameras surround (the photographed object is inside it)
            all_c2w = np.array([fr["transform_matrix"] for fr in meta["frames"]])
            return replace(rgb, scene_box=_box_around(all_c2w[:, :3, 3]), metadata={**rgb.metadata, **metadata})

        # X-ray only: the model lives in the X-ray frame
        assert scan is not None
        return DataparserOutputs(image_filenames=[], cameras=_empty_cameras(), scene_box=SceneBox(metadata["xray_box"]),
                                 metadata=metadata)


insideout_dataparser = DataParserSpecification(
    config=InsideOutDataParserConfig(),
    description="Paired RGB photographs + X-ray projections (InsideOut scene format), or X-ray-only public layouts",
)
