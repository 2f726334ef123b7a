# SPDX-License-Identifier: Apache-2.0
"""Plausibility checks of a cranial-cavity mask, reported as findings beside the result.

The shipped weights were trained on phantoms, and a user's scan may not cover the whole head. A mask can be wrong in
ways its volume alone does not show, so :func:`check_mask` names the usual ones, each as a :class:`MaskFinding` with
a short ``code``, a message for the reader and the axial slices that show it (drawn in the QC picture). The checks
follow from head-CT anatomy, so they hold for any scan range, tilt and voxel size:

- ``empty``: no mask at all (not a head CT, or far outside what the model has seen).
- ``no_cavity`` (needs the HU image): the masked voxels are not brain or CSF. Brain is 20-45 HU, CSF 0-15 HU, fresh
  blood 50-90 HU, so the median of a real cavity lies in :data:`BRAIN_MEDIAN_HU_RANGE` (-20..100 HU) whatever the
  pathology; an air-filled skull phantom or a mask on the scalp or bone falls outside it.
- ``fragments``: the mask is several sizeable pieces, or its largest piece is smaller than any cranial cavity
  (:data:`MIN_CAVITY_ML`, below a newborn's 350 mL) although the scan covers it.
- ``volume``: an intracranial volume outside :data:`ADULT_VOLUME_RANGE_ML` (a margin around the adult 1000-1900 mL;
  children, resections and partial scans are legitimately outside it).
- ``shell``: the mask covers too little of its own enclosed interior. The cavity is solid: filled slice by slice
  after a closing with a :data:`SHELL_CLOSING_MM` ball (which bridges gaps of a collapsed mask up to twice that
  wide), a right mask covers more than 0.95 of it; one that collapsed onto the inner table covers about half, and
  3D hole filling cannot repair it because its inside opens to the outside. Flagged below :data:`SHELL_COVERAGE`.
- ``leak``: the mask runs below the skull base into the face or neck. Two independent signs: (1) air (below
  :data:`AIR_HU`: pharynx, oral cavity, sinuses, mastoid and petrous air cells) or fat (:data:`FAT_HU_RANGE`: the
  face, orbits and neck) inside the mask, which the cranial cavity holds neither of (apart from post-operative air);
  (2) the axial area profile: below its widest level the cavity only narrows down to the foramen magnum, so a mask
  that narrows to a waist and widens again below it (by more than :data:`REGROWTH_FRACTION` of its largest cross
  section) has leaked through the skull base.
- ``cut_bottom`` / ``cut_top``: the mask reaches the first or last axial slice with a large cross section. Without
  a leak the scan does not cover the cavity from the foramen magnum to the vertex and the volume is a lower bound;
  with a leak the mask only reaches the scan's edge.

Every finding but the cut ones means the mask itself may be wrong (``review=True``); the segmenter then marks the
case for review. The shape checks run on a copy of the mask and image reduced to about :data:`WORK_SPACING_MM` voxels
(HU averaged over each block, which also tames the noise of sharp kernels), so they take well under a second for a
512x512x300 scan.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np
from nibabel.affines import voxel_sizes
from scipy import ndimage

from bundle.postprocessing import intracranial_volume_ml

__all__ = [
    "ADULT_VOLUME_RANGE_ML",
    "AIR_HU",
    "BRAIN_MEDIAN_HU_RANGE",
    "FAT_HU_RANGE",
    "LEAK_AIR_ML",
    "LEAK_FAT_ML",
    "MIN_CAVITY_ML",
    "REGROWTH_FRACTION",
    "SHELL_CLOSING_MM",
    "SHELL_COVERAGE",
    "WORK_SPACING_MM",
    "MaskFinding",
    "check_mask",
    "mask_warnings",
]

#: Intracranial volumes (mL) outside which a mask is flagged: a margin around the adult range of about 1000-1900 mL.
ADULT_VOLUME_RANGE_ML: tuple[float, float] = (900.0, 2100.0)
#: The median HU of a real cavity's voxels lies in this range (CSF 0-15, brain 20-45, fresh blood 50-90 HU).
BRAIN_MEDIAN_HU_RANGE: tuple[float, float] = (-20.0, 100.0)
#: Below this a voxel is air or mostly air (fat is above -150 HU, every other soft tissue above -20 HU).
AIR_HU: float = -300.0
#: Fat (orbits, face, neck); well below CSF even with the noise left after block averaging.
FAT_HU_RANGE: tuple[float, float] = (-150.0, -50.0)
#: Air (mL) inside the mask that flags a leak: the mastoid or a sinus alone holds a few mL; a border voxel never does.
LEAK_AIR_ML: float = 2.0
#: Fat (mL) inside the mask that flags a leak: a right mask on a real 4 mm scan held 2 mL (orbital roof partial volume).
LEAK_FAT_ML: float = 10.0
#: Widening below the waist, as a fraction of the largest axial cross section, that flags a leak (about 15 cm^2).
REGROWTH_FRACTION: float = 0.1
#: Radius (mm) of the closing before the slice-wise filling in the shell check.
SHELL_CLOSING_MM: float = 10.0
#: Coverage of the enclosed interior below which a mask is a shell (a right one covers more than 0.95).
SHELL_COVERAGE: float = 0.85
#: The smallest cranial cavity (mL): a newborn's is about 350 mL.
MIN_CAVITY_ML: float = 300.0
#: Voxel size (mm) the shape checks work at.
WORK_SPACING_MM: float = 2.0
_MIN_PIECE_ML = 1.0  # pieces below this are dust, not fragments
_PROFILE_SMOOTH_MM = 6.0  # smooths the area profile over slice-to-slice jitter, keeps a waist of a few slices
_IN_PLANE = np.zeros((3, 3, 3), bool)
_IN_PLANE[:, :, 1] = ndimage.generate_binary_structure(2, 1)  # 4-neighbours within an axial slice only


@dataclasses.dataclass(frozen=True)
class MaskFinding:
    """One thing about a mask that a reader should check.

    Attributes:
        code: short name: ``empty``, ``no_cavity``, ``fragments``, ``volume``, ``shell``, ``leak``, ``cut_bottom`` or
            ``cut_top``.
        message: what was seen, in words, with the slices where it was seen.
        slices: voxel indices along the axial axis (the voxel axis closest to the world's S direction) of the
            slices that show it, at most three; empty when no slice does.
        slices_mm: the world S coordinate (mm) of each of ``slices`` through the mask's centre.
        review: True when the mask itself may be wrong (every code except the scan-range ones).
    """

    code: str
    message: str
    slices: tuple[int, ...] = ()
    slices_mm: tuple[float, ...] = ()
    review: bool = True

    def to_dict(self) -> dict:
        """The finding as a JSON-serialisable dict."""
        return {
            "code": self.code,
            "message": self.message,
            "slices": [int(s) for s in self.slices],
            "slices_mm": [round(float(s), 1) for s in self.slices_mm],
            "review": bool(self.review),
        }


class _Axial:
    """Maps the inferior-to-superior slices of the working grid to the input's axial voxel indices and S in mm."""

    def __init__(
        self, matrix: np.ndarray, shape: Sequence[int], axis: int, factor: int, count: int, centre, start: int
    ) -> None:
        self.matrix, self.axis, self.factor, self.count, self.start = matrix, axis, factor, count, start
        self.upward = matrix[2, axis] > 0
        self.shape, self.centre = shape, np.asarray(centre, np.float64)
        self.slab_mm = float(abs(matrix[2, axis]) * factor)  # height of one working slice

    def native(self, k: int) -> int:
        j = k if self.upward else self.count - 1 - k
        return min(self.start + j * self.factor + self.factor // 2, self.shape[self.axis] - 1)

    def mm(self, index: int) -> float:
        voxel = self.centre.copy()
        voxel[self.axis] = index
        return float(self.matrix[2, :3] @ voxel + self.matrix[2, 3])

    def describe(self, lowest: int, highest: int) -> str:
        """Working slices lowest..highest as input slice indices and S mm."""
        a, b = self.native(lowest), self.native(highest)
        if a == b:
            return f"axial slice {a} (S {self.mm(a):.0f} mm)"
        return f"axial slices {min(a, b)}-{max(a, b)} (S {self.mm(a):.0f} to {self.mm(b):.0f} mm)"

    def pick(self, *ks: int) -> tuple[tuple[int, ...], tuple[float, ...]]:
        """The first three distinct of working slices ``ks`` (most telling first), inferior to superior."""
        natives = sorted(list(dict.fromkeys(self.native(int(k)) for k in ks))[:3], key=self.mm)
        return tuple(natives), tuple(self.mm(i) for i in natives)


def _block_reduce(array: np.ndarray, factors: Sequence[int], mean: bool) -> np.ndarray:
    """Block means (``mean``) or the block-centre samples of ``array``, blocks of ``factors`` voxels."""
    counts = [n // f for n, f in zip(array.shape, factors, strict=True)]
    if not mean:
        return array[tuple(slice(f // 2, f // 2 + c * f, f) for f, c in zip(factors, counts, strict=True))]
    # one strided add per voxel of a block: 2-3x faster than a reshaped mean, whose reduction axes are not contiguous
    total = np.zeros(counts, np.float32)
    for offset in np.ndindex(*factors):
        total += array[tuple(slice(o, o + c * f, f) for o, f, c in zip(offset, factors, counts, strict=True))]
    return total / float(np.prod(factors))


def _tissue(hu: float) -> str:
    if hu < AIR_HU:
        return "air"
    if hu < BRAIN_MEDIAN_HU_RANGE[0]:
        return "fat"
    if hu < 300.0:
        return "denser than brain (contrast, calcification or bone partial volume)"
    return "bone"


def _closing(mask: np.ndarray, radius_mm: float, spacing: np.ndarray) -> np.ndarray:
    """Binary closing with a ball of ``radius_mm`` by two distance transforms (one pass each, any radius)."""
    pad = [int(np.ceil(radius_mm / s)) + 1 for s in spacing]
    padded = np.pad(mask, [(p, p) for p in pad])
    dilated = ndimage.distance_transform_edt(~padded, sampling=spacing) <= radius_mm
    closed = ndimage.distance_transform_edt(dilated, sampling=spacing) > radius_mm
    return closed[tuple(slice(p, -p) for p in pad)] | mask


def _shell(work: np.ndarray, spacing: np.ndarray, axial: _Axial, coverage_limit: float) -> MaskFinding | None:
    box = ndimage.find_objects(work.astype(np.uint8))[0]
    mask = work[box]
    closed = np.pad(_closing(mask, SHELL_CLOSING_MM, spacing), 1)
    filled = ndimage.binary_fill_holes(closed, structure=_IN_PLANE)[1:-1, 1:-1, 1:-1]  # slice by slice
    inside = np.count_nonzero(filled)
    coverage = np.count_nonzero(mask) / inside
    if coverage >= coverage_limit:
        return None
    per_slice_filled = np.count_nonzero(filled, axis=(0, 1))
    per_slice_mask = np.count_nonzero(mask, axis=(0, 1))
    missing = per_slice_filled - per_slice_mask
    large = per_slice_filled >= 0.2 * per_slice_filled.max()
    hollow = np.flatnonzero(large & (per_slice_mask < coverage_limit * per_slice_filled)) + box[2].start
    worst = int(np.argmax(np.where(large, missing, -1))) + box[2].start
    where = axial.describe(int(hollow.min()), int(hollow.max())) if hollow.size else axial.describe(worst, worst)
    slices, mm = axial.pick(worst, *(hollow[[0, -1]] if hollow.size else ()))
    return MaskFinding(
        "shell",
        f"the mask is hollow: it covers {coverage:.0%} of the region it encloses (a cranial cavity is solid, more "
        f"than 95%), most of the missing part in {where}: the mask follows the inner table and leaves the brain out",
        slices,
        mm,
    )


def _leaked_air(interior: np.ndarray, mask: np.ndarray, air: np.ndarray) -> np.ndarray:
    """The air inside the mask that speaks for a leak, not for post-operative air.

    Post-operative air (pneumocephalus) collects in the upper and front part of the cavity (it rises in a supine
    patient). Air the mask took from the pharynx, mouth, mastoid or skull-base sinuses lies in the lowest quarter of
    the mask's height. (Whether the air continues outside the mask does not tell them apart: a network that leaves
    part of a pneumocephalus out of the mask leaves air outside the mask too.)
    """
    inside = interior & air
    rows = np.flatnonzero(mask.any(axis=(0, 1)))
    if not inside.any() or rows.size == 0:
        return np.zeros_like(inside)
    low = np.zeros(mask.shape[2], dtype=bool)
    low[: rows[0] + max(1, (rows[-1] - rows[0] + 1) // 4)] = True
    return inside & low[None, None, :]


def _leak(
    work: np.ndarray, hu: np.ndarray | None, voxel_ml: float, axial: _Axial, regrowth_fraction: float
) -> tuple[MaskFinding | None, int | None]:
    """The leak finding (or None) and the lowest working slice the leak reaches."""
    evidence, slices, extra, lowest = [], [], [], None
    if hu is not None:
        interior = ndimage.binary_erosion(work, structure=_IN_PLANE)  # blocks not averaged with the skull
        air = _leaked_air(interior, work, hu < AIR_HU)
        fat = interior & (hu >= FAT_HU_RANGE[0]) & (hu <= FAT_HU_RANGE[1])
        air_ml, fat_ml = np.count_nonzero(air) * voxel_ml, np.count_nonzero(fat) * voxel_ml
        if air_ml >= LEAK_AIR_ML or fat_ml >= LEAK_FAT_ML:
            per_slice = np.count_nonzero(air | fat, axis=(0, 1))
            rows = np.flatnonzero(per_slice)
            parts = [f"{v:.0f} mL of {name}" for v, name in ((air_ml, "air"), (fat_ml, "fat")) if v >= 0.5]
            evidence.append(f"it holds {' and '.join(parts)} in {axial.describe(int(rows[0]), int(rows[-1]))}")
            slices.append(int(np.argmax(per_slice)))
            extra += [int(rows[-1]), int(rows[0])]
            lowest = int(rows[0])
    areas = np.count_nonzero(work, axis=(0, 1)).astype(np.float64)
    width = max(1, int(round(_PROFILE_SMOOTH_MM / axial.slab_mm)))
    smooth = ndimage.uniform_filter1d(areas, width, mode="nearest") if width > 1 else areas
    widest = int(np.argmax(smooth))
    if widest > 1:
        below = smooth[: widest + 1]
        # the narrowest cross section between each slice and the widest level
        narrowest_above = np.minimum.accumulate(below[::-1])[::-1]
        narrowest_above = np.append(narrowest_above[1:], below[-1])
        regrowth = below - narrowest_above
        deepest = int(np.argmax(regrowth))
        if regrowth[deepest] > regrowth_fraction * smooth.max():
            waist = deepest + 1 + int(np.argmin(below[deepest + 1 :]))
            wide = np.flatnonzero(regrowth > 0.5 * regrowth[deepest])
            evidence.append(
                f"it narrows to a waist at {axial.describe(waist, waist)} and widens again below it by "
                f"{regrowth[deepest] / smooth.max():.0%} of its largest cross section in "
                f"{axial.describe(int(wide[0]), int(wide[-1]))}"
            )
            slices.append(deepest)
            extra.insert(0, waist)
            lowest = int(wide[0]) if lowest is None else min(lowest, int(wide[0]))
    if not evidence:
        return None, None
    picked, mm = axial.pick(*slices, *extra)
    message = (
        f"the mask leaks below the skull base into the face or neck: {'; '.join(evidence)}; the cranial cavity holds "
        "no air or fat (apart from post-operative air) and narrows steadily down to the foramen magnum"
    )
    return MaskFinding("leak", message, picked, mm), lowest


def check_mask(
    mask: np.ndarray,
    affine: np.ndarray,
    image: np.ndarray | None = None,
    volume_range_ml: Sequence[float] = ADULT_VOLUME_RANGE_ML,
    edge_area_fraction: float = 0.1,
    volume_ml: float | None = None,
    shell_coverage: float = SHELL_COVERAGE,
    regrowth_fraction: float = REGROWTH_FRACTION,
) -> list[MaskFinding]:
    """Findings about a cranial-cavity mask that a reader should check (empty list: nothing unusual).

    Args:
        mask: binary mask ``(X, Y, Z)`` in any voxel order (non-zero = cavity).
        affine: its 4x4 voxel-to-world affine (mm); the axial axis is the voxel axis closest to the world's S
            direction (RAS world, as NIfTI and the bundle's MetaTensors).
        image: the CT in HU on the same grid, or None: then the HU checks (``no_cavity`` and the air and fat part of
            ``leak``) are skipped.
        volume_range_ml: ``(low, high)`` plausible intracranial volume in mL. Defaults to (900, 2100).
        edge_area_fraction: the mask "reaches" the first or last axial slice when its area there exceeds this
            fraction of its largest axial area (the cavity narrows to the foramen magnum below and to nothing at the
            vertex). Defaults to 0.1.
        volume_ml: the mask's intracranial volume when the caller has already computed it. Default None: computed.
        shell_coverage: coverage of the enclosed interior below which the mask is a shell. Defaults to 0.85.
        regrowth_fraction: widening below the waist (fraction of the largest cross section) that flags a leak.
            Defaults to 0.1.

    Returns:
        The :class:`MaskFinding` list, most serious first.

    Raises:
        ValueError: for a mask that is not 3D, an affine that is not 4x4, an image of another shape, or bad ranges.

    Example:
        >>> mask = np.zeros((40, 40, 30), np.uint8)
        >>> mask[5:35, 5:35, 10:30] = 1
        >>> [f.code for f in check_mask(mask, np.diag([5.0, 5.0, 5.0, 1.0]))]
        ['volume', 'cut_top']
    """
    array = np.asarray(mask) != 0
    matrix = np.asarray(affine, dtype=np.float64)
    if array.ndim != 3:
        raise ValueError(f"mask must be 3D (X, Y, Z), got shape {array.shape}.")
    if matrix.shape != (4, 4):
        raise ValueError(f"affine must be 4x4, got shape {matrix.shape}.")
    if image is not None and np.shape(image) != array.shape:
        raise ValueError(f"image shape {np.shape(image)} differs from mask shape {array.shape}.")
    low, high = (float(v) for v in volume_range_ml)
    if not 0 <= low < high:
        raise ValueError(f"volume_range_ml must be (low, high) with 0 <= low < high, got {volume_range_ml}.")
    if not 0 < edge_area_fraction < 1:
        raise ValueError(f"edge_area_fraction must be in (0, 1), got {edge_area_fraction}.")
    if not 0 < shell_coverage < 1 or not 0 < regrowth_fraction < 1:
        raise ValueError(
            f"shell_coverage and regrowth_fraction must be in (0, 1), got {shell_coverage}, " f"{regrowth_fraction}."
        )
    if not array.any():
        return [MaskFinding("empty", "the mask is empty: no cranial cavity was found; is this a head CT?")]
    volume = intracranial_volume_ml(array, matrix) if volume_ml is None else float(volume_ml)
    spacing = voxel_sizes(matrix)
    directions = matrix[:3, :3] / spacing
    axis = int(np.argmax(np.abs(directions[2])))  # the voxel axis closest to the world's S direction
    others = tuple(a for a in range(3) if a != axis)
    areas = np.count_nonzero(array, axis=others)
    upward = directions[2, axis] > 0
    cut = {}
    for index, end in ((0, "bottom" if upward else "top"), (-1, "top" if upward else "bottom")):
        if areas[index] > edge_area_fraction * areas.max():
            cut[end] = index % array.shape[axis]

    # the working grid: the mask's bounding box (one block of margin) in blocks of about WORK_SPACING_MM, axial
    # axis last, inferior to superior
    factors = [max(1, int(WORK_SPACING_MM / s + 1e-6)) for s in spacing]
    box = []
    for a, (f, n) in enumerate(zip(factors, array.shape, strict=True)):
        profile = areas if a == axis else np.count_nonzero(array, axis=tuple(b for b in range(3) if b != a))
        rows = np.flatnonzero(profile)
        box.append(slice(max(0, int(rows[0]) - f), min(n, int(rows[-1]) + 1 + f)))
    box = tuple(box)
    order = (*others, axis)
    reduced = _block_reduce(array[box], factors, mean=False)
    work = np.transpose(reduced, order)
    hu = None if image is None else np.transpose(_block_reduce(np.asarray(image)[box], factors, mean=True), order)
    if not upward:
        work = work[:, :, ::-1]
        hu = None if hu is None else hu[:, :, ::-1]
    work_spacing = (spacing * factors)[list(order)]
    voxel_ml = abs(float(np.linalg.det(matrix[:3, :3]))) * float(np.prod(factors)) / 1000.0
    work_any = bool(work.any())
    centre = [(s.start + s.stop) / 2.0 for s in box]  # the mask's centre gives each slice's S in mm
    if work_any:
        centre = [
            box[a].start
            + f
            * float(np.dot(np.arange(n), np.count_nonzero(reduced, axis=tuple(b for b in range(3) if b != a))))
            / np.count_nonzero(reduced)
            + f // 2
            for a, (n, f) in enumerate(zip(reduced.shape, factors, strict=True))
        ]
    axial = _Axial(matrix, array.shape, axis, factors[axis], work.shape[2], centre, box[axis].start)

    found: list[MaskFinding] = []
    no_cavity = False
    if hu is not None and work_any:
        interior = ndimage.binary_erosion(work, structure=_IN_PLANE)
        values = hu[interior] if interior.any() else hu[work]
        median = float(np.median(values))
        if not BRAIN_MEDIAN_HU_RANGE[0] <= median <= BRAIN_MEDIAN_HU_RANGE[1]:
            no_cavity = True
            k = int(np.argmax(np.count_nonzero(work, axis=(0, 1))))
            found.append(
                MaskFinding(
                    "no_cavity",
                    f"no cranial cavity found: the masked region is {_tissue(median)} (median {median:.0f} HU; brain "
                    f"and CSF give {BRAIN_MEDIAN_HU_RANGE[0]:.0f} to {BRAIN_MEDIAN_HU_RANGE[1]:.0f} HU), e.g. in "
                    f"{axial.describe(k, k)}",
                    *axial.pick(k),
                )
            )
    if work_any:
        labels, count = ndimage.label(work, structure=np.ones((3, 3, 3), bool))
        sizes = np.bincount(labels.ravel())[1:] * voxel_ml
        pieces = np.sort(sizes[sizes >= _MIN_PIECE_ML])[::-1]
        largest = float(sizes.max())
        many = pieces.size >= 2 and largest < 0.9 * sizes.sum()
        small = largest < MIN_CAVITY_ML and not cut
        if many or small:
            biggest = int(np.argmax(sizes)) + 1
            rows = np.flatnonzero(np.any(labels == biggest, axis=(0, 1)))
            k = int((rows[0] + rows[-1]) // 2)
            listed = ", ".join(f"{v:.0f}" for v in pieces[:5]) + (", ..." if pieces.size > 5 else "")
            what = (
                f"the mask is {pieces.size} separate pieces of {listed} mL"
                if many
                else f"the mask's largest piece is {largest:.0f} mL"
            )
            found.append(
                MaskFinding(
                    "fragments",
                    (
                        f"{what}: none is a whole cranial cavity (at least {MIN_CAVITY_ML:.0f} mL, one piece) although "
                        "the scan covers the mask from end to end"
                        if small and not many
                        else f"{what}: a cranial cavity is one piece; check the pieces in the QC picture"
                    ),
                    *axial.pick(k),
                )
            )
    if not low <= volume <= high:
        found.append(
            MaskFinding(
                "volume",
                f"intracranial volume {volume:.0f} mL is outside the usual {low:.0f}-{high:.0f} mL: "
                "check the QC picture (children, resections and partial scans can be outside it)",
            )
        )
    leaked = None
    if work_any and not no_cavity:
        shell = _shell(work, work_spacing, axial, shell_coverage)
        if shell is not None:
            found.append(shell)
        leak, leaked = _leak(work, hu, voxel_ml, axial, regrowth_fraction)
        if leak is not None:
            found.append(leak)
    for end in ("bottom", "top"):
        if end not in cut:
            continue
        index = int(cut[end])
        if leak_free := (leaked is None and not no_cavity):
            text = (
                f"the mask reaches the {end} axial slice: the scan may not cover the whole cranial cavity, "
                "so the volume is a lower bound"
            )
        else:
            text = (
                f"the mask reaches the {end} axial slice (the scan's edge), but beyond the cranial cavity (see the "
                "findings above), so its volume is not the cavity's"
            )
        found.append(MaskFinding(f"cut_{end}", text, (index,), (axial.mm(index),), review=not leak_free))
    return found


def mask_warnings(
    mask: np.ndarray,
    affine: np.ndarray,
    volume_range_ml: Sequence[float] = ADULT_VOLUME_RANGE_ML,
    edge_area_fraction: float = 0.1,
    volume_ml: float | None = None,
    image: np.ndarray | None = None,
) -> list[str]:
    """Warnings about a cranial-cavity mask that a reader should check: the messages of :func:`check_mask`.

    Args:
        mask: binary mask ``(X, Y, Z)`` in any voxel order (non-zero = cavity).
        affine: its 4x4 voxel-to-world affine (mm).
        volume_range_ml: ``(low, high)`` plausible intracranial volume in mL. Defaults to (900, 2100).
        edge_area_fraction: see :func:`check_mask`. Defaults to 0.1.
        volume_ml: the mask's intracranial volume when the caller has already computed it. Default None: computed.
        image: the CT in HU on the same grid, for the HU checks. Defaults to None (skipped).

    Returns:
        Human-readable warnings (empty list: nothing unusual).

    Raises:
        ValueError: as :func:`check_mask`.

    Example:
        >>> mask = np.zeros((40, 40, 30), np.uint8)
        >>> mask[5:35, 5:35, 10:30] = 1
        >>> [w.split(":")[0] for w in mask_warnings(mask, np.diag([5.0, 5.0, 5.0, 1.0]))]
        ['intracranial volume 2250 mL is outside the usual 900-2100 mL', 'the mask reaches the top axial slice']
    """
    findings = check_mask(
        mask, affine, image, volume_range_ml=volume_range_ml, edge_area_fraction=edge_area_fraction, volume_ml=volume_ml
    )
    return [f.message for f in findings]
