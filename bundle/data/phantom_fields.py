# SPDX-License-Identifier: Apache-2.0
"""Vectorised shape and field primitives for the head-CT phantoms.

Shapes are approximate signed distance functions (SDF, mm, negative inside) evaluated on coordinate arrays; they are
turned into anti-aliased coverage with :func:`coverage` (a linear ramp one voxel wide, so edges carry partial volume
instead of a staircase). Random fields are smooth Gaussian fields on a regular grid built separably from cubic
B-splines (three small matrix products, no 3D convolution), so they cost little even on large grids.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "SmoothField",
    "band",
    "capsule_sdf",
    "cone_sdf",
    "coverage",
    "ellipsoid_sdf",
    "gaussian_bump",
    "mirror_x",
    "septa_distance",
    "smooth_min",
    "smooth_noise",
]


def coverage(sdf: np.ndarray, width: float) -> np.ndarray:
    """Anti-aliased indicator of ``sdf < 0``: 1 inside, 0 outside, a linear ramp of ``width`` mm across the surface.

    Args:
        sdf: signed distance (mm, negative inside).
        width: ramp width in mm (> 0), normally one voxel.

    Returns:
        float32 array in [0, 1] (0.5 on the surface).

    Example:
        >>> coverage(np.array([-1.0, 0.0, 1.0]), 1.0).tolist()
        [1.0, 0.5, 0.0]
    """
    out = np.asarray(sdf, dtype=np.float32) * np.float32(-1.0 / width)
    out += np.float32(0.5)
    return np.clip(out, 0.0, 1.0, out=out)


def band(d: np.ndarray, lo: np.ndarray | float, hi: np.ndarray | float, width: float) -> np.ndarray:
    """Anti-aliased indicator of ``lo <= d < hi`` (a shell between two level sets of ``d``).

    Args:
        d: distance field (mm).
        lo: inner level (mm), scalar or array broadcastable to ``d``.
        hi: outer level (mm).
        width: ramp width in mm.

    Returns:
        float32 array in [0, 1]; 0 where ``hi <= lo``.

    Example:
        >>> band(np.array([-2.0, 1.0, 5.0]), 0.0, 2.0, 1.0).tolist()
        [0.0, 1.0, 0.0]
    """
    inner = coverage(np.subtract(d, hi, dtype=np.float32), width)
    inner -= coverage(np.subtract(d, lo, dtype=np.float32), width)
    return np.clip(inner, 0.0, 1.0, out=inner)


def ellipsoid_sdf(x, y, z, centre, radii) -> np.ndarray:
    """Approximate signed distance to an axis-aligned ellipsoid (exact on the axes, good near the surface).

    Args:
        x: coordinates (mm) along the first axis; ``y`` and ``z`` likewise (broadcastable).
        y: see ``x``.
        z: see ``x``.
        centre: ellipsoid centre (3,).
        radii: semi-axes (3,), > 0.

    Returns:
        float32 SDF (mm).

    Example:
        >>> float(ellipsoid_sdf(np.array(3.0), np.array(0.0), np.array(0.0), (0, 0, 0), (2, 1, 1)))
        1.0
    """
    qx = (np.asarray(x, np.float32) - np.float32(centre[0])) / np.float32(radii[0])
    qy = (np.asarray(y, np.float32) - np.float32(centre[1])) / np.float32(radii[1])
    qz = (np.asarray(z, np.float32) - np.float32(centre[2])) / np.float32(radii[2])
    k0 = np.sqrt(qx * qx + qy * qy + qz * qz)
    k1 = np.sqrt((qx / np.float32(radii[0])) ** 2 + (qy / np.float32(radii[1])) ** 2 + (qz / np.float32(radii[2])) ** 2)
    d = k0 * (k0 - 1.0) / np.maximum(k1, np.float32(1e-6))
    return np.where(k1 > 1e-6, d, -np.float32(min(radii))).astype(np.float32)


def capsule_sdf(x, y, z, a, b, radius) -> np.ndarray:
    """Signed distance to a capsule (a segment from ``a`` to ``b`` swept by a sphere).

    Args:
        x: coordinates (mm); ``y`` and ``z`` likewise.
        y: see ``x``.
        z: see ``x``.
        a: first end point (3,).
        b: second end point (3,).
        radius: sphere radius (mm); a pair ``(r_a, r_b)`` tapers linearly.

    Returns:
        float32 SDF (mm).

    Example:
        >>> float(capsule_sdf(np.array(0.0), np.array(3.0), np.array(0.0), (0, 0, 0), (0, 0, 5), 1.0))
        2.0
    """
    a = np.asarray(a, np.float32)
    ab = np.asarray(b, np.float32) - a
    px = np.asarray(x, np.float32) - a[0]
    py = np.asarray(y, np.float32) - a[1]
    pz = np.asarray(z, np.float32) - a[2]
    h = np.clip((px * ab[0] + py * ab[1] + pz * ab[2]) / np.float32(ab @ ab), 0.0, 1.0)
    dist = np.sqrt((px - h * ab[0]) ** 2 + (py - h * ab[1]) ** 2 + (pz - h * ab[2]) ** 2)
    r = np.atleast_1d(np.asarray(radius, np.float32))
    rad = r[0] + h * (r[-1] - r[0]) if r.size > 1 else r[0]
    return (dist - rad).astype(np.float32)


def cone_sdf(x, y, z, apex, base, r_apex, r_base) -> np.ndarray:
    """Approximate signed distance to a truncated cone with round caps (a tapered capsule without end balls).

    Args:
        x: coordinates (mm); ``y`` and ``z`` likewise.
        y: see ``x``.
        z: see ``x``.
        apex: centre of the narrow end (3,).
        base: centre of the wide end (3,).
        r_apex: radius at the apex (mm).
        r_base: radius at the base (mm).

    Returns:
        float32 SDF (mm); beyond either end the distance grows with the distance to that end's plane.

    Example:
        >>> float(cone_sdf(np.array(0.0), np.array(0.0), np.array(5.0), (0, 0, 0), (0, 0, 10), 1.0, 3.0)) < 0
        True
    """
    a = np.asarray(apex, np.float32)
    ab = np.asarray(base, np.float32) - a
    length = float(np.sqrt(ab @ ab))
    px = np.asarray(x, np.float32) - a[0]
    py = np.asarray(y, np.float32) - a[1]
    pz = np.asarray(z, np.float32) - a[2]
    u = (px * ab[0] + py * ab[1] + pz * ab[2]) / np.float32(length * length)
    uc = np.clip(u, 0.0, 1.0)
    radial = np.sqrt((px - u * ab[0]) ** 2 + (py - u * ab[1]) ** 2 + (pz - u * ab[2]) ** 2)
    side = radial - (np.float32(r_apex) + uc * np.float32(r_base - r_apex))
    ends = np.abs(u - 0.5) * np.float32(length) - np.float32(length / 2)
    return np.maximum(side, ends).astype(np.float32)


def smooth_min(a: np.ndarray, b: np.ndarray, k: float) -> np.ndarray:
    """Smooth union of two SDFs (polynomial smooth minimum with blend radius ``k`` mm).

    Args:
        a: first SDF.
        b: second SDF.
        k: blend radius in mm (> 0).

    Returns:
        float32 smooth minimum (<= min(a, b)).

    Example:
        >>> float(smooth_min(np.array(5.0), np.array(-1.0), 2.0))
        -1.0
    """
    h = np.clip(0.5 + 0.5 * (b - a) / np.float32(k), 0.0, 1.0)
    return (b + (a - b) * h - np.float32(k) * h * (1.0 - h)).astype(np.float32)


def gaussian_bump(x, y, z, centre, sigma) -> np.ndarray:
    """``exp(-|(p - centre) / sigma|^2 / 2)`` with per-axis ``sigma`` (mm).

    Args:
        x: coordinates (mm); ``y`` and ``z`` likewise.
        y: see ``x``.
        z: see ``x``.
        centre: bump centre (3,).
        sigma: per-axis widths (3,).

    Returns:
        float32 array in (0, 1].

    Example:
        >>> float(gaussian_bump(np.array(0.0), np.array(0.0), np.array(0.0), (0, 0, 0), (1, 1, 1)))
        1.0
    """
    q = ((np.asarray(x, np.float32) - np.float32(centre[0])) / np.float32(sigma[0])) ** 2
    q = q + ((np.asarray(y, np.float32) - np.float32(centre[1])) / np.float32(sigma[1])) ** 2
    q = q + ((np.asarray(z, np.float32) - np.float32(centre[2])) / np.float32(sigma[2])) ** 2
    return np.exp(np.float32(-0.5) * q).astype(np.float32)


def septa_distance(x, y, z, cell_mm: float, phase) -> np.ndarray:
    """Distance (mm) to the nearest wall of a lattice of cells ``cell_mm`` wide (bony septa of air cells).

    Args:
        x: coordinates (mm); ``y`` and ``z`` likewise. Pass deformed coordinates for irregular cells.
        y: see ``x``.
        z: see ``x``.
        cell_mm: cell size (mm, > 0).
        phase: per-axis lattice offsets (3,) in mm.

    Returns:
        float32 distance to the nearest lattice plane (0 on a wall, at most ``cell_mm / 2``).

    Example:
        >>> float(septa_distance(np.array(2.0), np.array(2.0), np.array(1.0), 4.0, (0, 0, 0)))
        1.0
    """
    out = None
    for c, p in zip((x, y, z), phase, strict=True):
        r = np.mod(np.asarray(c, np.float32) - np.float32(p), np.float32(cell_mm))
        d = np.minimum(r, np.float32(cell_mm) - r)
        out = d if out is None else np.minimum(out, d)
    return out.astype(np.float32)


def mirror_x(point, midline_x: float) -> tuple[float, float, float]:
    """Mirror a template point about the mid-sagittal plane ``x = midline_x``.

    Args:
        point: (3,) point.
        midline_x: x of the mid-sagittal plane.

    Returns:
        The mirrored point.

    Example:
        >>> mirror_x((110.0, 1.0, 2.0), 100.0)
        (90.0, 1.0, 2.0)
    """
    return (2.0 * midline_x - float(point[0]), float(point[1]), float(point[2]))


def _bspline_weights(pos: np.ndarray, lo: float, knot_mm: float, num_knots: int) -> np.ndarray:
    """(n, num_knots) cubic B-spline weights of knots ``lo + knot_mm * (m - 1)`` at positions ``pos`` (clamped)."""
    u = np.clip((np.asarray(pos, dtype=np.float64) - lo) / knot_mm, 0.0, num_knots - 3 - 1e-9)
    base = np.floor(u).astype(int)
    t = (u - base)[:, None]
    w = np.concatenate(
        [(1 - t) ** 3 / 6, (3 * t**3 - 6 * t**2 + 4) / 6, (-3 * t**3 + 3 * t**2 + 3 * t + 1) / 6, t**3 / 6], axis=1
    )
    mat = np.zeros((len(u), num_knots), dtype=np.float64)
    rows = np.arange(len(u))
    for j in range(4):
        mat[rows, base + j] += w[:, j]
    return mat


class SmoothField:
    """Smooth zero-mean unit-variance random fields anchored in space (world mm), evaluated on any regular grid.

    A cubic B-spline of Gaussian knots ``corr_mm`` apart on a lattice covering the box ``[lo, hi]``; evaluation on a
    grid is separable (three small matrix products) and the variance is normalised exactly at every point. Because
    the knots are tied to space and drawn once, the field has the same value at the same point whatever grid (slab,
    box, resolution or extent) it is evaluated on. Beyond the box the field continues its border values.

    Args:
        rng: random generator (consumed deterministically at construction).
        lo: lower corner of the box (3,) in mm.
        hi: upper corner of the box (3,) in mm.
        corr_mm: knot spacing in mm (> 0).
        channels: number of independent fields (default 1).

    Example:
        >>> f = SmoothField(np.random.default_rng(0), (0, 0, 0), (20, 20, 20), 5.0, channels=2)
        >>> x = np.arange(0.0, 20.0, 2.0)
        >>> whole = f(x, x, x)
        >>> bool(np.allclose(f(x, x, x[4:]), whole[:, :, :, 4:], atol=1e-6)), whole.shape
        (True, (2, 10, 10, 10))
    """

    def __init__(self, rng: np.random.Generator, lo, hi, corr_mm: float, channels: int = 1):
        lo = np.asarray(lo, dtype=np.float64).reshape(3)
        hi = np.asarray(hi, dtype=np.float64).reshape(3)
        if not corr_mm > 0 or np.any(hi < lo):
            raise ValueError(f"corr_mm must be > 0 and hi >= lo, got {corr_mm}, {lo}, {hi}.")
        self.lo = lo
        self.corr_mm = float(corr_mm)
        self.num_knots = tuple(int(np.floor((b - a) / corr_mm)) + 4 for a, b in zip(lo, hi, strict=True))
        self.channels = int(channels)
        self.knots = rng.standard_normal((channels,) + self.num_knots).astype(np.float32)

    def __call__(self, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
        """The fields on the grid ``x (nx,) x y (ny,) x z (nz,)`` (world mm): float32 (channels, nx, ny, nz)."""
        import torch

        parts = []
        for d, pos in enumerate((x, y, z)):
            m = _bspline_weights(np.atleast_1d(pos), self.lo[d] - self.corr_mm, self.corr_mm, self.num_knots[d])
            m /= np.sqrt((m**2).sum(axis=1))[:, None]
            cols = np.nonzero(m.any(axis=0))[0]
            lo, hi = (int(cols[0]), int(cols[-1]) + 1) if cols.size else (0, 1)
            parts.append((torch.from_numpy(np.ascontiguousarray(m[:, lo:hi], dtype=np.float32)), slice(lo, hi)))
        (mx, kx), (my, ky), (mz, kz) = parts
        out = torch.from_numpy(np.ascontiguousarray(self.knots[:, kx, ky, kz]))  # (c, a, b, d)
        out = torch.matmul(out, mz.T)  # (c, a, b, nz)
        out = torch.matmul(my, out)  # (c, a, ny, nz)
        c, a, ny, nz = out.shape
        out = torch.matmul(mx, out.reshape(c, a, ny * nz)).reshape(c, mx.shape[0], ny, nz)
        return out.numpy()


def smooth_noise(
    rng: np.random.Generator, shape: tuple[int, int, int], spacing: float, corr_mm: float, channels: int = 1
) -> np.ndarray:
    """Smooth zero-mean unit-variance random fields on a whole grid (see :class:`SmoothField`).

    Args:
        rng: random generator (consumed deterministically).
        shape: grid shape (X, Y, Z).
        spacing: grid spacing in mm.
        corr_mm: knot spacing in mm (> 0).
        channels: number of independent fields (default 1).

    Returns:
        float32 array (channels, X, Y, Z).

    Example:
        >>> smooth_noise(np.random.default_rng(0), (8, 9, 10), 2.0, 10.0, channels=2).shape
        (2, 8, 9, 10)
    """
    axes = [np.arange(n) * float(spacing) for n in shape]
    hi = [a[-1] if len(a) else 0.0 for a in axes]
    return SmoothField(rng, (0.0, 0.0, 0.0), hi, corr_mm, channels)(*axes)
