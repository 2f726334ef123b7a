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

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main(
    output_dir: str,
    num_train: int = 4,
    num_val: int = 2,
    num_test: int = 2,
    seed: int = 0,
    in_plane_size: int = 64,
    num_slices: int | None = 24,
    formats: str | tuple[str, ...] = "nifti",
    variants: str | tuple[str, ...] | None = None,
    scan: str = "classic",
    pixel_spacing_mm: float | None = None,
    coarse_spacing_mm: float | None = None,
    progress: bool = True,
) -> str:
    """Generate the phantoms and write the dataset under OUTPUT_DIR.

    Args:
        output_dir: dataset folder (required; created if missing; an existing different dataset is refused).
        num_train: training cases. Defaults to 4.
        num_val: validation cases. Defaults to 2.
        num_test: test cases. Defaults to 2.
        seed: dataset seed. Defaults to 0.
        in_plane_size: pixels per row/column (512 is full size). Defaults to 64.
        num_slices: slices per case; None draws 100-400 slices with realistic spacings. Defaults to 24.
        formats: "nifti", "dicom" or "nifti,dicom". Defaults to "nifti".
        variants: variants cycled over the cases, e.g. "normal,craniectomy". Default None: drawn per case.
        scan: scan protocol: "classic" (whole head, no artefacts), "varied" (what real scans show) or "training"
            (varied, slices of 1.25 mm and more). Defaults to "classic".
        pixel_spacing_mm: pixel size; with ``--in_plane_size None`` the matrix follows the drawn field of view.
            Default None.
        coarse_spacing_mm: spacing of the anatomy grid. Default None (1 mm or the pixel size).
        progress: show a progress bar. Defaults to True.

    Returns:
        The path of the written ``datalist.json``.
    """
    from bundle.cli import setup_logging
    from bundle.data.phantoms import make_phantom_dataset

    setup_logging(show_level=False)
    if isinstance(variants, str):
        variants = tuple(v.strip() for v in variants.split(",") if v.strip())
    path = make_phantom_dataset(
        output_dir,
        num_train=num_train,
        num_val=num_val,
        num_test=num_test,
        seed=seed,
        in_plane_size=in_plane_size,
        num_slices=num_slices,
        formats=formats,
        variants=variants,
        scan=scan,
        pixel_spacing_mm=pixel_spacing_mm,
        coarse_spacing_mm=coarse_spacing_mm,
        progress=progress,
    )
    return str(path)


if __name__ == "__main__":
    import fire

    fire.Fire(main)
