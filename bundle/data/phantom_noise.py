# SPDX-License-Identifier: Apache-2.0
"""CT noise with a realistic texture for the phantoms.

Filtered back-projection turns white quantum noise into noise whose in-plane power spectrum rises with frequency
(the ramp filter) and falls again under the reconstruction kernel's apodisation; it is correlated over a few pixels
("grainy") rather than white. The noise here has the spectrum ``NPS(f) ~ (f + f0) exp(-(f / fc)^2)`` with ``f`` the
radial spatial frequency in line pairs per mm. ``fc`` is matched to the real GE head series of the project's shared
data: its high-passed noise has a neighbouring-pixel correlation of about 0.65 at 0.49 mm pixels, as this texture has.
The noise is synthesised by FFT once per in-plane size and pixel spacing into a small bank of unit-variance tiles.
Each slice takes a tile with a random circular shift and one of the eight flips/transposes, scaled to the requested
standard deviation; slices are independent (non-overlapping reconstructions), and the standard deviation may vary
with the slice position (noise is higher at the skull base where the path through bone is longest).
"""

from __future__ import annotations

import functools

import numpy as np

__all__ = ["NOISE_CUTOFF_LP_PER_MM", "apply_slice_noise", "noise_bank", "slice_noise"]

#: Apodisation cut-off ``fc`` of the noise power spectrum (lp/mm).
NOISE_CUTOFF_LP_PER_MM = 0.33
_NOISE_FLOOR_LP_PER_MM = 0.04
_NUM_TILES = 8


@functools.lru_cache(maxsize=8)
def noise_bank(size: int, pixel_spacing_mm: float) -> np.ndarray:
    """Unit-variance correlated noise tiles for one in-plane size and (rounded) pixel spacing.

    Args:
        size: tile size in pixels (>= 2).
        pixel_spacing_mm: pixel size in mm, rounded to 0.01 mm for caching by the caller.

    Returns:
        float32 array (tiles, size, size), read-only; deterministic (fixed internal seed).

    Example:
        >>> noise_bank(32, 3.6).shape
        (8, 32, 32)
    """
    if size < 2 or not pixel_spacing_mm > 0:
        raise ValueError(f"size must be >= 2 and pixel_spacing_mm > 0, got {size}, {pixel_spacing_mm}.")
    rng = np.random.default_rng(20181203)
    white = rng.standard_normal((_NUM_TILES, size, size)).astype(np.float32)
    fy = np.fft.fftfreq(size, d=pixel_spacing_mm)[:, None]
    fx = np.fft.rfftfreq(size, d=pixel_spacing_mm)[None, :]
    f = np.sqrt(fx**2 + fy**2)
    nps = (f + _NOISE_FLOOR_LP_PER_MM) * np.exp(-((f / NOISE_CUTOFF_LP_PER_MM) ** 2))
    tiles = np.fft.irfft2(np.fft.rfft2(white) * np.sqrt(nps), s=(size, size)).astype(np.float32)
    tiles -= tiles.mean(axis=(1, 2), keepdims=True)
    tiles /= tiles.std(axis=(1, 2), keepdims=True)
    tiles.setflags(write=False)
    return tiles


def slice_noise(rng: np.random.Generator, bank: np.ndarray, num_slices: int) -> list[tuple[int, int, int, int]]:
    """Draw, per slice, a tile index, a circular shift and one of eight flips/transposes.

    Args:
        rng: random generator.
        bank: the tiles from :func:`noise_bank`.
        num_slices: number of slices.

    Returns:
        One ``(tile, shift_x, shift_y, dihedral)`` tuple per slice; apply with :func:`apply_slice_noise`.

    Example:
        >>> len(slice_noise(np.random.default_rng(0), noise_bank(16, 1.0), 5))
        5
    """
    n = bank.shape[1]
    draws = rng.integers(0, [bank.shape[0], n, n, 8], size=(num_slices, 4))
    return [tuple(int(v) for v in row) for row in draws]


def apply_slice_noise(bank: np.ndarray, draw: tuple[int, int, int, int]) -> np.ndarray:
    """The noise image of one slice for a draw of :func:`slice_noise`.

    Args:
        bank: the tiles.
        draw: ``(tile, shift_x, shift_y, dihedral)``.

    Returns:
        float32 (size, size) unit-variance noise.

    Example:
        >>> apply_slice_noise(noise_bank(16, 1.0), (0, 1, 2, 5)).shape
        (16, 16)
    """
    tile, sx, sy, dihedral = draw
    img = np.roll(bank[tile], (sx, sy), axis=(0, 1))
    if dihedral & 1:
        img = img[::-1]
    if dihedral & 2:
        img = img[:, ::-1]
    if dihedral & 4:
        img = img.T
    return img
