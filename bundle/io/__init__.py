# SPDX-License-Identifier: Apache-2.0
"""CT input and output: loading NIfTI files and DICOM series as validated HU volumes, and writing them.

Loading lives in :mod:`bundle.io.reader` (``load_ct``, ``CTImageReader``), DICOM series assembly in
:mod:`bundle.io.dicom_series`, the error type in :mod:`bundle.io.errors`; the writers (``write_nifti``,
``write_ct_dicom_series``) in :mod:`bundle.io.writers`.
"""

from __future__ import annotations

from .dicom_series import SourceGeometry, read_dicom_series, resample_to_source_slices
from .errors import CTInputError
from .reader import CTImageReader, load_ct
from .writers import write_ct_dicom_series, write_nifti

__all__ = [
    "CTImageReader",
    "CTInputError",
    "SourceGeometry",
    "load_ct",
    "read_dicom_series",
    "resample_to_source_slices",
    "write_ct_dicom_series",
    "write_nifti",
]
