# SPDX-License-Identifier: Apache-2.0
"""Tests for bundle.pseudo_label and scripts/pseudo_label.py on synthetic spheres-in-a-shell heads (and phantoms)."""

from __future__ import annotations

import importlib.util
import logging
import os
import subprocess
import sys

import nibabel as nib
import numpy as np
import pytest

from bundle.metrics import dice_score
from bundle.pseudo_label import PseudoLabelError, pseudo_label_cranial_cavity, pseudo_label_files

SMALL = ((64, 72, 40), (3.0, 3.0, 4.0))


def synthetic_head(shape=SMALL[0], spacing=SMALL[1], seed=0, noise_hu=5.0):
    """A head made of spheres and shells, (X, Y, Z) RAS, and its exact cranial-cavity label.

    Brain ellipsoid (with CSF ventricles and a 400 HU calcification) in a skull shell with a foramen magnum that
    opens into a spinal canal inside a vertebral ring; scalp; an eye in a closed bony orbit joined to the cavity by a
    thin optic canal; a wide emissary canal through the skull that breaks the skull ring of a few axial slices.
    Returns (ct_hu float32, label uint8, affine, parts) where parts holds masks of the canal, eye and calcification.
    """
    rng = np.random.default_rng(seed)
    sp = np.asarray(spacing, dtype=float)
    x, y, z = np.meshgrid(*[(np.arange(n) - (n - 1) / 2) * s for n, s in zip(shape, sp, strict=True)], indexing="ij")
    z = z - 10.0  # head centre above the volume centre: room for the neck
    r = np.sqrt((x / 70.0) ** 2 + (y / 85.0) ** 2 + (z / 65.0) ** 2)
    ct = np.full(shape, -1000.0, np.float32)
    head = r <= 1.2
    ct[head] = 40.0  # scalp
    canal_xy = np.sqrt(x**2 + (y + 10) ** 2) <= 14.0
    ct[(r <= 1.11) & (r > 1.0) & ~(canal_xy & (z < 0))] = 1000.0  # skull with the foramen magnum
    cavity = r <= 1.0
    ct[cavity] = 32.0
    ct[cavity & (np.sqrt(x**2 + y**2 + (z - 5) ** 2) <= 18)] = 8.0  # ventricles
    calcification = np.sqrt((x - 20) ** 2 + (y + 20) ** 2 + (z - 10) ** 2) <= 5
    ct[calcification] = 400.0
    neck = (np.sqrt(x**2 + (y + 10) ** 2) <= 45) & (z < -50)
    ct[neck & (ct < 0)] = 45.0
    ct[(np.sqrt(x**2 + (y + 10) ** 2) <= 22) & ~canal_xy & (z < -60)] = 700.0  # vertebral ring
    ct[canal_xy & (z < -55) & neck] = 20.0  # spinal canal
    eye_distance = np.sqrt((x - 30) ** 2 + (y - 92) ** 2 + (z + 15) ** 2)
    ct[(eye_distance > 12) & (eye_distance <= 17)] = 700.0  # closed bony orbit
    eye = eye_distance <= 12
    ct[eye] = 10.0
    ct[(np.sqrt((x - 30) ** 2 + (z + 15) ** 2) <= 5.5) & (y > 60) & (y < 92)] = 35.0  # optic canal
    ct[(np.sqrt(y**2 + (z - 20) ** 2) <= 7.0) & (x > 50) & head] = 35.0  # emissary canal
    ct += rng.normal(0.0, noise_hu, shape).astype(np.float32)
    affine = np.diag([*sp, 1.0])
    affine[:3, 3] = -(np.asarray(shape) - 1) / 2 * sp
    parts = {"canal": canal_xy & (z < -67), "eye": eye, "calcification": calcification}
    return ct, cavity.astype(np.uint8), affine, parts


@pytest.mark.parametrize("shape, spacing", [SMALL, ((96, 108, 32), (2.0, 2.0, 5.0)), ((48, 56, 80), (4.0, 4.0, 2.0))])
def test_synthetic_heads(shape, spacing):
    ct, label, affine, parts = synthetic_head(shape, spacing)
    mask = pseudo_label_cranial_cavity(ct, affine)
    assert mask.dtype == np.uint8 and mask.shape == ct.shape and set(np.unique(mask)) <= {0, 1}
    assert dice_score(mask, label) >= 0.98
    m = mask.astype(bool)
    assert not (m & parts["canal"]).any(), "spinal canal below the foramen magnum"
    assert not (m & parts["eye"]).any(), "eye behind the optic canal"
    assert m[parts["calcification"]].all(), "calcification is a hole to fill"
    assert not (m & (ct > 500)).any(), "no bone"


@pytest.mark.parametrize(
    "base, kwargs, check",
    [
        ({}, {"min_slice_area_fraction": 0.0}, lambda m, label, parts: (m & parts["canal"]).any()),
        ({}, {"min_bone_directions": 6}, lambda m, label, parts: (label & ~m).sum() > 300),
        ({}, {"rim_mm": 0.0}, lambda m, label, parts: (label & ~m).sum() > 100),
        # the skull closing alone seals the optic canal; without it, the opening is what keeps the eye out
        ({"bone_closing_mm": 0.0}, {"opening_mm": 0.0}, lambda m, label, parts: (m & parts["eye"]).any()),
    ],
)
def test_each_step_matters(base, kwargs, check):
    """Switching off one step of the pipeline brings back the error that step is there to prevent."""
    ct, label, affine, parts = synthetic_head()
    assert not check(pseudo_label_cranial_cavity(ct, affine, **base).astype(bool), label.astype(bool), parts)
    assert check(pseudo_label_cranial_cavity(ct, affine, **base, **kwargs).astype(bool), label.astype(bool), parts)


def test_no_head_gives_empty_mask_and_warns(caplog):
    with caplog.at_level(logging.WARNING, logger="bundle.pseudo_label"):
        assert not pseudo_label_cranial_cavity(np.full((8, 8, 8), -1000.0), np.eye(4)).any()
        assert not pseudo_label_cranial_cavity(np.full((8, 8, 8), 40.0), np.eye(4)).any()  # no skull
    assert caplog.text.count("empty mask") == 2


@pytest.mark.parametrize(
    "image, kwargs, match",
    [
        (np.zeros((8, 8)), {}, "3D"),
        (np.full((4, 4, 4), np.nan), {}, "NaN"),
        (np.zeros((4, 4, 4)), {"affine": np.eye(3)}, "4x4"),
        (np.zeros((4, 4, 4)), {"soft_tissue_hu": (100.0, 0.0)}, "soft_tissue_hu"),
        (np.zeros((4, 4, 4)), {"opening_mm": -1.0}, "opening_mm"),
        (np.zeros((4, 4, 4)), {"min_bone_directions": 7}, "min_bone_directions"),
        (np.zeros((4, 4, 4)), {"min_slice_area_fraction": 1.0}, "min_slice_area_fraction"),
    ],
)
def test_bad_inputs(image, kwargs, match):
    kwargs = {"affine": np.eye(4), **kwargs}
    with pytest.raises(PseudoLabelError, match=match):
        pseudo_label_cranial_cavity(image, **kwargs)


def _save(path, array, affine):
    nib.save(nib.Nifti1Image(array, affine), str(path))


def _flip_xy(array, affine):
    """The same image stored in LPS voxel order (first two axes reversed), with the matching affine."""
    flip = np.diag([-1.0, -1.0, 1.0, 1.0])
    flip[0, 3], flip[1, 3] = array.shape[0] - 1, array.shape[1] - 1
    return np.ascontiguousarray(array[::-1, ::-1]), affine @ flip


def test_files_folder_native_geometry_resume_and_logs(tmp_path, caplog):
    ct, label, affine, _ = synthetic_head()
    scans = tmp_path / "scans"
    scans.mkdir()
    _save(scans / "ras.nii.gz", ct.astype(np.int16), affine)
    lps_ct, lps_affine = _flip_xy(ct.astype(np.int16), affine)
    _save(scans / "lps.nii", lps_ct, lps_affine)
    (scans / "notes.txt").write_text("not an image")
    before = sorted(p.name for p in scans.iterdir())
    out = tmp_path / "masks"
    with caplog.at_level(logging.INFO):
        written = pseudo_label_files(scans, out)
    assert sorted(p.name for p in written) == ["lps.nii", "ras.nii.gz"]
    assert sorted(p.name for p in scans.iterdir()) == before, "nothing written inside the input"
    for name, expected_label in (("ras.nii.gz", label), ("lps.nii", _flip_xy(label, affine)[0])):
        source, result = nib.load(str(scans / name)), nib.load(str(out / name))
        assert result.shape == source.shape
        np.testing.assert_allclose(result.affine, source.affine)
        data = np.asarray(result.dataobj)
        assert data.dtype == np.uint8
        assert dice_score(data, expected_label) >= 0.98
        assert str(out / name) in caplog.text
    stamp = os.stat(out / "ras.nii.gz").st_mtime_ns
    assert pseudo_label_files(scans, out) == []  # resume: everything done already
    assert os.stat(out / "ras.nii.gz").st_mtime_ns == stamp
    assert len(pseudo_label_files(scans, out, overwrite=True)) == 2


def test_files_single_file_and_bad_file_reported(tmp_path):
    ct, _, affine, _ = synthetic_head()
    scans = tmp_path / "scans"
    scans.mkdir()
    _save(scans / "good.nii.gz", ct, affine)
    (scans / "broken.nii.gz").write_bytes(b"not a nifti file")
    _save(scans / "flat.nii.gz", np.zeros((8, 8), np.float32), np.eye(4))
    with pytest.raises(PseudoLabelError) as info:
        pseudo_label_files(scans, tmp_path / "out")
    message = str(info.value)
    assert "2 of 3" in message and "broken.nii.gz" in message and "flat.nii.gz" in message and "3D" in message
    assert (tmp_path / "out" / "good.nii.gz").is_file(), "one bad file does not stop the others"
    assert [p.name for p in pseudo_label_files(scans / "good.nii.gz", tmp_path / "single")] == ["good.nii.gz"]


@pytest.mark.parametrize(
    "make_input, output, match",
    [
        (lambda d: d, lambda d: d / "inside", "inside the input folder"),
        (lambda d: d, lambda d: d, "inside the input folder"),
        (lambda d: d / "good.nii.gz", lambda d: d, "input file's folder"),
        (lambda d: d / "missing.nii.gz", lambda d: d.parent / "out", "does not exist"),
        (lambda d: d / "notes.txt", lambda d: d.parent / "out", "not a NIfTI"),
        (lambda d: d / "empty", lambda d: d.parent / "out", "no .nii"),
    ],
)
def test_files_refuses_unsafe_or_missing(tmp_path, make_input, output, match):
    scans = tmp_path / "scans"
    (scans / "empty").mkdir(parents=True)
    _save(scans / "good.nii.gz", np.zeros((4, 4, 4), np.float32), np.eye(4))
    (scans / "notes.txt").write_text("x")
    before = sorted(str(p) for p in scans.rglob("*"))
    with pytest.raises(PseudoLabelError, match=match):
        pseudo_label_files(make_input(scans), output(scans))
    assert sorted(str(p) for p in scans.rglob("*")) == before


def _load_cli(repo_root):
    spec = importlib.util.spec_from_file_location("pseudo_label_cli", repo_root / "scripts" / "pseudo_label.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_cli_main_in_process(tmp_path, repo_root, caplog):
    ct, label, affine, _ = synthetic_head()
    _save(tmp_path / "head.nii.gz", ct, affine)
    cli = _load_cli(repo_root)
    with caplog.at_level(logging.INFO):
        cli.main(str(tmp_path / "head.nii.gz"), str(tmp_path / "out"))
    assert dice_score(np.asarray(nib.load(str(tmp_path / "out" / "head.nii.gz")).dataobj), label) >= 0.98
    assert "1 mask(s) written" in caplog.text
    with pytest.raises(SystemExit) as info:
        cli.main(str(tmp_path / "nothing_here"), str(tmp_path / "out2"))
    assert info.value.code == 1 and "does not exist" in caplog.text


@pytest.mark.slow
def test_cli_subprocess_partial_failure(tmp_path, repo_root):
    """The real entry point: one good and one broken file -> the good mask is written, exit 1, no traceback."""
    ct, _, affine, _ = synthetic_head()
    scans = tmp_path / "scans"
    scans.mkdir()
    _save(scans / "head.nii.gz", ct, affine)
    (scans / "broken.nii").write_bytes(b"garbage")
    run = subprocess.run(
        [sys.executable, str(repo_root / "scripts" / "pseudo_label.py"), str(scans), str(tmp_path / "out")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 1
    assert (tmp_path / "out" / "head.nii.gz").is_file() and str(tmp_path / "out" / "head.nii.gz") in run.stderr
    assert "broken.nii" in run.stderr and "cannot be read" in run.stderr and "Traceback" not in run.stderr


def test_phantoms_dice():
    """On the project's phantoms (once they exist), the pseudo-label reaches Dice >= 0.9."""
    phantoms = pytest.importorskip("bundle.data.phantoms")
    for seed in (0, 1):
        phantom = phantoms.make_phantom(seed, in_plane_size=64, num_slices=24)
        mask = pseudo_label_cranial_cavity(phantom.image.astype(np.float32), phantom.affine)
        assert dice_score(mask, phantom.label) >= 0.9, f"phantom seed {seed}: {phantom.info}"
