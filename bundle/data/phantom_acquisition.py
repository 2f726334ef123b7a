# SPDX-License-Identifier: Apache-2.0
"""Acquisition geometry of the phantoms and the one-pass resampling from the anatomy grid to the CT slices.

Geometry (RAS world, mm). The in-plane pixel grid is centred on the reconstruction centre (world x = y = 0). Slices
are planes whose normal is ``n = (0, -sin t, cos t)`` for gantry tilt ``t`` (positive tilt: the plane's anterior edge
is higher, as for a scan along the orbitomeatal line; GE's sign of ``GantryDetectorTilt``). As on a real tilted
scanner the table moves along world z, so the voxel axes are

- axis 0 (i): ``(p, 0, 0)``,
- axis 1 (j): ``(0, p cos t, p sin t)`` (in the tilted plane),
- axis 2 (k): ``(0, 0, s / cos t)`` (the table step; ``s`` is the perpendicular distance between slice planes),

and the RAS affine carries a shear when ``t != 0``. A DICOM series written from it has GantryDetectorTilt ``t``,
ImageOrientationPatient with a tilted column direction and ImagePositionPatient stepping along z, like the real GE
series in the project's shared data.

Resampling. The anatomy is built on a regular world-aligned grid (``coarse``, typically 1 mm). Each CT slice value is
the average over the slice sensitivity profile (a box of the slice thickness along the table axis, ``T / cos t`` -
the vertical extent of the tilted slab) of the trilinearly interpolated anatomy. This is separable: a z-stage (one
small matrix per coarse y-plane, because tilt shifts the slab with y), then linear interpolation along x and y.
Values are produced in chunks of slices to bound memory.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import numpy as np

__all__ = [
    "Acquisition",
    "CoarseGrid",
    "coarse_grid_for",
    "make_acquisition",
    "nearest_coarse_indices",
    "resample_to_acquisition",
]


@dataclass(frozen=True)
class Acquisition:
    """Geometry of a CT series.

    Attributes:
        in_plane_size: pixels per row and column.
        num_slices: number of slices.
        pixel_spacing_mm: in-plane pixel size.
        slice_spacing_mm: perpendicular distance between slice planes.
        slice_thickness_mm: nominal slice thickness (width of the slice sensitivity profile).
        gantry_tilt_deg: gantry tilt (0 for an axial acquisition).
        affine: 4x4 RAS voxel-to-world matrix.
    """

    in_plane_size: int
    num_slices: int
    pixel_spacing_mm: float
    slice_spacing_mm: float
    slice_thickness_mm: float
    gantry_tilt_deg: float
    affine: np.ndarray

    @property
    def table_step_mm(self) -> float:
        """Table movement between slices (``slice_spacing_mm / cos(tilt)``)."""
        return self.slice_spacing_mm / float(np.cos(np.deg2rad(self.gantry_tilt_deg)))

    @property
    def plane_normal(self) -> np.ndarray:
        """Unit normal of the slice planes, oriented superior."""
        t = np.deg2rad(self.gantry_tilt_deg)
        return np.array([0.0, -np.sin(t), np.cos(t)])


def make_acquisition(
    in_plane_size: int,
    num_slices: int,
    pixel_spacing_mm: float,
    slice_spacing_mm: float,
    slice_thickness_mm: float,
    gantry_tilt_deg: float,
    first_plane_mm: float,
    centre_xy_mm: tuple[float, float] = (0.0, 0.0),
) -> Acquisition:
    """Build the geometry of a series whose first slice plane is at ``n . p = first_plane_mm``.

    Args:
        in_plane_size: pixels per row/column (>= 2).
        num_slices: number of slices (>= 1).
        pixel_spacing_mm: in-plane pixel size (> 0).
        slice_spacing_mm: distance between slice planes (> 0).
        slice_thickness_mm: slice thickness (> 0).
        gantry_tilt_deg: gantry tilt in degrees, |tilt| < 45.
        first_plane_mm: signed distance of the first slice plane along the plane normal.
        centre_xy_mm: world (x, y) of the in-plane centre of the first slice (default (0, 0)).

    Returns:
        The :class:`Acquisition`.

    Raises:
        ValueError: on a non-positive size or spacing, or a tilt of 45 degrees or more.

    Example:
        >>> acq = make_acquisition(64, 10, 3.6, 5.0, 5.0, 0.0, 0.0)
        >>> acq.affine[2, 2]
        5.0
    """
    if in_plane_size < 2 or num_slices < 1:
        raise ValueError(f"in_plane_size must be >= 2 and num_slices >= 1, got {in_plane_size}, {num_slices}.")
    for name, v in (
        ("pixel_spacing_mm", pixel_spacing_mm),
        ("slice_spacing_mm", slice_spacing_mm),
        ("slice_thickness_mm", slice_thickness_mm),
    ):
        if not v > 0:
            raise ValueError(f"{name} must be > 0, got {v}.")
    if not abs(gantry_tilt_deg) < 45:
        raise ValueError(f"gantry_tilt_deg must be within (-45, 45), got {gantry_tilt_deg}.")
    t = np.deg2rad(gantry_tilt_deg)
    p = float(pixel_spacing_mm)
    step = slice_spacing_mm / np.cos(t)
    half = (in_plane_size - 1) / 2.0
    ox = centre_xy_mm[0] - half * p
    oy = centre_xy_mm[1] - half * p * np.cos(t)
    # n . o = first_plane  with  n = (0, -sin t, cos t)
    oz = (first_plane_mm + oy * np.sin(t)) / np.cos(t)
    affine = np.array(
        [[p, 0.0, 0.0, ox], [0.0, p * np.cos(t), 0.0, oy], [0.0, p * np.sin(t), step, oz], [0.0, 0.0, 0.0, 1.0]]
    )
    return Acquisition(
        in_plane_size=int(in_plane_size),
        num_slices=int(num_slices),
        pixel_spacing_mm=p,
        slice_spacing_mm=float(slice_spacing_mm),
        slice_thickness_mm=float(slice_thickness_mm),
        gantry_tilt_deg=float(gantry_tilt_deg),
        affine=affine,
    )


@dataclass(frozen=True)
class CoarseGrid:
    """A regular world-aligned grid: ``world[d] = origin[d] + spacing[d] * index[d]``.

    Attributes:
        origin: world position (mm) of voxel (0, 0, 0).
        spacing: per-axis spacing (mm); a scalar is broadcast to the three axes.
        shape: grid shape (X, Y, Z).
    """

    origin: np.ndarray
    spacing: np.ndarray
    shape: tuple[int, int, int]

    def __post_init__(self):
        object.__setattr__(self, "origin", np.asarray(self.origin, dtype=np.float64).reshape(3))
        object.__setattr__(self, "spacing", np.broadcast_to(np.asarray(self.spacing, dtype=np.float64), (3,)).copy())
        object.__setattr__(self, "shape", tuple(int(n) for n in self.shape))

    @property
    def mean_spacing(self) -> float:
        """Mean of the per-axis spacings (mm)."""
        return float(np.mean(self.spacing))

    def axis(self, d: int) -> np.ndarray:
        """World coordinates (mm) along axis ``d``."""
        return self.origin[d] + self.spacing[d] * np.arange(self.shape[d])


def _output_axes(acq: Acquisition) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """World x of columns i, world y of rows j, and the affine."""
    a = acq.affine
    i = np.arange(acq.in_plane_size)
    return a[0, 3] + a[0, 0] * i, a[1, 3] + a[1, 1] * i, a


_MARGIN_VOXELS = 2


def coarse_grid_for(acq: Acquisition, spacing_mm: float) -> CoarseGrid:
    """The world-aligned anatomy grid for an acquisition, about ``spacing_mm`` apart.

    In-plane, the spacing is adjusted (by well under one percent for typical sizes) so that the acquisition's pixel
    grid spans a whole number of grid steps starting on a grid voxel; in-plane interpolation is then a plain bilinear
    upsampling. Along z the grid covers every slab the slices average, with a margin.

    Args:
        acq: the acquisition.
        spacing_mm: target spacing (> 0).

    Returns:
        The :class:`CoarseGrid`.

    Example:
        >>> g = coarse_grid_for(make_acquisition(64, 10, 3.6, 5.0, 5.0, 0.0, 0.0), 3.6)
        >>> g.shape[0]
        68
    """
    if not spacing_mm > 0:
        raise ValueError(f"spacing_mm must be > 0, got {spacing_mm}.")
    x, y, a = _output_axes(acq)
    n = acq.in_plane_size
    m = _MARGIN_VOXELS
    origin, spacing, shape = [], [], []
    for pos in (x, y):
        extent = float(pos[-1] - pos[0])
        steps = max(1, int(round(extent / spacing_mm)))
        step = extent / steps
        origin.append(float(pos[0]) - m * step)
        spacing.append(step)
        shape.append(steps + 1 + 2 * m)
    k_last = acq.num_slices - 1
    corners_z = [a[2, 3] + a[2, 1] * j + a[2, 2] * k for j in (0, n - 1) for k in (0, k_last)]
    half_slab = 0.5 * acq.slice_thickness_mm / np.cos(np.deg2rad(acq.gantry_tilt_deg))
    zlo = min(corners_z) - half_slab - m * spacing_mm
    zhi = max(corners_z) + half_slab + m * spacing_mm
    origin.append(zlo)
    spacing.append(float(spacing_mm))
    shape.append(int(np.ceil((zhi - zlo) / spacing_mm)) + 1)
    return CoarseGrid(origin=np.array(origin), spacing=np.array(spacing), shape=tuple(shape))


def _lerp_indices(pos: np.ndarray, origin: float, spacing: float, n: int) -> tuple[np.ndarray, np.ndarray]:
    f = (pos - origin) / spacing
    i0 = np.clip(np.floor(f).astype(np.int64), 0, n - 2)
    w = np.clip(f - i0, 0.0, 1.0)
    return i0, w.astype(np.float32)


def _slab_weights(z_centres: np.ndarray, slab_mm: float, grid: CoarseGrid) -> np.ndarray:
    """(..., K, Zc) weights: box profile of ``slab_mm`` around each centre, linear onto the grid's z samples."""
    nz = grid.shape[2]
    dz = float(grid.spacing[2])
    sub = max(1, int(np.ceil(4.0 * slab_mm / dz)))
    offsets = ((np.arange(sub) + 0.5) / sub - 0.5) * slab_mm
    z = z_centres[..., None] + offsets  # (..., K, sub)
    i0, w = _lerp_indices(z, grid.origin[2], dz, nz)
    rows = int(np.prod(z_centres.shape))
    flat_rows = np.broadcast_to(np.arange(rows).reshape(z_centres.shape + (1,)), z.shape).ravel()
    out = np.zeros(rows * nz, dtype=np.float32)
    out += np.bincount(flat_rows * nz + i0.ravel(), weights=(1.0 - w).ravel() / sub, minlength=rows * nz)
    out += np.bincount(flat_rows * nz + i0.ravel() + 1, weights=w.ravel() / sub, minlength=rows * nz)
    return out.reshape(z_centres.shape + (nz,))


def _in_plane_window(grid: CoarseGrid, acq: Acquisition, d: int) -> slice:
    pos = _output_axes(acq)[d]
    start = int(round((pos[0] - grid.origin[d]) / grid.spacing[d]))
    stop = int(round((pos[-1] - grid.origin[d]) / grid.spacing[d])) + 1
    if (
        start < 0
        or stop > grid.shape[d]
        or abs(grid.origin[d] + start * grid.spacing[d] - pos[0]) > 1e-6 * max(1.0, abs(pos[0]))
    ):
        raise ValueError(
            "the coarse grid is not aligned with the acquisition's pixels; build it with coarse_grid_for()."
        )
    return slice(start, stop)


def resample_to_acquisition(
    volume: np.ndarray, grid: CoarseGrid, acq: Acquisition, chunk_slices: int = 32
) -> Iterator[tuple[int, int, np.ndarray]]:
    """Resample a coarse-grid volume to the acquisition's voxels, chunk by chunk of slices.

    Args:
        volume: float32 array of ``grid.shape``.
        grid: the coarse grid from :func:`coarse_grid_for`.
        acq: the acquisition.
        chunk_slices: slices per yielded chunk (default 32).

    Yields:
        ``(k0, k1, values)`` with ``values`` float32 of shape (k1 - k0, in_plane_size, in_plane_size): slice-major,
        each slice indexed (i, j).

    Example:
        >>> acq = make_acquisition(16, 4, 4.0, 5.0, 5.0, 0.0, 0.0)
        >>> g = coarse_grid_for(acq, 4.0)
        >>> k0, k1, v = next(resample_to_acquisition(np.ones(g.shape, np.float32), g, acq))
        >>> v.shape, float(v.min())
        ((4, 16, 16), 1.0)
    """
    import torch
    import torch.nn.functional as F

    if volume.shape != grid.shape:
        raise ValueError(f"volume shape {volume.shape} does not match the grid {grid.shape}.")
    x, y, a = _output_axes(acq)
    t = np.deg2rad(acq.gantry_tilt_deg)
    slab = acq.slice_thickness_mm / np.cos(t)
    k = np.arange(acq.num_slices)
    wx, wy = _in_plane_window(grid, acq, 0), _in_plane_window(grid, acq, 1)
    vol = torch.from_numpy(np.ascontiguousarray(volume[wx, wy], dtype=np.float32))
    nx, ny, nz = vol.shape
    n = acq.in_plane_size
    if acq.gantry_tilt_deg == 0:
        weights = torch.from_numpy(_slab_weights(a[2, 3] + a[2, 2] * k, slab, grid))  # (K, Zc)
        zstage = torch.matmul(weights, vol.reshape(nx * ny, nz).T).reshape(-1, nx, ny)  # (K, X, Y)
    else:
        # z of slice k where its plane crosses grid y-plane b: z = oz + (y_b - oy) tan t + k step
        yb = grid.axis(1)[wy]
        z0 = a[2, 3] + (yb - a[1, 3]) * np.tan(t)
        weights = torch.from_numpy(_slab_weights(z0[:, None] + a[2, 2] * k[None, :], slab, grid))  # (Y, K, Zc)
        zstage = torch.matmul(vol.permute(1, 0, 2), weights.transpose(1, 2)).permute(2, 1, 0)  # (K, X, Y) view
    for k0 in range(0, acq.num_slices, chunk_slices):
        k1 = min(acq.num_slices, k0 + chunk_slices)
        part = zstage[k0:k1]
        if (nx, ny) != (n, n):
            part = F.interpolate(part[None], size=(n, n), mode="bilinear", align_corners=True)[0]
        yield k0, k1, np.ascontiguousarray(part.numpy())


def nearest_coarse_indices(grid: CoarseGrid, acq: Acquisition) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Index arrays mapping each output voxel to its nearest coarse voxel.

    Args:
        grid: the coarse grid.
        acq: the acquisition.

    Returns:
        ``(ix (I,1,1), iy (1,J,1), iz (1,J,K))`` for fancy indexing a coarse array into the output shape.

    Example:
        >>> acq = make_acquisition(8, 3, 4.0, 5.0, 5.0, 10.0, 0.0)
        >>> ix, iy, iz = nearest_coarse_indices(coarse_grid_for(acq, 4.0), acq)
        >>> iz.shape
        (1, 8, 3)
    """
    x, y, a = _output_axes(acq)
    j = np.arange(acq.in_plane_size)
    k = np.arange(acq.num_slices)
    z = a[2, 3] + a[2, 1] * j[:, None] + a[2, 2] * k[None, :]
    idx = []
    for d, pos in enumerate((x, y, z)):
        i = np.rint((pos - grid.origin[d]) / grid.spacing[d]).astype(np.int64)
        idx.append(np.clip(i, 0, grid.shape[d] - 1))
    return idx[0][:, None, None], idx[1][None, :, None], idx[2][None, :, :]
