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

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main(
    datalist: str,
    output: str,
    split: str = "training",
    image_key: str = "image",
    base_dir: str | None = None,
    progress: bool = True,
) -> dict:
    """Compute mean and std over all voxels of a datalist split and write them to OUTPUT as JSON.

    Args:
        datalist: datalist JSON with a ``training`` list of ``{"image": ..., "label": ...}`` (paths relative to it).
        output: JSON file to write; never one of the inputs.
        split: datalist key. Defaults to "training".
        image_key: key of the image paths. Defaults to "image".
        base_dir: folder relative paths start from. Default None: the datalist's folder.
        progress: show a progress bar. Defaults to True.

    Returns:
        The statistics written.
    """
    from bundle.cli import setup_logging
    from bundle.transforms.stats import compute_dataset_stats

    setup_logging(show_level=False)
    return compute_dataset_stats(
        datalist, output, split=split, image_key=image_key, base_dir=base_dir, progress=progress
    )


if __name__ == "__main__":
    import fire

    fire.Fire(main)
