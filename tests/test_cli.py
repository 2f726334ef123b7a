# SPDX-License-Identifier: Apache-2.0
"""bundle.cli.setup_logging: what a script shows on stderr, run in a fresh interpreter as a script would be."""

from __future__ import annotations

import subprocess
import sys

import pytest

LOG_SOME = (
    "import logging; from bundle.cli import setup_logging; setup_logging({args}); "
    "log = logging.getLogger('bundle.x'); log.debug('detail'); log.info('wrote a.nii.gz'); log.warning('odd'); "
    "logging.getLogger('highdicom.seg').info('copied module')"
)


@pytest.mark.parametrize(
    "args, expected",
    [
        ("", ["INFO wrote a.nii.gz", "WARNING odd"]),
        ("show_level=False", ["wrote a.nii.gz", "odd"]),
        ("verbose=True", ["DEBUG detail", "INFO wrote a.nii.gz", "WARNING odd", "INFO copied module"]),
    ],
)
def test_setup_logging_levels_format_and_quiet_loggers(repo_root, args, expected):
    proc = subprocess.run(
        [sys.executable, "-c", LOG_SOME.format(args=args)], capture_output=True, text=True, cwd=repo_root, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.splitlines() == expected and proc.stdout == ""
