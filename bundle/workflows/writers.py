# SPDX-License-Identifier: Apache-2.0
"""Atomic output files: a result appears complete or not at all, never half written.

:func:`atomic_output` gives a temporary path beside the target (same folder, hence same file system) and moves it
into place with ``os.replace`` only when writing succeeded; :class:`AtomicNibabelWriter` is MONAI's
``NibabelWriter`` built on it, for ``SaveImaged``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

from monai.config import PathLike
from monai.data import NibabelWriter

__all__ = ["AtomicNibabelWriter", "atomic_output"]

logger = logging.getLogger(__name__)


@contextlib.contextmanager
def atomic_output(target: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path to write instead of ``target``; on success it replaces ``target`` atomically.

    The temporary name keeps the target's suffixes (``.nii.gz``, ``.json`` ...) so that writers that choose a format
    by extension still work; its folder is created if missing. On any exception the temporary file is removed and
    ``target`` is left as it was.

    Args:
        target: the final path.

    Yields:
        The temporary path (does not exist yet).

    Example:
        >>> with atomic_output("eval/metrics.csv") as tmp:  # doctest: +SKIP
        ...     tmp.write_text("case,dice\\n")
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    suffixes = "".join(target.suffixes[-2:]) if target.name.endswith(".nii.gz") else target.suffix
    tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}.tmp{suffixes}")
    try:
        yield tmp
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


class AtomicNibabelWriter(NibabelWriter):
    """MONAI's ``NibabelWriter`` writing through :func:`atomic_output`.

    Use it as ``SaveImaged(..., writer="bundle.workflows.AtomicNibabelWriter")``: an interrupted inference leaves no
    truncated ``.nii.gz`` that a later step could mistake for a result.

    Example:
        >>> from monai.transforms import SaveImaged
        >>> save = SaveImaged(keys="pred", output_dir="eval", writer=AtomicNibabelWriter)
    """

    def write(self, filename: PathLike, verbose: bool = False, **obj_kwargs) -> None:
        """Write ``filename`` atomically (same arguments as ``NibabelWriter.write``)."""
        with atomic_output(filename) as tmp:
            super().write(tmp, verbose=False, **obj_kwargs)
        logger.info("wrote %s", filename)
