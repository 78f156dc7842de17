"""`insideout-export`: the trained model as a CT volume, a splat file or a mesh.

    insideout-export volume --load-config RUN/config.yml --output vol.nii.gz [--shape 128 128 128] [--aabb ...] [--dicom DIR]
    insideout-export splat  --load-config RUN/config.yml --output model.ply
    insideout-export mesh   --load-config RUN/config.yml --output surface.ply [--level 0.5]

The volume is the attenuation in the X-ray frame, in the data's units, on the grid of the scene's
`volume` entry unless --shape/--aabb say otherwise; `.nii.gz` carries the voxel-to-world affine, and a
`.npy` (attenuation per unit length) with the same stem is written beside it. For a CT scene (its inside a CT
volume) the grid is the CT's own, in its patient frame: the NIfTI (and with --dicom a DICOM series) holds
Hounsfield units where the CT did, and opens in 3D Slicer on top of the original. The splat is the standard 3DGS `.ply` (x, y, z,
f_dc_*, f_rest_*, opacity, scale_*, rot_*) plus a `density` property, in the RGB frame.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Tuple

import numpy as np
import torch
import tyro

from .dataparsers.ct_volume import MU_WATER, sitk_image, write_ct_file, write_dicom_series
from .gaussians import GaussianSet, unit_mass
from .solids import cells_to_world


def load_model(config: Path):
    from nerfstudio.utils.eval_utils import eval_setup

    _, pipeline, _, _ = eval_setup(config, test_mode="inference")
    return pipeline.model


def volume_affine(shape, aabb: np.ndarray) -> np.ndarray:  # [4, 4] voxel index -> world (voxel centres)
    spacing = (aabb[1] - aabb[0]) / np.array(shape)
    affine = np.eye(4)
    affine[:3, :3] = np.diag(spacing)
    affine[:3, 3] = aabb[0] + 0.5 * spacing
    return affine


# A voxel holds the model's attenuation at its centre by default, as the scene format's volume and a classical
# reconstruction do: voxel averages would smooth such a grid by [1/8, 3/4, 1/8] along each axis (benchmarks/README.md,
# "Voxel values"); they remain an option for a grid coarser than the model's detail
VOXEL_VALUES = 1


def write_volume(model, stem: str, aabb: np.ndarray, shape=None, res: int = 0, supersample: int = VOXEL_VALUES
                 ) -> np.ndarray:
    """The model's attenuation on a grid of the X-ray frame (`shape`, or `res` voxels along the longest
    side of `aabb`), each voxel the mean of supersample^3 samples (1: the value at its centre), as
    `stem.npy` and `stem.nii.gz` (with the voxel-to-world affine). Warns where the grid misses part of
    the model's attenuation."""
    import nibabel as nib

    with torch.no_grad():
        vol = model.volume_in_xray_frame(res=res, aabb=torch.tensor(aabb, dtype=torch.float32),
                                         shape=None if shape is None else tuple(shape), supersample=supersample)
        vol = vol.cpu().numpy().astype(np.float32)
        covered = coverage(model, vol, aabb)
    if covered < 0.95:
        print(f"warning: the grid {aabb.tolist()} holds {100 * covered:.0f} % of the model's attenuation: it does "
              "not cover the whole object (give a larger --aabb)")
    np.save(stem + ".npy", vol)
    if model.inside_is_ct:  # the CT's grid in its patient frame (SimpleITK writes NIfTI's RAS from it), its units
        spacing, direction, origin = ct_geometry(model, vol.shape, aabb)
        if model.ct_mu_water is not None:
            write_ct_file(stem + ".nii.gz", vol, spacing, origin, direction, model.ct_mu_water)
        else:
            import SimpleITK as sitk

            sitk.WriteImage(sitk_image(vol, spacing, origin, direction), stem + ".nii.gz", useCompression=True)
    else:
        nib.save(nib.Nifti1Image(vol, volume_affine(vol.shape, aabb)), stem + ".nii.gz")
    return vol


def ct_geometry(model, shape, aabb: np.ndarray):
    """Spacing [3], direction [3, 3] and origin [3] (the centre of voxel 0, LPS) of a grid over `aabb` of a CT
    scene's X-ray frame (its grid's axes: dataparsers/ct_volume.py)."""
    spacing = (np.asarray(aabb[1]) - np.asarray(aabb[0])) / np.array(shape)
    direction = model.patient_from_frame.cpu().double().numpy()[:3, :3]
    return spacing, direction, direction @ (np.asarray(aabb[0]) + 0.5 * spacing)


def coverage(model, vol: np.ndarray, aabb: np.ndarray) -> float:
    """Share of the model's attenuation mass (X-ray frame) that a voxelised grid over `aabb` holds."""
    voxel = float(np.prod((np.asarray(aabb[1]) - np.asarray(aabb[0])) / np.array(vol.shape)))
    _, _, scales, dens = model.xray_frame_gaussians()
    mass = dens * unit_mass(scales)  # the integral of each Gaussian
    total = float(mass.sum())
    return float(vol.sum()) * voxel / total if total > 0 else 1.0


@dataclass
class ExportVolume:
    load_config: Path
    output: Path
    """.nii.gz or .npy; both are written (same stem)."""
    shape: Optional[Tuple[int, int, int]] = None
    aabb: Optional[Tuple[float, float, float, float, float, float]] = None
    """xmin ymin zmin xmax ymax zmax in the X-ray frame (for a CT scene: along its grid's axes, direction^T LPS)."""
    supersample: int = VOXEL_VALUES
    """Samples per voxel along each axis; the voxel holds their mean (1: the value at its centre, as the scene
    format's volume; 2 or more average, for a grid coarser than the model's detail)."""
    dicom: Optional[Path] = None
    """A CT scene: also write the volume as a DICOM CT series (Hounsfield units) into this folder."""

    def main(self):
        model = load_model(self.load_config)
        if self.dicom is not None and not model.inside_is_ct:
            raise SystemExit("--dicom: this model's inside was not a CT volume (its X-ray frame is no patient frame)")
        gt = model.gt_volume
        aabb = np.array(self.aabb, dtype=np.float64).reshape(2, 3) if self.aabb else (
            gt.aabb if gt is not None else model.box_xray.cpu().numpy())
        shape = self.shape or (gt.values.shape if gt is not None else (128, 128, 128))
        stem = str(self.output).removesuffix(".gz").removesuffix(".nii").removesuffix(".npy")
        vol = write_volume(model, stem, aabb, shape=shape, supersample=self.supersample)
        print(f"wrote {stem}.npy and {stem}.nii.gz: {list(shape)} voxels over {aabb.tolist()}")
        if self.dicom is not None:
            spacing, direction, origin = ct_geometry(model, vol.shape, aabb)
            write_dicom_series(self.dicom, vol, spacing, origin, direction, model.ct_mu_water or MU_WATER)
            print(f"wrote the DICOM series {self.dicom} ({vol.shape[2]} slices, Hounsfield units)")


@dataclass
class ExportSplat:
    load_config: Path
    output: Path

    def main(self):
        write_splat(load_model(self.load_config).gaussians, self.output)
        print(f"wrote {self.output}")


def write_splat(gaussians: GaussianSet, path: Path) -> None:
    """The set as a 3DGS PLY (raw parameters, as 3DGS viewers read them) with each Gaussian's density beside."""
    from plyfile import PlyData, PlyElement

    p = {k: v.detach().cpu() for k, v in gaussians.params.items()}
    n = len(p["means"])
    cols = {"x": p["means"][:, 0], "y": p["means"][:, 1], "z": p["means"][:, 2],
            "nx": torch.zeros(n), "ny": torch.zeros(n), "nz": torch.zeros(n)}
    for i in range(3):
        cols[f"f_dc_{i}"] = p["features_dc"][:, i]
    rest = p["features_rest"].permute(0, 2, 1).reshape(n, -1)  # 3DGS order: channel-major
    for i in range(rest.shape[1]):
        cols[f"f_rest_{i}"] = rest[:, i]
    cols["opacity"] = p["opacities"]
    for i in range(3):
        cols[f"scale_{i}"] = p["scales"][:, i]
    for i in range(4):
        cols[f"rot_{i}"] = p["quats"][:, i]
    cols["density"] = gaussians.densities().detach().cpu()
    arr = np.empty(n, dtype=[(k, "f4") for k in cols])
    for k, v in cols.items():
        arr[k] = v.numpy()
    PlyData([PlyElement.describe(arr, "vertex")]).write(str(path))


@dataclass
class ExportMesh:
    load_config: Path
    output: Path
    level: float = 0.5
    """Iso-level as a fraction of the density of the object's outer layer."""
    res: int = 96

    def main(self):
        import trimesh
        from skimage.measure import marching_cubes

        model = load_model(self.load_config)
        box = model.box_xray.cpu().numpy()
        with torch.no_grad():
            vol = model.volume_in_xray_frame(res=self.res).cpu().numpy()
        inside = vol > 0.03 * vol.max()
        level = self.level * np.percentile(vol[inside], 90)
        verts, faces, normals, _ = marching_cubes(vol, level)
        verts = cells_to_world(verts, box, vol.shape)  # X-ray frame
        m = model.xray_to_rgb.cpu().double().numpy()
        verts_rgb = verts @ m[:3, :3].T + m[:3, 3]  # the RGB frame, where the colours are
        colours = nearest_rgb_colours(model.gaussians, verts_rgb)
        trimesh.Trimesh(verts_rgb, faces, vertex_colors=colours).export(str(self.output))
        print(f"wrote {self.output}: {len(verts)} vertices, {len(faces)} faces")


def nearest_rgb_colours(gaussians: GaussianSet, points: np.ndarray) -> np.ndarray:  # [K, 3] -> [K, 3] uint8
    from scipy.spatial import cKDTree

    means = gaussians.means().detach().cpu().numpy()
    rgb = gaussians.base_colours().detach().cpu().numpy()
    _, idx = cKDTree(means).query(points)
    return (rgb[idx] * 255).astype(np.uint8)


def entrypoint():
    tyro.extras.subcommand_cli_from_dict({"volume": ExportVolume, "splat": ExportSplat, "mesh": ExportMesh},
                                         description=__doc__).main()
