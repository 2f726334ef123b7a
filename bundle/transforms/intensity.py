# SPDX-License-Identifier: Apache-2.0
"""The paper's intensity normalisation: z-score with one mean and standard deviation for the whole training set.

The statistics are computed once, over every voxel of every training image (``scripts/dataset_stats.py``, see
:func:`bundle.transforms.stats.compute_dataset_stats`), and then applied unchanged to training, validation and
inference data: ``x -> (x - mean) / std``, so that the same HU value maps to the same network input in every scan.
The arithmetic is MONAI's ``NormalizeIntensity(subtrahend=mean, divisor=std)``; :class:`ZScoreNormalize` adds only
reading the statistics file, checking them, and returning the input's own array type.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Hashable, Mapping

import numpy as np
from monai.config import KeysCollection, NdarrayOrTensor
from monai.transforms import MapTransform, NormalizeIntensity
from monai.utils import convert_to_dst_type

__all__ = ["load_intensity_stats", "ZScoreNormalize", "ZScoreNormalized", "ZScoreNormalizeD", "ZScoreNormalizeDict"]


def load_intensity_stats(path: str | os.PathLike) -> tuple[float, float]:
    """Read ``mean`` and ``std`` from a statistics JSON file written by ``scripts/dataset_stats.py``.

    Args:
        path: the JSON file (``{"mean": ..., "std": ..., ...}``).

    Returns:
        ``(mean, std)``.

    Raises:
        ValueError: if the file is missing, is not JSON, or lacks a finite ``mean`` or a positive ``std``.

    Example:
        >>> mean, std = load_intensity_stats("models/intensity_stats.json")  # doctest: +SKIP
    """
    try:
        with open(path, encoding="utf-8") as f:
            stats = json.load(f)
    except FileNotFoundError as err:
        raise ValueError(f"stats_file {os.fspath(path)!r} does not exist; run scripts/dataset_stats.py first.") from err
    except json.JSONDecodeError as err:
        raise ValueError(f"stats_file {os.fspath(path)!r} is not valid JSON ({err}).") from err
    if not isinstance(stats, dict) or "mean" not in stats or "std" not in stats:
        raise ValueError(f"stats_file {os.fspath(path)!r} must hold 'mean' and 'std', got {stats!r}.")
    return float(stats["mean"]), float(stats["std"])


class ZScoreNormalize(NormalizeIntensity):
    """``(x - mean) / std`` with fixed statistics (the training set's), as float32.

    MONAI's ``NormalizeIntensity(subtrahend=mean, divisor=std)`` with the statistics read from the bundle's statistics
    file and checked; the result has the input's type (numpy array, tensor or ``MetaTensor``).

    Args:
        mean: the training-set mean in HU. Default None: read from ``stats_file``.
        std: the training-set standard deviation in HU (> 0). Default None: read from ``stats_file``.
        stats_file: JSON file with ``mean`` and ``std`` (from ``scripts/dataset_stats.py``). Default None. Give
            either ``mean`` and ``std`` or ``stats_file``.

    Raises:
        ValueError: if neither or both sources are given, ``mean`` is not finite or ``std`` is not positive.

    Example:
        >>> import torch
        >>> ZScoreNormalize(mean=-500.0, std=500.0)(torch.tensor([-1000.0, 0.0, 500.0]))
        tensor([-1.,  1.,  2.])
    """

    def __init__(
        self, mean: float | None = None, std: float | None = None, stats_file: str | os.PathLike | None = None
    ) -> None:
        if stats_file is not None:
            if mean is not None or std is not None:
                raise ValueError("give either mean and std or stats_file, not both.")
            mean, std = load_intensity_stats(stats_file)
        elif mean is None or std is None:
            raise ValueError(f"give mean and std (got mean={mean}, std={std}) or stats_file.")
        if not math.isfinite(float(mean)):
            raise ValueError(f"mean must be finite, got {mean}.")
        if not (math.isfinite(float(std)) and float(std) > 0):
            raise ValueError(f"std must be a positive number, got {std}.")
        self.mean = float(mean)
        self.std = float(std)
        super().__init__(subtrahend=self.mean, divisor=self.std, dtype=np.float32)

    def __call__(self, img: NdarrayOrTensor) -> NdarrayOrTensor:
        """Normalise ``img`` (any shape); returns the same type (float32), leaving the input unchanged."""
        out = super().__call__(img)
        return convert_to_dst_type(out, img, dtype=np.float32)[0]


class ZScoreNormalized(MapTransform):
    """Dictionary-based wrapper of :py:class:`ZScoreNormalize`.

    Args:
        keys: keys of the images to normalise (not labels).
        mean: see :py:class:`ZScoreNormalize`. Default None.
        std: see :py:class:`ZScoreNormalize`. Default None.
        stats_file: see :py:class:`ZScoreNormalize`. Default None.
        allow_missing_keys: don't raise for keys missing from the data. Default False.

    Example:
        >>> ZScoreNormalized("image", stats_file="models/intensity_stats.json")  # doctest: +SKIP
    """

    backend = ZScoreNormalize.backend

    def __init__(
        self,
        keys: KeysCollection,
        mean: float | None = None,
        std: float | None = None,
        stats_file: str | os.PathLike | None = None,
        allow_missing_keys: bool = False,
    ):
        super().__init__(keys, allow_missing_keys)
        self.normalizer = ZScoreNormalize(mean=mean, std=std, stats_file=stats_file)

    def __call__(self, data: Mapping[Hashable, NdarrayOrTensor]) -> dict[Hashable, NdarrayOrTensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.normalizer(d[key])
        return d


ZScoreNormalizeD = ZScoreNormalizeDict = ZScoreNormalized
