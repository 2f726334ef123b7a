# SPDX-License-Identifier: Apache-2.0
"""CT preprocessing and augmentation transforms (array and dictionary versions, MONAI style).

- :mod:`.intensity`: z-score normalisation with training-set statistics (the paper).
- :mod:`.stats`: computing those statistics over a datalist (``scripts/dataset_stats.py``).
- :mod:`.spatial`: in-plane resampling for the CPU-friendly preset.
- :mod:`.augmentation`: the paper's random rotations and translations, fast enough for whole volumes on a CPU.
- :mod:`.slicing`: stage 1's axial slices (one randomly rotated and translated slice at the cost of one slice).
"""

from __future__ import annotations

from .augmentation import (
    RandRotateTranslate,
    RandRotateTranslateD,
    RandRotateTranslated,
    RandRotateTranslateDict,
    RotateTranslate,
    nearest_affine,
    rotation_translation_matrix,
    separable_affine,
)
from .intensity import ZScoreNormalize, ZScoreNormalizeD, ZScoreNormalized, ZScoreNormalizeDict, load_intensity_stats
from .slicing import AxialSlice, RandAxialSliceD, RandAxialSliced, RandAxialSliceDict, sample_axial_plane
from .spatial import ResampleInPlane, ResampleInPlaneD, ResampleInPlaned, ResampleInPlaneDict
from .stats import RunningMoments, compute_dataset_stats

__all__ = [
    "AxialSlice",
    "RandAxialSliceD",
    "RandAxialSliceDict",
    "RandAxialSliced",
    "RandRotateTranslate",
    "RandRotateTranslateD",
    "RandRotateTranslateDict",
    "RandRotateTranslated",
    "ResampleInPlane",
    "ResampleInPlaneD",
    "ResampleInPlaneDict",
    "ResampleInPlaned",
    "RotateTranslate",
    "RunningMoments",
    "ZScoreNormalize",
    "ZScoreNormalizeD",
    "ZScoreNormalizeDict",
    "ZScoreNormalized",
    "compute_dataset_stats",
    "load_intensity_stats",
    "rotation_translation_matrix",
    "sample_axial_plane",
    "nearest_affine",
    "separable_affine",
]
