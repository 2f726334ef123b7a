# SPDX-License-Identifier: Apache-2.0
"""NIfTI loading, the MONAI reader in a LoadImaged -> Orientationd -> Invertd -> SaveImaged pipeline, and bad NIfTI."""

from __future__ import annotations

import gzip

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.transforms import Compose, LoadImage, LoadImaged

from bundle.io import CTImageReader, CTInputError, load_ct
from bundle.io.writers import write_nifti


def lps_volume(shape=(20, 16, 10), spacing=(0.8, 0.9, 2.5)):
    """An LPS-stored volume (as many DICOM converters write NIfTI): x towards left, y towards posterior."""
    rng = np.random.default_rng(0)
    data = rng.integers(-1000, 1500, size=shape).astype(np.int16)
    affine = np.diag([-spacing[0], -spacing[1], spacing[2], 1.0])
    affine[:3, 3] = [10.0, 20.0, -30.0]
    return data, affine


def save(path, data, affine):
    nib.save(nib.Nifti1Image(data, affine), str(path))
    return path


def test_load_ct_reorients_to_ras(tmp_path):
    data, affine = lps_volume()
    image, out_affine, meta = load_ct(save(tmp_path / "ct.nii.gz", data, affine))
    assert image.dtype == np.float32 and out_affine.dtype == np.float64
    assert nib.aff2axcodes(out_affine) == ("R", "A", "S")
    np.testing.assert_array_equal(image, np.maximum(data[::-1, ::-1, :], -1024))
    np.testing.assert_allclose(meta["original_affine"], affine)
    # the same world point holds the same value in both
    ijk = np.array([3, 4, 5])
    world = affine[:3, :3] @ ijk + affine[:3, 3]
    back = np.rint(np.linalg.solve(out_affine[:3, :3], world - out_affine[:3, 3])).astype(int)
    assert image[tuple(back)] == max(data[tuple(ijk)], -1024)


def test_shared_writer_round_trip(tmp_path):
    data, _ = lps_volume()
    affine = np.diag([0.5, 0.5, 1.0, 1.0])
    write_nifti(data, affine, tmp_path / "w.nii.gz", dtype=np.int16)
    image, out_affine, _ = load_ct(tmp_path / "w.nii.gz")
    np.testing.assert_array_equal(image, np.maximum(data, -1024))
    np.testing.assert_allclose(out_affine, affine)


def test_values_below_air_are_clipped_unless_disabled(tmp_path):
    data = np.full((8, 8, 4), -3024, dtype=np.int16)
    data[2:6, 2:6] = 40
    data[3, 3] = 1000
    path = save(tmp_path / "pad.nii.gz", data, np.eye(4))
    assert load_ct(path)[0].min() == -1024
    assert load_ct(path, clip_below_air=False)[0].min() == -3024


def test_singleton_fourth_dimension_is_squeezed(tmp_path):
    data, affine = lps_volume()
    image, _, meta = load_ct(save(tmp_path / "t1.nii.gz", data[..., None], affine))
    assert image.shape == data.shape and tuple(meta["spatial_shape"]) == data.shape


def test_pipeline_inverts_to_native_geometry(tmp_path, ras_loader, invert_and_save):
    """Orientationd makes the array RAS; Invertd + SaveImaged write a mask in the input's own (LPS) geometry."""
    data, affine = lps_volume()
    path = save(tmp_path / "ct.nii.gz", data, affine)
    item = ras_loader({"image": str(path)})
    assert nib.aff2axcodes(item["image"].affine.numpy()) == ("R", "A", "S")
    assert item["image"].dtype == torch.float32
    item["pred"] = (item["image"] > 0).to(torch.uint8)  # a "prediction" on the RAS array
    invert_and_save(item)
    saved = nib.load(str(tmp_path / "out" / "ct_mask.nii.gz"))
    np.testing.assert_allclose(saved.affine, affine, atol=1e-5)
    np.testing.assert_array_equal(np.asarray(saved.dataobj), (data > 0).astype(np.uint8))


def test_reader_errors_are_not_hidden_by_monai_fallback_readers(tmp_path):
    """LoadImage retries other readers when read() fails; CTImageReader validates in get_data so NaN is refused."""
    data = np.zeros((8, 8, 6), dtype=np.float32)
    data[1, 2, 3] = np.nan
    path = save(tmp_path / "nan.nii.gz", data, np.eye(4))
    with pytest.raises(CTInputError, match="NaN"):
        LoadImage(reader=CTImageReader(), image_only=True)(str(path))
    with pytest.raises(RuntimeError) as info:
        Compose([LoadImaged("image", reader=CTImageReader())])({"image": str(path)})
    chain, err = [], info.value
    while err is not None:
        chain.append(err)
        err = err.__cause__
    assert any(isinstance(e, CTInputError) for e in chain)


def test_reader_metadata_for_dicom_and_nifti(tmp_path):
    data, affine = lps_volume()
    path = save(tmp_path / "ct.nii.gz", data, affine)
    image, meta = LoadImage(reader=CTImageReader(), image_only=False)(str(path))
    assert tuple(image.shape) == data.shape
    np.testing.assert_allclose(np.asarray(meta["original_affine"]), affine)
    assert meta["ct_format"] == "nifti" and meta["filename_or_obj"] == str(path)
    reader = CTImageReader()
    assert reader.verify_suffix(str(path)) and reader.verify_suffix(str(tmp_path))
    assert not reader.verify_suffix(str(tmp_path / "x.mha"))


@pytest.mark.parametrize("kwargs", [{"slice_spacing": "fine"}, {"slice_spacing": 0}, {"air_hu": float("nan")}])
def test_reader_checks_arguments(kwargs):
    with pytest.raises(ValueError):
        CTImageReader(**kwargs)


def _nan(tmp_path):
    data = np.zeros((8, 8, 6), dtype=np.float32)
    data[0, 0, 0] = np.nan
    return save(tmp_path / "nan.nii.gz", data, np.eye(4)), ["1 NaN or infinite voxel"]


def _inf(tmp_path):
    data = np.zeros((8, 8, 6), dtype=np.float32)
    data[0, 0, :2] = np.inf
    return save(tmp_path / "inf.nii.gz", data, np.eye(4)), ["2 NaN or infinite voxel"]


def _two_d(tmp_path):
    return save(tmp_path / "2d.nii.gz", np.zeros((8, 8), dtype=np.int16), np.eye(4)), ["2D image"]


def _one_slice(tmp_path):
    return save(tmp_path / "1s.nii.gz", np.zeros((8, 8, 1), dtype=np.int16), np.eye(4)), ["2D image"]


def _four_d(tmp_path):
    return save(tmp_path / "4d.nii.gz", np.zeros((8, 8, 6, 3), dtype=np.int16), np.eye(4)), ["4D", "3 volumes"]


def _truncated(tmp_path):
    path = save(tmp_path / "cut.nii", np.zeros((16, 16, 16), dtype=np.int16), np.eye(4))
    path.write_bytes(path.read_bytes()[:2000])
    return path, ["not a readable NIfTI file"]


def _corrupt_gzip(tmp_path):
    path = tmp_path / "bad.nii.gz"
    path.write_bytes(gzip.compress(b"this is not a NIfTI header" * 20)[:-10])
    return path, ["not a readable NIfTI file"]


def _rgb(tmp_path):
    rgb = np.zeros((8, 8, 6), dtype=[("R", "u1"), ("G", "u1"), ("B", "u1")])
    return save(tmp_path / "rgb.nii.gz", rgb, np.eye(4)), ["voxel type"]


BAD_NIFTI = [_nan, _inf, _two_d, _one_slice, _four_d, _truncated, _corrupt_gzip, _rgb]


@pytest.mark.parametrize("make_bad", BAD_NIFTI, ids=[f.__name__.strip("_") for f in BAD_NIFTI])
def test_bad_nifti_raises_ct_input_error(tmp_path, make_bad):
    path, fragments = make_bad(tmp_path)
    with pytest.raises(CTInputError) as info:
        load_ct(path)
    message = str(info.value)
    assert message.startswith(str(path))
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"


def test_non_hu_values_warn(tmp_path):
    path = save(tmp_path / "norm.nii.gz", np.random.default_rng(0).random((8, 8, 6)).astype(np.float32), np.eye(4))
    with pytest.warns(UserWarning, match="do not look like HU"):
        load_ct(path)


def test_gpu_decoder_notice_quiet_only_inside_block():
    """Importing the reader changes no global state; the block silences MONAI's GPU-decoder notice and restores."""
    import logging
    import warnings

    from monai.transforms import LoadImage

    from bundle.io.reader import GPU_DECODER_LOGGER, CTImageReader, quiet_gpu_decoder_notice

    plugin_logger = logging.getLogger(GPU_DECODER_LOGGER)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        filters, level = list(warnings.filters), plugin_logger.level
        with quiet_gpu_decoder_notice():
            assert plugin_logger.level == logging.ERROR
            LoadImage(reader=CTImageReader())
        assert list(warnings.filters) == filters and plugin_logger.level == level
    assert not [w for w in caught if "nvImageCodec" in str(w.message)]
