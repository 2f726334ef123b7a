# SPDX-License-Identifier: Apache-2.0
"""CT preprocessing and augmentation transforms (array and dictionary versions, MONAI style).

- :mod:`.intensity`: z-score normalisation with training-set statistics (the paper).
- :mod:`.stats`: computing those statistics over a datalist (``scripts/dataset_stats.py``).
- :mod:`.spatial`: in-plane resampling for the CPU-friendly preset.
- :mod:`.augmentation`: the paper's random rotations and translations, fast enough for whole volumes on a CPU.
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
from .spatial import ResampleInPlane, ResampleInPlaneD, ResampleInPlaned, ResampleInPlaneDict
from .stats import RunningMoments, compute_dataset_stats

__all__ = [
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
    "nearest_affine",
    "separable_affine",
]
