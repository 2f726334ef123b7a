# SPDX-License-Identifier: Apache-2.0
"""Tests of the head-CT phantoms: label properties, tissue intensities, determinism, variants, tilt, datasets."""

from __future__ import annotations

import functools
import json
import math

import numpy as np
import pytest
from scipy import ndimage

from bundle.data import TISSUE_HU_RANGES, TISSUES, PhantomDatasetError, make_phantom, make_phantom_dataset
from bundle.data.phantoms import OUTSIDE_FOV_HU, phantom_anatomy
from bundle.io.writers import affine_gantry_tilt_deg

NAMES = {code: name for name, code in TISSUES.items()}
TEMPLATE_CAVITY_ML = 1347.0  # cavity of the template at head scale 1 (bundle/data/phantom_template.py)


@functools.cache
def _cached(seed: int, **kwargs):
    return make_phantom(seed, **kwargs)


def phantom(seed: int, **kwargs):
    """make_phantom with a per-session cache (phantoms are deterministic, tests only read them)."""
    return _cached(seed, **kwargs)


def heights_above_foramen_magnum(ph) -> np.ndarray:
    """Signed distance (mm) of every voxel centre from the foramen magnum plane (positive superior)."""
    point = np.asarray(ph.info["foramen_magnum"]["point"])
    normal = np.asarray(ph.info["foramen_magnum"]["normal"])
    ii = np.indices(ph.label.shape, dtype=np.float64).reshape(3, -1).T
    world = ii @ ph.affine[:3, :3].T + ph.affine[:3, 3]
    return ((world - point) @ normal).reshape(ph.label.shape)


SMALL_CASES = [
    ({"in_plane_size": 64, "num_slices": 24}, (64, 64, 24)),
    ({"in_plane_size": 48, "num_slices": 16, "variant": "haemorrhage"}, (48, 48, 16)),
    ({"in_plane_size": 64, "num_slices": 30, "gantry_tilt_deg": 12.0}, (64, 64, 30)),
]


@pytest.mark.parametrize("kwargs,shape", SMALL_CASES)
def test_small_phantom_contract(kwargs, shape):
    ph = phantom(0, **kwargs)
    assert ph.image.shape == shape and ph.image.dtype == np.int16
    assert ph.label.shape == shape and ph.label.dtype == np.uint8
    assert set(np.unique(ph.label)) == {0, 1}
    assert ph.affine.shape == (4, 4) and np.allclose(ph.affine[3], [0, 0, 0, 1])
    assert ph.image.min() >= OUTSIDE_FOV_HU and ph.image.max() <= 3071
    for key in ("seed", "variant", "gantry_tilt_deg", "pixel_spacing_mm", "slice_spacing_mm", "volume_ml"):
        assert key in ph.info
    assert ph.info["volume_ml"] == pytest.approx(ph.label.sum() * ph.voxel_volume_ml)
    # the field of view is that of a 512 x 512 scan with 0.43-0.5 mm pixels
    assert 0.43 * 512 <= ph.info["pixel_spacing_mm"] * shape[0] <= 0.5 * 512 + 1e-6


def test_deterministic_from_seed():
    a = make_phantom(7, in_plane_size=48, num_slices=20)
    b = make_phantom(7, in_plane_size=48, num_slices=20)
    c = make_phantom(8, in_plane_size=48, num_slices=20)
    np.testing.assert_array_equal(a.image, b.image)
    np.testing.assert_array_equal(a.label, b.label)
    np.testing.assert_array_equal(a.affine, b.affine)
    assert a.info == b.info
    assert not np.array_equal(a.image, c.image)


def test_given_arguments_leave_other_draws_unchanged():
    base = phantom(3, in_plane_size=64, num_slices=24, variant="normal")
    quiet = phantom(3, in_plane_size=64, num_slices=24, variant="normal", noise_sd_hu=0.0)
    np.testing.assert_array_equal(base.label, quiet.label)
    assert base.info["gantry_tilt_deg"] == quiet.info["gantry_tilt_deg"]
    noise = base.image.astype(float) - quiet.image
    assert 0 < np.abs(noise).mean() < 15


@pytest.mark.parametrize("seed,variant", [(0, "normal"), (1, "haemorrhage"), (2, "infarct"), (3, "craniectomy")])
def test_label_is_one_closed_cavity(seed, variant):
    ph = phantom(seed, in_plane_size=96, slice_spacing_mm=3.0, variant=variant)
    label = ph.label.astype(bool)
    _, count = ndimage.label(label)
    assert count == 1
    assert np.array_equal(ndimage.binary_fill_holes(label), label)  # no enclosed holes
    border = np.zeros_like(label)
    border[[0, -1]] = border[:, [0, -1]] = border[:, :, [0, -1]] = True
    assert not (label & border).any()  # closed inside the field of view, head fully covered
    assert not (label & (ph.image == OUTSIDE_FOV_HU)).any()  # inside the reconstruction circle


@pytest.mark.parametrize("seed,variant,min_bone", [(4, "normal", 0.99), (5, "normal", 0.99), (3, "craniectomy", None)])
def test_cavity_is_enclosed_by_the_skull(seed, variant, min_bone):
    """The voxels just outside the label (above the foramen magnum) are bone, except over a craniectomy."""
    ph = phantom(seed, in_plane_size=96, slice_spacing_mm=3.0, variant=variant, noise_sd_hu=0.0)
    label = ph.label.astype(bool)
    shell = ndimage.binary_dilation(label) & ~label & (heights_above_foramen_magnum(ph) > 10)
    bone = (ph.image[shell] >= 150).mean()
    if min_bone is not None:
        assert bone >= min_bone
    else:
        assert bone < 0.97  # the missing bone flap shows


@pytest.mark.parametrize("variant", ["haemorrhage", "infarct", "craniectomy"])
def test_pathology_keeps_the_cavity_label(variant):
    """Lesions change the image inside the cavity; craniectomy labels the cavity bounded by the virtual inner table."""
    normal = phantom(3, in_plane_size=96, slice_spacing_mm=3.0, variant="normal", noise_sd_hu=0.0)
    sick = phantom(3, in_plane_size=96, slice_spacing_mm=3.0, variant=variant, noise_sd_hu=0.0)
    assert sick.info["variant"] == variant and sick.info["pathology"]
    np.testing.assert_array_equal(sick.label, normal.label)
    changed = sick.image != normal.image
    assert changed.sum() > 50
    if variant != "craniectomy":  # only cavity content changed (plus partial volume at its border)
        assert not (changed & ~ndimage.binary_dilation(sick.label.astype(bool), iterations=2)).any()


def test_cavity_volume_is_realistic_for_whole_heads():
    volumes = []
    for seed in range(4):
        ph = phantom(seed, in_plane_size=64, slice_spacing_mm=3.0)
        volumes.append(ph.info["volume_ml"])
        assert 600 <= ph.info["volume_ml"] <= 2500  # children (head scale ~0.82) to large heads (~1.18)
        expected = TEMPLATE_CAVITY_ML * float(np.prod(ph.info["head_scale"]))
        assert ph.info["volume_ml"] == pytest.approx(expected, rel=0.15)
    assert max(volumes) - min(volumes) > 50  # head sizes vary
    small = phantom(9, in_plane_size=64, slice_spacing_mm=3.0, head_scale=0.94)
    large = phantom(9, in_plane_size=64, slice_spacing_mm=3.0, head_scale=1.08)
    assert 1000 <= small.info["volume_ml"] < large.info["volume_ml"] <= 1900


@pytest.mark.parametrize("tilt", [0.0, 20.0])
def test_no_label_below_the_foramen_magnum(tilt):
    ph = phantom(6, in_plane_size=96, slice_spacing_mm=1.0, gantry_tilt_deg=tilt)
    height = heights_above_foramen_magnum(ph)
    spacing = np.sqrt((ph.affine[:3, :3] ** 2).sum(axis=0))
    half_voxel = 0.5 * float(np.linalg.norm(spacing))
    label = ph.label.astype(bool)
    assert height[label].min() >= -half_voxel
    assert height[label].min() <= 8.0  # the cavity reaches down to the foramen magnum (brainstem)
    assert (height < -15).any()  # the scan starts below the foramen magnum


BASIC_TISSUES = {"air", "cavity", "soft_tissue", "fat", "vitreous", "sinus_air", "diploe", "cancellous_bone"}
ALL_TISSUES = BASIC_TISSUES | {"cortical_bone", "spinal_csf", "spinal_cord", "headrest_foam"}
TISSUE_CASES = [
    (11, "normal", 1.5, ALL_TISSUES),
    (12, "haemorrhage", 2.0, BASIC_TISSUES | {"haemorrhage"}),
    (13, "infarct", 2.0, BASIC_TISSUES | {"infarct"}),
    (14, "craniectomy", 2.0, BASIC_TISSUES),
]


@pytest.mark.parametrize("seed,variant,spacing,expected", TISSUE_CASES)
def test_each_tissue_within_its_hu_range(seed, variant, spacing, expected):
    """On the anatomy grid, every voxel of one tissue only (no partial volume in its 3x3x3 block) is in range."""
    comp, _ = phantom_anatomy(seed, variant=variant, spacing_mm=spacing)
    pure = ndimage.minimum_filter(comp.tissue, size=3) == ndimage.maximum_filter(comp.tissue, size=3)
    pure &= ~ndimage.maximum_filter(comp.mixed, size=3)
    present = set()
    for name, code in TISSUES.items():
        values = comp.hu[pure & (comp.tissue == code)]
        if values.size == 0:
            continue
        present.add(name)
        lo, hi = TISSUE_HU_RANGES[name]
        assert lo - 0.01 <= values.min() and values.max() <= hi + 0.01, (name, values.min(), values.max())
    assert expected <= present, expected - present
    lesion = {"haemorrhage": "haemorrhage", "infarct": "infarct"}.get(variant)
    if lesion:
        assert lesion in present
        assert np.all(comp.cavity[comp.tissue == TISSUES[lesion]] >= 0.5)  # lesions are inside the cavity
    if variant == "craniectomy":
        hernia = comp.tissue == TISSUES["herniated_brain"]
        assert np.all(comp.cavity[hernia] < 0.5)  # brain bulging through the defect is outside the label


@pytest.mark.parametrize("variant", ["normal", "haemorrhage"])
def test_tissue_map_of_the_ct_voxels(variant):
    """``return_tissues`` maps CT voxels made of one tissue; their noise-free HU are in that tissue's range."""
    ph = phantom(11, in_plane_size=96, slice_spacing_mm=2.0, variant=variant, noise_sd_hu=0.0, return_tissues=True)
    tissue = ph.info["tissue_map"]
    present = {NAMES[c] for c in np.unique(tissue) if c != 255}
    assert {"air", "cavity", "soft_tissue", "headrest_foam"} <= present
    for name in present:
        lo, hi = TISSUE_HU_RANGES[name]
        values = ph.image[tissue == TISSUES[name]]
        assert values.min() >= math.floor(lo) and values.max() <= math.ceil(hi), (name, values.min(), values.max())
    assert np.all(ph.label[tissue == TISSUES["cavity"]] == 1) and np.all(ph.label[tissue == TISSUES["air"]] == 0)


def test_noise_level_and_texture():
    kwargs = {"in_plane_size": 160, "pixel_spacing_mm": 0.47, "slice_spacing_mm": 5.0, "variant": "normal"}
    noisy = phantom(12, **kwargs)
    clean = phantom(12, noise_sd_hu=0.0, **kwargs)
    assert 4.0 <= noisy.info["noise_sd_hu"] <= 8.0
    noise = noisy.image.astype(float) - clean.image
    inside = (noisy.label == 1) & (noisy.image > OUTSIDE_FOV_HU)
    measured = noise[inside].std()
    assert noisy.info["noise_sd_hu"] * 0.85 <= measured <= noisy.info["noise_sd_hu"] * 1.35
    # correlated texture: neighbouring pixels are positively correlated, unlike white noise
    inner = inside[:-1] & inside[1:]
    corr = np.corrcoef(noise[:-1][inner], noise[1:][inner])[0, 1]
    assert corr > 0.5


def test_gantry_tilt_is_recorded_in_the_affine():
    # a 288 mm field of view: the reconstruction circle holds the whole cavity in both (its label is cut outside it)
    flat = phantom(13, in_plane_size=64, pixel_spacing_mm=4.5, slice_spacing_mm=2.0, gantry_tilt_deg=0.0)
    tilted = phantom(13, in_plane_size=64, pixel_spacing_mm=4.5, slice_spacing_mm=2.0, gantry_tilt_deg=15.0)
    assert tilted.info["gantry_tilt_deg"] == 15.0
    assert affine_gantry_tilt_deg(tilted.affine) == pytest.approx(15.0, abs=1e-6)
    assert affine_gantry_tilt_deg(flat.affine) == pytest.approx(0.0, abs=1e-9)
    assert tilted.affine[2, 1] != 0 and flat.affine[2, 1] == 0  # GE-style shear: slices step along the table
    assert tilted.info["table_step_mm"] == pytest.approx(2.0 / math.cos(math.radians(15.0)))
    assert tilted.info["volume_ml"] == pytest.approx(flat.info["volume_ml"], rel=0.03)

    def centroid(ph):
        idx = np.argwhere(ph.label).mean(axis=0)
        return ph.affine[:3, :3] @ idx + ph.affine[:3, 3]

    assert np.linalg.norm(centroid(tilted) - centroid(flat)) < 2.0


def test_drawn_slices_span_the_head_from_below_the_skull_base():
    ph = phantom(14, in_plane_size=32)
    assert 100 <= ph.image.shape[2] <= 400
    assert 0.5 <= ph.info["slice_spacing_mm"] <= 5.0
    label = ph.label.astype(bool)
    assert not label[:, :, 0].any() and not label[:, :, -1].any()
    fm_voxel = np.linalg.solve(ph.affine, np.r_[ph.info["foramen_magnum"]["point"], 1.0])
    assert fm_voxel[2] * ph.info["slice_spacing_mm"] >= 10.0  # the scan starts below the foramen magnum


BAD_ARGUMENTS = [
    ({"seed": -1}, "seed"),
    ({"in_plane_size": 4}, "in_plane_size"),
    ({"num_slices": 0}, "num_slices"),
    ({"slice_spacing_mm": 0.0}, "slice_spacing_mm"),
    ({"variant": "tumour"}, "variant"),
    ({"gantry_tilt_deg": 40.0}, "gantry_tilt_deg"),
    ({"noise_sd_hu": -1.0}, "noise_sd_hu"),
    ({"head_scale": 2.0}, "head_scale"),
    ({"num_slices": 2000, "slice_spacing_mm": 5.0}, "800 mm"),
]


@pytest.mark.parametrize("kwargs,message", BAD_ARGUMENTS)
def test_invalid_arguments_raise(kwargs, message):
    kwargs = {"seed": 0, "in_plane_size": 32, "num_slices": 8, **kwargs}
    with pytest.raises(ValueError, match=message):
        make_phantom(kwargs.pop("seed"), **kwargs)


def test_phantom_dataset_layout_rerun_and_conflicts(tmp_path):
    import nibabel as nib
    from monai.data import load_decathlon_datalist

    out = tmp_path / "ds"
    kwargs = {"num_train": 2, "num_val": 1, "num_test": 1, "in_plane_size": 32, "num_slices": 10, "seed": 1}
    path = make_phantom_dataset(out, formats=("nifti", "dicom"), **kwargs)
    data = json.loads(path.read_text())
    assert [len(data[s]) for s in ("training", "validation", "test")] == [2, 1, 1]
    for entry in data["training"] + data["validation"] + data["test"]:
        assert not entry["image"].startswith("/") and (out / entry["image"]).is_file()
        assert (out / entry["label"]).is_file() and (out / entry["dicom"]).is_dir()
    first = data["training"][0]
    img = nib.load(str(out / first["image"]))
    lab = nib.load(str(out / first["label"]))
    assert img.get_data_dtype() == np.int16 and lab.get_data_dtype() == np.uint8
    expected = make_phantom(100000, in_plane_size=32, num_slices=10)
    np.testing.assert_array_equal(np.asarray(img.dataobj), expected.image)
    np.testing.assert_allclose(img.affine, expected.affine, atol=1e-5)
    assert len(list((out / first["dicom"]).iterdir())) == 10
    resolved = load_decathlon_datalist(str(path), data_list_key="validation")
    assert resolved[0]["image"] == str(out / data["validation"][0]["image"])

    stamp = (out / first["image"]).stat().st_mtime_ns
    make_phantom_dataset(out, formats=("nifti", "dicom"), **kwargs)  # identical rerun: nothing rewritten
    assert (out / first["image"]).stat().st_mtime_ns == stamp
    with pytest.raises(PhantomDatasetError, match="different phantom dataset"):
        make_phantom_dataset(out, formats=("nifti",), **kwargs)
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(PhantomDatasetError, match="not empty"):
        make_phantom_dataset(foreign, **kwargs)
    assert not any(p.name.startswith(".") for p in out.rglob("*"))  # no temporary files left behind


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"num_train": -1}, "training"),
        ({"num_train": 0, "num_val": 0, "num_test": 0}, "> 0"),
        ({"formats": "png"}, "formats"),
    ],
)
def test_phantom_dataset_bad_arguments(tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        make_phantom_dataset(tmp_path / "x", **{"in_plane_size": 32, "num_slices": 8, **kwargs})


def test_dataset_variants_as_a_comma_separated_string(tmp_path):
    """The command line's ``--variants normal,craniectomy`` (a string) is the same as the list."""
    import json

    from bundle.data.phantoms import make_phantom_dataset

    kwargs = dict(num_train=1, num_val=0, num_test=0, in_plane_size=32, num_slices=12)
    make_phantom_dataset(tmp_path / "a", variants=" normal, craniectomy", **kwargs)
    spec = json.loads((tmp_path / "a" / "phantom_dataset.json").read_text())["spec"]
    assert spec["variants"] == ["normal", "craniectomy"]
