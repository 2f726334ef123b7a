# SPDX-License-Identifier: Apache-2.0
"""What a CT input path is by its name: the NIfTI file endings and the case name of a NIfTI file.

The one definition used by the loader (:mod:`bundle.io.reader`), the input finder (:mod:`bundle.segment_inputs`),
the datalist builder (:mod:`bundle.workflows.data`) and the pseudo-labeller (:mod:`bundle.pseudo_label`).
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["NIFTI_SUFFIXES", "is_nifti", "nifti_stem"]

#: File name endings read as NIfTI (compared case-insensitively).
NIFTI_SUFFIXES = (".nii", ".nii.gz")


def is_nifti(path: str | os.PathLike) -> bool:
    """Whether ``path`` is named like a NIfTI file (``.nii`` or ``.nii.gz``, any case); the disk is not read.

    Args:
        path: a file path.

    Returns:
        True for a NIfTI file name.

    Example:
        >>> is_nifti("scans/Case_01.NII.GZ"), is_nifti("scans/series_3")
        (True, False)
    """
    return Path(path).name.lower().endswith(NIFTI_SUFFIXES)


def nifti_stem(path: str | os.PathLike) -> str:
    """The file name without its NIfTI ending (both parts of ``.nii.gz``); other names are returned whole.

    Args:
        path: a file or folder path.

    Returns:
        The name of the case the path holds.

    Example:
        >>> nifti_stem("scans/case_01.nii.gz"), nifti_stem("scans/case_02.NII"), nifti_stem("scans/series_3")
        ('case_01', 'case_02', 'series_3')
    """
    name = Path(path).name
    for suffix in sorted(NIFTI_SUFFIXES, key=len, reverse=True):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name
