# SPDX-License-Identifier: Apache-2.0
"""Scan protocols of the phantoms: where a scan starts and stops, its field of view, slices, kernel and artefacts.

A :class:`ScanProtocol` holds *distributions*; :meth:`ScanProtocol.draw` turns one into a :class:`ScanDraw` for one
phantom. Two protocols ship:

- :data:`CLASSIC_SCAN`: the original phantoms (version 1): the scan covers the head from 15-45 mm below the foramen
  magnum to above the vertex, 512 pixels of 0.43-0.5 mm, a soft kernel, no artefacts. The project's small test and
  default datasets use it.
- :data:`VARIED_SCAN`: what real head CT shows (the training protocol): ranges that start anywhere from the third
  cervical vertebra to 50 mm *inside* the cavity and stop anywhere from above the vertex to 60 mm below the cavity
  top, fields of view of 150-500 mm (cutting the head, or with shoulders), 0.5-7 mm slices, soft and bone kernels,
  1-4x the usual noise, beam hardening between the dense bones of the skull base, metal streaks wherever metal is
  painted, and patient motion.

The image-domain artefacts (:func:`beam_hardening`, :func:`metal_streaks`, :func:`apply_kernel`) are applied per
slice by :func:`bundle.data.phantoms.make_phantom`; none of them changes the label, which stays the exact cavity
coverage. Motion (:func:`apply_motion`) moves image and label together.

The robustness benchmark builds its own protocols (``scripts/benchmarks/robustness.py``) so that the stress suite and
the training data are not tuned to each other.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
from scipy import ndimage

__all__ = [
    "CLASSIC_SCAN",
    "SCAN_PROTOCOLS",
    "TRAINING_SCAN",
    "VARIED_SCAN",
    "ScanDraw",
    "ScanProtocol",
    "apply_kernel",
    "apply_motion",
    "beam_hardening",
    "metal_streaks",
    "slices_for",
]

#: Slice spacings (mm) offered by scanners, from which a protocol's spacing is drawn.
TYPICAL_SLICE_SPACINGS_MM = (0.5, 0.625, 0.75, 1.0, 1.25, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 6.0, 7.0)
#: The classic protocol's spacings (version 1 phantoms).
_CLASSIC_SPACINGS_MM = (0.5, 0.625, 0.75, 1.0, 1.25, 1.5, 2.0, 2.5, 3.0, 5.0)
#: HU above which a voxel is metal for the streak model (cortical bone stays below about 1900 HU).
METAL_HU = 2400.0
#: HU above which a voxel is dense bone for the beam-hardening model.
DENSE_BONE_HU = 1300.0


@dataclass(frozen=True)
class ScanProtocol:
    """Distributions of one scan protocol (all ranges are ``(low, high)``, drawn uniformly).

    Attributes:
        fov_mm: reconstruction field of view.
        fov_offset_mm: largest in-plane offset of the reconstruction centre from the table axis, per axis.
        start_below_fm_mm: distance of the first slice below the foramen magnum when the scan starts below it.
        p_start_in_cavity: probability that the first slice lies inside the cavity, above the foramen magnum.
        start_in_cavity_mm: height of that first slice above the foramen magnum.
        above_vertex_mm: margin of the last slice above the vertex (skin) when the top is not cut.
        p_top_cut: probability that the last slice lies inside the cavity.
        top_cut_mm: depth of that last slice below the top of the cavity.
        slice_spacing_mm: range of spacings drawn from :data:`TYPICAL_SLICE_SPACINGS_MM`; None: the classic choice
            (a typical spacing giving 100-400 slices).
        noise_scale: factor on the classic noise level (4-8 HU in brain).
        p_bone_kernel: probability of a sharp (bone) reconstruction kernel; otherwise a soft one.
        p_tilt: probability of a gantry tilt.
        tilt_deg: range of its magnitude (the sign is drawn when ``signed_tilt``).
        signed_tilt: draw negative tilts too.
        p_beam_hardening: probability of dark streaks between the dense bones of the skull base.
        p_motion: probability of patient motion during the scan.
    """

    fov_mm: tuple[float, float] = (0.43 * 512, 0.5 * 512)
    fov_offset_mm: float = 0.0
    start_below_fm_mm: tuple[float, float] = (15.0, 45.0)
    p_start_in_cavity: float = 0.0
    start_in_cavity_mm: tuple[float, float] = (5.0, 50.0)
    above_vertex_mm: tuple[float, float] = (3.0, 15.0)
    p_top_cut: float = 0.0
    top_cut_mm: tuple[float, float] = (10.0, 60.0)
    slice_spacing_mm: tuple[float, float] | None = None
    noise_scale: tuple[float, float] = (1.0, 1.0)
    p_bone_kernel: float = 0.0
    p_tilt: float = 0.4
    tilt_deg: tuple[float, float] = (5.0, 25.0)
    signed_tilt: bool = False
    p_beam_hardening: float = 0.0
    p_motion: float = 0.0

    def with_(self, **changes) -> ScanProtocol:
        """A copy with some distributions changed (``dataclasses.replace``)."""
        return replace(self, **changes)

    def draw(self, rng: np.random.Generator) -> ScanDraw:
        """Draw one scan; every distribution consumes its random numbers whether it is used or not, so that changing
        one distribution does not change the others' draws.

        Args:
            rng: random generator.

        Returns:
            The :class:`ScanDraw`.

        Example:
            >>> d = VARIED_SCAN.draw(np.random.default_rng(0))
            >>> 150 <= d.fov_mm <= 500
            True
        """
        u = rng.random(16)

        def between(r: tuple[float, float], v: float) -> float:
            return float(r[0] + (r[1] - r[0]) * v)

        spacing = None
        if self.slice_spacing_mm is not None:
            options = [
                s for s in TYPICAL_SLICE_SPACINGS_MM if self.slice_spacing_mm[0] <= s <= self.slice_spacing_mm[1]
            ]
            options = options or [float(self.slice_spacing_mm[0])]
            spacing = float(options[min(int(u[8] * len(options)), len(options) - 1)])
        tilt = between(self.tilt_deg, u[9]) if u[10] < self.p_tilt else 0.0
        if self.signed_tilt and u[11] < 0.5:
            tilt = -tilt
        return ScanDraw(
            fov_mm=between(self.fov_mm, u[0]),
            fov_offset_mm=(self.fov_offset_mm * (2 * u[1] - 1), self.fov_offset_mm * (2 * u[2] - 1)),
            start_mm=(
                between(self.start_in_cavity_mm, u[4])
                if u[3] < self.p_start_in_cavity
                else -between(self.start_below_fm_mm, u[4])
            ),
            top_cut_mm=between(self.top_cut_mm, u[6]) if u[5] < self.p_top_cut else None,
            above_vertex_mm=between(self.above_vertex_mm, u[7]),
            slice_spacing_mm=spacing,
            spacing_u=float(u[8]),
            gantry_tilt_deg=tilt,
            noise_scale=between(self.noise_scale, u[12]),
            bone_kernel=bool(u[13] < self.p_bone_kernel),
            beam_hardening=bool(u[14] < self.p_beam_hardening),
            motion=bool(u[15] < self.p_motion),
        )


@dataclass(frozen=True)
class ScanDraw:
    """One drawn scan (see :class:`ScanProtocol`).

    Attributes:
        fov_mm: field of view.
        fov_offset_mm: in-plane (x, y) offset of the reconstruction centre.
        start_mm: height of the first slice plane above the foramen magnum (negative: below it).
        top_cut_mm: depth of the last slice below the top of the cavity, or None for a scan past the vertex.
        above_vertex_mm: margin above the vertex when the top is not cut.
        slice_spacing_mm: drawn spacing, or None for the classic choice.
        spacing_u: the uniform draw behind the classic spacing choice (:func:`slices_for`).
        gantry_tilt_deg: gantry tilt.
        noise_scale: factor on the classic noise level.
        bone_kernel: sharp kernel.
        beam_hardening: dark streaks between dense bones.
        motion: patient motion.
    """

    fov_mm: float
    fov_offset_mm: tuple[float, float]
    start_mm: float
    top_cut_mm: float | None
    above_vertex_mm: float
    slice_spacing_mm: float | None
    spacing_u: float
    gantry_tilt_deg: float
    noise_scale: float
    bone_kernel: bool
    beam_hardening: bool
    motion: bool


#: The original phantoms' protocol (scan from below the foramen magnum to above the vertex).
CLASSIC_SCAN = ScanProtocol()
#: What real head CT shows: the training protocol.
VARIED_SCAN = ScanProtocol(
    fov_mm=(150.0, 500.0),
    fov_offset_mm=15.0,
    start_below_fm_mm=(5.0, 90.0),
    p_start_in_cavity=0.2,
    start_in_cavity_mm=(3.0, 50.0),
    above_vertex_mm=(0.0, 25.0),
    p_top_cut=0.15,
    top_cut_mm=(5.0, 60.0),
    slice_spacing_mm=(0.5, 7.0),
    noise_scale=(0.7, 3.0),
    p_bone_kernel=0.3,
    p_tilt=0.4,
    tilt_deg=(3.0, 30.0),
    signed_tilt=True,
    p_beam_hardening=0.6,
    p_motion=0.15,
)

#: The training protocol: :data:`VARIED_SCAN` with slices of 1.25 mm and more. The lite preset resamples every scan
#: to 4 mm slices, so thinner phantoms would cost disk and loading time and add nothing the network sees.
TRAINING_SCAN = VARIED_SCAN.with_(slice_spacing_mm=(1.25, 7.0))
#: Protocols by name, for dataset specifications and configs.
SCAN_PROTOCOLS: dict[str, ScanProtocol] = {"classic": CLASSIC_SCAN, "varied": VARIED_SCAN, "training": TRAINING_SCAN}


def beam_hardening(plane: np.ndarray, pixel_mm: float, rng: np.random.Generator) -> np.ndarray:
    """Dark streaks between the dense bones of one noise-free slice (the petrous bones, clivus and skull base).

    Beam hardening darkens the rays that pass through two dense objects; in head CT this draws dark bands between
    the petrous bones (Hounsfield bar). The model: for every pair of the largest dense-bone components, a dark band
    along the segment joining their centroids, -15 to -60 HU, a few mm wide, on soft tissue and brain only.

    Args:
        plane: float32 (N, N) HU, modified in place.
        pixel_mm: pixel size.
        rng: random generator (its draws depend on the slice content only through the number of components).

    Returns:
        ``plane``.

    Example:
        >>> p = np.full((64, 64), 40.0, np.float32); p[10:16, 30:34] = 1800; p[48:54, 30:34] = 1800
        >>> bool(beam_hardening(p, 1.0, np.random.default_rng(0))[32, 32] < 40)
        True
    """
    dense = plane > DENSE_BONE_HU
    if dense.sum() * pixel_mm**2 < 20.0:
        return plane
    labels, count = ndimage.label(dense)
    if count < 2:
        return plane
    sizes = ndimage.sum_labels(dense, labels, index=np.arange(1, count + 1))
    keep = np.argsort(sizes)[::-1][:4]
    keep = keep[sizes[keep] * pixel_mm**2 >= 10.0]
    if len(keep) < 2:
        return plane
    centres = np.array(ndimage.center_of_mass(dense, labels, index=keep + 1))
    n = plane.shape[0]
    ii, jj = np.meshgrid(np.arange(n, dtype=np.float32), np.arange(plane.shape[1], dtype=np.float32), indexing="ij")
    soft = (plane > -200.0) & (plane < 200.0)
    for a in range(len(centres)):
        for b in range(a + 1, len(centres)):
            p, q = centres[a], centres[b]
            d = q - p
            length = float(np.hypot(*d))
            if length < 1:
                continue
            t = ((ii - p[0]) * d[0] + (jj - p[1]) * d[1]) / length**2
            dist = np.abs((ii - p[0]) * d[1] - (jj - p[1]) * d[0]) / length * pixel_mm
            width = float(rng.uniform(2.0, 6.0))
            depth = float(rng.uniform(15.0, 60.0))
            along = np.clip(np.minimum(t, 1.0 - t) * 8.0, 0.0, 1.0)
            band = depth * along * np.exp(-0.5 * (dist / width) ** 2)
            plane -= np.where(soft, band, 0.0).astype(np.float32)
    return plane


def metal_streaks(plane: np.ndarray, pixel_mm: float, rng: np.random.Generator) -> np.ndarray:
    """Bright and dark streaks radiating from metal in one noise-free slice (dental fillings, clips, valves).

    Metal starves the rays through it of photons, so filtered back projection spreads alternating bright and dark
    lines from it across the slice; their strength falls off with distance. Here: 8-24 rays from each metal
    component's centroid, each a line a pixel or two wide, +-80 to +-400 HU at the metal (scaled by the metal's
    cross-section, up to 2x for large pieces), decaying over 20-80 mm; dark rays are more common than bright ones.
    Streaks are drawn on the body only (HU > -500): in air they would not show at any usual window.

    Args:
        plane: float32 (N, N) HU, modified in place.
        pixel_mm: pixel size.
        rng: random generator. Give every slice of a volume a generator with the same seed: the angles then stay
            put from slice to slice, as they do on a scanner.

    Returns:
        ``plane``.

    Example:
        >>> p = np.full((64, 64), 40.0, np.float32); p[30:33, 30:33] = 3000
        >>> bool(np.abs(metal_streaks(p.copy(), 1.0, np.random.default_rng(0)) - p)[:, :20].max() > 5)
        True
    """
    metal = plane > METAL_HU
    if not metal.any():
        return plane
    labels, count = ndimage.label(metal)
    index = np.arange(1, min(count, 6) + 1)
    centres = ndimage.center_of_mass(metal, labels, index=index)
    areas = ndimage.sum_labels(metal, labels, index=index) * pixel_mm**2
    n0, n1 = plane.shape
    ii, jj = np.meshgrid(np.arange(n0, dtype=np.float32), np.arange(n1, dtype=np.float32), indexing="ij")
    total = np.zeros_like(plane)
    decay = np.float32(rng.uniform(20.0, 80.0))
    rays = rng.uniform(0, np.pi, size=24)
    amplitudes = rng.uniform(80.0, 400.0, size=24) * np.where(rng.random(24) < 0.65, -1.0, 1.0)
    widths = rng.uniform(0.5, 1.5, size=24)
    num_rays = int(rng.integers(8, 25))
    for (ci, cj), area in zip(centres, areas, strict=True):
        di, dj = ii - np.float32(ci), jj - np.float32(cj)
        fall = np.exp(-np.sqrt(di**2 + dj**2) * np.float32(pixel_mm) / decay)
        strength = np.float32(min(2.0, np.sqrt(area / 10.0)))  # a 10 mm2 filling: 1x
        for angle, amp, width in zip(rays[:num_rays], amplitudes, widths, strict=False):
            off = np.abs(di * np.float32(np.sin(angle)) - dj * np.float32(np.cos(angle)))
            total += np.float32(amp) * strength * np.exp(-0.5 * (off / np.float32(width)) ** 2) * fall
    plane += np.where(metal | (plane < -500.0), 0.0, total).astype(np.float32)
    return plane


def apply_kernel(plane: np.ndarray, bone: bool, pixel_mm: float, strength: float) -> np.ndarray:
    """Reconstruction kernel of one slice (noise included): bone kernels sharpen edges and noise, soft ones smooth.

    Args:
        plane: float32 (N, N) HU.
        bone: sharp kernel (unsharp mask) instead of a soft one (a mild Gaussian).
        pixel_mm: pixel size.
        strength: in [0, 1]: unsharp amount 0.6-1.8 for bone kernels, blur 0.3-0.8 mm for soft ones.

    Returns:
        The filtered slice (new array).

    Example:
        >>> p = np.zeros((32, 32), np.float32); p[:, 16:] = 100
        >>> bool(apply_kernel(p, True, 0.5, 1.0)[:, 16].max() > 100)
        True
    """
    if bone:
        blurred = ndimage.gaussian_filter(plane, sigma=max(0.6 / pixel_mm, 0.5))
        return plane + np.float32(0.6 + 1.2 * strength) * (plane - blurred)
    sigma = (0.3 + 0.5 * strength) / pixel_mm
    return ndimage.gaussian_filter(plane, sigma=sigma) if sigma >= 0.3 else plane


def apply_motion(
    image: np.ndarray, label: np.ndarray, pixel_mm: float, rng: np.random.Generator, fill_hu: int
) -> dict[str, float]:
    """Patient motion: the head moves in-plane part-way through the scan, with a ghost on the slices around it.

    The slices above a random slice are shifted by 1-5 mm (a whole number of pixels, at least one, image and label
    together, so the label stays exact); the three slices around the step get a faint ghost (the image blended with a
    copy shifted the other way; the label is not changed there because the anatomy did not move).

    Args:
        image: int16 (X, Y, Z), modified in place.
        label: uint8 (X, Y, Z), modified in place.
        pixel_mm: pixel size.
        rng: random generator.
        fill_hu: HU written where the shift uncovers pixels.

    Returns:
        ``{"slice": k, "shift_mm": [dx, dy]}``.

    Example:
        >>> img = np.zeros((16, 16, 8), np.int16); lab = np.zeros((16, 16, 8), np.uint8); lab[6:10, 6:10] = 1
        >>> apply_motion(img, lab, 1.0, np.random.default_rng(0), -1024)["slice"] in range(1, 8)
        True
    """
    nz = image.shape[2]
    k = int(rng.integers(1, max(2, nz)))
    shift_mm = rng.uniform(1.0, 5.0) * np.array([np.cos(a := rng.uniform(0, 2 * np.pi)), np.sin(a)])
    shift = np.rint(shift_mm / pixel_mm).astype(int)
    if not shift.any():  # coarse pixels: move by one pixel along the main direction of the motion
        axis = int(np.argmax(np.abs(shift_mm)))
        shift[axis] = int(np.sign(shift_mm[axis]))

    def moved(volume: np.ndarray, fill) -> np.ndarray:
        out = np.full_like(volume, fill)
        sx, sy = shift
        src = (slice(max(0, -sx), volume.shape[0] - max(0, sx)), slice(max(0, -sy), volume.shape[1] - max(0, sy)))
        dst = (slice(max(0, sx), volume.shape[0] - max(0, -sx)), slice(max(0, sy), volume.shape[1] - max(0, -sy)))
        out[dst] = volume[src]
        return out

    image[:, :, k:] = moved(image[:, :, k:], fill_hu)
    label[:, :, k:] = moved(label[:, :, k:], 0)
    ghost = float(rng.uniform(0.15, 0.35))
    for kk in range(max(0, k - 1), min(nz, k + 2)):
        plane = image[:, :, kk : kk + 1]
        back = moved(plane, fill_hu)[:, :, 0] if kk < k else np.roll(plane[:, :, 0], tuple(-shift), axis=(0, 1))
        blended = (1 - ghost) * plane[:, :, 0].astype(np.float32) + ghost * back.astype(np.float32)
        image[:, :, kk] = np.rint(blended).astype(image.dtype)
    return {"slice": k, "shift_mm": [round(float(v), 2) for v in shift * pixel_mm]}


def slices_for(coverage_mm: float, u: float, num_slices: int | None, spacing_mm: float | None) -> tuple[int, float]:
    """Number of slices and their spacing for a scan of ``coverage_mm``.

    Args:
        coverage_mm: scan length along the plane normal.
        u: a uniform draw in [0, 1) for the classic spacing choice.
        num_slices: requested number of slices, or None.
        spacing_mm: requested spacing, or None.

    Returns:
        ``(num_slices, spacing_mm)``; with neither given, a typical spacing in 0.5-5 mm giving 100-400 slices.

    Example:
        >>> slices_for(200.0, 0.5, None, 2.0)
        (100, 2.0)
    """
    if num_slices is None and spacing_mm is None:
        lo, hi = max(0.5, coverage_mm / 400.0), min(5.0, coverage_mm / 100.0)
        options = [s for s in _CLASSIC_SPACINGS_MM if lo <= s <= hi] or [lo]
        spacing = options[min(int(u * len(options)), len(options) - 1)]
        return int(np.clip(math.ceil(coverage_mm / spacing), 100, 400)), float(spacing)
    if spacing_mm is None:
        return int(num_slices), coverage_mm / int(num_slices)
    if num_slices is None:
        return max(1, math.ceil(coverage_mm / spacing_mm)), float(spacing_mm)
    return int(num_slices), float(spacing_mm)
