# SPDX-License-Identifier: Apache-2.0
"""The main job's test-score table: segment the phantom test scans with the trained and the shipped weights.

Usage (from the repository root; ``scripts/run_default.sh`` calls it after training)::

    python scripts/main_job_report.py [--run_dir runs/default] [--preset quick] [--weights PATH.pt]
        [--shipped_weights models/model.pt] [--shipped_preset lite] [--device auto]

Masks, QC pictures and reports go to ``RUN/masks/`` (trained) and ``RUN/masks_shipped/`` (shipped); the table
(per case Dice, HD95 mm, volume mL, seconds, then mean +- std) is printed and written to ``RUN/test_scores.md`` and
``RUN/test_scores.json``. ``--shipped_weights ''`` leaves the comparison out. The exit status is 1 if a case failed.
The work is done by :func:`scripts.benchmarks.main_job.main_job_report`.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import fire

__all__ = ["main"]


def main(
    run_dir: str = "runs/default",
    preset: str = "quick",
    weights: str | None = None,
    shipped_weights: str = "models/model.pt",
    shipped_preset: str = "lite",
    device: str = "auto",
) -> None:
    """Print and write the test-score table of a main-job run.

    Args:
        run_dir: the main job's folder. Defaults to "runs/default".
        preset: the preset the model was trained with. Defaults to "quick".
        weights: the trained weights. Defaults to None: ``RUN/models/model.pt``.
        shipped_weights: the weights to compare with ('' for none). Defaults to "models/model.pt".
        shipped_preset: the preset of ``shipped_weights``. Defaults to "lite".
        device: auto, cpu, cuda or cuda:N. Defaults to auto.

    Raises:
        SystemExit: 1 if a case failed, 2 if the call is unusable (missing weights, unknown preset).
    """
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from bundle.cli import setup_logging

    setup_logging()
    # the console keeps warnings and errors (a failed case, a mask's findings); every message of the segmenter,
    # "wrote ..." included, is in each output folder's segment.log
    for handler in logging.getLogger().handlers:
        handler.setLevel(logging.WARNING)
    logging.captureWarnings(True)
    from bundle.segment import SegmentError
    from scripts.benchmarks.main_job import main_job_report

    try:
        report = main_job_report(
            run_dir=run_dir,
            preset=preset,
            weights=weights,
            shipped_weights=shipped_weights or None,
            shipped_preset=shipped_preset,
            device=device,
        )
    except (SegmentError, ValueError) as error:
        logging.getLogger("main_job_report").error("%s", error)
        sys.exit(2)
    if any(row["status"] == "failed" for model in report["models"].values() for row in model["cases"]):
        sys.exit(1)


if __name__ == "__main__":
    fire.Fire(main)
