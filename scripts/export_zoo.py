# SPDX-License-Identifier: Apache-2.0
"""Assemble this bundle in the MONAI model-zoo layout and verify it with the zoo's checks.

Usage (from the repository root)::

    python scripts/export_zoo.py OUTPUT_DIR --schema PATH/meta_schema_20240725.json [--zip] [--large_files_url URL]
        [--overwrite] [--report report.json]
    python scripts/export_zoo.py OUTPUT_DIR --verify False      # assemble only (no schema needed)

Writes ``OUTPUT_DIR/brain_ct_convlstm_segmentation/`` (and ``.zip`` with ``--zip``), then checks a fresh copy of it
in a temporary folder: required files, sizes and ``large_files.yml``, metadata against the schema,
``verify_net_in_out``, ``ckpt_export`` to TorchScript and reload, JSON/black/isort/flake8 formatting. The exit status
is 1 when a check fails (every failure is listed). The work is done by :func:`scripts.zoo.export_zoo`; see
docs/model_zoo.md.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import fire

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root is this script's parent folder

from bundle.cli import fire_command  # noqa: E402
from scripts.zoo import ZooCheckError, export_zoo  # noqa: E402

__all__ = ["main"]


def _run(call) -> str:
    """Call; a failed check or an unusable argument is logged and exit status 1."""
    try:
        return call()
    except (ZooCheckError, ValueError) as error:
        logging.getLogger("export_zoo").error("%s", error)
        raise SystemExit(1) from None


#: ``scripts/export_zoo.py OUTPUT_DIR [--schema ...] ...``: :func:`scripts.zoo.export_zoo`, its options and help,
#: plus ``--verbose``.
main = fire_command(export_zoo, run=_run)

if __name__ == "__main__":
    fire.Fire(main, serialize=lambda result: None)
