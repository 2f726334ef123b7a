# SPDX-License-Identifier: Apache-2.0
"""Plausibility checks of a cranial-cavity mask, reported as warnings beside the result.

The shipped weights were trained on phantoms, and a user's scan may not cover the whole head. A mask can be wrong in
ways a volume alone does not show, so :func:`mask_warnings` names the usual ones for a reader to check in the QC
picture:

- an empty mask (no cranial cavity found: not a head CT, or far outside what the model has seen);
- an intracranial volume outside the adult range (about 1000-1900 mL; children, resections and partial scans are
  legitimately outside it);
- a mask that reaches the first or last axial slice with a large cross section: the scan does not cover the
  cavity from the foramen magnum to the vertex, so the volume is a lower bound.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from bundle.postprocessing import intracranial_volume_ml

__all__ = ["ADULT_VOLUME_RANGE_ML", "mask_warnings"]

#: Intracranial volumes (mL) outside which a mask is flagged: a margin around the adult range of about 1000-1900 mL.
ADULT_VOLUME_RANGE_ML: tuple[float, float] = (900.0, 2100.0)


def mask_warnings(
    mask: np.ndarray,
    affine: np.ndarray,
    volume_range_ml: Sequence[float] = ADULT_VOLUME_RANGE_ML,
    edge_area_fraction: float = 0.1,
    volume_ml: float | None = None,
) -> list[str]:
    """Warnings about a cranial-cavity mask that a reader should check (empty list: nothing unusual).

    Args:
        mask: binary mask ``(X, Y, Z)`` in any voxel order (non-zero = cavity).
        affine: its 4x4 voxel-to-world affine (mm); the axial axis is the one closest to the world's S direction.
        volume_range_ml: ``(low, high)`` plausible intracranial volume in mL. Defaults to (900, 2100).
        edge_area_fraction: the mask "reaches" the first or last axial slice when its area there exceeds this
            fraction of its largest axial area (the cavity narrows to the foramen magnum below and to nothing at the
            vertex). Defaults to 0.1.
        volume_ml: the mask's intracranial volume when the caller has already computed it. Default None: computed.

    Returns:
        Human-readable warnings.

    Raises:
        ValueError: for a mask that is not 3D, an affine that is not 4x4, or bad ranges.

    Example:
        >>> mask = np.zeros((40, 40, 30), np.uint8)
        >>> mask[5:35, 5:35, 10:30] = 1
        >>> [w.split(":")[0] for w in mask_warnings(mask, np.diag([5.0, 5.0, 5.0, 1.0]))]
        ['intracranial volume 2250 mL is outside the usual 900-2100 mL', 'the mask reaches the top axial slice']
    """
    array = np.asarray(mask) != 0
    matrix = np.asarray(affine, dtype=np.float64)
    if array.ndim != 3:
        raise ValueError(f"mask must be 3D (X, Y, Z), got shape {array.shape}.")
    if matrix.shape != (4, 4):
        raise ValueError(f"affine must be 4x4, got shape {matrix.shape}.")
    low, high = (float(v) for v in volume_range_ml)
    if not 0 <= low < high:
        raise ValueError(f"volume_range_ml must be (low, high) with 0 <= low < high, got {volume_range_ml}.")
    if not 0 < edge_area_fraction < 1:
        raise ValueError(f"edge_area_fraction must be in (0, 1), got {edge_area_fraction}.")
    if not array.any():
        return ["the mask is empty: no cranial cavity was found; is this a head CT?"]
    found = []
    volume = intracranial_volume_ml(array, matrix) if volume_ml is None else float(volume_ml)
    if not low <= volume <= high:
        found.append(
            f"intracranial volume {volume:.0f} mL is outside the usual {low:.0f}-{high:.0f} mL: "
            "check the QC picture (children, resections and partial scans can be outside it)"
        )
    directions = matrix[:3, :3] / np.linalg.norm(matrix[:3, :3], axis=0)
    axial = int(np.argmax(np.abs(directions[2])))  # the voxel axis closest to the world's S direction
    areas = np.count_nonzero(array, axis=tuple(a for a in range(3) if a != axial))
    upward = directions[2, axial] > 0
    for index, end in ((0, "bottom" if upward else "top"), (-1, "top" if upward else "bottom")):
        if areas[index] > edge_area_fraction * areas.max():
            found.append(
                f"the mask reaches the {end} axial slice: the scan may not cover the whole cranial cavity, "
                "so the volume is a lower bound"
            )
    return found
