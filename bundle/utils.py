# SPDX-License-Identifier: Apache-2.0
"""File helpers the bundle shares: atomic outputs and file checksums.

An output is written under a temporary name in the target's own folder (hence on the same file system) and moved
into place with ``os.replace`` only once it is complete, so a reader sees the old file or the new one, never a half
written one, and an interrupted run never destroys the previous result. This module imports only the standard
library, so any module (including the model-zoo export) can use it without pulling in torch or MONAI.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

__all__ = ["atomic_output", "atomic_write_text", "sha256_file"]


def _temporary_name(target: Path) -> Path:
    """A fresh hidden name beside ``target`` that keeps its suffix (both parts of ``.nii.gz``)."""
    suffix = "".join(target.suffixes[-2:]) if target.name.endswith(".nii.gz") else target.suffix
    return target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}.tmp{suffix}")


@contextlib.contextmanager
def atomic_output(target: str | os.PathLike, *, directory: bool = False) -> Iterator[Path]:
    """Yield a temporary path to write instead of ``target``; when the block succeeds it replaces ``target``.

    The temporary path lies in ``target``'s folder (created if missing) and keeps its suffix (``.nii.gz``, ``.json``,
    ``.png`` ...), so writers that choose a format by extension still work. With ``directory=True`` the temporary path
    is an empty folder, created here, to fill with files; it then replaces ``target``, which must not exist or be an
    empty folder (``os.replace`` refuses a non-empty one). On any exception, including ``KeyboardInterrupt``, the
    temporary file or folder is removed and ``target`` is left as it was.

    Args:
        target: the final file (or folder) path.
        directory: produce a folder rather than a file. Defaults to False.

    Yields:
        The temporary path: not yet existing for a file, an empty folder for ``directory=True``.

    Raises:
        ValueError: if ``target`` has no file name (e.g. ``"."``).
        OSError: when ``target`` cannot be replaced (e.g. a non-empty folder with ``directory=True``), after the
            temporary output has been removed.

    Example:
        >>> import tempfile
        >>> target = Path(tempfile.mkdtemp()) / "metrics.csv"
        >>> with atomic_output(target) as tmp:
        ...     _ = tmp.write_text("case,dice\\n")
        >>> target.read_text()
        'case,dice\\n'
    """
    target = Path(target)
    if not target.name or target.name == "..":
        raise ValueError(f"target must name a file or folder, got {os.fspath(target)!r}.")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temporary_name(target)
    if directory:
        tmp.mkdir()
    try:
        yield tmp
        os.replace(tmp, target)
    except BaseException:
        if directory:
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | os.PathLike, text: str, *, encoding: str = "utf-8") -> Path:
    """Write ``text`` to ``path`` atomically (see :func:`atomic_output`).

    Args:
        path: the file to write; its folder is created if missing. An existing file is replaced.
        text: the whole content.
        encoding: text encoding. Defaults to "utf-8".

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Example:
        >>> import json, tempfile
        >>> path = atomic_write_text(Path(tempfile.mkdtemp()) / "stats.json", json.dumps({"mean": 0.0}) + "\\n")
        >>> json.loads(path.read_text())
        {'mean': 0.0}
    """
    path = Path(path)
    with atomic_output(path) as tmp:
        tmp.write_text(text, encoding=encoding)
    return path


def sha256_file(path: str | os.PathLike) -> str:
    """The SHA-256 hex digest of a file, read in 1 MiB blocks (any size, little memory).

    Args:
        path: the file.

    Returns:
        64 lowercase hexadecimal characters.

    Raises:
        OSError: if the file cannot be read.

    Example:
        >>> import tempfile
        >>> path = atomic_write_text(Path(tempfile.mkdtemp()) / "empty.txt", "")
        >>> sha256_file(path)[:16]
        'e3b0c44298fc1c14'
    """
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
