# SPDX-License-Identifier: Apache-2.0
"""DICOM series loading: geometry round trips through the shared writer, tilt and uneven spacing, and bad input.

Volumes are small linear HU ramps in world coordinates, so that the loader's linear interpolation (tilt correction,
spacing regularisation) reproduces them exactly and any geometric error shows up as a value error.
"""

from __future__ import annotations

import pickle
import shutil
import warnings
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.uid import generate_uid
from scipy import ndimage

from bundle.io import CTInputError, SourceGeometry, load_ct, read_dicom_series, resample_to_source_slices
from bundle.io.dicom_series import choose_regular_spacing, find_missing_slice_gaps
from bundle.io.writers import write_ct_dicom_series

SHAPE = (40, 36, 12)


def ramp(affine: np.ndarray, shape=SHAPE) -> np.ndarray:
    """HU = 2 x + 3 y + 4 z (world mm) - 200 at every voxel of a grid: linear, so interpolation is exact."""
    idx = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), axis=-1).reshape(-1, 3)
    world = idx @ affine[:3, :3].T + affine[:3, 3]
    return (world @ np.array([2.0, 3.0, 4.0]) - 200.0).reshape(shape)


def ramp_at(points: np.ndarray) -> np.ndarray:
    return points @ np.array([2.0, 3.0, 4.0]) - 200.0


def axial_affine(spacing=(1.5, 1.25, 3.0), origin=(-30.0, -20.0, 10.0), tilt_deg=0.0) -> np.ndarray:
    """RAS affine as the writer expects it: a tilted acquisition has a tilted Y column and the table step as Z."""
    t = np.deg2rad(tilt_deg)
    affine = np.eye(4)
    affine[:3, 0] = [spacing[0], 0, 0]
    affine[:3, 1] = [0, spacing[1] * np.cos(t), spacing[1] * np.sin(t)]
    affine[:3, 2] = [0, 0, spacing[2]]
    affine[:3, 3] = origin
    return affine


def world_of(affine: np.ndarray, shape) -> np.ndarray:
    idx = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), axis=-1)
    return idx @ affine[:3, :3].T + affine[:3, 3]


def covered(world: np.ndarray, geometry: SourceGeometry, margin: float = 1.0) -> np.ndarray:
    """Points inside every source slice's pixel grid (``margin`` pixels in from its edges), in-plane."""
    ok = np.ones(world.shape[:-1], dtype=bool)
    for to_ras in geometry.pixel_to_ras():
        pix = (world - to_ras[:3, 3]) @ np.linalg.inv(to_ras[:3, :3]).T
        ok &= (pix[..., 0] >= margin) & (pix[..., 0] <= geometry.columns - 1 - margin)
        ok &= (pix[..., 1] >= margin) & (pix[..., 1] <= geometry.rows - 1 - margin)
    return ok


def write(folder: Path, affine=None, tilt_deg=0.0, shape=SHAPE, **kwargs) -> list[Path]:
    affine = axial_affine(tilt_deg=tilt_deg) if affine is None else affine
    return write_ct_dicom_series(ramp(affine, shape), affine, folder, gantry_tilt_deg=tilt_deg, **kwargs)


def mutate(files, edit) -> None:
    for path in files:
        ds = pydicom.dcmread(path)
        edit(ds)
        ds.save_as(path)


def sorted_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix == ".dcm")


# --------------------------------------------------------------------------------------------------------------------
# geometry
# --------------------------------------------------------------------------------------------------------------------


def test_regular_series_round_trip_is_exact(tmp_path):
    affine = axial_affine()
    write(tmp_path / "s", affine)
    image, out_affine, meta = load_ct(tmp_path / "s")
    np.testing.assert_allclose(out_affine, affine, atol=1e-4)
    np.testing.assert_allclose(image, np.rint(ramp(affine)), atol=1e-3)
    assert image.dtype == np.float32
    assert meta["ct_format"] == "dicom" and not meta["ct_tilt_corrected"] and not meta["ct_spacing_resampled"]
    assert meta["ct_num_source_slices"] == SHAPE[2]


@pytest.mark.parametrize("tilt_deg", [0.0, 20.0])
def test_each_file_is_read_once(tmp_path, monkeypatch, tilt_deg):
    """The loader reads every file of the series once, and the tags it needs from that one read."""
    files = write(tmp_path / "s", tilt_deg=tilt_deg)
    (tmp_path / "s" / "notes.txt").write_text("not DICOM")
    reads: list[str] = []
    real = pydicom.dcmread
    monkeypatch.setattr(pydicom, "dcmread", lambda fp, *a, **k: reads.append(Path(fp).name) or real(fp, *a, **k))
    read_dicom_series(tmp_path / "s")
    assert sorted(reads) == sorted([f.name for f in files] + ["notes.txt"])


@pytest.mark.parametrize("tilt_deg", [12.0, -20.0])
def test_tilted_series_is_corrected_in_world_space(tmp_path, tilt_deg):
    write(tmp_path / "s", tilt_deg=tilt_deg)
    image, affine, meta = load_ct(tmp_path / "s")
    axes = affine[:3, :3] / np.linalg.norm(affine[:3, :3], axis=0)
    np.testing.assert_allclose(axes.T @ axes, np.eye(3), atol=1e-6)  # orthogonal grid after correction
    assert meta["ct_tilt_corrected"]
    assert meta["ct_gantry_tilt_deg"] == pytest.approx(tilt_deg, abs=0.01)  # signed like GantryDetectorTilt
    # the grid grows so that no slice is cut: more rows than the source
    assert image.shape[1] > SHAPE[1] and image.shape[2] == SHAPE[2]
    world = world_of(affine, image.shape)
    interior = covered(world, SourceGeometry.from_json(meta["ct_source_geometry"]))
    assert interior.mean() > 0.3
    np.testing.assert_allclose(image[interior], ramp_at(world)[interior], atol=0.6)
    geometry = SourceGeometry.from_json(meta["ct_source_geometry"])
    for k, to_ras in enumerate(geometry.pixel_to_ras()):  # each corrected slice is air outside its source's field
        pix = (world[:, :, k] - to_ras[:3, 3]) @ np.linalg.inv(to_ras[:3, :3]).T
        outside = (pix[..., 0] < -1) | (pix[..., 0] > SHAPE[0]) | (pix[..., 1] < -1) | (pix[..., 1] > SHAPE[1])
        assert outside.any() and np.all(image[:, :, k][outside] == -1024)


def _two_regime_series(tmp_path: Path, tilt_deg=0.0) -> tuple[Path, list[float]]:
    """10 slices 2 mm apart (2 mm thick), then 8 slices 5 mm apart (5 mm thick), one series, like a sequential scan."""
    series_uid, study_uid = generate_uid(), generate_uid()
    lower = axial_affine(spacing=(1.5, 1.25, 2.0), origin=(-30, -20, 0), tilt_deg=tilt_deg)
    upper = axial_affine(spacing=(1.5, 1.25, 5.0), origin=(-30, -20, 0), tilt_deg=tilt_deg)
    upper[:3, 3] = lower[:3, 3] + 9 * lower[:3, 2] + 3.0 * np.array([0, 0, 1.0])  # 3 mm regime step
    target = tmp_path / "series"
    target.mkdir()
    for name, aff, n in (("a", lower, 10), ("b", upper, 8)):
        files = write(
            tmp_path / name,
            aff,
            tilt_deg,
            shape=(*SHAPE[:2], n),
            series_instance_uid=series_uid,
            study_instance_uid=study_uid,
        )
        for k, path in enumerate(files):
            ds = pydicom.dcmread(path)
            ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
            ds.InstanceNumber = k + 1 + (10 if name == "b" else 0)
            ds.save_as(target / f"{name}{k:02d}.dcm")
    gaps = [2.0] * 9 + [3.0] + [5.0] * 7
    return target, gaps


@pytest.mark.parametrize("tilt_deg", [0.0, 15.0])
def test_uneven_spacing_is_resampled_to_the_finest_regular_spacing(tmp_path, tilt_deg):
    folder, gaps = _two_regime_series(tmp_path, tilt_deg)
    with pytest.warns(UserWarning, match="uneven slice spacing"):
        image, affine, meta = load_ct(folder)
    normal_length = sum(gaps) * np.cos(np.deg2rad(tilt_deg))
    expected_n = round(normal_length / (2.0 * np.cos(np.deg2rad(tilt_deg)))) + 1
    assert meta["ct_spacing_resampled"] and image.shape[2] == expected_n
    assert meta["ct_slice_spacing_mm"] == pytest.approx(normal_length / (expected_n - 1))
    assert np.linalg.norm(affine[:3, 2]) == pytest.approx(meta["ct_slice_spacing_mm"])
    world = world_of(affine, image.shape)
    interior = covered(world, SourceGeometry.from_json(meta["ct_source_geometry"]))
    assert interior.mean() > 0.3
    np.testing.assert_allclose(image[interior], ramp_at(world)[interior], atol=0.6)


def test_slice_spacing_option(tmp_path):
    folder, _ = _two_regime_series(tmp_path)
    with pytest.warns(UserWarning):
        image, affine, meta = load_ct(folder, slice_spacing=1.0)
    assert meta["ct_slice_spacing_mm"] == pytest.approx(1.0, rel=0.02)
    with pytest.raises(ValueError, match="slice_spacing"):
        load_ct(folder, slice_spacing=-1.0)


def test_source_geometry_maps_back_to_the_source_slices(tmp_path):
    files = write(tmp_path / "s", tilt_deg=15.0)
    image, affine, meta = load_ct(tmp_path / "s")
    geometry = SourceGeometry.from_json(meta["ct_source_geometry"])
    assert geometry.num_slices == len(files) and len(set(geometry.sop_instance_uids)) == len(files)
    assert geometry.files == tuple(p.name for p in files)
    frames = resample_to_source_slices(image, affine, geometry, order=1, cval=-1024)
    for k, path in enumerate(files):
        ds = pydicom.dcmread(path)
        source = ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
        np.testing.assert_allclose(frames[k][1:-1, 1:-1], source[1:-1, 1:-1], atol=1.0)
    mask = (image > 0).astype(np.uint8)
    mask_frames = resample_to_source_slices(mask, affine, meta["ct_source_geometry"])
    source_masks = np.stack([(pydicom.dcmread(p).pixel_array.astype(float) - 1024) > 0 for p in files])
    assert mask_frames.dtype == np.uint8
    # nearest-neighbour on the shifted grid: disagreements only next to the mask boundary, and few
    disagree = mask_frames.astype(bool) != source_masks
    near_boundary = np.stack([ndimage.binary_dilation(m) & ~ndimage.binary_erosion(m) for m in source_masks])
    assert disagree.mean() < 0.03 and not np.any(disagree & ~near_boundary)


def test_padding_values_and_clipping(tmp_path):
    files = write(tmp_path / "s")

    def to_signed_with_padding(ds):
        hu = ds.pixel_array.astype(np.int32) - 1024
        hu[:3, :3] = -1500  # tagged padding
        hu[-3:, -3:] = -2000  # untagged values below air
        ds.set_pixel_data(hu.astype(np.int16), "MONOCHROME2", 16, generate_instance_uid=False)
        ds.RescaleIntercept, ds.RescaleSlope = "0", "1"
        ds.add_new(0x00280120, "SS", -1500)  # PixelPaddingValue

    mutate(files, to_signed_with_padding)
    image, _, _ = read_dicom_series(tmp_path / "s", clip_below_air=False)
    assert np.all(image[:3, :3] == -1024)  # (X, Y) = (column, row): the corner of every slice
    assert np.all(image[-3:, -3:] == -2000)
    clipped, _, _ = read_dicom_series(tmp_path / "s")
    assert clipped.min() == -1024 and np.all(clipped[-3:, -3:] == -1024)


@pytest.mark.parametrize("slope, intercept", [(None, "-1024"), ("", "-1024"), ("0", "-1024"), ("1", None), ("1", "")])
def test_rescale_with_one_tag_missing_or_empty_uses_its_default(tmp_path, slope, intercept):
    """pydicom's apply_rescale needs both tags; a missing or empty one (or a zero slope) counts as 1 or 0."""
    files = write(tmp_path / "s")
    reference, _, _ = read_dicom_series(tmp_path / "s")
    stored = [pydicom.dcmread(f).pixel_array for f in files]

    def edit(ds):
        for keyword, value in (("RescaleSlope", slope), ("RescaleIntercept", intercept)):
            if value is None:
                delattr(ds, keyword)
            else:
                setattr(ds, keyword, value)

    mutate(files, edit)
    image, _, _ = read_dicom_series(tmp_path / "s", clip_below_air=False)
    offset = -1024.0 if intercept else 0.0
    expected = np.stack(stored).astype(np.float32).transpose(2, 1, 0) + offset
    np.testing.assert_array_equal(image, expected)
    if intercept:
        np.testing.assert_array_equal(image, reference)


def test_rescale_tags_missing_but_values_look_like_hu(tmp_path):
    files = write(tmp_path / "s")

    def strip_to_hu(ds):
        hu = (ds.pixel_array.astype(np.int32) - 1024).astype(np.int16)
        hu[:8, :8] = -1000  # some air
        ds.set_pixel_data(hu, "MONOCHROME2", 16, generate_instance_uid=False)
        for keyword in ("RescaleIntercept", "RescaleSlope", "RescaleType"):
            delattr(ds, keyword)

    mutate(files, strip_to_hu)
    with pytest.warns(UserWarning, match="used as HU unchanged"):
        image, affine, meta = load_ct(tmp_path / "s")
    assert meta["ct_rescale_assumed_hu"]
    expected = np.rint(ramp(affine))
    air = image == -1000
    assert air.sum() == 64 * SHAPE[2]
    np.testing.assert_allclose(image[~air], expected[~air], atol=1e-3)


# --------------------------------------------------------------------------------------------------------------------
# bad input: each gets a CTInputError naming the file/folder and the problem
# --------------------------------------------------------------------------------------------------------------------


def _two_series(tmp_path):
    write(tmp_path / "a", series_description="HEAD 5mm")
    write(tmp_path / "b", series_description="HEAD bone", seed=1)
    folder = tmp_path / "a"
    for p in (tmp_path / "b").iterdir():
        shutil.move(str(p), folder / f"b_{p.name}")
    return folder, ["HEAD 5mm", "HEAD bone"]


def _missing_slice(tmp_path):
    files = write(tmp_path / "s")
    files[5].unlink()
    return tmp_path / "s", ["missing", files[4].name, files[6].name]


def _duplicate(tmp_path):
    files = write(tmp_path / "s")
    ds = pydicom.dcmread(files[3])
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.save_as(tmp_path / "s" / "copy.dcm")
    return tmp_path / "s", ["duplicate", files[3].name, "copy.dcm"]


def _mr(tmp_path):
    files = write(tmp_path / "s")
    mutate(files, lambda ds: setattr(ds, "Modality", "MR"))
    return tmp_path / "s", ["Modality 'MR'", "CT only"]


def _restacked(tmp_path, orientation, position) -> Path:
    """A series whose slices have ImageOrientationPatient ``orientation`` and ImagePositionPatient ``position(k)``."""
    files = write(tmp_path / "s")

    def restack(ds):
        ds.ImageOrientationPatient = orientation
        ds.ImagePositionPatient = position(int(ds.InstanceNumber))

    mutate(files, restack)
    return tmp_path / "s"


def _sagittal(tmp_path):
    return _restacked(tmp_path, [0, 1, 0, 0, 0, -1], lambda k: [-40 + 3.0 * k, -20, 60]), ["sagittal", "axial"]


def _coronal(tmp_path):
    return _restacked(tmp_path, [1, 0, 0, 0, 0, -1], lambda k: [-30, -40 + 3.0 * k, 60]), ["coronal"]


def _truncated(tmp_path):
    files = write(tmp_path / "s")
    data = files[2].read_bytes()
    files[2].write_bytes(data[: len(data) * 2 // 3])
    return tmp_path / "s", [files[2].name, "truncated"]


def _garbage(tmp_path):
    write(tmp_path / "s")
    (tmp_path / "s" / "junk.dcm").write_bytes(np.random.default_rng(0).integers(0, 255, 3000, dtype=np.uint8).tobytes())
    return tmp_path / "s", ["junk.dcm", "not a readable DICOM file"]


def _no_hu(tmp_path):
    files = write(tmp_path / "s")
    mutate(files, lambda ds: [delattr(ds, k) for k in ("RescaleIntercept", "RescaleSlope", "RescaleType")])
    return tmp_path / "s", ["RescaleSlope", "do not look like HU"]


def _mixed_orientation(tmp_path):
    files = write(tmp_path / "s")
    mutate(files[:1], lambda ds: setattr(ds, "ImageOrientationPatient", [1, 0, 0, 0, 0, -1]))
    return tmp_path / "s", [files[0].name, "mixes slice orientations"]


def _multi_frame(tmp_path):
    files = write(tmp_path / "s")
    mutate(files[:1], lambda ds: setattr(ds, "NumberOfFrames", 4))
    return tmp_path / "s", [files[0].name, "multi-frame"]


def _single_slice(tmp_path):
    files = write(tmp_path / "s")
    for p in files[1:]:
        p.unlink()
    return tmp_path / "s", ["single slice"]


def _missing(tmp_path):
    return tmp_path / "nowhere", ["does not exist"]


def _empty(tmp_path):
    (tmp_path / "empty").mkdir()
    return tmp_path / "empty", ["contains no files"]


def _nested(tmp_path):
    write(tmp_path / "study" / "series1")
    return tmp_path / "study", ["sub-folders", "series1"]


def _not_dicom_only(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "notes.txt").write_text("not an image")
    return tmp_path / "docs", ["contains no DICOM files"]


def _single_file(tmp_path):
    files = write(tmp_path / "s")
    return files[0], ["single DICOM file", "folder"]


def _unsupported(tmp_path):
    path = tmp_path / "image.mha"
    path.write_bytes(b"ObjectType = Image\n")
    return path, ["not a NIfTI file"]


BAD_INPUTS = [
    _two_series,
    _missing_slice,
    _duplicate,
    _mr,
    _sagittal,
    _coronal,
    _truncated,
    _garbage,
    _no_hu,
    _mixed_orientation,
    _multi_frame,
    _single_slice,
    _missing,
    _empty,
    _nested,
    _not_dicom_only,
    _single_file,
    _unsupported,
]


@pytest.mark.parametrize("make_bad", BAD_INPUTS, ids=[f.__name__.strip("_") for f in BAD_INPUTS])
def test_bad_input_raises_ct_input_error(tmp_path, make_bad):
    path, fragments = make_bad(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(CTInputError) as info:
            load_ct(path)
    message = str(info.value)
    assert isinstance(info.value, ValueError)
    assert message.startswith(info.value.path) and info.value.path.startswith(str(path))  # names the file or folder
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"


def test_two_series_error_lists_series_uids(tmp_path):
    folder, _ = _two_series(tmp_path)
    uids = {str(pydicom.dcmread(p, stop_before_pixels=True).SeriesInstanceUID) for p in folder.iterdir()}
    assert len(uids) == 2
    with pytest.raises(CTInputError) as info:
        load_ct(folder)
    assert all(uid in str(info.value) for uid in uids)


def test_non_dicom_files_beside_a_series_are_skipped(tmp_path):
    write(tmp_path / "s")
    (tmp_path / "s" / "LICENSE").write_text("BSD")
    (tmp_path / "s" / ".DS_Store").write_bytes(b"\x00\x01")
    image, _, meta = load_ct(tmp_path / "s")
    assert image.shape == SHAPE and meta["ct_num_source_slices"] == SHAPE[2]


def test_ct_input_error_pickles():
    err = CTInputError("/data/x", "is broken.")
    copy = pickle.loads(pickle.dumps(err))
    assert str(copy) == "/data/x: is broken." and copy.path == "/data/x" and copy.problem == "is broken."


# --------------------------------------------------------------------------------------------------------------------
# the missing-slice rule and the spacing choice
# --------------------------------------------------------------------------------------------------------------------

GAP_CASES = [
    # (gaps, thickness per slice or None, flagged)
    ([2, 2, 4, 2, 2], None, [2]),  # one slice missing in a regular run
    ([2, 2, 2.9, 2, 2], None, []),  # under 1.5x the local spacing
    ([5, 5, 5, 10, 5, 5], None, [3]),
    ([2, 2, 2, 5, 5, 5], None, []),  # regime change: neighbours disagree
    ([4, 4, 4, 1.08, 7, 7, 7], [4, 4, 4, 4, 7, 7, 7, 7], []),  # the real GE series' pattern
    ([4, 4, 8, 7, 7], [4, 4, 4, 7, 7, 7], []),  # a large gap at a thickness change is not judged
    ([4, 4, 8, 7, 7], [4, 4, 4, 4, 7, 7], [2]),  # ... but one inside the 4 mm run is
    ([3, 3, 3, 3, 6.5], None, [4]),  # last gap, one neighbour of the same regime
    ([6.5, 3, 3, 3], None, [0]),
    ([3, 3, 9, 9, 3, 3], None, []),  # two gaps in a row: not an isolated outlier in a regular run
]


@pytest.mark.parametrize("gaps,thickness,flagged", GAP_CASES)
def test_find_missing_slice_gaps(gaps, thickness, flagged):
    assert find_missing_slice_gaps(gaps, thickness) == flagged


@pytest.mark.parametrize(
    "gaps,expected", [([4, 4, 4, 1.08, 7, 7, 7], 4.0), ([2, 2, 5, 5], 2.0), ([1.0, 3.0, 7.0], 3.0), ([5.0], 5.0)]
)
def test_choose_regular_spacing(gaps, expected):
    assert choose_regular_spacing(gaps) == pytest.approx(expected)


@pytest.mark.parametrize("kwargs", [{"gaps": [2, 2], "thickness": [1, 2]}, {"gaps": [2, 2], "factor": 1.0}])
def test_find_missing_slice_gaps_checks_arguments(kwargs):
    with pytest.raises(ValueError):
        find_missing_slice_gaps(**kwargs)


def test_dicom_through_a_monai_pipeline_and_back(tmp_path, ras_loader, invert_and_save):
    """LoadImaged -> Orientationd, batched by a DataLoader, then Invertd -> SaveImaged in the loader's native grid."""
    import nibabel as nib
    import torch
    from monai.data import DataLoader, Dataset, decollate_batch

    write(tmp_path / "s", tilt_deg=10.0)
    native, native_affine, _ = read_dicom_series(tmp_path / "s")
    loader = DataLoader(
        Dataset([{"image": str(tmp_path / "s")}] * 2, transform=ras_loader), batch_size=2, num_workers=0
    )
    batch = next(iter(loader))
    assert batch["image"].shape == (2, 1, *native.shape)  # Orientationd only flips a DICOM grid here
    item = decollate_batch(batch)[0]
    assert isinstance(item["image"].meta["ct_source_geometry"], str)
    item["pred"] = (item["image"] > 0).to(torch.uint8)
    invert_and_save(item)
    saved = list((tmp_path / "out").glob("*.nii.gz"))
    assert len(saved) == 1
    mask = nib.load(str(saved[0]))
    np.testing.assert_allclose(mask.affine, native_affine, atol=1e-4)
    np.testing.assert_array_equal(np.asarray(mask.dataobj), (native > 0).astype(np.uint8))
