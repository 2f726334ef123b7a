# SPDX-License-Identifier: Apache-2.0
"""Synthetic head-CT phantoms with exact cranial-cavity labels, and dataset lists.

See :mod:`bundle.data.phantoms` for the generator and the label definition.
"""

from __future__ import annotations

from bundle.data.datalist import DATALIST_SPLITS, DatalistError, load_datalist, write_datalist
from bundle.data.phantoms import (
    TISSUE_HU_RANGES,
    TISSUES,
    VARIANTS,
    Phantom,
    PhantomDatasetError,
    make_phantom,
    make_phantom_dataset,
    phantom_anatomy,
)

__all__ = [
    "DATALIST_SPLITS",
    "DatalistError",
    "Phantom",
    "PhantomDatasetError",
    "TISSUES",
    "TISSUE_HU_RANGES",
    "VARIANTS",
    "load_datalist",
    "make_phantom",
    "make_phantom_dataset",
    "phantom_anatomy",
    "write_datalist",
]
