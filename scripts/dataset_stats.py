# SPDX-License-Identifier: Apache-2.0
"""Training-set intensity statistics for the z-score normalisation.

Reads the datalist's training split, loads every image as the pipeline does (``bundle.io.load_ct``), one at a time,
and writes ``{"mean", "std", "num_voxels", "num_cases", ...}`` to OUTPUT (atomically) for ``ZScoreNormalized``.

Usage (from the repository root)::

    python scripts/dataset_stats.py DATALIST OUTPUT [--split training] [--image_key image] [--base_dir DIR]

Example::

    python scripts/dataset_stats.py data/phantoms/datalist.json models/intensity_stats.json
"""

from __future__ import annotations

import os
import sys

import fire

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the repository root

from bundle.cli import fire_command, setup_logging  # noqa: E402
from bundle.transforms.stats import compute_dataset_stats  # noqa: E402

__all__ = ["main"]

#: ``scripts/dataset_stats.py DATALIST OUTPUT [--split training] ...``: :func:`bundle.transforms.stats.
#: compute_dataset_stats`, its options and help, plus ``--verbose``; prints the statistics written.
main = fire_command(compute_dataset_stats, setup=lambda verbose: setup_logging(verbose, show_level=False))

if __name__ == "__main__":
    fire.Fire(main)
