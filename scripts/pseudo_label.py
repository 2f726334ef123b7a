# SPDX-License-Identifier: Apache-2.0
"""Bootstrap cranial-cavity masks for unlabelled head CT with the classical pipeline (no network, no GPU).

Usage (from the bundle root)::

    python scripts/pseudo_label.py INPUT OUTPUT [--overwrite] [--bone_threshold_hu 250] [--verbose]

INPUT is a NIfTI file (HU) or a folder of them; OUTPUT is the folder for the masks (required; never inside INPUT).
Each mask keeps its input's name, shape and affine (uint8, 1 = cranial cavity). Masks already in OUTPUT are skipped
unless ``--overwrite``, so an interrupted run can simply be started again. The exit status is 1 if any file failed.
The work is done by :func:`bundle.pseudo_label.pseudo_label_files`.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import fire

__all__ = ["main"]


def main(
    input: str,
    output: str,
    overwrite: bool = False,
    bone_threshold_hu: float = 250.0,
    min_slice_area_fraction: float = 0.05,
    verbose: bool = False,
) -> None:
    """Pseudo-label a NIfTI head CT file or folder into OUTPUT.

    Args:
        input: a .nii/.nii.gz file in HU or a folder of them.
        output: folder for the masks (created; must not be inside the input folder or be the input file's folder).
        overwrite: redo masks that already exist in OUTPUT. Defaults to False.
        bone_threshold_hu: HU at and above which a voxel is bone. Defaults to 250.
        min_slice_area_fraction: foramen magnum cut, see bundle.pseudo_label. Defaults to 0.05.
        verbose: log debug messages too. Defaults to False.

    Raises:
        SystemExit: with status 1 when the input is unusable or any file failed (the reasons are logged).
    """
    # heavy imports after argument parsing; the bundle root is this script's parent folder
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from bundle.cli import setup_logging

    setup_logging(verbose)
    from bundle.pseudo_label import PseudoLabelError, pseudo_label_files

    try:
        written = pseudo_label_files(
            str(input),
            str(output),
            overwrite=overwrite,
            bone_threshold_hu=bone_threshold_hu,
            min_slice_area_fraction=min_slice_area_fraction,
        )
    except PseudoLabelError as error:
        logging.getLogger("pseudo_label").error("%s", error)
        raise SystemExit(1) from None
    logging.getLogger("pseudo_label").info("done: %d mask(s) written to %s", len(written), output)


if __name__ == "__main__":
    fire.Fire(main)
