# SPDX-License-Identifier: Apache-2.0
"""File helpers the bundle shares: atomic outputs, file checksums and per-task lock files.

An output is written under a temporary name in the target's own folder (hence on the same file system) and moved
into place with ``os.replace`` only once it is complete, so a reader sees the old file or the new one, never a half
written one, and an interrupted run never destroys the previous result. This module imports only the standard
library, so any module (including the model-zoo export) can use it without pulling in torch or MONAI.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

__all__ = ["atomic_output", "atomic_write_text", "sha256_file", "FileLock", "LockHeld", "pid_alive"]

#: A lock from another host is taken as stale after this many seconds (its owner cannot be asked whether it lives).
FOREIGN_LOCK_MAX_AGE_S = 6 * 3600.0


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


def pid_alive(pid: int) -> bool:
    """Whether a process with this id runs on this host (a process of another user counts as alive).

    Args:
        pid: the process id.

    Returns:
        False when no such process exists.

    Example:
        >>> pid_alive(os.getpid())
        True
    """
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class LockHeld(RuntimeError):
    """The lock belongs to another live process; ``owner`` is its content (``pid``, ``host``, ``started``)."""

    def __init__(self, path: Path, owner: dict):
        super().__init__(path, owner)  # every argument, so that the error pickles and copies
        self.path, self.owner = path, owner

    def __str__(self) -> str:
        return f"{self.path} is held by pid {self.owner.get('pid', '?')} on {self.owner.get('host', '?')}"


class FileLock:
    """An exclusive, cross-process lock file holding its owner's pid, host and start time.

    Taking it is atomic (a complete temporary file hard-linked to the lock's name, which fails if the name exists),
    so two processes never both hold it, even on network file systems with hard links. A lock left by a killed
    process is recovered: on the same host when its pid no longer runs, from another host once it is older than
    :data:`FOREIGN_LOCK_MAX_AGE_S`. Use it as a context manager or with :meth:`acquire` / :meth:`release`.

    Args:
        path: the lock file (its folder must exist).

    Raises:
        LockHeld: from :meth:`acquire` when another live process holds the lock.

    Example:
        >>> import tempfile
        >>> lock = FileLock(Path(tempfile.mkdtemp()) / ".case.lock")
        >>> with lock:
        ...     lock.path.is_file()
        True
        >>> lock.path.exists()
        False
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.held = False

    def _owner(self) -> dict | None:
        try:
            return json.loads(self.path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            return {}  # being written (the O_EXCL fallback) or damaged: judged by its age

    def _stale(self, owner: dict) -> bool:
        try:
            age = time.time() - self.path.stat().st_mtime
        except FileNotFoundError:
            return True
        if owner.get("host") == socket.gethostname() and isinstance(owner.get("pid"), int):
            return not pid_alive(owner["pid"])
        return age > (FOREIGN_LOCK_MAX_AGE_S if owner else 60.0)

    def _create(self, content: str) -> bool:
        tmp = self.path.with_name(f"{self.path.name}.{uuid.uuid4().hex[:8]}.tmp")
        tmp.write_text(content)
        try:
            os.link(tmp, self.path)
            return True
        except FileExistsError:
            return False
        except OSError:  # no hard links on this file system: exclusive create (briefly empty, hence the age rule)
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                return False
            with os.fdopen(fd, "w") as f:
                f.write(content)
            return True
        finally:
            tmp.unlink(missing_ok=True)

    def acquire(self) -> FileLock:
        """Take the lock, recovering a stale one.

        Returns:
            self.

        Raises:
            LockHeld: another live process holds it.
        """
        content = json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "started": time.time()})
        for _ in range(5):
            if self._create(content):
                self.held = True
                return self
            owner = self._owner()
            if owner is None:
                continue  # released meanwhile
            if not self._stale(owner):
                raise LockHeld(self.path, owner)
            # move the stale lock aside under a unique name: of two recovering processes only one succeeds
            aside = self.path.with_name(f"{self.path.name}.{uuid.uuid4().hex[:8]}.stale")
            try:
                os.replace(self.path, aside)
            except FileNotFoundError:
                continue
            try:
                moved = json.loads(aside.read_text())
            except (OSError, ValueError):
                moved = {}
            if moved and moved != owner:  # another process recovered it first and took the lock: give it back
                os.replace(aside, self.path)
                raise LockHeld(self.path, moved)
            aside.unlink(missing_ok=True)
        raise LockHeld(self.path, self._owner() or {})

    def release(self) -> None:
        """Remove the lock if this object holds it."""
        if self.held:
            self.path.unlink(missing_ok=True)
            self.held = False

    def __enter__(self) -> FileLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
