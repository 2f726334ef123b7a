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

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root is this script's parent folder

from bundle.cli import fire_command, setup_logging  # noqa: E402
from bundle.segment import SegmentError  # noqa: E402
from scripts.benchmarks.main_job import main_job_report  # noqa: E402

__all__ = ["main"]


def _setup(verbose: bool) -> None:
    """Console: warnings and errors (a failed case, a mask's findings); the segmenter's messages are in segment.log."""
    setup_logging(verbose)
    if not verbose:
        for handler in logging.getLogger().handlers:
            handler.setLevel(logging.WARNING)
    logging.captureWarnings(True)


def _run(call) -> dict:
    """Call; an unusable call (missing weights, unknown preset) is exit status 2, a failed case exit status 1."""
    try:
        report = call()
    except (SegmentError, ValueError) as error:
        logging.getLogger("main_job_report").error("%s", error)
        raise SystemExit(2) from None
    if any(row["status"] == "failed" for model in report["models"].values() for row in model["cases"]):
        raise SystemExit(1)
    return report


#: ``scripts/main_job_report.py [--run_dir runs/default] [--preset quick] ...``:
#: :func:`scripts.benchmarks.main_job.main_job_report`, its options and help, plus ``--verbose``.
main = fire_command(main_job_report, run=_run, setup=_setup)

if __name__ == "__main__":
    fire.Fire(main, serialize=lambda report: None)  # the table is printed and written by main_job_report
