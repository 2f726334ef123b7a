# SPDX-License-Identifier: Apache-2.0
"""The anatomical template of the head-CT phantoms: the real average brain CT and fields derived from it.

The template frame is the atlas voxel grid in mm: ``(x, y, z)`` = atlas voxel index, RAS (x towards the right,
y anterior, z superior). Every anatomical landmark of the phantom generator is given in this frame (see
:data:`LANDMARKS`); a phantom maps each of its voxels into this frame through a random pose, head scaling and smooth
deformation (see :mod:`bundle.data.phantom_anatomy`).

The template holds two fields on a grid that extends 36 mm beyond the cranial cavity on every side:

- ``hu``: the atlas HU inside the cavity (clipped to [0, 90] HU; cavity voxels where the atlas is empty are
  cerebrospinal fluid, 8 HU) and 0 outside,
- ``sdf``: the signed distance in mm to the cavity surface (negative inside). It is computed once at 2 mm from the
  atlas' non-zero region (holes filled) and smoothed with a 2 mm Gaussian, so the cavity surface - the inner surface of
  the skull - is smooth like the dura and carries no voxel staircase.

The atlas ships in ``bundle/data/resources`` (TotalSegmentator 2.18.0, Apache-2.0, see the NOTICE file there).
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["ATLAS_FILENAME", "CSF_HU", "LANDMARKS", "Template", "atlas_path", "get_template", "load_atlas"]

logger = logging.getLogger(__name__)

#: File name of the average brain CT atlas in ``bundle/data/resources``.
ATLAS_FILENAME = "ct_brain_atlas_1mm.nii.gz"
#: HU given to cavity voxels outside the atlas' brain (the subarachnoid space under the inner table).
CSF_HU = 8.0

_MARGIN_MM = 36.0
_SDF_SPACING_MM = 2.0

#: Landmarks in template mm (atlas voxel coordinates, RAS). Left/right pairs are given for the right side
#: (x > midline); the left one mirrors about ``midline_x``.
LANDMARKS: dict[str, tuple[float, ...]] = {
    "midline_x": (105.0,),
    "head_centre": (105.0, 95.0, 100.0),
    "foramen_magnum": (105.0, 62.0, 33.0),  # centre of the foramen magnum plane
    "globe": (136.0, 167.0, 47.0),  # centre of the right eye globe
    "orbit_apex": (117.0, 124.0, 50.0),
    "orbit_rim": (137.0, 178.0, 47.0),
    "petrous_lateral": (157.0, 72.0, 43.0),
    "petrous_apex": (124.0, 100.0, 47.0),
    "mastoid": (162.0, 66.0, 42.0),
    "ear_canal": (170.0, 84.0, 40.0),
    "sphenoid_sinus": (105.0, 118.0, 42.0),
    "ethmoid": (105.0, 156.0, 47.0),
    "frontal_sinus": (105.0, 181.0, 80.0),
    "maxillary_sinus": (132.0, 160.0, 22.0),
    "nasal_cavity": (105.0, 168.0, 22.0),
    "nasopharynx": (105.0, 128.0, 21.0),
    "dens": (105.0, 80.0, 14.0),
    "c1_lateral_mass": (124.0, 70.0, 21.0),
    "occipital_condyle": (118.0, 72.0, 30.0),
    "mandible_condyle": (157.0, 104.0, 37.0),
    "zygoma_front": (165.0, 150.0, 42.0),
    "zygoma_back": (170.0, 104.0, 42.0),
    "vertex": (105.0, 95.0, 165.0),
}


def atlas_path() -> Path:
    """Path of the shipped average brain CT atlas (``bundle/data/resources/ct_brain_atlas_1mm.nii.gz``).

    Returns:
        The path of the atlas file.

    Raises:
        FileNotFoundError: if the resource is missing from the installation.

    Example:
        >>> atlas_path().name
        'ct_brain_atlas_1mm.nii.gz'
    """
    path = Path(__file__).resolve().parent / "resources" / ATLAS_FILENAME
    if not path.is_file():
        raise FileNotFoundError(f"phantom atlas resource missing: {path}")
    return path


@functools.lru_cache(maxsize=1)
def load_atlas() -> tuple[np.ndarray, np.ndarray]:
    """Load the atlas once per process.

    Returns:
        ``(hu, mask)``: float32 HU of shape (202, 202, 179) and the boolean cavity mask (its non-zero region with
        the cavity content)). Both are read-only.

    Example:
        >>> hu, mask = load_atlas()
        >>> hu.shape
        (202, 202, 179)
    """
    import nibabel as nib

    img = nib.load(str(atlas_path()))
    hu = np.asarray(img.dataobj, dtype=np.float32)
    mask = hu != 0
    hu.setflags(write=False)
    mask.setflags(write=False)
    return hu, mask


@dataclass(frozen=True)
class Template:
    """Template fields on a regular grid in the template frame.

    Attributes:
        origin: template mm of voxel (0, 0, 0).
        spacing: grid spacing in mm.
        shape: grid shape (X, Y, Z).
        fields: float32 array (2, X, Y, Z) - channel 0 HU, channel 1 cavity signed distance (mm). For
            ``torch.nn.functional.grid_sample`` the spatial axes are (D, H, W) = (X, Y, Z), so a sampling grid lists
            normalised (z, y, x) coordinates.
        surface_points: (N, 3) template mm of points on the cavity surface (for head extents).
    """

    origin: np.ndarray
    spacing: float
    shape: tuple[int, int, int]
    fields: np.ndarray
    surface_points: np.ndarray


@functools.lru_cache(maxsize=1)
def _padded_atlas_2mm() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The atlas padded by the margin: 1 mm grid origin, 2 mm block means of HU and mask, and the 2 mm cavity SDF."""
    from scipy import ndimage

    hu, mask = load_atlas()
    step = int(_SDF_SPACING_MM)
    first, last = [], []
    for d in range(3):
        occupied = np.nonzero(mask.any(axis=tuple(e for e in range(3) if e != d)))[0]
        first.append(occupied[0])
        last.append(occupied[-1])
    lo = np.floor(np.array(first) - _MARGIN_MM).astype(int)
    n = -(-(np.ceil(np.array(last) + _MARGIN_MM).astype(int) - lo + 1) // step)
    # 2 mm block means over the atlas part of the padded grid (blocks start at lo; outside the atlas is empty)
    a0 = np.where(lo < 0, lo + step * (-(lo // step)), lo)  # first atlas index on a block boundary
    a1 = a0 + step * ((np.minimum(lo + n * step, hu.shape) - a0) // step)
    b0 = (a0 - lo) // step
    crop = tuple(slice(int(a), int(b)) for a, b in zip(a0, a1, strict=True))
    counts = (a1 - a0) // step
    blocks = (counts[0], step, counts[1], step, counts[2], step)
    place = tuple(slice(int(b), int(b + c)) for b, c in zip(b0, counts, strict=True))
    hu2 = np.zeros(tuple(int(v) for v in n), dtype=np.float32)
    frac2 = np.zeros_like(hu2)
    hu2[place] = hu[crop].reshape(blocks).mean(axis=(1, 3, 5), dtype=np.float32)
    frac2[place] = mask[crop].reshape(blocks).mean(axis=(1, 3, 5), dtype=np.float32)
    inside = ndimage.binary_fill_holes(ndimage.gaussian_filter(frac2, 0.75) >= 0.5)
    d_out = ndimage.distance_transform_edt(~inside)
    d_in = ndimage.distance_transform_edt(inside)
    sdf = np.where(inside, -(d_in - 0.5), d_out - 0.5).astype(np.float32) * step
    sdf = ndimage.gaussian_filter(sdf, 1.0)
    return lo.astype(np.float64), hu2, frac2, sdf


def _crop_pad(volume: np.ndarray, lo: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """``volume[lo : lo + shape]`` with zeros where that box leaves ``volume``."""
    out = np.zeros(shape, dtype=volume.dtype)
    src_lo = np.maximum(lo, 0)
    src_hi = np.minimum(lo + np.array(shape), volume.shape)
    dst_lo = src_lo - lo
    out[tuple(slice(a, a + (b - c)) for a, b, c in zip(dst_lo, src_hi, src_lo, strict=True))] = volume[
        tuple(slice(c, b) for c, b in zip(src_lo, src_hi, strict=True))
    ]
    return out


def _resample_grid(volume: np.ndarray, origin: np.ndarray, spacing: float, shape, grid_origin, grid_spacing):
    """Trilinear samples of ``volume`` (regular grid) on another regular grid, clamping at the border."""
    import torch

    src = torch.from_numpy(np.ascontiguousarray(volume))[None, None]  # (D, H, W) = (X, Y, Z)
    axes = []
    for d in range(3):
        idx = (grid_origin[d] + grid_spacing * np.arange(shape[d]) - origin[d]) / spacing
        axes.append(torch.from_numpy((2.0 * idx / (volume.shape[d] - 1) - 1.0).astype(np.float32)))
    gx, gy, gz = torch.meshgrid(axes[0], axes[1], axes[2], indexing="ij")
    grid = torch.stack([gz, gy, gx], dim=-1)[None]
    out = torch.nn.functional.grid_sample(src, grid, mode="bilinear", padding_mode="border", align_corners=True)
    return out[0, 0].numpy()


@functools.lru_cache(maxsize=4)
def get_template(spacing_mm: float) -> Template:
    """The template fields at ``spacing_mm`` (built once per process and spacing).

    Args:
        spacing_mm: grid spacing in mm (>= 1).

    Returns:
        The :class:`Template`.

    Raises:
        ValueError: if ``spacing_mm`` < 1.

    Example:
        >>> t = get_template(4.0)
        >>> t.fields.shape[0]
        2
    """
    from scipy import ndimage

    if not spacing_mm >= 1.0:
        raise ValueError(f"spacing_mm must be >= 1, got {spacing_mm}.")
    lo, hu2, frac2, sdf2 = _padded_atlas_2mm()
    step = _SDF_SPACING_MM
    origin2 = lo + (step - 1) / 2.0  # centre of the first 2x2x2 block, in template mm
    extent = np.array(hu2.shape) * step - 1.0
    shape = tuple(int(v) for v in np.floor(extent / spacing_mm) + 1)
    sdf = _resample_grid(sdf2, origin2, step, shape, lo, spacing_mm)
    if spacing_mm == 1.0:
        hu, mask = load_atlas()
        atlas = _crop_pad(hu, lo.astype(int), shape)
        brain = _crop_pad(mask, lo.astype(int), shape)
    else:
        atlas = _resample_grid(ndimage.gaussian_filter(hu2, 0.2 * spacing_mm), origin2, step, shape, lo, spacing_mm)
        brain = _resample_grid(frac2, origin2, step, shape, lo, spacing_mm) >= 0.5
    hu_field = np.where(sdf < 0, np.where(brain, np.clip(atlas, 0.0, 90.0), CSF_HU), 0.0).astype(np.float32)
    fields = np.ascontiguousarray(np.stack([hu_field, sdf]))  # shared between phantoms: never write to it
    inside = sdf2 < 0
    surface = inside & ~ndimage.binary_erosion(inside)
    points = (np.argwhere(surface) * step + origin2).astype(np.float32)
    logger.debug("built phantom template at %.2f mm, grid %s", spacing_mm, shape)
    return Template(origin=lo, spacing=float(spacing_mm), shape=shape, fields=fields, surface_points=points)
