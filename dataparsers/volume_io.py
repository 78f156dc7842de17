"""Reading CT volumes (`.npy`, `.npy.gz`, MetaImage `.mha`/`.mhd`, NIfTI `.nii`/`.nii.gz`) with voxel spacing.

Every reader returns the array indexed [i, j, k] along x, y, z (the scene format's order) and the
spacing along x, y, z in the file's length unit (mm for medical formats).
"""

from __future__ import annotations

import gzip
from pathlib import Path
from typing import Literal, Optional, Sequence, Tuple

import numpy as np

from .scene_format import SceneFormatError

_MET_TYPES = {
    "MET_UCHAR": "u1", "MET_CHAR": "i1", "MET_USHORT": "u2", "MET_SHORT": "i2", "MET_UINT": "u4",
    "MET_INT": "i4", "MET_FLOAT": "f4", "MET_DOUBLE": "f8",
}


def _read_metaimage(path: Path) -> Tuple[np.ndarray, np.ndarray]:
    """MetaImage, uncompressed, data LOCAL (after the header) or in a named raw file. No library for this
    format is on our dependency list (SimpleITK would be one for 20 lines)."""
    raw = path.read_bytes()
    header, pos = {}, 0
    while True:
        end = raw.find(b"\n", pos)
        if end < 0:
            raise SceneFormatError(path, "ElementDataFile", "a MetaImage header ending with ElementDataFile")
        key, _, value = raw[pos:end].decode("latin-1").partition("=")
        header[key.strip()] = value.strip()
        pos = end + 1
        if key.strip() == "ElementDataFile":
            break
    for key in ("NDims", "DimSize", "ElementType"):
        if key not in header:
            raise SceneFormatError(path, key, "a MetaImage header field (missing)")
    if header["NDims"] != "3":
        raise SceneFormatError(path, "NDims", "3", header["NDims"])
    if header.get("CompressedData", "False").lower() == "true":
        raise SceneFormatError(path, "CompressedData", "False (compressed MetaImage is not supported)", "True")
    if header["ElementType"] not in _MET_TYPES:
        raise SceneFormatError(path, "ElementType", f"one of {sorted(_MET_TYPES)}", header["ElementType"])
    dims = [int(x) for x in header["DimSize"].split()]
    spacing = np.array([float(x) for x in header.get("ElementSpacing", "1 1 1").split()])
    msb = header.get("BinaryDataByteOrderMSB", header.get("ElementByteOrderMSB", "False")).lower() == "true"
    dtype = np.dtype((">" if msb else "<") + _MET_TYPES[header["ElementType"]])
    data = raw[pos:] if header["ElementDataFile"] == "LOCAL" else (path.parent / header["ElementDataFile"]).read_bytes()
    count = int(np.prod(dims))
    if len(data) < count * dtype.itemsize:
        raise SceneFormatError(path, "DimSize", f"{count} voxels of {dtype} in the data", f"{len(data)} bytes")
    arr = np.frombuffer(data[: count * dtype.itemsize], dtype=dtype).reshape(dims[::-1])  # x varies fastest
    return np.ascontiguousarray(arr.transpose(2, 1, 0)), spacing


def read_ct(
    path: Path | str,
    spacing: Optional[Sequence[float]] = None,
    axis_order: Literal["xyz", "zyx"] = "xyz",
) -> Tuple[np.ndarray, np.ndarray]:
    """A CT volume as ([nx, ny, nz] array, [3] spacing). `spacing` overrides the file's (and is the
    only source for `.npy`); `axis_order` says how a `.npy` array is indexed.

    Example:
        >>> vol, spacing = read_ct("data/ct/headsq.mha")
        >>> vol.shape, spacing.round(3)
        ((64, 64, 93), array([3.2, 3.2, 1.5]))
    """
    path = Path(path)
    if not path.is_file():
        raise SceneFormatError(path, "<file>", "an existing CT volume file")
    name = path.name.lower()
    if name.endswith(".npy") or name.endswith(".npy.gz"):
        opener = gzip.open if name.endswith(".gz") else open
        with opener(path, "rb") as f:
            arr = np.load(f, allow_pickle=False)
        if arr.ndim != 3:
            raise SceneFormatError(path, "<array>", "a 3-D array", list(arr.shape))
        arr = arr.transpose(2, 1, 0) if axis_order == "zyx" else arr
        file_spacing = np.ones(3)
    elif name.endswith(".mha") or name.endswith(".mhd"):
        arr, file_spacing = _read_metaimage(path)
    elif name.endswith(".nii") or name.endswith(".nii.gz"):
        import nibabel as nib

        img = nib.load(str(path))
        arr = np.asarray(img.dataobj)
        if arr.ndim != 3:
            raise SceneFormatError(path, "<array>", "a 3-D volume", list(arr.shape))
        file_spacing = np.array(img.header.get_zooms()[:3], dtype=np.float64)
    else:
        raise SceneFormatError(path, "<file>", "a .npy, .npy.gz, .mha, .mhd, .nii or .nii.gz volume", path.suffix)
    if spacing is not None:
        sp = np.broadcast_to(np.asarray(spacing, dtype=np.float64), (3,)).copy()
    else:
        sp = file_spacing
    if not np.all(np.isfinite(sp)) or not np.all(sp > 0):
        raise SceneFormatError(path, "spacing", "three positive voxel sizes", sp.tolist())
    return np.ascontiguousarray(arr), sp


def ct_to_attenuation(values: np.ndarray, intercept: float = -1024.0, mu_water: float = 0.02, air_hu: float = -900.0
                      ) -> np.ndarray:
    """CT numbers to attenuation: HU = value + intercept, mu = mu_water (1 + HU / 1000), air (HU < air_hu)
    and masks outside the field of view (very negative values) set to 0."""
    hu = values.astype(np.float64) + intercept
    mu = mu_water * (1.0 + hu / 1000.0)
    return np.where(hu < air_hu, 0.0, mu).astype(np.float32)
