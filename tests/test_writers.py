# SPDX-License-Identifier: Apache-2.0
"""Tests of the NIfTI and DICOM writers: geometry and HU round trips through nibabel, pydicom, MONAI and load_ct."""

from __future__ import annotations

import numpy as np
import pytest

from bundle.data import make_phantom
from bundle.io.writers import (
    DICOM_RESCALE_INTERCEPT,
    WriterInputError,
    affine_gantry_tilt_deg,
    write_ct_dicom_series,
    write_nifti,
)

LPS = np.diag([-1.0, -1.0, 1.0])


def _affine(tilt_deg: float = 0.0, spacing=(0.7, 0.8, 2.5), origin=(-20.0, 15.0, 40.0)) -> np.ndarray:
    t = np.deg2rad(tilt_deg)
    a = np.eye(4)
    a[:3, 0] = (spacing[0], 0.0, 0.0)
    a[:3, 1] = (0.0, spacing[1] * np.cos(t), spacing[1] * np.sin(t))
    a[:3, 2] = (0.0, 0.0, spacing[2] / np.cos(t))
    a[:3, 3] = origin
    return a


def _ramp(shape, seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(-1000, 2000, size=shape).astype(np.int16)


NIFTI_CASES = [
    (np.int16, _affine(), 1),
    (np.uint8, _affine(), 1),
    (np.float32, _affine() @ np.diag([-1.0, 1.0, 1.0, 1.0]), 1),  # LAS
    (np.int16, _affine(tilt_deg=18.5), 0),  # sheared: no qform
]


@pytest.mark.parametrize("dtype,affine,qform_code", NIFTI_CASES)
def test_nifti_round_trip(tmp_path, dtype, affine, qform_code):
    import nibabel as nib

    data = np.clip(_ramp((9, 7, 5)), 0, 255) if dtype == np.uint8 else _ramp((9, 7, 5))
    path = write_nifti(data, affine, tmp_path / "sub" / "x.nii.gz", dtype=dtype)
    img = nib.load(str(path))
    assert img.get_data_dtype() == np.dtype(dtype)
    np.testing.assert_array_equal(np.asarray(img.dataobj), data.astype(dtype))
    np.testing.assert_allclose(img.affine, affine, atol=1e-5)
    assert int(img.header["sform_code"]) == 1 and int(img.header["qform_code"]) == qform_code
    if qform_code:
        np.testing.assert_allclose(img.get_qform(), affine, atol=1e-4)
    assert [p.name for p in path.parent.iterdir()] == ["x.nii.gz"]  # no temporary file left


def test_nifti_rewrite_replaces_atomically(tmp_path):
    import nibabel as nib

    path = tmp_path / "x.nii"
    write_nifti(np.zeros((3, 3, 3)), np.eye(4), path, dtype=np.int16)
    write_nifti(np.ones((3, 3, 3)), np.eye(4), path, dtype=np.int16)
    assert np.asarray(nib.load(str(path)).dataobj).sum() == 27
    assert len(list(tmp_path.iterdir())) == 1


NIFTI_ERRORS = [
    ({"array": np.zeros((4, 4))}, "3D or 4D"),
    ({"path_name": "x.png"}, ".nii"),
    ({"affine": np.eye(3)}, "4x4"),
    ({"affine": np.diag([1.0, 1.0, 0.0, 1.0])}, "singular"),
    ({"array": np.full((2, 2, 2), np.nan), "dtype": np.int16}, "NaN"),
    ({"array": np.full((2, 2, 2), 40000.0), "dtype": np.int16}, "outside the range"),
]


@pytest.mark.parametrize("kwargs,message", NIFTI_ERRORS)
def test_nifti_bad_input(tmp_path, kwargs, message):
    array = kwargs.get("array", np.zeros((2, 2, 2)))
    path = tmp_path / kwargs.get("path_name", "x.nii.gz")
    with pytest.raises(WriterInputError, match=message):
        write_nifti(array, kwargs.get("affine", np.eye(4)), path, dtype=kwargs.get("dtype"))
    assert not path.exists()


def _read_series(folder):
    import pydicom

    datasets = [pydicom.dcmread(p) for p in sorted(folder.iterdir())]
    return sorted(datasets, key=lambda d: int(d.InstanceNumber))


def _check_geometry_by_hand(datasets, image, affine, tilt_deg):
    """Every stored pixel, placed in the world by its own IPP/IOP/PixelSpacing, holds the HU of that world point."""
    inv = np.linalg.inv(affine)
    for ds in datasets:
        assert ds.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.1"
        assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.2" and ds.Modality == "CT"
        assert float(ds.RescaleSlope) == 1 and float(ds.RescaleIntercept) == DICOM_RESCALE_INTERCEPT
        assert float(ds.get("GantryDetectorTilt", 0.0)) == pytest.approx(tilt_deg)
        iop = np.array(ds.ImageOrientationPatient, dtype=float)
        ipp = np.array(ds.ImagePositionPatient, dtype=float)
        row_spacing, col_spacing = (float(v) for v in ds.PixelSpacing)
        hu = ds.pixel_array.astype(float) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
        rows, cols = np.meshgrid(np.arange(ds.Rows), np.arange(ds.Columns), indexing="ij")
        world_lps = ipp + cols[..., None] * col_spacing * iop[:3] + rows[..., None] * row_spacing * iop[3:]
        world_ras = world_lps @ LPS.T
        voxel = world_ras @ inv[:3, :3].T + inv[:3, 3]
        np.testing.assert_allclose(voxel, np.rint(voxel), atol=1e-3)  # pixel centres land on voxel centres
        i, j, k = (np.rint(voxel[..., d]).astype(int) for d in range(3))
        np.testing.assert_array_equal(hu, image[i, j, k])
        assert int(ds.InstanceNumber) - 1 == k[0, 0]
        assert float(ds.SliceLocation) == pytest.approx(ipp[2], abs=1e-4)


@pytest.mark.parametrize("tilt", [0.0, 18.5, -10.0])
def test_dicom_geometry_by_hand(tmp_path, tilt):
    image = _ramp((6, 5, 4))
    affine = _affine(tilt_deg=tilt)
    files = write_ct_dicom_series(image, affine, tmp_path / "s", gantry_tilt_deg=tilt, seed=3)
    assert len(files) == 4 and all(f.parent == tmp_path / "s" for f in files)
    datasets = _read_series(tmp_path / "s")
    _check_geometry_by_hand(datasets, image, affine, tilt)
    ds = datasets[0]
    assert (ds.Rows, ds.Columns) == (5, 6)
    assert [float(v) for v in ds.PixelSpacing] == pytest.approx([0.8, 0.7])  # (row spacing, column spacing)
    iop = np.array(ds.ImageOrientationPatient, dtype=float)
    # like a GE tilted series: columns towards the patient's left, rows posterior and (for tilt > 0) inferior
    np.testing.assert_allclose(iop, [1, 0, 0, 0, np.cos(np.deg2rad(tilt)), -np.sin(np.deg2rad(tilt))], atol=1e-6)
    steps = np.diff([np.array(d.ImagePositionPatient, dtype=float) for d in datasets], axis=0)
    np.testing.assert_allclose(steps, [[0, 0, 2.5 / np.cos(np.deg2rad(tilt))]] * 3, atol=1e-4)  # along the table
    assert float(ds.SliceThickness) == pytest.approx(2.5, abs=1e-4)
    assert affine_gantry_tilt_deg(affine) == pytest.approx(tilt)


def test_dicom_series_is_deterministic_and_unique(tmp_path):
    image = _ramp((4, 4, 3))
    a = _read_series_after(tmp_path / "a", image, seed=5)
    b = _read_series_after(tmp_path / "b", image, seed=5)
    c = _read_series_after(tmp_path / "c", image, seed=6)
    uids = ("StudyInstanceUID", "SeriesInstanceUID", "FrameOfReferenceUID", "SOPInstanceUID")
    assert [[d.get(u) for u in uids] for d in a] == [[d.get(u) for u in uids] for d in b]
    assert a[0].SeriesInstanceUID != c[0].SeriesInstanceUID
    assert len({d.SOPInstanceUID for d in a}) == 3 and len({d.FrameOfReferenceUID for d in a}) == 1
    assert a[0].file_meta.MediaStorageSOPInstanceUID == a[0].SOPInstanceUID


def _read_series_after(folder, image, seed):
    write_ct_dicom_series(image, np.eye(4), folder, seed=seed)
    return _read_series(folder)


def test_dicom_values_below_the_intercept_use_signed_storage(tmp_path):
    image = _ramp((4, 4, 2))
    image[0, 0, 0] = -2000  # e.g. a padding value
    datasets = _read_series_after(tmp_path / "s", image, seed=0)
    assert datasets[0].PixelRepresentation == 1
    _check_geometry_by_hand(datasets, image, np.eye(4), 0.0)
    unsigned = _read_series_after(tmp_path / "u", np.clip(image, -1024, None), seed=0)
    assert unsigned[0].PixelRepresentation == 0


DICOM_ERRORS = [
    ({"image_hu": np.zeros((4, 4))}, "3D"),
    ({"image_hu": np.full((2, 2, 2), np.nan)}, "NaN"),
    ({"image_hu": np.full((2, 2, 2), 70000.0)}, "cannot hold"),
    ({"affine": np.zeros((4, 4))}, "last row"),
]


@pytest.mark.parametrize("kwargs,message", DICOM_ERRORS)
def test_dicom_bad_input(tmp_path, kwargs, message):
    with pytest.raises(WriterInputError, match=message):
        write_ct_dicom_series(
            kwargs.get("image_hu", np.zeros((2, 2, 2))), kwargs.get("affine", np.eye(4)), tmp_path / "s"
        )
    assert list(tmp_path.iterdir()) == []  # nothing half-written


def test_dicom_refuses_a_non_empty_folder(tmp_path):
    (tmp_path / "s").mkdir()
    (tmp_path / "s" / "keep.txt").write_text("user data")
    with pytest.raises(WriterInputError, match="not empty"):
        write_ct_dicom_series(np.zeros((2, 2, 2)), np.eye(4), tmp_path / "s")
    assert (tmp_path / "s" / "keep.txt").read_text() == "user data"


def test_phantom_dicom_through_monai_pydicom_reader(tmp_path):
    from monai.data import PydicomReader

    ph = make_phantom(2, in_plane_size=48, num_slices=12, gantry_tilt_deg=0.0)
    write_ct_dicom_series(ph.image, ph.affine, tmp_path / "s")
    reader = PydicomReader()
    array, meta = reader.get_data(reader.read(str(tmp_path / "s")))
    affine = np.asarray(meta["affine"], dtype=float)  # RAS
    assert array.shape == ph.image.shape
    idx = np.indices(array.shape).reshape(3, -1).T
    world = idx @ affine[:3, :3].T + affine[:3, 3]
    ours = world @ np.linalg.inv(ph.affine)[:3, :3].T + np.linalg.inv(ph.affine)[:3, 3]
    np.testing.assert_allclose(ours, np.rint(ours), atol=1e-3)
    i, j, k = np.rint(ours).astype(int).T
    np.testing.assert_array_equal(array.reshape(-1), ph.image[i, j, k])


@pytest.mark.parametrize("tilt", [0.0, 20.0])
def test_phantom_round_trips_through_load_ct(tmp_path, tilt):
    """NIfTI and DICOM copies of a phantom load with the project's loader at the phantom's world geometry."""
    from scipy import ndimage

    from bundle.io import load_ct

    ph = make_phantom(4, in_plane_size=64, num_slices=30, gantry_tilt_deg=tilt, noise_sd_hu=0.0)
    write_nifti(ph.image, ph.affine, tmp_path / "p.nii.gz", dtype=np.int16)
    write_ct_dicom_series(ph.image, ph.affine, tmp_path / "dcm", gantry_tilt_deg=tilt)
    for path in (tmp_path / "p.nii.gz", tmp_path / "dcm"):
        image, affine, _ = load_ct(path)
        if tilt == 0 or path.suffix == ".gz":
            np.testing.assert_allclose(affine, ph.affine, atol=1e-4)
            np.testing.assert_array_equal(image, ph.image.astype(np.float32))
            continue
        # tilted DICOM: the loader may resample; compare HU at the same world points
        idx = np.indices(image.shape).reshape(3, -1).T
        world = idx @ affine[:3, :3].T + affine[:3, 3]
        inv = np.linalg.inv(ph.affine)
        src = (world @ inv[:3, :3].T + inv[:3, 3]).T
        inside = np.all((src > 0) & (src < np.array(ph.image.shape)[:, None] - 1), axis=0)
        ref = ndimage.map_coordinates(ph.image.astype(np.float32), src[:, inside], order=1)
        got = image.reshape(-1)[inside]
        head = ref > -500
        assert inside.mean() > 0.5 and head.sum() > 1000
        assert np.corrcoef(ref[head], got[head])[0, 1] > 0.98
