"""A reconstructed CT as the inside: read with SimpleITK (a DICOM series, NIfTI, NRRD, MetaImage), its values made
attenuation per millimetre, and the exact projections of it that stand in for a scan.

Frames. SimpleITK gives every volume in the scanner's patient frame (LPS, millimetres): voxel (i, j, k) lies at
`origin + direction @ (spacing * (i, j, k))`. A CT scene's X-ray frame is that frame turned onto the grid's axes,
`p_frame = direction^T p_LPS` (the identity for the usual axis-aligned CT), so that the grid is the scene format's
axis-aligned `Volume`; `CtVolume.patient_from_frame` turns it back, for everything a user sees (alignment.json,
calibration.json, the exports).

Values. Hounsfield units (a DICOM CT series, whose rescale slope and intercept SimpleITK applies, or any volume
whose air is near -1000) become `mu_water (1 + HU / 1000)`, clipped at 0; values that already are attenuation per
millimetre are kept. `CtVolume.rule` says which was taken, for the log.

Example:
    >>> from insideout_ns.dataparsers.ct_volume import read_ct_volume
    >>> ct = read_ct_volume("data/ct/headsq.mha", values="hu", intercept=-1024)
    >>> ct.mu.shape, ct.spacing.round(2).tolist()
    ((64, 64, 93), [3.2, 3.2, 1.5])
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from .cameras import pixel_rays, sphere_orbit
from .scene_format import SceneFormatError, Volume, XrayScan, interval_splits

Values = Literal["auto", "hu", "attenuation"]
CT_FILES = ("ct.nii.gz", "ct.nii", "ct.nrrd", "ct.mha", "ct.mhd")  # a scene's CT as one file (or the folder ct/)
MU_WATER = 0.02  # attenuation of water per mm at diagnostic energies
SLICE_TOLERANCE = 0.01  # slice gaps may differ from the series' by this fraction (a missing slice doubles one)


@dataclass
class CtVolume:
    """A CT as attenuation per mm on its grid, with its place in the patient frame."""

    mu: np.ndarray  # [nx, ny, nz] float32, index (i, j, k) along the grid's axes
    spacing: np.ndarray  # [3] mm
    origin: np.ndarray  # [3] LPS mm: the centre of voxel (0, 0, 0)
    direction: np.ndarray  # [3, 3] LPS directions of the grid's axes (columns), orthonormal and right-handed
    rule: str  # how the file's values became attenuation (for the log)
    mu_water: Optional[float] = None  # the HU rule's, where the values were Hounsfield units (exports write HU again)

    @property
    def patient_from_frame(self) -> np.ndarray:  # [4, 4] the X-ray frame (grid axes) -> LPS
        m = np.eye(4)
        m[:3, :3] = self.direction
        return m

    def volume(self) -> Volume:
        """The grid in the X-ray frame (direction^T LPS), as the scene format's axis-aligned volume."""
        low = self.direction.T @ self.origin - 0.5 * self.spacing  # the corner of voxel (0, 0, 0)
        return Volume(self.mu, np.stack([low, low + self.spacing * np.array(self.mu.shape)]))


def ct_in_scene(root: Path) -> Optional[Path]:
    """The scene's CT: the folder ct/ (a DICOM series) or one of CT_FILES; None where there is none. Two CTs
    are an error naming both."""
    found = [root / n for n in CT_FILES if (root / n).is_file()] + ([root / "ct"] if (root / "ct").is_dir() else [])
    if len(found) > 1:
        raise SceneFormatError(root, "ct", "one CT volume (ct/ or one of " + ", ".join(CT_FILES) + ")",
                               [p.name for p in found])
    return found[0] if found else None


def read_ct_volume(path: Path | str, values: Values = "auto", mu_water: float = MU_WATER, intercept: float = 0.0
                   ) -> CtVolume:
    """A CT volume file or DICOM series folder, as attenuation per mm (module docstring). `intercept` is added to
    the values before they are taken as HU (e.g. -1024 for CT numbers stored with air at 0)."""
    import SimpleITK as sitk

    path = Path(path)
    image = read_dicom_series(path) if path.is_dir() else read_image(path)
    if image.GetDimension() != 3 or min(image.GetSize()) < 2:
        raise SceneFormatError(path, "<volume>", "a 3-D volume (at least 2 voxels along each axis)", list(image.GetSize()))
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise SceneFormatError(path, "<volume>", "one value a voxel", f"{image.GetNumberOfComponentsPerPixel()} components")
    raw = sitk.GetArrayViewFromImage(image).transpose(2, 1, 0)  # SimpleITK's [z, y, x] -> [x, y, z], no copy
    spacing = np.array(image.GetSpacing(), dtype=np.float64)
    direction = np.array(image.GetDirection(), dtype=np.float64).reshape(3, 3)
    if raw.dtype.kind == "f" and not np.all(np.isfinite(raw)):
        raise SceneFormatError(path, "<values>", "finite values", f"{int((~np.isfinite(raw)).sum())} non-finite voxels")
    if not np.all(spacing > 0) or not np.allclose(direction.T @ direction, np.eye(3), atol=1e-4):
        raise SceneFormatError(path, "spacing / direction", "positive spacings and orthonormal axes",
                               {"spacing": spacing.tolist(), "direction": direction.round(4).tolist()})
    origin = np.array(image.GetOrigin(), dtype=np.float64)
    voxels = np.ascontiguousarray(raw, dtype=np.float32)  # the one copy: the conversion below works in place
    if intercept:
        voxels += np.float32(intercept)
    mu, rule = to_attenuation(voxels, values, mu_water, path, dicom=path.is_dir())
    del raw, image  # the file's voxels (a 512 x 512 x 300 series: 150 MB of int16), once they are attenuation
    if np.linalg.det(direction) < 0:  # a mirrored grid (a radiological NIfTI, say): its slices read the other way round
        mu = np.ascontiguousarray(mu[:, :, ::-1])
        origin = origin + direction[:, 2] * spacing[2] * (mu.shape[2] - 1)
        direction = direction * np.array([1.0, 1.0, -1.0])
    return CtVolume(mu, spacing, origin, direction, rule, mu_water if rule.startswith("Hounsfield") else None)


def read_image(path: Path):
    """One volume file through SimpleITK (NIfTI, NRRD, MetaImage, ...), its errors as SceneFormatError."""
    import SimpleITK as sitk

    if not path.is_file():
        raise SceneFormatError(path, "<file>", "an existing CT volume file")
    try:
        return sitk.ReadImage(str(path))
    except RuntimeError as err:  # SimpleITK's reader: an unknown or broken file
        raise SceneFormatError(path, "<file>", "a volume SimpleITK can read (NIfTI, NRRD, MetaImage, ...)",
                               str(err).strip().splitlines()[-1]) from err


def read_dicom_series(folder: Path):
    """The one DICOM CT series of a folder, slices ordered by their positions along the slice normal (never by
    file name), checked for one series, the CT modality and evenly spaced slices (a missing slice is refused)."""
    import pydicom
    import SimpleITK as sitk

    ids = sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder))
    if not ids:
        raise SceneFormatError(folder, "<DICOM series>", "a folder holding one DICOM series", "no DICOM files")
    if len(ids) > 1:
        counts = {uid: len(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), uid)) for uid in ids}
        raise SceneFormatError(folder, "SeriesInstanceUID", "one series in the folder (move the others out)",
                               {uid: f"{n} files" for uid, n in counts.items()})
    files = sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), ids[0])
    headers = [pydicom.dcmread(f, stop_before_pixels=True) for f in files]
    modality = str(getattr(headers[0], "Modality", ""))
    if modality != "CT":
        raise SceneFormatError(files[0], "Modality (0008,0060)", '"CT"', modality)
    if len(files) < 2:
        raise SceneFormatError(folder, "<DICOM series>", "a volume of at least 2 slices", f"{len(files)} slice")
    for f, h in zip(files, headers):
        for tag, name in (("ImageOrientationPatient", "(0020,0037)"), ("ImagePositionPatient", "(0020,0032)")):
            if getattr(h, tag, None) is None:
                raise SceneFormatError(f, f"{tag} {name}", "a CT slice's place in the patient frame (the tag is missing)")
    row, col = (np.array(headers[0].ImageOrientationPatient[i : i + 3], dtype=np.float64) for i in (0, 3))
    normal = np.cross(row, col)
    depth = np.array([float(np.dot(normal, np.array(h.ImagePositionPatient, dtype=np.float64))) for h in headers])
    order = np.argsort(depth)
    gaps = np.diff(depth[order])
    typical = float(np.median(gaps))
    if typical <= 0 or np.abs(gaps - typical).max() > SLICE_TOLERANCE * typical:
        worst = int(np.argmax(np.abs(gaps - typical)))
        raise SceneFormatError(files[order[worst + 1]], "ImagePositionPatient (0020,0032)",
                               f"evenly spaced slices ({typical:.4g} mm apart: is a slice missing?)",
                               f"{gaps[worst]:.4g} mm from the slice before")
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames([files[i] for i in order])
    return reader.Execute()


def to_attenuation(values: np.ndarray, rule: Values, mu_water: float, path: Path, dicom: bool) -> Tuple[np.ndarray, str]:
    """Attenuation per mm [same shape] float32 (`values`, float32, converted in place) and the rule taken (a
    sentence). "auto": HU for a DICOM CT or where the air is near -1000 (values below -500), attenuation where every
    value is within [-0.1, 10] per mm (a metal's); anything else is ambiguous and an error asks for the rule."""
    low, high = float(values.min()), float(values.max())
    if rule == "auto":
        if dicom or low < -500:
            rule = "hu"
        elif -0.1 <= low and high <= 10:
            rule = "attenuation"
        else:
            raise SceneFormatError(path, "<values>", "Hounsfield units (air near -1000) or attenuation per mm (0 to 10): "
                                   "say which with --pipeline.datamanager.dataparser.ct-values hu|attenuation (and "
                                   "--pipeline.datamanager.dataparser.ct-intercept -1024 for CT numbers whose air is 0)",
                                   f"values from {low:.4g} to {high:.4g}")
    if rule == "hu":
        mu = attenuation_of(values, mu_water, out=values)
        how = (f"Hounsfield units (from {low:.0f} to {high:.0f}) as mu_water (1 + HU / 1000), mu_water {mu_water:g} / mm, "
               "clipped at 0")
    else:
        mu = values
        how = f"attenuation per mm as it is (from {low:.4g} to {high:.4g})"
    return np.ascontiguousarray(mu, dtype=np.float32), how + f": attenuation from {float(mu.min()):.4g} to {float(mu.max()):.4g} / mm"


def attenuation_of(hu: np.ndarray, mu_water: float = MU_WATER, out: Optional[np.ndarray] = None) -> np.ndarray:
    """The HU rule: mu_water (1 + HU / 1000) per mm, clipped at 0 (float32); `out` (float32, `hu` itself allowed)
    spares a clinical volume's copies."""
    mu = np.divide(hu, np.float32(1000), out=out, dtype=np.float32)
    mu += np.float32(1)
    mu *= np.float32(mu_water)
    return np.maximum(mu, np.float32(0), out=mu)


class VoxelField:
    """The trilinear interpolant of a volume's voxels (zero outside the grid), on `device`: its samples and its line
    integrals, by the midpoint rule with steps of at most half the smallest voxel, over each ray's span inside the
    grid (a CT scene's projections, and the generator's)."""

    def __init__(self, volume: Volume, device: str | torch.device = "cpu"):
        self._volume = volume
        self.device = torch.device(device)
        # grid_sample wants [1, 1, D, H, W] = [1, 1, nz, ny, nx] and (x, y, z) coordinates in [-1, 1]
        self._grid = torch.from_numpy(volume.values).permute(2, 1, 0)[None, None].float().to(self.device)
        self.step = 0.5 * float(volume.spacing.min())

    def volume(self) -> Volume:
        return self._volume

    def sample(self, points: torch.Tensor) -> torch.Tensor:  # [..., 3] -> [...]
        box = torch.from_numpy(self._volume.aabb).to(points)
        unit = 2.0 * (points - box[0]) / (box[1] - box[0]) - 1.0  # voxel edges at -1 and +1 (align_corners=False)
        out = F.grid_sample(self._grid.to(points), unit.reshape(1, 1, 1, -1, 3), align_corners=False, padding_mode="zeros")
        return out.reshape(points.shape[:-1])

    def march(self, origins: torch.Tensor, dirs: torch.Tensor):
        """Each ray's span inside the grid (and the half voxel around it where the interpolant fades) cut into n equal
        steps of at most `self.step`: (sample points [R, K, 3], step lengths [R], valid [R, K], sample parameters
        [R, K]); origins, dirs [R, 3] float64."""
        half = torch.from_numpy(0.5 * self._volume.spacing).to(origins)  # the interpolant fades to 0 half a voxel out
        box = torch.from_numpy(self._volume.aabb).to(origins) + torch.stack([-half, half])
        t_a, t_b = (box[0] - origins) / dirs, (box[1] - origins) / dirs  # slab method (inf or nan where d = 0)
        t_in = torch.minimum(t_a, t_b).nan_to_num(nan=-torch.inf).amax(dim=-1).clamp(min=0.0)
        t_out = torch.maximum(t_a, t_b).nan_to_num(nan=torch.inf).amin(dim=-1)
        length = (t_out - t_in).clamp(min=0.0)
        n = torch.ceil(length / self.step).long()
        dt = torch.where(n > 0, length / n.clamp(min=1), 0.0)
        j = torch.arange(max(int(n.max()), 1), device=origins.device)[None, :]
        t = t_in[:, None] + (j + 0.5) * dt[:, None]  # midpoints of the n steps
        return origins[:, None, :] + t[..., None] * dirs[:, None, :], dt, j < n[:, None], t

    def rays(self, origins: np.ndarray, dirs: np.ndarray) -> Tuple[torch.Tensor, torch.Tensor]:
        """Ray origins and directions [R, 3] as float64 tensors on the field's device."""
        return tuple(torch.from_numpy(np.ascontiguousarray(a, np.float64)).to(self.device) for a in (origins, dirs))

    def line_integrals(self, origins: np.ndarray, dirs: np.ndarray) -> np.ndarray:  # [R, 3], [R, 3] -> [R]
        pts, dt, valid, _ = self.march(*self.rays(origins, dirs))
        mu = self.sample(pts.float()).double() * valid
        return (mu.sum(dim=1) * dt).cpu().numpy()


VIRTUAL_VIEWS = 72  # directions of a CT scene's virtual scan, over the whole sphere
VIRTUAL_RES = 128  # its detector's pixels a side, at most
AIR_HU = -500.0  # the air / soft-tissue boundary: a CT's object, as photographs see it, is what lies above it
RAYS_PER_CHUNK = 4096  # rays marched at a time (memory: rays x samples x 3 doubles)


def virtual_scan(ct: CtVolume, views: int = VIRTUAL_VIEWS, max_res: int = VIRTUAL_RES, device: str = "cpu") -> XrayScan:
    """Parallel projections of the CT's voxels (VoxelField) from `views` directions spread over the sphere
    (elevations from -80 to 80 degrees: directions no scanner's orbit takes too), on a square detector over the
    grid's bounding ball, its pixels the CT's finest spacing or coarser (at most `max_res` a side); every 8th view is
    held out. They stand in for a scan: the X-ray loss uses them as any. The alignment's hulls and silhouettes use
    `seen`, the projections of the CT's object without its air (without_air), where the CT has air to remove."""
    vol = ct.volume()
    centre, radius = vol.aabb.mean(axis=0), 0.5 * float(np.linalg.norm(vol.aabb[1] - vol.aabb[0]))
    pixel = max(float(ct.spacing.min()), 2.0 * radius / max_res)
    res = int(np.ceil(2.0 * radius / pixel))
    c2ws = sphere_orbit(views, 2.0 * radius, centre, np.array([0.0, 0.0, 1.0]), elev_deg=(-80.0, 80.0))
    intr = np.array([1.0 / pixel, 1.0 / pixel, res / 2.0, res / 2.0])
    values = projections(VoxelField(vol, device), c2ws, intr, res)
    air = float(attenuation_of(np.array([AIR_HU]), ct.mu_water or MU_WATER)[0])  # a CT in attenuation: the default water's
    obj = without_air(vol, air, pixel)
    seen = None if obj is None else projections(VoxelField(obj, device), c2ws, intr, res)
    return XrayScan("parallel", res, res, np.tile(intr, (views, 1)), c2ws, values, [f"ct/virtual_{i:04d}" for i in range(views)],
                    interval_splits(views), vol, seen=seen)


def projections(field: VoxelField, c2ws: np.ndarray, intr: np.ndarray, res: int) -> np.ndarray:  # -> [V, res, res]
    """The field's parallel projections onto a res x res detector of intrinsics `intr` [4] from each camera of `c2ws`
    [V, 4, 4], in chunks of rays."""
    values = np.empty((len(c2ws), res, res), np.float32)
    for i, c2w in enumerate(c2ws):
        o, d = (a.reshape(-1, 3) for a in pixel_rays(c2w, intr, res, res, "parallel"))
        values[i] = np.concatenate([field.line_integrals(o[s : s + RAYS_PER_CHUNK], d[s : s + RAYS_PER_CHUNK])
                                    for s in range(0, len(o), RAYS_PER_CHUNK)]).reshape(res, res)
    return values


def without_air(vol: Volume, air: float, pixel: float) -> Optional[Volume]:
    """The CT's object as photographs see it: voxels at or below `air` (attenuation per mm of the air / soft-tissue
    boundary, AIR_HU) set to 0, since a scanner's air often reads above 0 (an offset, noise) and would make the whole
    field of view the object; averaged in blocks at most a detector pixel `pixel` wide (outlines need no finer grid).
    None where no voxel lies in (0, air]: nothing to remove.

    >>> vol = Volume(np.array([[[0.0025, 0.02], [0.0, 0.03]]], np.float32).repeat(2, 0), np.array([[0.0] * 3, [2.0] * 3]))
    >>> without_air(vol, 0.01, 1.0).values[0].tolist()
    [[0.0, 0.019999999552965164], [0.0, 0.029999999329447746]]
    >>> without_air(Volume(np.zeros((2, 2, 2), np.float32), vol.aabb), 0.01, 1.0) is None
    True
    """
    from skimage.measure import block_reduce

    block = np.maximum(1, (pixel // vol.spacing).astype(int))  # voxels a block along each axis: at most a pixel wide
    coarse, any_air = [], False
    for k in range(0, vol.values.shape[2], block[2]):  # a slab at a time: no copy of a clinical volume
        slab = vol.values[:, :, k : k + block[2]]
        air_here = slab <= air
        any_air = any_air or bool(np.any(air_here & (slab > 0)))
        coarse.append(block_reduce(np.where(air_here, np.float32(0), slab), tuple(block), np.mean, cval=0.0,
                                   func_kwargs={"dtype": np.float32}))
    if not any_air:
        return None
    coarse = np.concatenate(coarse, axis=2)
    return Volume(coarse, np.stack([vol.aabb[0], vol.aabb[0] + vol.spacing * block * np.array(coarse.shape)]))


def hounsfield(mu: np.ndarray, mu_water: float = MU_WATER) -> np.ndarray:
    """Attenuation per mm back to Hounsfield units (the inverse of the HU rule; air, at 0, is -1000)."""
    return 1000.0 * (mu / mu_water - 1.0)


def sitk_image(values: np.ndarray, spacing: np.ndarray, origin: np.ndarray, direction: np.ndarray):
    """A SimpleITK image of values [nx, ny, nz] on the grid (spacing [3], origin [3] and direction [3, 3] in LPS)."""
    import SimpleITK as sitk

    image = sitk.GetImageFromArray(np.ascontiguousarray(values.transpose(2, 1, 0)))  # [x, y, z] -> SimpleITK's [z, y, x]
    image.SetSpacing([float(s) for s in spacing])
    image.SetOrigin([float(o) for o in origin])
    image.SetDirection([float(d) for d in np.asarray(direction).reshape(-1)])
    return image


def write_ct_file(path: Path | str, mu: np.ndarray, spacing: np.ndarray, origin: np.ndarray, direction: np.ndarray,
                  mu_water: float = MU_WATER) -> Path:
    """A volume of attenuation per mm [nx, ny, nz] as a CT file (NIfTI, NRRD, MetaImage by the name) in Hounsfield
    units (int16), with its place in the patient frame (SimpleITK writes NIfTI's RAS affine from LPS)."""
    import SimpleITK as sitk

    hu = np.clip(np.round(hounsfield(mu, mu_water)), -32768, 32767).astype(np.int16)
    sitk.WriteImage(sitk_image(hu, spacing, origin, direction), str(path), useCompression=True)
    return Path(path)


def write_dicom_series(folder: Path | str, mu: np.ndarray, spacing: np.ndarray, origin: np.ndarray, direction: np.ndarray,
                       mu_water: float = MU_WATER, description: str = "InsideOut volume") -> Path:
    """A volume of attenuation per mm [nx, ny, nz] as a DICOM CT series (one file a slice, Hounsfield units as int16
    with rescale slope 1 and intercept -1024), in the patient frame given: it opens in 3D Slicer on the original."""
    import time

    import SimpleITK as sitk

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    hu = np.clip(np.round(hounsfield(mu, mu_water)), -32768 + 1024, 32767 - 1024).astype(np.int16)
    image = sitk_image(hu, spacing, origin, direction)  # the writer stores HU + 1024 under the rescale tags below
    from pydicom.uid import generate_uid

    now = time.strftime("%Y%m%d"), time.strftime("%H%M%S")
    d = np.asarray(direction, dtype=np.float64)
    common = {"0008|0060": "CT", "0008|0020": now[0], "0008|0030": now[1], "0008|103e": description,
              "0010|0010": "InsideOut", "0010|0020": "insideout", "0020|000d": generate_uid(), "0020|000e": generate_uid(),
              "0020|0037": "\\".join(f"{x:.6f}" for x in np.concatenate([d[:, 0], d[:, 1]])),
              "0028|1052": "-1024", "0028|1053": "1", "0028|1054": "HU", "0018|0050": f"{spacing[2]:.6f}"}
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()  # the UIDs set here, not new ones per slice
    for k in range(image.GetDepth()):
        slice_k = image[:, :, k]
        for tag, value in common.items():
            slice_k.SetMetaData(tag, value)
        position = image.TransformIndexToPhysicalPoint((0, 0, k))
        slice_k.SetMetaData("0020|0032", "\\".join(f"{x:.6f}" for x in position))
        slice_k.SetMetaData("0020|0013", str(k + 1))
        slice_k.SetMetaData("0008|0018", generate_uid())
        writer.SetFileName(str(folder / f"slice_{k:04d}.dcm"))
        writer.Execute(slice_k)
    return folder


def read_ct(path: Path | str, spacing: Optional[Sequence[float]] = None, axis_order: Literal["xyz", "zyx"] = "xyz"
            ) -> Tuple[np.ndarray, np.ndarray]:
    """A CT volume's stored values as ([nx, ny, nz] array, [3] spacing), for the generators: a `.npy` / `.npy.gz`
    array (indexed as `axis_order` says, spacing 1 unless given) or any file SimpleITK reads. `spacing` overrides
    the file's.

    Example:
        >>> vol, spacing = read_ct("data/ct/headsq.mha")
        >>> vol.shape, spacing.round(3)
        ((64, 64, 93), array([3.2, 3.2, 1.5]))
    """
    import gzip

    import SimpleITK as sitk

    path = Path(path)
    if not path.is_file():
        raise SceneFormatError(path, "<file>", "an existing CT volume file")
    name = path.name.lower()
    if name.endswith(".npy") or name.endswith(".npy.gz"):
        with (gzip.open if name.endswith(".gz") else open)(path, "rb") as f:
            arr = np.load(f, allow_pickle=False)
        if arr.ndim != 3:
            raise SceneFormatError(path, "<array>", "a 3-D array", list(arr.shape))
        arr, file_spacing = (arr.transpose(2, 1, 0) if axis_order == "zyx" else arr), np.ones(3)
    else:
        image = read_image(path)
        if image.GetDimension() != 3:
            raise SceneFormatError(path, "<volume>", "a 3-D volume", list(image.GetSize()))
        arr, file_spacing = sitk.GetArrayFromImage(image).transpose(2, 1, 0), np.array(image.GetSpacing())
    sp = file_spacing if spacing is None else np.broadcast_to(np.asarray(spacing, dtype=np.float64), (3,)).copy()
    if not np.all(np.isfinite(sp)) or not np.all(sp > 0):
        raise SceneFormatError(path, "spacing", "three positive voxel sizes", sp.tolist())
    return np.ascontiguousarray(arr), sp


def ct_to_attenuation(values: np.ndarray, intercept: float = -1024.0, mu_water: float = MU_WATER, air_hu: float = -900.0
                      ) -> np.ndarray:
    """CT numbers to attenuation for the generators: HU = value + intercept, the HU rule, and air (HU < air_hu) and
    masks outside the field of view (very negative values) set to 0, so that a generated scene's air is empty."""
    hu = values.astype(np.float32) + np.float32(intercept)
    return np.where(hu < air_hu, np.float32(0), attenuation_of(hu, mu_water))
