# SPDX-License-Identifier: Apache-2.0
"""Where the training, evaluation and inference configs get their cases from.

:func:`prepare_datalist` turns the configs' ``dataset_dir`` (and optional ``datalist_file``) into the three splits
``{"training", "validation", "test"}`` of ``{"image", "label"}`` entries with absolute paths:

1. ``datalist_file`` given: that JSON datalist (paths relative to its folder; :func:`bundle.data.load_datalist`).
2. ``dataset_dir/datalist.json`` exists: that datalist.
3. ``dataset_dir`` is the embedded default ``phantom_dir``: a small phantom dataset is generated there once (in a
   sub-folder named after the phantom settings, so presets do not collide) and reused afterwards.
4. Decathlon layout ``imagesTr/`` + ``labelsTr/`` (+ ``imagesTs/``): images and labels are paired by name; the last
   ``val_fraction`` of the sorted training pairs become the validation split, ``imagesTs`` the test split.
5. Otherwise every NIfTI file and DICOM series folder directly inside ``dataset_dir`` is a test (inference) case.

An image is a ``.nii``/``.nii.gz`` file or a folder holding a DICOM series (any folder with files in it that is
not a NIfTI file); labels are NIfTI files.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Mapping
from pathlib import Path

from bundle.data.datalist import DATALIST_SPLITS, DatalistError, load_datalist
from bundle.io.errors import CTInputError
from bundle.io.paths import NIFTI_SUFFIXES, is_nifti, nifti_stem
from bundle.segment_inputs import find_series

__all__ = ["NIFTI_SUFFIXES", "find_ct_inputs", "phantom_dataset_dir", "prepare_datalist"]

logger = logging.getLogger(__name__)

#: Keys of a phantom specification (arguments of :func:`bundle.data.make_phantom_dataset`).
_PHANTOM_KEYS = ("num_train", "num_val", "num_test", "seed", "in_plane_size", "num_slices")
#: Optional keys, with the values that keep the folder name of a specification without them.
_OPTIONAL_PHANTOM_KEYS = {"scan": "classic", "pixel_spacing_mm": None, "coarse_spacing_mm": None}


def _is_nifti(path: Path) -> bool:
    return path.is_file() and is_nifti(path)


def _is_series_dir(path: Path) -> bool:
    return path.is_dir() and any(p.is_file() and not p.name.startswith(".") for p in path.iterdir())


def find_ct_inputs(folder: str | os.PathLike) -> list[str]:
    """List the CT inputs directly inside a folder: NIfTI files and DICOM series sub-folders, sorted by name.

    Args:
        folder: the folder to scan (not recursive beyond one level of series folders).

    Returns:
        Absolute paths; a folder that itself holds DICOM files (and no NIfTI file) is returned as the one input.

    Raises:
        DatalistError: if ``folder`` does not exist or holds no NIfTI file and no series folder.

    Example:
        >>> find_ct_inputs("scans/")  # doctest: +SKIP
        ['/data/scans/case_01.nii.gz', '/data/scans/case_02_dicom']
    """
    root = Path(folder).expanduser().resolve()
    if not root.is_dir():
        raise DatalistError(f"dataset_dir {root} does not exist or is not a folder.")
    try:
        cases, _ = find_series(root, recursive=False)  # the segmenter's finder, one level deep
    except CTInputError as err:
        raise DatalistError(f"dataset_dir {err}") from None
    return [str(case.path) for case in cases]


def phantom_dataset_dir(phantom_dir: str | os.PathLike, phantoms: Mapping) -> Path:
    """The sub-folder of ``phantom_dir`` that holds the phantom dataset described by ``phantoms``.

    Args:
        phantom_dir: the cache folder of generated phantom datasets.
        phantoms: ``num_train``, ``num_val``, ``num_test``, ``seed``, ``in_plane_size``, ``num_slices`` (see
            :func:`bundle.data.make_phantom_dataset`).

    Returns:
        ``phantom_dir/<train>-<val>-<test>_size<in_plane_size>_slices<num_slices>_seed<seed>_v<generator version>``:
        a new generator version (different phantoms for the same seed) gets a new folder.

    Raises:
        ValueError: if a key is missing or unknown.

    Example:
        >>> phantom_dataset_dir("cache/phantoms", dict(num_train=4, num_val=2, num_test=2, seed=0,
        ...                     in_plane_size=64, num_slices=24)).name
        '4-2-2_size64_slices24_seed0_v4'
    """
    missing = [k for k in _PHANTOM_KEYS if k not in phantoms]
    unknown = [k for k in phantoms if k not in _PHANTOM_KEYS and k not in _OPTIONAL_PHANTOM_KEYS]
    if missing or unknown:
        raise ValueError(f"phantoms must have exactly the keys {_PHANTOM_KEYS}; missing {missing}, unknown {unknown}.")
    from bundle.data.phantoms import GENERATOR_VERSION

    p = phantoms
    name = (
        f"{p['num_train']}-{p['num_val']}-{p['num_test']}_size{p['in_plane_size']}_slices{p['num_slices']}"
        f"_seed{p['seed']}_v{GENERATOR_VERSION}"
    )
    for key, default in _OPTIONAL_PHANTOM_KEYS.items():
        if p.get(key, default) != default:
            name += f"_{key.split('_')[0]}{p[key]}"
    return Path(phantom_dir) / name


def _generate_phantoms(folder: Path, phantoms: Mapping) -> Path:
    """Generate (or verify and complete) the phantom dataset; in a distributed run only rank 0 writes."""
    import torch.distributed as dist

    from bundle.data.phantoms import make_phantom_dataset

    distributed = dist.is_available() and dist.is_initialized()
    if not distributed or dist.get_rank() == 0:
        if not (folder / "datalist.json").exists():
            logger.info("no dataset given: generating the embedded phantom dataset in %s (once)", folder)
        make_phantom_dataset(
            folder,
            **{k: phantoms[k] for k in _PHANTOM_KEYS},
            **{k: phantoms[k] for k in _OPTIONAL_PHANTOM_KEYS if k in phantoms},
            progress=True,
        )
    if distributed:
        dist.barrier()
    return folder / "datalist.json"


def _pair_decathlon(root: Path, val_fraction: float) -> dict[str, list[dict]]:
    images = {nifti_stem(p): p for p in sorted((root / "imagesTr").iterdir()) if _is_nifti(p) or _is_series_dir(p)}
    labels = {nifti_stem(p): p for p in sorted((root / "labelsTr").iterdir()) if _is_nifti(p)}
    unpaired = sorted(set(images) ^ set(labels))
    if unpaired:
        raise DatalistError(f"{root}: imagesTr and labelsTr do not pair up by name; unmatched: {unpaired[:5]}.")
    if not images:
        raise DatalistError(f"{root}: imagesTr holds no image.")
    pairs = [{"image": str(images[k]), "label": str(labels[k])} for k in sorted(images)]
    num_val = min(len(pairs) - 1, math.ceil(len(pairs) * val_fraction)) if len(pairs) > 1 else 0
    test_dir = root / "imagesTs"
    test = [{"image": p} for p in find_ct_inputs(test_dir)] if test_dir.is_dir() else []
    return {"training": pairs[: len(pairs) - num_val], "validation": pairs[len(pairs) - num_val :], "test": test}


def prepare_datalist(
    dataset_dir: str | os.PathLike,
    *,
    datalist_file: str | os.PathLike | None = None,
    phantom_dir: str | os.PathLike | None = None,
    phantoms: Mapping | None = None,
    val_fraction: float = 0.2,
) -> dict[str, list[dict]]:
    """Resolve the configs' data settings into training, validation and test splits (see the module docstring).

    Args:
        dataset_dir: the user's data folder, or the embedded default ``phantom_dir``.
        datalist_file: a datalist JSON that takes precedence over ``dataset_dir``. Defaults to None.
        phantom_dir: the embedded default's cache folder; only when ``dataset_dir`` is this folder are phantoms
            generated. Defaults to None (never generate).
        phantoms: phantom dataset settings (see :func:`phantom_dataset_dir`); required with ``phantom_dir``.
            Defaults to None.
        val_fraction: fraction of Decathlon-layout training pairs held out for validation, in [0, 1). Defaults
            to 0.2.

    Returns:
        ``{"training": [...], "validation": [...], "test": [...]}``, every split present (possibly empty), paths
        absolute.

    Raises:
        DatalistError: if the folder or datalist does not exist or holds nothing usable (the message says what was
            looked for).
        ValueError: on a bad ``val_fraction`` or ``phantoms``.

    Example:
        >>> splits = prepare_datalist("cache/phantoms", phantom_dir="cache/phantoms", phantoms=dict(
        ...     num_train=2, num_val=1, num_test=1, seed=0, in_plane_size=64, num_slices=24))  # doctest: +SKIP
        >>> len(splits["training"])  # doctest: +SKIP
        2
    """
    if not 0 <= val_fraction < 1:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction!r}.")
    if datalist_file is not None:
        path = Path(datalist_file).expanduser()
    else:
        root = Path(dataset_dir).expanduser()
        path = root / "datalist.json"
        is_default = phantom_dir is not None and root.resolve() == Path(phantom_dir).expanduser().resolve()
        if is_default:
            if phantoms is None:
                raise ValueError("phantoms settings are required to generate the embedded phantom dataset.")
            path = _generate_phantoms(phantom_dataset_dir(root, phantoms), phantoms)
        elif not path.exists():
            if not root.is_dir():
                raise DatalistError(f"dataset_dir {root.resolve()} does not exist or is not a folder.")
            if (root / "imagesTr").is_dir() and (root / "labelsTr").is_dir():
                return _pair_decathlon(root.resolve(), val_fraction)
            return {"training": [], "validation": [], "test": [{"image": p} for p in find_ct_inputs(root)]}
    splits = load_datalist(path)
    return {split: splits.get(split, []) for split in DATALIST_SPLITS}
