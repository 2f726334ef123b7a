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

__all__ = ["main"]


def main(
    output_dir: str,
    schema: str | None = None,
    zip: bool = False,
    verify: bool = True,
    large_files_url: str | None = None,
    overwrite: bool = False,
    device: str = "cpu",
    report: str | None = None,
) -> None:
    """Export and verify the model-zoo bundle (see :func:`scripts.zoo.export_zoo` for the arguments)."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from bundle.cli import setup_logging
    from scripts.zoo import ZooCheckError, export_zoo

    setup_logging()
    try:
        export_zoo(
            output_dir,
            schema,
            zip=zip,
            verify=verify,
            large_files_url=large_files_url,
            overwrite=overwrite,
            device=device,
            report=report,
        )
    except (ZooCheckError, ValueError) as err:
        logging.error("%s", err)
        sys.exit(1)


if __name__ == "__main__":
    fire.Fire(main)
