"""A CT volume as the inside (dataparsers/ct_volume.py): DICOM series written here with pydicom (shuffled file
names, an oblique orientation, a rescale slope and intercept), NIfTI with an oblique affine (nibabel), NRRD and
MetaImage, read back to the same values and frame; bad input refused with the file and the field; the virtual
scan against the voxels' own line integrals."""

import shutil
from dataclasses import replace

import nibabel as nib
import numpy as np
import pytest
import torch

from conftest import data_file
from insideout_ns.dataparsers.ct_volume import (AIR_HU, attenuation_of, ct_in_scene, hounsfield, read_ct_volume,
                                                virtual_scan, VoxelField, write_ct_file)
from insideout_ns.projection_geometry import grid_points
from insideout_ns.dataparsers.scene_format import SceneFormatError


def headsq_hu() -> np.ndarray:  # [64, 64, 93] Hounsfield units (the file holds CT numbers, air at 0)
    return read_ct_volume(data_file("ct/headsq.mha"), values="hu", intercept=-1024).mu / 0.02 * 1000 - 1000


def oblique(degrees: float = 25.0) -> np.ndarray:  # [3, 3] a rotation about an axis off every coordinate axis
    axis = np.array([1.0, 2.0, 3.0]) / np.sqrt(14.0)
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    a = np.deg2rad(degrees)
    return np.eye(3) + np.sin(a) * k + (1 - np.cos(a)) * k @ k


def write_series_with_pydicom(folder, hu: np.ndarray, spacing, origin, direction, slope=0.5, intercept=-1024.0,
                              modality="CT", series_uid=None, skip=()):
    """A CT series the way a scanner writes one: a file a slice under random names, stored = (HU - intercept) / slope."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    folder.mkdir(parents=True, exist_ok=True)
    study, series = generate_uid(), series_uid or generate_uid()
    rng = np.random.default_rng(0)
    names = rng.permutation(hu.shape[2])  # file names say nothing of the order
    for k in range(hu.shape[2]):
        if k in skip:
            continue
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = CTImageStorage, generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, meta.MediaStorageSOPInstanceUID
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.Modality = study, series, modality
        ds.PatientName, ds.PatientID, ds.InstanceNumber = "phantom", "0", int(names[k]) + 1
        ds.ImagePositionPatient = [float(x) for x in origin + direction[:, 2] * spacing[2] * k]
        ds.ImageOrientationPatient = [float(x) for x in np.concatenate([direction[:, 0], direction[:, 1]])]
        ds.PixelSpacing = [float(spacing[1]), float(spacing[0])]  # rows apart (along y), columns apart (along x)
        ds.SliceThickness = float(spacing[2])
        ds.Rows, ds.Columns = hu.shape[1], hu.shape[0]
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleSlope, ds.RescaleIntercept = slope, intercept
        stored = np.round((hu[:, :, k].T - intercept) / slope).astype(np.int16)  # [rows (y), columns (x)]
        ds.PixelData = stored.tobytes()
        ds.save_as(folder / f"IM{names[k]:05d}", enforce_file_format=True)
    return folder


def test_a_dicom_series_reads_back_its_values_and_its_frame(tmp_path):
    hu = headsq_hu()
    spacing, origin, direction = np.array([3.2, 3.2, 1.5]), np.array([-100.0, 40.0, 12.5]), oblique()
    folder = write_series_with_pydicom(tmp_path / "ct", hu, spacing, origin, direction)
    ct = read_ct_volume(folder)
    assert ct.rule.startswith("Hounsfield") and ct.mu_water == 0.02
    np.testing.assert_allclose(hounsfield(ct.mu), np.maximum(hu, -1000), atol=0.5)  # stored at 0.5 HU steps
    np.testing.assert_allclose(ct.spacing, spacing, rtol=1e-5)
    np.testing.assert_allclose(ct.origin, origin, atol=1e-4)
    np.testing.assert_allclose(ct.direction, direction, atol=1e-5)


def test_a_nifti_with_an_oblique_affine_is_read_in_the_patient_frame(tmp_path):
    """nibabel's affine maps voxels to RAS; the patient frame (LPS) is RAS with x and y negated."""
    hu = headsq_hu().astype(np.int16)
    affine = np.eye(4)
    affine[:3, :3] = oblique(40.0) @ np.diag([3.2, 3.2, 1.5])
    affine[:3, 3] = [20.0, -30.0, 5.0]
    nib.save(nib.Nifti1Image(hu, affine), str(tmp_path / "ct.nii.gz"))
    ct = read_ct_volume(tmp_path / "ct.nii.gz")
    lps = np.diag([-1.0, -1.0, 1.0])
    np.testing.assert_allclose(ct.origin, lps @ affine[:3, 3], atol=1e-4)
    np.testing.assert_allclose(ct.direction @ np.diag(ct.spacing), lps @ affine[:3, :3], atol=1e-4)
    np.testing.assert_allclose(hounsfield(ct.mu), np.maximum(hu, -1000), atol=1e-3)


def test_a_mirrored_grid_is_read_right_handed_with_every_voxel_in_its_place(tmp_path):
    """A radiological NIfTI (a left-handed voxel-to-patient affine): the reader turns the slices round so that the
    grid's axes are right-handed (a rotation, as the X-ray frame needs), and each value stays where the patient is."""
    hu = headsq_hu().astype(np.int16)
    affine = np.diag([-3.2, 3.2, 1.5, 1.0])
    affine[:3, 3] = [100.0, -50.0, 20.0]
    nib.save(nib.Nifti1Image(hu, affine), str(tmp_path / "ct.nii.gz"))
    ct = read_ct_volume(tmp_path / "ct.nii.gz")
    assert np.linalg.det(ct.direction) > 0.999
    lps = np.diag([-1.0, -1.0, 1.0])
    for ijk in ([0, 0, 0], [10, 20, 30], [63, 5, 92]):
        where = lps @ (affine[:3, :3] @ ijk + affine[:3, 3])  # the voxel's place in the patient frame
        back = np.round(ct.direction.T @ (where - ct.origin) / ct.spacing).astype(int)  # its index in the read grid
        np.testing.assert_allclose(ct.direction @ (back * ct.spacing) + ct.origin, where, atol=1e-3)
        assert hounsfield(ct.mu[tuple(back)]) == pytest.approx(max(float(hu[tuple(ijk)]), -1000.0), abs=1e-2)


@pytest.mark.parametrize("name", ["ct.nrrd", "ct.mha", "ct.nii.gz"])
def test_every_volume_format_written_reads_back(tmp_path, name):
    hu = headsq_hu()
    mu = 0.02 * (1 + hu / 1000)
    write_ct_file(tmp_path / name, mu, np.array([3.2, 3.2, 1.5]), np.array([1.0, 2.0, 3.0]), oblique())
    ct = read_ct_volume(tmp_path / name)
    np.testing.assert_allclose(ct.mu, np.clip(mu, 0, None), atol=0.02 / 1000)  # 1 HU
    np.testing.assert_allclose(ct.origin, [1.0, 2.0, 3.0], atol=1e-5)
    np.testing.assert_allclose(ct.direction, oblique(), atol=1e-5)
    assert ct_in_scene(tmp_path) == tmp_path / name


def test_the_shipped_metaimage_needs_its_rule_and_then_loads():
    """headsq.mha holds CT numbers with air at 0, neither HU nor attenuation: the reader asks rather than guesses."""
    with pytest.raises(SceneFormatError, match="ct-values hu"):
        read_ct_volume(data_file("ct/headsq.mha"))
    ct = read_ct_volume(data_file("ct/headsq.mha"), values="hu", intercept=-1024)
    assert ct.mu.shape == (64, 64, 93) and 0.05 < float(ct.mu.max()) < 0.1


def test_a_folder_with_two_series_is_refused(tmp_path):
    hu = headsq_hu()[:, :, :6]
    write_series_with_pydicom(tmp_path / "ct", hu, np.array([3.2, 3.2, 1.5]), np.zeros(3), np.eye(3))
    other = write_series_with_pydicom(tmp_path / "other", hu, np.array([3.2, 3.2, 1.5]), np.zeros(3), np.eye(3))
    for f in other.iterdir():
        shutil.move(str(f), str(tmp_path / "ct" / ("b_" + f.name)))
    with pytest.raises(SceneFormatError, match="SeriesInstanceUID.*one series"):
        read_ct_volume(tmp_path / "ct")


def test_a_missing_slice_is_refused_with_its_neighbour(tmp_path):
    folder = write_series_with_pydicom(tmp_path / "ct", headsq_hu()[:, :, :12], np.array([3.2, 3.2, 1.5]), np.zeros(3),
                                       np.eye(3), skip=(5,))
    with pytest.raises(SceneFormatError, match=r"ImagePositionPatient.*evenly spaced slices \(1.5 mm apart.*got '3 mm"):
        read_ct_volume(folder)


def test_a_non_ct_series_is_refused(tmp_path):
    folder = write_series_with_pydicom(tmp_path / "ct", headsq_hu()[:, :, :4], np.array([3.2, 3.2, 1.5]), np.zeros(3),
                                       np.eye(3), modality="MR")
    with pytest.raises(SceneFormatError, match=r"Modality \(0008,0060\).*'MR'"):
        read_ct_volume(folder)


def test_a_2d_image_is_refused(tmp_path):
    import SimpleITK as sitk

    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((32, 32), np.int16)), str(tmp_path / "ct.nrrd"))
    with pytest.raises(SceneFormatError, match="a 3-D volume"):
        read_ct_volume(tmp_path / "ct.nrrd")


def test_a_scene_with_two_cts_is_refused(tmp_path):
    (tmp_path / "ct").mkdir()
    (tmp_path / "ct.nii.gz").write_bytes(b"")
    with pytest.raises(SceneFormatError, match="one CT volume"):
        ct_in_scene(tmp_path)


@pytest.mark.parametrize("res", [32, 12])
def test_the_virtual_scan_is_the_voxels_line_integrals(res):
    """Projections of the virtual scan against an independent sum: the voxels' trilinear interpolant sampled along
    the pixel's ray (trapezoids, 20 001 samples); within 0.5 % of the peak, at any detector size."""
    tolerance = 0.005
    ct = read_ct_volume(data_file("ct/headsq.mha"), values="hu", intercept=-1024)
    scan = virtual_scan(ct, views=6, max_res=res)
    assert scan.values.shape == (6, res, res) and scan.projection == "parallel"
    vol = ct.volume()
    grid = torch.from_numpy(vol.values).permute(2, 1, 0)[None, None].double()
    rng = np.random.default_rng(1)
    for view in range(6):
        for _ in range(5):
            v, u = rng.integers(res // 4, 3 * res // 4, size=2)
            fx, fy, cx, cy = scan.intrinsics[view]
            c2w = scan.camtoworlds[view]
            start = c2w[:3, 3] + c2w[:3, 0] * (u + 0.5 - cx) / fx - c2w[:3, 1] * (v + 0.5 - cy) / fy
            t = np.linspace(0.0, 4 * np.linalg.norm(vol.aabb[1] - vol.aabb[0]), 20001)
            pts = start + t[:, None] * -c2w[:3, 2]
            unit = 2 * (pts - vol.aabb[0]) / (vol.aabb[1] - vol.aabb[0]) - 1
            mu = torch.nn.functional.grid_sample(grid, torch.from_numpy(unit).reshape(1, 1, 1, -1, 3), align_corners=False,
                                                 padding_mode="zeros").reshape(-1).numpy()
            expect = np.trapz(mu, t)
            assert abs(scan.values[view, v, u] - expect) < tolerance * scan.values.max(), (view, v, u)


def test_the_ct_loss_holds_the_density_to_the_cts_own_voxels():
    """The CT loss's block (losses.voxel_cube) is a block of the CT's own voxels on an anisotropic grid, at a random
    place: the CT's interpolant there is the voxels' values, its loss 0; a copy shifted by one voxel's is not."""
    from insideout_ns.losses import density_regularisers, voxel_cube
    from insideout_ns.model_config import XrayConfig

    ct = read_ct_volume(data_file("ct/headsq.mha"), values="hu", intercept=-1024)  # 3.2 x 3.2 x 1.5 mm voxels
    vol = ct.volume()
    field, aabb, spacing = VoxelField(vol), torch.from_numpy(vol.aabb), torch.from_numpy(vol.spacing)
    cfg, g, corners = XrayConfig(tv_weight=0.0), torch.Generator().manual_seed(0), set()
    for _ in range(5):
        box, shape = voxel_cube(aabb, vol.values.shape, 32, g)
        assert shape == (32, 32, 32) and torch.allclose(box[1] - box[0], 32 * spacing)
        first = ((box[0] - aabb[0]) / spacing).round().long()  # the block's first voxel
        assert torch.allclose(box[0], aabb[0] + first * spacing) and (first >= 0).all()
        assert (first + 32 <= torch.tensor(vol.values.shape)).all()
        i, j, k = first.tolist()
        own = torch.from_numpy(vol.values[i:i + 32, j:j + 32, k:k + 32]).float()
        centres = grid_points(box, shape).reshape(*shape, 3).float()
        assert float(own.max()) > 0.01  # the block holds the head, not only air
        assert torch.allclose(field.sample(centres), own, atol=1e-6)
        assert float(density_regularisers(own, centres, cfg, ct=field)["ct_loss"]) < 1e-10
        assert float(density_regularisers(own.roll(1, dims=2), centres, cfg, ct=field)["ct_loss"]) > 1e-6
        corners.add((i, j, k))
    assert len(corners) >= 4  # a new place (almost) each time
    # every 3rd voxel (a clinical CT's stride): the block's cells are the CT's voxels i, i + 3, ..., inside the grid
    box, shape = voxel_cube(aabb, vol.values.shape, 16, g, stride=3)
    first = ((box[0] - aabb[0]) / spacing + 1).round().long()  # a cell of 3 voxels about each: its first is 1 in
    i, j, k = first.tolist()
    assert shape == (16, 16, 16) and (first >= 0).all() and (first + 45 < torch.tensor(vol.values.shape)).all()
    own = torch.from_numpy(vol.values[i:i + 46:3, j:j + 46:3, k:k + 46:3]).float()
    assert torch.allclose(field.sample(grid_points(box, shape).reshape(*shape, 3).float()), own, atol=1e-6)


def test_the_virtual_scan_outlines_the_object_without_the_scanners_air():
    """The head CT's air reads about -875 HU (0.0025 / mm) across its field of view: its projections meet something
    almost everywhere, so their support is the field of view, not the head. The scan's `seen` views (the voxels above
    AIR_HU) outline the head alone: inside the projections' support, empty where a ray crosses air only, and the
    same line integrals where the ray crosses the head (the air's share aside)."""
    from insideout_ns.init_points import xray_support

    ct = read_ct_volume(data_file("ct/headsq.mha"), values="hu", intercept=-1024)
    scan = virtual_scan(ct, views=6, max_res=128)
    assert scan.seen is not None and scan.seen.shape == scan.values.shape
    projected, seen = (xray_support(torch.from_numpy(v)) > 0 for v in (scan.values, scan.seen))
    assert float((seen & ~projected).float().mean()) < 1e-3  # within the projections' support (measured 2e-5)
    assert float(seen.float().mean()) < 0.85 * float(projected.float().mean())  # the air's rays gone (measured 0.75)
    head = scan.seen > 0.5 * float(scan.seen.max())
    np.testing.assert_allclose(scan.seen[head], scan.values[head], rtol=0.15)  # measured 0.89-1.0 of them
    clean = ct.mu.copy()
    clean[clean <= attenuation_of(np.array([AIR_HU]))[0]] = 0  # no air left to remove: no `seen` views
    assert virtual_scan(replace(ct, mu=clean), views=2, max_res=8).seen is None


@pytest.mark.slow
def test_photographs_and_a_ct_train_align_and_export_onto_the_original(tmp_path):
    """A generated scene of the head (16 photographs with masks, its CT as ct.nii.gz in HU): the dataparser stands a
    virtual scan in for projections, training runs all three phases, alignment.json maps the CT's patient frame to
    the RGB frame near the truth, and the exported volume (NIfTI, DICOM) lies on the CT's own grid in its frame."""
    import json

    import SimpleITK as sitk

    from insideout_ns.dataparsers.synth.cli import FromCtCommand
    from insideout_ns.dataparsers.synth.generate import SceneOptions
    from insideout_ns.export import ExportVolume
    from run_helpers import config_for, run

    opts = SceneOptions(rgb_views=16, xray_views=0, rgb_res=48, seed=2, inside="ct")
    scene = FromCtCommand(data_file("ct/headsq.mha"), tmp_path / "head", device="cpu", scene=opts).main()
    assert (scene / "ct.nii.gz").is_file() and not (scene / "xray").exists()
    # the scanner's patient frame turned off the grid's axes (an oblique acquisition): the same voxels, the truth's
    # X-ray -> RGB map through that turn
    ct, turn = read_ct_volume(scene / "ct.nii.gz"), oblique(30.0)
    write_ct_file(scene / "ct.nii.gz", ct.mu, ct.spacing, turn @ ct.origin, turn)
    truth_file = scene / "ground_truth.json"
    truth_json = json.loads(truth_file.read_text())
    lps_to_grid = np.eye(4)
    lps_to_grid[:3, :3] = turn.T
    truth_json["xray_to_rgb"] = (np.array(truth_json["xray_to_rgb"]) @ lps_to_grid).tolist()
    truth_file.write_text(json.dumps(truth_json))
    config = config_for(scene, tmp_path / "runs", steps=140, phase1=70)
    config.pipeline.datamanager.dataparser.ct_views, config.pipeline.datamanager.dataparser.ct_resolution = 24, 48
    trainer = run(config)
    model = trainer.pipeline.model
    assert int(model.phase) == 3 and model.inside_is_ct
    record = json.loads((config.get_base_dir() / "alignment.json").read_text())
    truth = np.array(truth_json["xray_to_rgb"])
    metrics = trainer.pipeline.get_average_eval_image_metrics()
    assert metrics["alignment_rotation_deg"] < 3 and metrics["alignment_scale_rel"] < 0.03, metrics
    # alignment.json maps the patient frame (not the grid's axes): a point of the CT lands where the truth puts it
    corner = turn @ ct.volume().aabb[1]  # the grid's far corner, LPS
    moved, expect = (np.array(m)[:3, :3] @ corner + np.array(m)[:3, 3] for m in (record["xray_to_rgb"], truth))
    scale = float(np.cbrt(np.linalg.det(truth[:3, :3])))
    assert np.linalg.norm(moved - expect) < 0.05 * scale * np.linalg.norm(ct.volume().aabb[1] - ct.volume().aabb[0])
    assert metrics["volume_psnr"] > 22, metrics  # a 140-step fit of the CT's voxels: measured 24.9 dB
    # a photograph's step holds the density to the CT's voxels too (it moves the shared Gaussians), without the TV
    pipeline, step = trainer.pipeline, next(k for k in range(2, 10) if trainer.pipeline.datamanager.modality_for_step(k) == "rgb")
    pipeline.train()
    _, losses, _ = pipeline.get_train_loss_dict(step)
    assert set(losses) == {"rgb_loss", "ct_loss"} and float(losses["ct_loss"]) > 0, losses
    model.gaussians.params["means"].grad = None
    losses["ct_loss"].backward()
    assert float(model.gaussians.params["means"].grad.abs().sum()) > 0
    # the CT is data everywhere: the photographs' hull bounds nothing (no support loss, no pruning outside it)
    step = next(k for k in range(2, 10) if pipeline.datamanager.modality_for_step(k) == "xray")
    assert model.object_grid is not None and model.density_bound is None
    assert "support_loss" not in pipeline.get_train_loss_dict(step)[1]

    export = ExportVolume(load_config=config.get_base_dir() / "config.yml", output=tmp_path / "vol.nii.gz",
                          dicom=tmp_path / "dicom")
    export.main()
    original = sitk.ReadImage(str(scene / "ct.nii.gz"))
    for exported in (sitk.ReadImage(str(tmp_path / "vol.nii.gz")), read_series(tmp_path / "dicom")):
        assert exported.GetSize() == original.GetSize()
        np.testing.assert_allclose(exported.GetSpacing(), original.GetSpacing(), rtol=1e-5)
        np.testing.assert_allclose(exported.GetOrigin(), original.GetOrigin(), atol=1e-3)
        np.testing.assert_allclose(exported.GetDirection(), original.GetDirection(), atol=1e-6)
        hu = sitk.GetArrayFromImage(exported).transpose(2, 1, 0)
        np.testing.assert_allclose(hu, hounsfield(np.load(tmp_path / "vol.npy")), atol=0.51)  # whole HU


def read_series(folder):
    import SimpleITK as sitk

    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder)))
    return reader.Execute()
