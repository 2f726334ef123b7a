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

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the bundle root is this script's parent folder

from bundle.cli import fire_command  # noqa: E402
from bundle.pseudo_label import PseudoLabelError, pseudo_label_files  # noqa: E402

__all__ = ["main"]


def _run(call) -> list[Path]:
    """Call, then log what was written; an unusable input or a failed file is one line and exit status 1."""
    log = logging.getLogger("pseudo_label")
    try:
        written = call()
    except PseudoLabelError as error:
        log.error("%s", error)
        raise SystemExit(1) from None
    log.info("done: %d mask(s) written to %s", len(written), _output(call))
    return written


def _output(call) -> str:
    """The OUTPUT argument of the bound call, positional or by name."""
    return str(call.args[1]) if len(call.args) > 1 else str(call.keywords.get("output"))


#: ``scripts/pseudo_label.py INPUT OUTPUT [--overwrite] ...``: :func:`bundle.pseudo_label.pseudo_label_files`, its
#: options and help, plus ``--verbose``.
main = fire_command(pseudo_label_files, run=_run)

if __name__ == "__main__":
    fire.Fire(main, serialize=lambda written: None)  # the masks written are logged; don't echo the returned list
