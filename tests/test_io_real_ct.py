# SPDX-License-Identifier: Apache-2.0
"""The real gantry-tilted GE head CT (18.5 degrees, 4 mm then 7 mm slices) against dcm2niix in world space.

The repository ships a slab of the series (``tests/data/dcm_qa_ct_GE``: slices 11-17 of 28, see its ``NOTICE``): three
4 mm gaps, the 1.08 mm step and two 7 mm gaps, so the tilt, the two spacing regimes and a missing slice inside a
regular run are all there at a quarter of the size.

dcm2niix (Debian package ``dcm2niix``) is the reference converter: by default it writes, beside the raw stack, a
gantry-tilt-corrected copy resampled to equidistant slices (``*_Tilt_Eq_*.nii*``). Up to at least v1.0.20220720 the
sform of that file carries a wrong shear (rordenlab/dcm2niix#697); its qform describes the rectangular tilt-corrected
grid, so the comparison uses the qform. dcm2niix comes with the dev requirements (PyPI wheel, in the venv's ``bin``);
without it the test skips, unless ``CI`` is set, where it fails.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from scipy import ndimage

from bundle.io import CTInputError, SourceGeometry, load_ct, resample_to_source_slices


@pytest.fixture(scope="module")
def real_series(real_ge_series):
    return real_ge_series


@pytest.fixture(scope="module")
def loaded(real_series):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the uneven-spacing warning is expected here
        return load_ct(real_series)


@pytest.fixture(scope="module")
def dcm2niix_reference(real_series, tmp_path_factory):
    # the venv's bin first: the pinned wheel's binary, there even when the venv is not activated
    exe = shutil.which("dcm2niix", path=os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]))
    if exe is None:
        if os.environ.get("CI"):
            pytest.fail("dcm2niix is not installed; it is in requirements-dev.txt (bash scripts/setup_env.sh).")
        pytest.skip("dcm2niix is not installed (pip install -r requirements-dev.txt); set CI to make this a failure.")
    out = tmp_path_factory.mktemp("dcm2niix")
    # -z n: no compression (faster); -b n: no sidecar; -f ref: file name. Tilt correction and equidistant resampling
    # are dcm2niix's defaults for such series: they write ref_Tilt_Eq_1.nii beside the raw stack ref.nii
    subprocess.run(
        [exe, "-z", "n", "-b", "n", "-f", "ref", "-o", str(out), str(real_series)],
        check=True,
        capture_output=True,
        timeout=120,
    )
    corrected = sorted(out.glob("ref*Tilt*Eq*.nii*")) or sorted(out.glob("ref*Tilt*.nii*"))
    assert corrected, f"dcm2niix wrote no tilt-corrected file: {sorted(p.name for p in out.iterdir())}"
    ref = nib.load(str(corrected[0]))
    qform = ref.header.get_qform()
    axes = qform[:3, :3] / np.linalg.norm(qform[:3, :3], axis=0)
    np.testing.assert_allclose(axes.T @ axes, np.eye(3), atol=1e-4)  # the corrected grid is rectangular
    return np.asarray(ref.dataobj, dtype=np.float32), qform


def world_points(affine, index):
    return index @ affine[:3, :3].T + affine[:3, 3]


def head_box(image, affine, threshold=-300.0):
    """World bounding box (per RAS axis) of the voxels above ``threshold`` HU: where the head and headrest are.

    A linear function's extremes over the voxels of one line along axis 0 are at the line's first and last voxel,
    so only those are mapped to world coordinates.
    """
    mask = image > threshold
    any_, n = mask.any(axis=0), mask.shape[0]
    first, last = np.argmax(mask, axis=0), n - 1 - np.argmax(mask[::-1], axis=0)
    j, k = np.nonzero(any_)
    index = np.concatenate([np.stack([first[j, k], j, k], 1), np.stack([last[j, k], j, k], 1)])
    world = world_points(affine, index)
    return world.min(axis=0), world.max(axis=0)


def test_real_series_matches_dcm2niix_in_world_space(loaded, dcm2niix_reference):
    image, affine, meta = loaded
    ref, ref_affine = dcm2niix_reference
    # the same world points inside the head: random voxels whose neighbours 3 voxels away are all tissue too
    rng = np.random.default_rng(0)
    index = np.stack(
        [rng.integers(3, n - 3, 400_000) for n in image.shape[:2]] + [rng.integers(1, image.shape[2] - 1, 400_000)], 1
    )
    keep = image[tuple(index.T)] > -300
    for axis, step in ((0, 3), (1, 3), (2, 1)):
        for sign in (-1, 1):
            shifted = index.copy()
            shifted[:, axis] += sign * step
            keep &= image[tuple(shifted.T)] > -300
    index = index[keep][:20000]
    assert len(index) == 20000
    world = world_points(affine, index)
    ref_index = world_points(np.linalg.inv(ref_affine), world)
    valid = np.all((ref_index >= 0) & (ref_index <= np.array(ref.shape) - 1), axis=1)
    assert valid.mean() > 0.99
    ours = image[tuple(index[valid].T)]
    theirs = ndimage.map_coordinates(ref, ref_index[valid].T, order=1)
    r = np.corrcoef(ours, theirs)[0, 1]
    assert r >= 0.9, f"HU correlation with dcm2niix r={r:.4f}"
    # physical extents: the head's bounding box and the corrected grid's extent, per world axis, within 2 mm
    (lo, hi), (ref_lo, ref_hi) = head_box(image, affine), head_box(ref, ref_affine)
    np.testing.assert_allclose(lo, ref_lo, atol=2.0)
    np.testing.assert_allclose(hi, ref_hi, atol=2.0)
    length = np.linalg.norm(affine[:3, 2]) * (image.shape[2] - 1)
    ref_length = np.linalg.norm(ref_affine[:3, 2]) * (ref.shape[2] - 1)
    assert length == pytest.approx(ref_length, abs=2.0)  # first to last slice along the normal, ~27 mm


def test_real_series_geometry_and_metadata(loaded, real_series):
    image, affine, meta = loaded
    assert image.dtype == np.float32 and image.min() == -1024  # -1500 padding mapped to air
    assert nib.aff2axcodes(affine) == ("R", "A", "S")
    assert meta["ct_tilt_corrected"] and meta["ct_gantry_tilt_deg"] == pytest.approx(18.5, abs=0.05)
    assert meta["ct_gantry_tilt_tag_deg"] == pytest.approx(18.5)
    # uneven gaps (3 x 4 mm, 1.08 mm, 2 x 7 mm along the normal, 27.08 mm in all): the finest regular spacing, 4 mm,
    # fitted to the same extent -> 7 steps of 3.87 mm
    assert meta["ct_spacing_resampled"] and meta["ct_slice_spacing_mm"] == pytest.approx(27.08 / 7, abs=0.01)
    assert image.shape[2] == 8
    geometry = SourceGeometry.from_json(meta["ct_source_geometry"])
    dicom_files = sorted(p.name for p in real_series.glob("*.dcm"))
    assert geometry.num_slices == 7 and sorted(geometry.files) == dicom_files  # LICENSE and NOTICE skipped
    uids = {str(pydicom.dcmread(real_series / name, stop_before_pixels=True).SOPInstanceUID) for name in dicom_files}
    assert set(geometry.sop_instance_uids) == uids
    assert np.all(np.diff(np.asarray(geometry.positions)[:, 2]) > 0)  # sorted inferior -> superior


def test_real_series_maps_back_to_its_slices(loaded, real_series):
    image, affine, meta = loaded
    geometry = SourceGeometry.from_json(meta["ct_source_geometry"])
    # mean |HU difference| allowed: slice 0 is not shifted; the tilt shift (bilinear) and the sampling back (bilinear)
    # blur edges a little; slice 2 lies 0.26 mm off the regular grid, so it comes back mixed with its neighbours
    limits = {0: 0.01, 2: 15.0, 6: 10.0}
    slices = list(limits)
    frames = resample_to_source_slices(image, affine, geometry, order=1, cval=-1024, indices=slices)
    assert frames.shape == (3, 512, 512)
    for frame, k in zip(frames, slices, strict=True):
        source = pydicom.dcmread(real_series / geometry.files[k]).pixel_array.astype(np.float32)
        source = np.maximum(np.where(source == -1500, -1024, source), -1024)
        head = source > -300
        assert np.abs(frame[head] - source[head]).mean() < limits[k]
        assert np.corrcoef(frame[head], source[head])[0, 1] > 0.99


def test_a_slice_removed_from_the_real_series_is_reported(real_series, tmp_path):
    folder = tmp_path / "gap"
    shutil.copytree(real_series, folder)
    (folder / "12.dcm").unlink()  # inside the regular 4 mm run
    with pytest.raises(CTInputError, match=r"missing slice.*11\.dcm and 13\.dcm"):
        load_ct(folder)
