# SPDX-License-Identifier: Apache-2.0
"""The error raised for CT input the loader cannot turn into a correct volume."""

from __future__ import annotations

import os

__all__ = ["CTInputError"]


class CTInputError(ValueError):
    """A CT input (NIfTI file or DICOM series folder) that cannot be loaded correctly.

    The message always starts with the offending path and then says what is wrong and, where there is one, what to
    do about it. ``path`` and ``problem`` are kept as attributes so that callers (the segmentation CLI, a DataLoader
    wrapper) can report them in their own words.

    Args:
        path: the file or folder the problem was found in.
        problem: what is wrong, as a sentence.

    Example:
        >>> err = CTInputError("/data/ct/series1", "holds 2 series; pass one series folder.")
        >>> str(err)
        '/data/ct/series1: holds 2 series; pass one series folder.'
        >>> isinstance(err, ValueError)
        True
    """

    def __init__(self, path: str | os.PathLike, problem: str):  # noqa: B042 (pickling via __reduce__)
        self.path = os.fspath(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")

    def __reduce__(self):  # keep pickling (DataLoader workers) working with the two-argument constructor
        return (type(self), (self.path, self.problem))
