# SPDX-License-Identifier: Apache-2.0
"""Content checks for a loaded CT: corrupted slices, blank volumes, and grids no head CT has.

The loader's other checks (``dicom_series``, ``reader``) catch inputs it cannot *assemble*; these catch inputs it can
assemble but that the model cannot answer, which would otherwise come back as a confident-looking mask:

- :func:`check_slice_pixels` (always run by the loader, DICOM per file, NIfTI per axial slice): a slice whose pixels
  jump by thousands of HU from all four neighbours at many places is corrupted (bytes overwritten or shifted in the
  pixel data; a real reconstruction is band-limited, and even metal gives blobs of several pixels, not isolated
  spikes). The series is **refused** rather than segmented with the slice flagged: a wrong slice inside the volume
  moves the mask on the neighbouring slices too (the network reads the slices in sequence), and leaving the slice out
  would make the slice spacing uneven. The file (or slice index) is named so that it can be re-exported.
- :func:`check_head_ct` (``CTImageReader(check_head_ct=True)``, which the segmenter and the bundle's ``inference`` and
  ``train`` configs use): blank or constant volumes ("no image content"), and grids with too few pixels, too coarse
  pixels or slices, or a field of view smaller than a head. It returns warnings for grids that are usable but coarse.

Every threshold is a module constant with its reason, and listed in ``docs/segment.md``.
"""

from __future__ import annotations

import os
import warnings

import numpy as np
from nibabel.affines import voxel_sizes

from .errors import CTInputError

__all__ = [
    "check_slice_pixels",
    "check_head_ct",
    "SPIKE_JUMP_HU",
    "MIN_SPIKES",
    "MIN_PIXELS_ACROSS",
    "MIN_FIELD_OF_VIEW_MM",
    "MAX_PIXEL_MM",
    "COARSE_PIXEL_MM",
    "MAX_SLICE_MM",
    "MIN_CONTENT_RANGE_HU",
]

#: A "spike" differs from each of its four neighbours by more than this. The HU scale spans about 4100 (air -1024 to
#: the 12-bit ceiling 3071), so only a metal edge pixel next to air can come close, and it has metal neighbours.
SPIKE_JUMP_HU = 4000.0
#: Spikes in one slice that make it corrupted. Random bytes give spikes in most of the damaged pixels (a few hundred
#: bytes already give over 64); metal or noise gives none or a handful.
MIN_SPIKES = 64
#: Pixels across (the smaller in-plane size) below which the input is refused. Head CT is reconstructed at 256-1024
#: pixels; the bundle's smallest test phantoms are 64 (tiny preset), the smallest workflow phantoms 32.
MIN_PIXELS_ACROSS = 32
#: In-plane field of view (mm, the smaller side) below which the input is refused: an adult head is 140-160 mm wide.
MIN_FIELD_OF_VIEW_MM = 100.0
#: In-plane pixel size (mm) above which the input is refused. Head CT pixels are 0.3-1 mm; above 5 mm the skull (about
#: 5-7 mm thick) is one pixel and the model cannot find its inner edge. The tiny phantoms have 3.7-4 mm pixels.
MAX_PIXEL_MM = 5.0
#: In-plane pixel size (mm) above which a warning is given: the lite preset works on a 2 mm grid, so coarser input is
#: upsampled and the mask's edge is less accurate.
COARSE_PIXEL_MM = 2.0
#: Slice spacing (mm) above which the input is refused: fewer than about 8 slices would cover the cranial cavity
#: (about 150 mm tall). Old sequential head CT used up to 10 mm; the tiny preset's phantoms have 15.5 mm.
MAX_SLICE_MM = 20.0
#: Spread (HU) of the volume's 0.5th-99.5th percentiles below which it holds no image content: a head CT spans at
#: least air (-1000) to soft tissue (0-80) and bone (above 300), so anything under 100 HU is blank or constant.
MIN_CONTENT_RANGE_HU = 100.0


def _spikes(hu: np.ndarray) -> np.ndarray:
    """Boolean map of the interior pixels that jump by more than :data:`SPIKE_JUMP_HU` from all four neighbours."""
    centre = hu[1:-1, 1:-1]
    spikes = np.abs(centre - hu[:-2, 1:-1]) > SPIKE_JUMP_HU
    for neighbour in (hu[2:, 1:-1], hu[1:-1, :-2], hu[1:-1, 2:]):
        spikes &= np.abs(centre - neighbour) > SPIKE_JUMP_HU
    return spikes


def check_slice_pixels(hu: np.ndarray, path: str | os.PathLike, where: str = "") -> None:
    """Refuse a slice whose pixel data is corrupted (many isolated spikes of thousands of HU).

    Args:
        hu: one slice in HU (2D), before any clipping (corrupted bytes give values far below air too).
        path: the file to name in the error.
        where: the slice's place in the file, e.g. ``"slice 12 of 24 (axis 2)"``; empty for a one-slice file.

    Raises:
        CTInputError: with the number of spikes, the slice's value range and its pixels above 3100 HU.

    Example:
        >>> check_slice_pixels(np.full((64, 64), -1000.0), "IM0001.dcm")  # a clean slice passes
    """
    hu = np.asarray(hu, dtype=np.float32)
    if hu.ndim != 2 or min(hu.shape) < 3:
        return
    count = int(np.count_nonzero(_spikes(hu)))
    if count < MIN_SPIKES:
        return
    above = int(np.count_nonzero(hu > 3100))
    place = f"{where} " if where else ""
    raise CTInputError(
        path,
        f"{place}has corrupted pixel data: {count} pixels jump by more than {SPIKE_JUMP_HU:.0f} HU from all four "
        f"neighbours (values {float(hu.min()):.0f} to {float(hu.max()):.0f} HU, {above} pixels above 3100 HU), "
        "which no CT reconstruction produces. The series is refused; re-export it from the scanner or PACS.",
    )


def _slice_axis(affine: np.ndarray) -> int:
    """The voxel axis closest to the head-foot (S) direction."""
    directions = np.asarray(affine, dtype=float)[:3, :3]
    return int(np.argmax(np.abs(directions[2]) / np.maximum(np.linalg.norm(directions, axis=0), 1e-12)))


def check_head_ct(array: np.ndarray, affine: np.ndarray, path: str | os.PathLike) -> list[str]:
    """Refuse a volume without image content or on a grid no head CT has; return warnings for coarse grids.

    Args:
        array: the volume (3D, in HU, any voxel order).
        affine: its 4x4 voxel-to-world affine (mm).
        path: the file or folder to name in errors and warnings.

    Returns:
        The warnings (also issued with :func:`warnings.warn`), each starting with ``path``.

    Raises:
        CTInputError: blank or constant volume; fewer than :data:`MIN_PIXELS_ACROSS` pixels across; pixels over
            :data:`MAX_PIXEL_MM`; slices over :data:`MAX_SLICE_MM` apart; field of view under
            :data:`MIN_FIELD_OF_VIEW_MM`.

    Example:
        >>> check_head_ct(np.zeros((64, 64, 24)), np.diag([3.7, 3.7, 8.5, 1.0]), "case.nii.gz")
        Traceback (most recent call last):
        ...
        bundle.io.errors.CTInputError: case.nii.gz: is constant (every voxel 0 HU): no image content. ...
    """
    array = np.asarray(array)
    lo, hi = float(array.min()), float(array.max())
    if hi - lo < 1e-3:
        raise CTInputError(path, f"is constant (every voxel {lo:.0f} HU): no image content. Check the export.")
    step = max(1, round((array.size / 2_000_000) ** (1 / 3)))  # percentiles on about 2 million voxels: fast enough
    p_lo, p_hi = (float(v) for v in np.percentile(array[::step, ::step, ::step], [0.5, 99.5]))
    if p_hi - p_lo < MIN_CONTENT_RANGE_HU:
        raise CTInputError(
            path,
            f"has no image content: 99% of its voxels lie between {p_lo:.0f} and {p_hi:.0f} HU (a head CT spans "
            f"air to bone, at least {MIN_CONTENT_RANGE_HU:.0f} HU). Check the export.",
        )
    spacing = voxel_sizes(np.asarray(affine, dtype=float))
    axis = _slice_axis(affine)
    inplane = [a for a in range(3) if a != axis]
    shape = "x".join(str(n) for n in array.shape)
    sizes = "x".join(f"{v:.3g}" for v in spacing)
    found = f"a {shape} grid of {sizes} mm voxels"
    across = min(array.shape[a] for a in inplane)
    pixel = max(float(spacing[a]) for a in inplane)
    fov = min(array.shape[a] * float(spacing[a]) for a in inplane)
    problems = []
    if across < MIN_PIXELS_ACROSS:
        problems.append(f"{across} pixels across (fewer than {MIN_PIXELS_ACROSS}; head CT has 256-1024)")
    if pixel > MAX_PIXEL_MM:
        problems.append(f"{pixel:.3g} mm pixels (over {MAX_PIXEL_MM:g} mm; head CT has 0.3-1 mm)")
    if float(spacing[axis]) > MAX_SLICE_MM:
        problems.append(f"slices {float(spacing[axis]):.3g} mm apart (over {MAX_SLICE_MM:g} mm)")
    if fov < MIN_FIELD_OF_VIEW_MM:
        problems.append(f"a {fov:.0f} mm field of view (under {MIN_FIELD_OF_VIEW_MM:g} mm; a head is 140-160 mm wide)")
    if problems:
        raise CTInputError(
            path, f"has {found}: " + "; ".join(problems) + ". No head CT has this grid; pass the original series."
        )
    messages = []
    if pixel > COARSE_PIXEL_MM:
        messages.append(
            f"{path}: in-plane pixels of {pixel:.3g} mm are coarser than {COARSE_PIXEL_MM:g} mm (head CT has "
            "0.3-1 mm); the mask's edge is less accurate: check it."
        )
    for message in messages:
        warnings.warn(message, stacklevel=2)
    return messages
