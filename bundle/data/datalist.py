# SPDX-License-Identifier: Apache-2.0
"""Dataset lists (``datalist.json``) in the MONAI Decathlon layout.

A datalist is a JSON object whose keys are the splits ``"training"``, ``"validation"`` and ``"test"``; each holds a
list of ``{"image": path, "label": path, ...}`` entries with paths relative to the datalist's folder. MONAI reads it
directly: ``monai.data.load_decathlon_datalist(path, data_list_key="training")`` resolves the relative paths.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Mapping, Sequence

from bundle.utils import atomic_write_text

__all__ = ["DATALIST_SPLITS", "DatalistError", "load_datalist", "write_datalist"]

#: Split names, in the order the paper's 77/20/60 split lists them.
DATALIST_SPLITS: tuple[str, ...] = ("training", "validation", "test")


class DatalistError(ValueError):
    """Raised for a malformed datalist; the message names the file or split and the problem."""


def _check_entries(split: str, entries: Sequence[Mapping], where: str) -> None:
    if not isinstance(entries, (list, tuple)):
        raise DatalistError(f"{where}: split {split!r} must be a list of entries, got {type(entries).__name__}.")
    for n, entry in enumerate(entries):
        if not isinstance(entry, Mapping) or "image" not in entry:
            raise DatalistError(f"{where}: entry {n} of split {split!r} must be a mapping with an 'image' key.")
        for key, value in entry.items():
            if key in ("image", "label") and (not isinstance(value, str) or not value):
                raise DatalistError(f"{where}: entry {n} of split {split!r} has an invalid {key!r}: {value!r}.")
            if key in ("image", "label") and os.path.isabs(value):
                raise DatalistError(
                    f"{where}: entry {n} of split {split!r} has an absolute {key!r} path {value!r}; "
                    "paths must be relative to the datalist's folder."
                )


def write_datalist(path: str | os.PathLike, splits: Mapping[str, Sequence[Mapping]]) -> Path:
    """Write a datalist JSON atomically.

    Args:
        path: output file (``.json``); its folder is created if missing.
        splits: mapping of split name (one of :data:`DATALIST_SPLITS`) to a list of entries with relative paths.

    Returns:
        The path written.

    Raises:
        DatalistError: for an unknown split name, an entry without ``"image"``, or absolute paths.

    Example:
        >>> import tempfile, os
        >>> p = write_datalist(os.path.join(tempfile.mkdtemp(), "datalist.json"),
        ...                    {"training": [{"image": "images/a.nii.gz", "label": "labels/a.nii.gz"}]})
        >>> load_datalist(p)["training"][0]["image"].endswith("images/a.nii.gz")
        True
    """
    path = Path(path)
    unknown = [s for s in splits if s not in DATALIST_SPLITS]
    if unknown:
        raise DatalistError(f"{path}: unknown split(s) {unknown}; expected {DATALIST_SPLITS}.")
    for split, entries in splits.items():
        _check_entries(split, entries, str(path))
    data = {s: [dict(e) for e in splits[s]] for s in DATALIST_SPLITS if s in splits}
    return atomic_write_text(path, json.dumps(data, indent=2) + "\n")


def load_datalist(path: str | os.PathLike) -> dict[str, list[dict]]:
    """Read a datalist and resolve its relative paths against the datalist's folder.

    Args:
        path: the datalist JSON.

    Returns:
        ``{split: [entry, ...]}`` with ``"image"``, ``"label"`` (and any other string path-like keys that exist
        relative to the folder) made absolute.

    Raises:
        DatalistError: if the file is missing, is not JSON, or holds malformed splits.

    Example:
        >>> import tempfile, os
        >>> p = write_datalist(os.path.join(tempfile.mkdtemp(), "d.json"), {"test": [{"image": "x.nii.gz"}]})
        >>> os.path.isabs(load_datalist(p)["test"][0]["image"])
        True
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError as err:
        raise DatalistError(f"datalist {path} does not exist.") from err
    except (OSError, json.JSONDecodeError) as err:
        raise DatalistError(f"datalist {path} is not readable JSON: {err}") from err
    if not isinstance(data, dict):
        raise DatalistError(f"datalist {path} must hold a JSON object of splits.")
    base = path.resolve().parent
    out: dict[str, list[dict]] = {}
    for split in DATALIST_SPLITS:
        if split not in data:
            continue
        _check_entries(split, data[split], str(path))
        resolved = []
        for entry in data[split]:
            item = dict(entry)
            for key in ("image", "label", "dicom"):
                if isinstance(item.get(key), str):
                    item[key] = str(base / item[key])
            resolved.append(item)
        out[split] = resolved
    return out
