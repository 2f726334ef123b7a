# SPDX-License-Identifier: Apache-2.0
"""Training-set intensity statistics for the z-score normalisation (``scripts/dataset_stats.py``).

The images of the datalist's training split are loaded one at a time with :func:`bundle.io.load_ct` (so the
statistics see exactly the HU values the pipeline sees) and reduced in float64 per case; the per-case moments are
merged with Chan et al.'s parallel update, so the whole set never has to fit in memory and the result does not
depend on the order of the cases beyond rounding.
"""

from __future__ import annotations

import json
import logging
import math
import os
from pathlib import Path

import numpy as np

from bundle.utils import atomic_write_text

__all__ = ["RunningMoments", "compute_dataset_stats"]

logger = logging.getLogger(__name__)


class RunningMoments:
    """Streaming count, mean and variance of many arrays (Chan, Golub and LeVeque's pairwise update).

    Example:
        >>> m = RunningMoments()
        >>> m.update(np.array([1.0, 2.0])); m.update(np.array([3.0, 4.0, 5.0]))
        >>> m.count, m.mean, round(m.std, 6)
        (5, 3.0, 1.414214)
    """

    def __init__(self):
        self.count = 0
        self.mean = 0.0
        self._m2 = 0.0

    def update(self, values: np.ndarray, chunk: int = 1 << 24) -> None:
        """Add the values of an array (any shape), in chunks of ``chunk`` elements to bound temporary memory.

        Args:
            values: the new values.
            chunk: elements per chunk. Defaults to 16M.
        """
        flat = np.asarray(values).reshape(-1)
        for start in range(0, flat.size, chunk):
            part = flat[start : start + chunk].astype(np.float64)
            n = part.size
            mean = float(part.mean())
            m2 = float(((part - mean) ** 2).sum())
            total = self.count + n
            delta = mean - self.mean
            self.mean += delta * n / total
            self._m2 += m2 + delta * delta * self.count * n / total
            self.count = total

    @property
    def std(self) -> float:
        """Population standard deviation of everything added so far (0.0 when empty)."""
        return math.sqrt(self._m2 / self.count) if self.count else 0.0


def compute_dataset_stats(
    datalist: str | os.PathLike,
    output: str | os.PathLike,
    split: str = "training",
    image_key: str = "image",
    base_dir: str | os.PathLike | None = None,
    progress: bool = True,
) -> dict:
    """Mean and standard deviation of all image voxels of a datalist split; writes them as JSON.

    Args:
        datalist: a datalist JSON (``{"training": [{"image": ..., "label": ...}, ...], ...}``).
        output: the JSON file to write (``{"mean", "std", "num_voxels", "num_cases", ...}``), atomically; its folder
            is created. The inputs are never written.
        split: the datalist key to use. Defaults to "training" (the paper computes them on the training set).
        image_key: the key of the image paths. Defaults to "image".
        base_dir: folder that relative paths in the datalist are relative to. Default None: the datalist's folder.
        progress: show a progress bar over the cases. Defaults to True.

    Returns:
        The statistics written.

    Raises:
        ValueError: if the datalist cannot be read, the split is missing or empty, or an entry has no image.
        bundle.io.CTInputError: if an image cannot be loaded.

    Example:
        >>> compute_dataset_stats("data/datalist.json", "models/intensity_stats.json")  # doctest: +SKIP
        {'mean': -612.3, 'std': 498.1, 'num_voxels': 2013265920, 'num_cases': 77, ...}
    """
    from monai.data import load_decathlon_datalist
    from tqdm import tqdm

    from bundle.io import load_ct

    datalist = Path(datalist)
    if not datalist.is_file():
        raise ValueError(f"datalist {os.fspath(datalist)!r} does not exist.")
    try:
        with open(datalist, encoding="utf-8") as f:
            content = json.load(f)
    except json.JSONDecodeError as err:
        raise ValueError(f"datalist {os.fspath(datalist)!r} is not valid JSON ({err}).") from err
    if not isinstance(content, dict) or not content.get(split):
        raise ValueError(f"datalist {os.fspath(datalist)!r} has no entries under {split!r}.")
    entries = load_decathlon_datalist(
        datalist, is_segmentation=True, data_list_key=split, base_dir=base_dir or datalist.parent
    )
    moments = RunningMoments()
    low, high = math.inf, -math.inf
    for entry in tqdm(entries, desc=f"{split} intensity statistics", disable=not progress):
        if image_key not in entry:
            raise ValueError(f"datalist {os.fspath(datalist)!r}: entry {entry} has no {image_key!r}.")
        image, _, _ = load_ct(entry[image_key])
        moments.update(image)
        low, high = min(low, float(image.min())), max(high, float(image.max()))
        del image
    stats = {
        "mean": moments.mean,
        "std": moments.std,
        "num_voxels": moments.count,
        "num_cases": len(entries),
        "min": low,
        "max": high,
        "split": split,
        "datalist": datalist.name,
    }
    output = Path(output)
    atomic_write_text(output, json.dumps(stats, indent=2) + "\n")
    logger.info("wrote %s (mean %.2f, std %.2f over %d cases)", output, stats["mean"], stats["std"], len(entries))
    return stats
