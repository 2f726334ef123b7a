# SPDX-License-Identifier: Apache-2.0
"""Tests for bundle.io.dicom_seg: SEG objects read back with pydicom and highdicom, axial and tilted series."""

from __future__ import annotations

import logging
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
from pydicom.dataset import FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, SegmentationStorage, generate_uid

from bundle.io.dicom_seg import DicomSegError, frames_from_volume, write_dicom_seg

ROWS, COLS, SLICES = 16, 20, 6
ROW_MM, COL_MM, TABLE_STEP_MM = 0.8, 0.6, 3.0


def _write_series(folder, tilt_deg=0.0, seed=0):
    """A small CT series written with pydicom, geometry as GE stores gantry tilt: slices step along the table (z)."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    t = np.deg2rad(tilt_deg)
    orientation = [1.0, 0.0, 0.0, 0.0, float(np.cos(t)), float(-np.sin(t))]
    study, series, frame_of_reference = generate_uid(), generate_uid(), generate_uid()
    datasets = []
    for k in range(SLICES):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = pydicom.Dataset()
        ds.file_meta = meta
        ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, meta.MediaStorageSOPInstanceUID
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, frame_of_reference
        ds.Modality, ds.PatientName, ds.PatientID = "CT", "Phantom^Seg", "SEGTEST"
        ds.PatientBirthDate, ds.PatientSex, ds.StudyDate, ds.StudyTime = "", "O", "20240101", "120000"
        ds.AccessionNumber, ds.StudyID, ds.ReferringPhysicianName, ds.Manufacturer = "", "1", "", "test"
        ds.SeriesNumber, ds.InstanceNumber = 3, k + 1
        ds.ImageOrientationPatient = orientation
        ds.ImagePositionPatient = [-6.0, -8.0, -20.0 + k * TABLE_STEP_MM]
        ds.PixelSpacing = [ROW_MM, COL_MM]
        ds.SliceThickness = TABLE_STEP_MM
        if tilt_deg:
            ds.GantryDetectorTilt = tilt_deg
        ds.Rows, ds.Columns = ROWS, COLS
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleIntercept, ds.RescaleSlope = 0, 1
        ds.PixelData = rng.integers(-50, 100, (ROWS, COLS), dtype=np.int16).tobytes()
        path = folder / f"slice_{k:03d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        datasets.append(pydicom.dcmread(path, stop_before_pixels=True))
    return datasets


def _frames():
    frames = np.zeros((SLICES, ROWS, COLS), np.uint8)
    frames[1:4, 3:12, 4:15] = 1
    frames[2, 5, 6] = 0
    return frames


def _check_seg(path, datasets, frames):
    """Read the SEG back with pydicom and highdicom and check frames, references and the segment."""
    ds = pydicom.dcmread(path)
    assert ds.SOPClassUID == SegmentationStorage and ds.Modality == "SEG" and ds.SegmentationType == "BINARY"
    nonempty = [i for i in range(len(datasets)) if frames[i].any()]
    assert int(ds.NumberOfFrames) == len(nonempty)
    assert ds.StudyInstanceUID == datasets[0].StudyInstanceUID
    assert ds.FrameOfReferenceUID == datasets[0].FrameOfReferenceUID
    assert ds.SeriesInstanceUID != datasets[0].SeriesInstanceUID
    assert ds.SeriesDescription == "Cranial cavity segmentation"
    (referenced_series,) = ds.ReferencedSeriesSequence
    assert referenced_series.SeriesInstanceUID == datasets[0].SeriesInstanceUID
    assert {item.ReferencedSOPInstanceUID for item in referenced_series.ReferencedInstanceSequence} <= {
        d.SOPInstanceUID for d in datasets
    }
    per_frame = [
        group.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
        for group in ds.PerFrameFunctionalGroupsSequence
    ]
    assert sorted(per_frame) == sorted(datasets[i].SOPInstanceUID for i in nonempty)
    (segment,) = ds.SegmentSequence
    assert segment.SegmentLabel == "Cranial cavity" and segment.SegmentAlgorithmType == "AUTOMATIC"
    category = segment.SegmentedPropertyCategoryCodeSequence[0]
    kind = segment.SegmentedPropertyTypeCodeSequence[0]
    assert (category.CodeValue, category.CodingSchemeDesignator) == ("91723000", "SCT")
    assert (kind.CodeValue, kind.CodingSchemeDesignator, kind.CodeMeaning) == ("1101003", "SCT", "Cranial Cavity")
    seg = hd.seg.segread(path)
    pixels = seg.get_pixels_by_source_instance(
        [d.SOPInstanceUID for d in datasets], segment_numbers=[1], combine_segments=True
    )
    np.testing.assert_array_equal(pixels != 0, frames != 0)
    return ds


@pytest.mark.parametrize("tilt_deg", [0.0, 18.5])
def test_write_and_read_back(tmp_path, tilt_deg):
    datasets = _write_series(tmp_path / "ct", tilt_deg)
    frames = _frames()
    path = write_dicom_seg(frames, datasets, tmp_path / "out" / "seg.dcm")
    ds = _check_seg(path, datasets, frames)
    orientation = ds.SharedFunctionalGroupsSequence[0].PlaneOrientationSequence[0].ImageOrientationPatient
    np.testing.assert_allclose([float(v) for v in orientation], datasets[0].ImageOrientationPatient, atol=1e-6)
    positions = {
        tuple(round(float(v), 3) for v in g.PlanePositionSequence[0].ImagePositionPatient)
        for g in ds.PerFrameFunctionalGroupsSequence
    }
    assert positions == {tuple(round(float(v), 3) for v in datasets[i].ImagePositionPatient) for i in (1, 2, 3)}
    assert not list((tmp_path / "out").glob(".*tmp"))
    assert "ImagePositionPatient" in datasets[0] and "PixelData" not in datasets[0]  # sources untouched


def test_shuffled_datasets_and_torch_frames(tmp_path):
    torch = pytest.importorskip("torch")
    datasets = _write_series(tmp_path / "ct")
    order = [3, 0, 5, 1, 4, 2]
    frames = _frames()[order]
    path = write_dicom_seg(torch.as_tensor(frames), [datasets[i] for i in order], tmp_path / "seg.dcm")
    _check_seg(path, [datasets[i] for i in order], frames)


def test_empty_mask_keeps_all_frames(tmp_path, caplog):
    datasets = _write_series(tmp_path / "ct")
    frames = np.zeros((SLICES, ROWS, COLS), bool)
    with caplog.at_level(logging.WARNING, logger="bundle.io.dicom_seg"):
        path = write_dicom_seg(frames, datasets, tmp_path / "seg.dcm")
    assert "empty" in caplog.text
    assert int(pydicom.dcmread(path).NumberOfFrames) == SLICES


def test_anonymised_sources_missing_type2_attributes(tmp_path):
    datasets = _write_series(tmp_path / "ct")
    for ds in datasets:
        del ds.PatientBirthDate, ds.PatientSex, ds.ReferringPhysicianName
    path = write_dicom_seg(_frames(), datasets, tmp_path / "seg.dcm", algorithm_family="morphology")
    seg = pydicom.dcmread(path)
    assert seg.PatientID == "SEGTEST" and seg.PatientBirthDate == ""
    algorithm = seg.SegmentSequence[0].SegmentationAlgorithmIdentificationSequence[0]
    assert algorithm.AlgorithmFamilyCodeSequence[0].CodeValue == "123108"  # morphological operations
    assert "PatientSex" not in datasets[0]


def _voxel_affine(datasets, flip=False):
    """Affine of a (column, row, slice) voxel grid over the series, in RAS; optionally flipped along the first axes."""
    first, second = datasets[0], datasets[1]
    lps = np.array([-1.0, -1.0, 1.0])
    iop = np.asarray(first.ImageOrientationPatient, float)
    affine = np.eye(4)
    affine[:3, 0] = iop[:3] * COL_MM * lps
    affine[:3, 1] = iop[3:] * ROW_MM * lps
    affine[:3, 2] = (
        np.asarray(second.ImagePositionPatient, float) - np.asarray(first.ImagePositionPatient, float)
    ) * lps
    affine[:3, 3] = np.asarray(first.ImagePositionPatient, float) * lps
    if flip:  # same grid indexed from the other end along the first two axes
        affine = affine @ np.array([[-1, 0, 0, COLS - 1], [0, -1, 0, ROWS - 1], [0, 0, 1, 0], [0, 0, 0, 1]], float)
    return affine


@pytest.mark.parametrize("tilt_deg", [0.0, 18.5])
@pytest.mark.parametrize("flip", [False, True])
def test_frames_from_volume(tmp_path, tilt_deg, flip):
    datasets = _write_series(tmp_path / "ct", tilt_deg)
    frames = _frames()
    volume = frames.transpose(2, 1, 0)  # (column, row, slice)
    if flip:
        volume = volume[::-1, ::-1, :]
    out = frames_from_volume(volume[None], _voxel_affine(datasets, flip), datasets[::-1])
    np.testing.assert_array_equal(out, frames[::-1] != 0)


@pytest.mark.parametrize("tilt_deg", [0.0, 18.5])
def test_frames_from_volume_and_resample_share_one_mapping(tmp_path, tilt_deg):
    """On the series' own grid, the checked cut and the resampler give the same frames (one pixel-to-voxel map)."""
    from bundle.io.dicom_series import SourceGeometry, resample_to_source_slices, source_pixel_coordinates

    datasets = _write_series(tmp_path / "ct", tilt_deg)
    frames = _frames()
    volume = frames.transpose(2, 1, 0)
    affine = _voxel_affine(datasets)
    geometry = SourceGeometry.from_datasets(datasets)
    assert geometry.num_slices == len(datasets) and geometry.files[0] == Path(datasets[0].filename).name
    coords = next(source_pixel_coordinates(affine, geometry, [1]))
    np.testing.assert_allclose(coords.reshape(3, ROWS, COLS)[:, 0, 0], [0, 0, 1], atol=1e-9)
    resampled = resample_to_source_slices((volume != 0).astype(np.uint8), affine, geometry, order=0)
    np.testing.assert_array_equal(frames_from_volume(volume, affine, datasets), resampled != 0)


def test_frames_from_volume_rejects_other_grids(tmp_path):
    datasets = _write_series(tmp_path / "ct", 18.5)
    volume = _frames().transpose(2, 1, 0)
    affine = _voxel_affine(datasets)
    shifted = affine.copy()
    shifted[:3, 3] += affine[:3, 0] * 0.5  # half a voxel off
    with pytest.raises(DicomSegError, match="voxel grid"):
        frames_from_volume(volume, shifted, datasets)
    with pytest.raises(DicomSegError, match="outside the mask"):
        frames_from_volume(volume[:, :, :3], affine, datasets)
    untilted = _voxel_affine(_write_series(tmp_path / "ct0", 0.0))
    with pytest.raises(DicomSegError, match="voxel grid"):
        frames_from_volume(volume, untilted, datasets)


def test_round_trip_through_ct_writer(tmp_path):
    """A mask in the project's (X, Y, Z) RAS convention lands on the right pixels of the phantom writer's series."""
    writers = pytest.importorskip("bundle.io.writers")
    rng = np.random.default_rng(3)
    mask = np.zeros((12, 14, 5), np.uint8)
    mask[2:9, 3:12, 1:4] = 1
    mask[rng.random(mask.shape) < 0.1] ^= 1
    for tilt in (0.0, 15.0):
        affine = np.diag([0.7, 0.8, 4.0, 1.0])
        affine[1, 2] = 4.0 * np.tan(np.deg2rad(tilt))  # GE-style tilt: shear of the slice axis
        paths = writers.write_ct_dicom_series(
            mask.astype(np.float32) * 1000.0 - 500.0, affine, tmp_path / f"ct{tilt}", gantry_tilt_deg=tilt
        )
        datasets = [pydicom.dcmread(p) for p in paths]
        frames = frames_from_volume(mask, affine, datasets)
        expected = np.stack([d.pixel_array * float(d.RescaleSlope) + float(d.RescaleIntercept) > 0 for d in datasets])
        np.testing.assert_array_equal(frames, expected)
        path = write_dicom_seg(frames, datasets, tmp_path / f"seg{tilt}.dcm")
        assert int(pydicom.dcmread(path).NumberOfFrames) == int(np.count_nonzero(expected.any(axis=(1, 2))))


def test_real_tilted_ge_series(tmp_path, real_ge_series):
    series = sorted(real_ge_series.glob("*.dcm"))
    assert series
    datasets = [pydicom.dcmread(p, stop_before_pixels=True) for p in series]
    frames = np.zeros((len(datasets), int(datasets[0].Rows), int(datasets[0].Columns)), bool)
    frames[2:5, 100:400, 120:380] = True  # and slices without mask on both sides
    path = write_dicom_seg(frames, datasets, tmp_path / "ge_seg.dcm")
    _check_seg(path, datasets, frames)


def test_real_series_through_the_loader(tmp_path, real_ge_series):
    """The segmenter's path: load_ct (tilt, uneven spacing) -> mask -> frames on the source slices -> SEG."""
    from bundle.io import SourceGeometry, load_ct, resample_to_source_slices

    folder = real_ge_series
    image, affine, meta = load_ct(folder)
    mask = (image > 0) & (image < 80)
    mask[:, :, : image.shape[2] // 3] = False  # some slices without mask
    geometry = meta["ct_source_geometry"]
    frames = resample_to_source_slices(mask.astype(np.uint8), affine, geometry)
    geometry = SourceGeometry.from_json(geometry) if isinstance(geometry, str) else geometry
    datasets = [pydicom.dcmread(folder / name, stop_before_pixels=True) for name in geometry.files]
    assert 0 < int(frames.any(axis=(1, 2)).sum()) < len(datasets)
    path = write_dicom_seg(frames, datasets, tmp_path / "seg.dcm")
    _check_seg(path, datasets, frames)


@pytest.mark.parametrize(
    "case, match",
    [
        ("shape", "frames must have shape"),
        ("mixed", "one series"),
        ("duplicate", "duplicate"),
        ("family", "algorithm_family"),
        ("empty_sources", "empty"),
        ("no_geometry", "lacks ImagePositionPatient"),
    ],
)
def test_bad_inputs(tmp_path, case, match):
    datasets = _write_series(tmp_path / "ct")
    frames = _frames()
    kwargs = {}
    if case == "shape":
        frames = frames[:, :, :-1]
    elif case == "mixed":
        datasets = datasets[:3] + _write_series(tmp_path / "other", seed=1)[3:]
    elif case == "duplicate":
        datasets = datasets[:5] + [datasets[0]]
    elif case == "family":
        kwargs["algorithm_family"] = "magic"
    elif case == "empty_sources":
        datasets = []
    elif case == "no_geometry":
        del datasets[2].ImagePositionPatient
    with pytest.raises(DicomSegError, match=match):
        write_dicom_seg(frames, datasets, tmp_path / "seg.dcm", **kwargs)
    assert not (tmp_path / "seg.dcm").exists()
