# SPDX-License-Identifier: Apache-2.0
"""Segment the cranial cavity in head CT: a NIfTI file, a DICOM series folder, or a tree of studies.

Usage (from the bundle root)::

    python scripts/segment.py INPUT OUTPUT [--device auto|cpu|cuda|cuda:N] [--preset lite] [--weights PATH.pt]
        [--dicom_seg] [--noqc] [--reference MASK.nii.gz] [--overwrite] [--verbose]

Per case it writes ``NAME_mask.nii.gz`` (input's native geometry), optionally ``NAME_seg.dcm`` (DICOM SEG),
``NAME_qc.png`` and ``NAME_report.json`` (written last: a rerun skips finished cases), plus ``summary.csv``.
The exit status is 1 if any case failed (the reasons are listed at the end) or the summary could not be written, 2
if the call itself is unusable (input missing, OUTPUT not writable, ...), 130 on Ctrl-C (one line says what finished;
run the same command again to resume). Problems are reported in one line each, never as a traceback. Several runs
may share one OUTPUT: each case is claimed by one of them. Everything, including the libraries' DEBUG messages, is
logged to ``OUTPUT/segment.log``; the console shows the bundle's messages (``--verbose``: also its DEBUG ones).
The work is done by :func:`bundle.segment.segment`.
"""

from __future__ import annotations

import logging
import sys
import warnings
from pathlib import Path

import fire

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the bundle root is this script's parent folder

try:  # the libraries take seconds to load: Ctrl-C meanwhile is one line, as later
    from bundle.cli import fire_command, setup_logging
    from bundle.io.errors import CTInputError
    from bundle.segment import SegmentError, SegmentInterrupted, SummaryError, segment
except KeyboardInterrupt:
    print("interrupted before any case was segmented; run the same command again.", file=sys.stderr)
    sys.exit(130)

__all__ = ["main"]


def _run(call) -> list:
    """Call :func:`bundle.segment.segment`; turn its errors and failed cases into one-line messages and exit statuses.

    Raises:
        SystemExit: 1 if any case failed or the summary could not be written, 2 if the call is unusable, 130 when
            interrupted (messages logged, no traceback).
    """
    log = logging.getLogger("segment")
    try:
        results = call()
    except (SegmentError, CTInputError) as error:
        log.error("%s", error)
        sys.exit(2)
    except ValueError as error:  # a bad argument such as --device
        log.error("%s", error)
        sys.exit(2)
    except SegmentInterrupted as stop:
        log.error("%s", stop)
        sys.exit(130)
    except KeyboardInterrupt:  # before the first case (loading libraries, searching the input)
        log.error("interrupted before any case was segmented; run the same command again.")
        sys.exit(130)
    except SummaryError as error:
        log.error("%s", error)
        results = error.results
        failed = [r for r in results if r.status == "failed"]
        for r in failed:
            log.error("  %s (%s): %s", r.name, r.source, r.error)
        sys.exit(1)
    failed = [r for r in results if r.status == "failed"]
    if failed:
        log.error("%d of %d case(s) failed:", len(failed), len(results))
        for r in failed:
            log.error("  %s (%s): %s", r.name, r.source, r.error)
        sys.exit(1)
    return results


def _setup(verbose: bool) -> None:
    setup_logging(verbose)
    _quiet_libraries(verbose)


#: Libraries whose messages are noise on the console (highdicom's attribute copying and reader checks at DEBUG,
#: pydicom's "Invalid value for VR UI" once per slice at WARNING): they go to the log file only.
NOISY_LIBRARIES = ("highdicom", "pydicom", "PIL", "matplotlib", "urllib3", "fsspec", "filelock")


def _quiet_libraries(verbose: bool) -> None:
    """Keep library messages off the console; the log file (DEBUG) still gets them."""
    logging.captureWarnings(True)  # warnings outside a case (header reading) go through logging too, not stderr
    warnings.simplefilter("default")
    for handler in logging.getLogger().handlers:
        handler.addFilter(_BundleOnly(verbose))


class _BundleOnly(logging.Filter):
    """Console filter: the bundle's and this script's records; libraries' only from ERROR up."""

    def __init__(self, verbose: bool):
        super().__init__()
        self.verbose = verbose

    def filter(self, record: logging.LogRecord) -> bool:
        ours = record.name.split(".")[0] in ("bundle", "segment", "__main__", "root")
        if ours:
            return self.verbose or record.levelno >= logging.INFO
        return record.levelno >= logging.ERROR


#: ``scripts/segment.py INPUT OUTPUT [--device ...] ...``: :func:`bundle.segment.segment`, its options and help, plus
#: ``--verbose``; the command line logs every record to ``OUTPUT/segment.log`` (``--log_file`` defaults to True).
main = fire_command(segment, defaults={"log_file": True}, setup=_setup, run=_run)

if __name__ == "__main__":
    fire.Fire(main, serialize=lambda results: None)  # the cases are logged and listed in summary.csv
