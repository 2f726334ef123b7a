# SPDX-License-Identifier: Apache-2.0
"""Set-up shared by the command-line scripts in ``scripts/``: logging to the terminal.

Each script parses its arguments with ``fire``, calls :func:`setup_logging`, and only then imports the heavy packages
and calls its function in ``bundle/``. Library modules never configure logging themselves; they only log. This module
imports only the standard library, so a script can call it before anything slow is loaded.
"""

from __future__ import annotations

import logging

__all__ = ["QUIET_LOGGERS", "setup_logging"]

#: Third-party loggers that are too chatty at INFO (highdicom logs every module it copies into a DICOM SEG); they are
#: limited to warnings unless ``verbose``.
QUIET_LOGGERS: tuple[str, ...] = ("highdicom",)


def setup_logging(verbose: bool = False, *, show_level: bool = True) -> None:
    """Log the bundle's messages to stderr the way every script does: INFO, or DEBUG with ``verbose``.

    Uses ``logging.basicConfig``, so it does nothing to a root logger that is already configured (a script imported
    and run from Python or a test keeps the caller's set-up).

    Args:
        verbose: also show DEBUG messages, and INFO messages of :data:`QUIET_LOGGERS`. Defaults to False.
        show_level: prefix each line with its level name (``INFO wrote ...``); False prints the message alone, for
            scripts whose output is a list of written files. Defaults to True.

    Example:
        >>> setup_logging(verbose=True)  # doctest: +SKIP
    """
    fmt = "%(levelname)s %(message)s" if show_level else "%(message)s"
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, format=fmt)
    if not verbose:
        for name in QUIET_LOGGERS:
            logging.getLogger(name).setLevel(logging.WARNING)
