# SPDX-License-Identifier: Apache-2.0
"""Tests for bundle.io.paths, the one definition of NIfTI file names."""

from __future__ import annotations

from pathlib import Path

import pytest

from bundle.io.paths import NIFTI_SUFFIXES, is_nifti, nifti_stem


@pytest.mark.parametrize(
    "name, nifti, stem",
    [
        ("case_01.nii.gz", True, "case_01"),
        ("case_01.nii", True, "case_01"),
        ("Case_01.NII.GZ", True, "Case_01"),
        ("a.b.nii.gz", True, "a.b"),
        ("series_3", False, "series_3"),
        ("slice.dcm", False, "slice.dcm"),
        ("case.nii.gz.bak", False, "case.nii.gz.bak"),
        ("archive.gz", False, "archive.gz"),
    ],
)
def test_is_nifti_and_stem(name, nifti, stem):
    assert is_nifti(name) is nifti
    assert is_nifti(Path("some/folder") / name) is nifti
    assert nifti_stem(Path("some/folder") / name) == stem


def test_one_definition():
    """The loader, the finders and the pseudo-labeller share the same names (no copy of the suffixes)."""
    import bundle.io.reader
    import bundle.workflows.data

    assert NIFTI_SUFFIXES == (".nii", ".nii.gz")
    assert bundle.io.reader.NIFTI_SUFFIXES is NIFTI_SUFFIXES
    assert bundle.workflows.data.NIFTI_SUFFIXES is NIFTI_SUFFIXES
    root = Path(__file__).resolve().parents[1] / "bundle"
    copies = [str(p.relative_to(root)) for p in root.rglob("*.py") if '(".nii", ".nii.gz")' in p.read_text()]
    assert copies == ["io/paths.py"]
