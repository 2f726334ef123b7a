# SPDX-License-Identifier: Apache-2.0
"""Find the CT series to segment under an input path: a NIfTI file, one DICOM series folder, or a tree of studies.

The one input finder: used by :func:`bundle.segment.segment` (a tree, recursively) and by the workflows' datalist
(:func:`bundle.workflows.data.find_ct_inputs`: the inputs directly inside a folder, ``recursive=False``). A tree is
searched recursively; its DICOM files are grouped by
``SeriesInstanceUID`` and every series is one case. Series that are not CT images (SR, SEG, RTSTRUCT, presentation
states, MR, ...) are skipped with a logged note. A folder that directly holds files and has no sub-folders is taken
as *one* series folder and handed to the loader as it is, so that the loader's checks (several series in one folder,
missing or duplicate slices, non-CT, ...) apply to it.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
from collections import defaultdict
from pathlib import Path

from bundle.io.dicom_series import read_dicom_file
from bundle.io.errors import CTInputError
from bundle.io.paths import is_nifti, nifti_stem

__all__ = ["SeriesInput", "SkippedSeries", "find_series", "CT_IMAGE_SOP_CLASSES"]

logger = logging.getLogger(__name__)

#: SOP classes segmented in tree mode: CT Image Storage (single-frame slices, what the loader reads).
CT_IMAGE_SOP_CLASSES = {"1.2.840.10008.5.1.4.1.1.2"}
_HEADER_TAGS = ["SeriesInstanceUID", "Modality", "SOPClassUID", "SeriesNumber", "SeriesDescription"]


@dataclasses.dataclass(frozen=True)
class SeriesInput:
    """One case to segment.

    Attributes:
        name: unique, file-name-safe name; the outputs are ``OUTPUT/<name>_mask.nii.gz`` etc.
        path: the NIfTI file or the folder holding the series.
        files: for a series found in a tree, its DICOM files (possibly spread over folders or sharing a folder with
            other series); None when ``path`` is handed to the loader as it is.
        series_instance_uid: SeriesInstanceUID ("" for NIfTI and not-yet-read series folders).
    """

    name: str
    path: Path
    files: tuple[Path, ...] | None = None
    series_instance_uid: str = ""


@dataclasses.dataclass(frozen=True)
class SkippedSeries:
    """A DICOM series found in a tree and not segmented, with the reason."""

    path: Path
    series_instance_uid: str
    reason: str


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._") or "series"


def _read_header(path: Path):
    """The few tags discovery needs, read by the loader's DICOM file reader; None for anything unreadable."""
    try:
        return read_dicom_file(path, stop_before_pixels=True, specific_tags=_HEADER_TAGS)
    except CTInputError:  # a damaged file claiming to be DICOM: not a series for discovery (the loader says why)
        return None


def _visible_children(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if not p.name.startswith("."))


def _unique(name: str, taken: set[str]) -> str:
    candidate, k = name, 2
    while candidate in taken:
        candidate, k = f"{name}_{k}", k + 1
    taken.add(candidate)
    return candidate


def _is_series_dir(path: Path) -> bool:
    return path.is_dir() and any(p.is_file() and not p.name.startswith(".") for p in path.iterdir())


def _find_direct(root: Path) -> list[SeriesInput]:
    """The inputs directly inside ``root``: NIfTI files and sub-folders holding files (series; no header is read).

    A folder with neither but with files is itself the one input (a series folder).
    """
    taken: set[str] = set()
    entries = _visible_children(root)
    found = [p for p in entries if (p.is_file() and is_nifti(p)) or _is_series_dir(p)]
    if not found and any(p.is_file() for p in entries):
        found = [root]
    if not found:
        raise CTInputError(root, "holds no NIfTI file (.nii, .nii.gz) and no DICOM series folder.")
    return [SeriesInput(_unique(_safe(nifti_stem(p) if p.is_file() else p.resolve().name), taken), p) for p in found]


def find_series(input_path: str | os.PathLike, recursive: bool = True) -> tuple[list[SeriesInput], list[SkippedSeries]]:
    """List the cases under ``input_path``.

    Args:
        input_path: a ``.nii``/``.nii.gz`` file; a folder holding the files of one DICOM series (no sub-folders);
            or a folder tree holding NIfTI files and DICOM studies at any depth.
        recursive: search a tree at any depth, grouping its DICOM files by series (headers are read). False: only
            the NIfTI files and series sub-folders directly inside the folder, in name order, without reading
            any file (a folder holding files and neither of those is one series). Defaults to True.

    Returns:
        ``(cases, skipped)``: the cases in a stable order, and the DICOM series of a tree that are not CT images
        (always empty with ``recursive=False``).

    Raises:
        CTInputError: if ``input_path`` does not exist, is a file that is not NIfTI, or a tree holds no CT.

    Example:
        >>> cases, skipped = find_series("pacs_export/")  # doctest: +SKIP
        >>> [c.name for c in cases]  # doctest: +SKIP
        ['patient1_study1_series3', 'patient2_study1_series2']
    """
    root = Path(input_path).expanduser()
    if not root.exists():
        raise CTInputError(root, "does not exist.")
    if root.is_file():
        if not is_nifti(root):
            raise CTInputError(root, "is a file but not NIfTI (.nii/.nii.gz); pass a DICOM series as its folder.")
        return [SeriesInput(_safe(nifti_stem(root)), root)], []
    if not recursive:
        return _find_direct(root), []
    children = _visible_children(root)
    if not any(p.is_dir() for p in children) and not any(is_nifti(p) for p in children):  # also an empty folder
        return [SeriesInput(_safe(root.resolve().name), root)], []

    taken: set[str] = set()
    cases: list[SeriesInput] = []
    skipped: list[SkippedSeries] = []
    groups: dict[str, list[Path]] = defaultdict(list)
    info: dict[str, object] = {}
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for file_name in sorted(files):
            if file_name.startswith(".") or file_name == "DICOMDIR":
                continue
            path = Path(folder) / file_name
            if is_nifti(path):
                rel = path.relative_to(root)
                cases.append(SeriesInput(_unique(_safe(nifti_stem(Path("_".join(rel.parts)))), taken), path))
                continue
            ds = _read_header(path)
            if ds is None or "SeriesInstanceUID" not in ds:
                logger.debug("%s: not a DICOM image file, ignored", path)
                continue
            uid = str(ds.SeriesInstanceUID)
            groups[uid].append(path)
            info.setdefault(uid, ds)
    for uid, paths in groups.items():
        ds = info[uid]
        modality = str(ds.get("Modality", ""))
        sop_class = str(ds.get("SOPClassUID", ""))
        folder = paths[0].parent
        if modality != "CT" or sop_class not in CT_IMAGE_SOP_CLASSES:
            kind = getattr(ds.get("SOPClassUID"), "name", sop_class) if sop_class else "unknown SOP class"
            reason = f"not a CT image series (Modality {modality or '?'}, {kind})"
            logger.info("skipping series %s in %s: %s", uid, folder, reason)
            skipped.append(SkippedSeries(folder, uid, reason))
            continue
        rel = folder.relative_to(root)
        base = "_".join(rel.parts) if rel.parts else root.resolve().name
        number = ds.get("SeriesNumber")
        if any(groups[other][0].parent == folder for other in groups if other != uid) and number not in (None, ""):
            base = f"{base}_series{number}"
        cases.append(SeriesInput(_unique(_safe(base), taken), folder, tuple(sorted(paths)), uid))
    if not cases:
        raise CTInputError(root, "holds no NIfTI file and no CT image series (searched recursively).")
    cases.sort(key=lambda c: c.name)
    return cases, skipped
