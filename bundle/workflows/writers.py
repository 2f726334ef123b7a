# SPDX-License-Identifier: Apache-2.0
"""Atomic output files for the workflows: a result appears complete or not at all, never half written.

:class:`AtomicNibabelWriter` is MONAI's ``NibabelWriter`` built on :func:`bundle.utils.atomic_output` (a temporary
path beside the target, moved into place with ``os.replace`` only when writing succeeded), for ``SaveImaged``.
"""

from __future__ import annotations

import logging

from monai.config import PathLike
from monai.data import NibabelWriter

from bundle.utils import atomic_output

__all__ = ["AtomicNibabelWriter"]

logger = logging.getLogger(__name__)


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
