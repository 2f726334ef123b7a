# SPDX-License-Identifier: Apache-2.0
"""Per-case segmentation metrics in physical units, and a mean +- std summary.

Dice is the paper's metric; the 95% Hausdorff distance (HD95) is computed in millimetres with MONAI's
``compute_hausdorff_distance`` (surface voxels = mask minus its face-connected erosion; the 95th percentile of the
distances from each surface to the other, the larger of the two directions; voxel spacing taken into account).

Empty masks: Dice of two empty masks and HD95 with an empty mask are undefined; they return ``nan`` and warn
(:class:`EmptyMaskWarning`), so that a summary can count them instead of silently averaging a 0 or an infinity.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Sequence

import numpy as np
import torch
from monai.config import NdarrayOrTensor
from monai.metrics import compute_hausdorff_distance
from monai.utils.type_conversion import convert_to_numpy
from nibabel.affines import voxel_sizes

__all__ = [
    "EmptyMaskWarning",
    "dice_score",
    "hausdorff_distance_95_mm",
    "spacing_from_affine",
    "case_metrics",
    "summarize",
    "format_summary",
]


class EmptyMaskWarning(UserWarning):
    """A metric was asked for on an empty mask and returned ``nan``."""


def _as_bool_volume(mask: NdarrayOrTensor, name: str) -> np.ndarray:
    if isinstance(mask, torch.Tensor):  # threshold before converting: a bool copy is a quarter of a float one
        mask = mask.detach()
        mask = (mask if mask.dtype == torch.bool else mask > 0.5).cpu()
    array = convert_to_numpy(mask)
    if array.ndim == 4 and array.shape[0] == 1:
        array = array[0]
    if array.ndim not in (2, 3):
        raise ValueError(f"{name} must be a mask (X, Y), (X, Y, Z) or (1, X, Y, Z), got shape {tuple(mask.shape)}.")
    return array > 0.5 if array.dtype != bool else array


def _pair(pred: NdarrayOrTensor, ref: NdarrayOrTensor) -> tuple[np.ndarray, np.ndarray]:
    p, r = _as_bool_volume(pred, "pred"), _as_bool_volume(ref, "ref")
    if p.shape != r.shape:
        raise ValueError(f"pred and ref must have the same spatial shape, got {p.shape} and {r.shape}.")
    return p, r


def spacing_from_affine(affine: NdarrayOrTensor) -> tuple[float, ...]:
    """Voxel spacing (mm) along each array axis: the lengths of the affine's first columns.

    A checked wrapper of :func:`nibabel.affines.voxel_sizes`, which the rest of the bundle calls directly.

    Args:
        affine: (N+1)x(N+1) voxel-to-world affine.

    Returns:
        N spacings in mm.

    Raises:
        ValueError: if ``affine`` is not square 3x3 or 4x4.

    Example:
        >>> spacing_from_affine(np.diag([0.5, 0.5, 5.0, 1.0]))
        (0.5, 0.5, 5.0)
    """
    a = np.asarray(convert_to_numpy(affine), dtype=np.float64)
    if a.ndim != 2 or a.shape[0] != a.shape[1] or a.shape[0] not in (3, 4):
        raise ValueError(f"affine must be a 3x3 or 4x4 matrix, got shape {a.shape}.")
    return tuple(float(v) for v in voxel_sizes(a))


def _resolve_spacing(spacing: NdarrayOrTensor | Sequence[float] | None, ndim: int) -> tuple[float, ...]:
    if spacing is None:
        return (1.0,) * ndim
    values = np.asarray(convert_to_numpy(spacing, wrap_sequence=True), dtype=np.float64)
    if values.shape == (ndim + 1, ndim + 1):
        return spacing_from_affine(values)
    if values.ndim == 0:
        values = np.full(ndim, float(values))
    if values.shape != (ndim,) or not np.all(np.isfinite(values)) or np.any(values <= 0):
        raise ValueError(
            f"spacing must be {ndim} positive numbers (mm) or a {ndim + 1}x{ndim + 1} affine, got {values.tolist()}."
        )
    return tuple(float(v) for v in values)


def dice_score(pred: NdarrayOrTensor, ref: NdarrayOrTensor) -> float:
    """Dice coefficient 2|P & R| / (|P| + |R|) of two binary masks.

    Args:
        pred: predicted mask (X, Y[, Z]) or (1, X, Y, Z); numpy or torch; values > 0.5 (or True) are foreground.
        ref: reference mask, same shape.

    Returns:
        Dice in [0, 1]; 0.0 when exactly one mask is empty; ``nan`` (with an :class:`EmptyMaskWarning`) when both are.

    Raises:
        ValueError: on masks of different or unsupported shapes.

    Example:
        >>> dice_score(np.array([[1, 1, 0, 0]]), np.array([[0, 1, 1, 0]]))
        0.5
    """
    p, r = _pair(pred, ref)
    total = int(np.count_nonzero(p)) + int(np.count_nonzero(r))
    if total == 0:
        warnings.warn(
            "dice_score: pred and ref are both empty; Dice is undefined, returning nan.", EmptyMaskWarning, stacklevel=2
        )
        return math.nan
    return 2.0 * int(np.count_nonzero(p & r)) / total


def hausdorff_distance_95_mm(
    pred: NdarrayOrTensor,
    ref: NdarrayOrTensor,
    spacing: NdarrayOrTensor | Sequence[float] | float | None = None,
    percentile: float = 95.0,
) -> float:
    """Symmetric percentile Hausdorff distance between the surfaces of two binary masks, in mm.

    Args:
        pred: predicted mask (X, Y[, Z]) or (1, X, Y, Z); numpy or torch.
        ref: reference mask, same shape.
        spacing: voxel spacing in mm (one number per axis, or one for all) or the voxel-to-world affine (its column
            lengths are used; shear of a tilted grid is ignored). Defaults to None: 1 mm.
        percentile: which percentile of the surface distances, in (0, 100]; 100 is the classic Hausdorff distance.
            Defaults to 95.

    Returns:
        The distance in mm; ``nan`` (with an :class:`EmptyMaskWarning`) if either mask is empty.

    Raises:
        ValueError: on masks of different shapes, a bad ``spacing`` or ``percentile``.

    Example:
        >>> a = np.zeros((5, 5, 5)); a[1, 1, 1] = 1
        >>> b = np.zeros((5, 5, 5)); b[1, 4, 1] = 1
        >>> hausdorff_distance_95_mm(a, b, spacing=(1.0, 2.0, 1.0))
        6.0
    """
    if not 0 < percentile <= 100:
        raise ValueError(f"percentile must be in (0, 100], got {percentile!r}.")
    p, r = _pair(pred, ref)
    sp = _resolve_spacing(spacing, p.ndim)
    empty = [name for name, m in (("pred", p), ("ref", r)) if not m.any()]
    if empty:
        warnings.warn(
            f"hausdorff_distance_95_mm: {' and '.join(empty)} empty; the distance is undefined, returning nan.",
            EmptyMaskWarning,
            stacklevel=2,
        )
        return math.nan
    # both surfaces lie in the union's bounding box, so the distances are the same on a crop with a margin of two
    # voxels (no edge is created at the crop's border); a whole 512x512x300 volume takes MONAI about 10x longer
    union = np.argwhere(p | r)
    box = tuple(slice(max(0, int(lo) - 2), int(hi) + 3) for lo, hi in zip(union.min(0), union.max(0), strict=True))
    p, r = np.ascontiguousarray(p[box]), np.ascontiguousarray(r[box])
    with warnings.catch_warnings():  # MONAI 1.6 warns about its own internal use of a deprecated argument
        warnings.filterwarnings("ignore", message=".*always_return_as_numpy.*", category=FutureWarning)
        value = compute_hausdorff_distance(
            torch.from_numpy(p[None, None]),
            torch.from_numpy(r[None, None]),
            include_background=True,
            percentile=percentile,
            spacing=list(sp),
        )
    return float(value.item())


def case_metrics(
    pred: NdarrayOrTensor, ref: NdarrayOrTensor, spacing: NdarrayOrTensor | Sequence[float] | float | None = None
) -> dict[str, float]:
    """Dice and HD95 (mm) of one case.

    Args:
        pred: predicted mask (see :func:`dice_score`).
        ref: reference mask.
        spacing: voxel spacing in mm or affine (see :func:`hausdorff_distance_95_mm`). Defaults to None: 1 mm.

    Returns:
        ``{"dice": float, "hd95_mm": float}`` (either may be ``nan`` for empty masks).

    Raises:
        ValueError: as :func:`hausdorff_distance_95_mm`.

    Example:
        >>> m = np.ones((4, 4, 4))
        >>> case_metrics(m, m)["dice"]
        1.0
    """
    return {"dice": dice_score(pred, ref), "hd95_mm": hausdorff_distance_95_mm(pred, ref, spacing)}


def summarize(values: Iterable[float], ddof: int = 1) -> dict[str, float | int]:
    """Mean and standard deviation over cases, ignoring (and counting) ``nan`` values.

    Args:
        values: per-case numbers.
        ddof: delta degrees of freedom of the standard deviation: 1 = sample standard deviation, 0 = population.
            Defaults to 1. The std is ``nan`` when fewer than ``ddof + 1`` finite values remain.

    Returns:
        ``{"mean", "std", "min", "max", "n", "n_nan"}`` where ``n`` counts the finite values used.

    Raises:
        ValueError: if ``ddof`` is negative or a value is infinite.

    Example:
        >>> summarize([0.9, 1.0, float("nan")])["n_nan"]
        1
    """
    if ddof < 0:
        raise ValueError(f"ddof must be >= 0, got {ddof!r}.")
    array = np.asarray(list(values), dtype=np.float64).ravel()
    if np.isinf(array).any():
        raise ValueError(f"values must be finite or nan, got {array[np.isinf(array)].tolist()}.")
    finite = array[~np.isnan(array)]
    n = int(finite.size)
    return {
        "mean": float(finite.mean()) if n else math.nan,
        "std": float(finite.std(ddof=ddof)) if n > ddof else math.nan,
        "min": float(finite.min()) if n else math.nan,
        "max": float(finite.max()) if n else math.nan,
        "n": n,
        "n_nan": int(array.size - n),
    }


def format_summary(summary: dict[str, float | int], precision: int = 3) -> str:
    """Format a :func:`summarize` result as ``"mean ± std (n=N)"``, plus the number of undefined cases if any.

    Args:
        summary: a dictionary from :func:`summarize`.
        precision: decimals. Defaults to 3.

    Returns:
        A short string, e.g. ``"0.987 ± 0.007 (n=60)"``.

    Example:
        >>> format_summary(summarize([0.98, 0.99]))
        '0.985 ± 0.007 (n=2)'
    """
    text = f"{summary['mean']:.{precision}f} ± {summary['std']:.{precision}f} (n={summary['n']})"
    if summary.get("n_nan"):
        text += f", {summary['n_nan']} undefined"
    return text
