# SPDX-License-Identifier: Apache-2.0
"""Write a synthetic head-CT phantom dataset: NIfTI images and labels, optional DICOM series and ``datalist.json``.

A thin command line over :func:`bundle.data.phantoms.make_phantom_dataset` (see it for the layout, the label
definition and the rerun rules). Every written file is logged; a progress bar counts the cases.

Usage (from the repository root)::

    python scripts/make_phantoms.py OUTPUT_DIR [--num_train 4] [--num_val 2] [--num_test 2] [--seed 0]
        [--in_plane_size 64] [--num_slices 24] [--formats nifti,dicom] [--variants normal,haemorrhage]
        [--scan classic|varied|training] [--pixel_spacing_mm MM] [--coarse_spacing_mm MM]

Examples::

    # small, fast test data (64 x 64 x 24, the same field of view as a full scan)
    python scripts/make_phantoms.py data/phantoms_small
    # the paper's 77/20/60 split at full size (512 x 512, 100-400 slices), NIfTI and DICOM
    python scripts/make_phantoms.py data/phantoms --num_train 77 --num_val 20 --num_test 60 \\
        --in_plane_size 512 --num_slices None --formats nifti,dicom
    # the shipped weights' training set: 200/16/8 phantoms of the training protocol, 1.5 mm pixels
    python scripts/make_phantoms.py data/phantoms_training --num_train 200 --num_val 16 --num_test 8 \
        --in_plane_size None --num_slices None --scan training --pixel_spacing_mm 1.5 --coarse_spacing_mm 1.5
"""

from __future__ import annotations

import os
import sys

import fire

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the repository root

from bundle.cli import fire_command, setup_logging  # noqa: E402
from bundle.data.phantoms import make_phantom_dataset  # noqa: E402

__all__ = ["main"]

#: ``scripts/make_phantoms.py OUTPUT_DIR [--num_train 4] ...``: :func:`bundle.data.phantoms.make_phantom_dataset`, its
#: options and help, plus ``--verbose``; the command line shows a progress bar (``--progress`` defaults to True).
main = fire_command(
    make_phantom_dataset, defaults={"progress": True}, setup=lambda verbose: setup_logging(verbose, show_level=False)
)

if __name__ == "__main__":
    fire.Fire(main, serialize=str)  # prints the path of the written datalist.json
