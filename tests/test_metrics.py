# SPDX-License-Identifier: Apache-2.0
"""Tests for bundle.metrics against values computed by hand or by brute force on small shapes."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.spatial.distance import cdist

from bundle.metrics import (
    EmptyMaskWarning,
    case_metrics,
    dice_score,
    format_summary,
    hausdorff_distance_95_mm,
    spacing_from_affine,
    summarize,
)


def _box(shape, lo, hi):
    m = np.zeros(shape, dtype=bool)
    m[tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))] = True
    return m


@pytest.mark.parametrize(
    "lo_b, hi_b, expected",
    [
        ((1, 1, 1), (5, 5, 5), 1.0),  # identical 4x4x4 boxes
        ((2, 1, 1), (6, 5, 5), 2 * 48 / 128),  # shifted by one voxel: overlap 3x4x4
        ((1, 1, 1), (3, 5, 5), 2 * 32 / 96),  # half box inside: |A|=64, |B|=32
        ((6, 6, 6), (8, 8, 8), 0.0),  # disjoint
    ],
)
def test_dice_boxes(lo_b, hi_b, expected):
    a = _box((9, 9, 9), (1, 1, 1), (5, 5, 5))
    b = _box((9, 9, 9), lo_b, hi_b)
    assert dice_score(a, b) == pytest.approx(expected)
    assert dice_score(torch.as_tensor(a[None]), torch.as_tensor(b[None].astype(np.float32))) == pytest.approx(expected)


@pytest.mark.parametrize(
    "p, q, spacing, expected",
    [
        ((2, 2, 2), (2, 5, 2), None, 3.0),
        ((2, 2, 2), (5, 6, 2), None, 5.0),  # 3-4-5 triangle
        ((2, 2, 2), (2, 5, 2), (1.0, 2.0, 3.0), 6.0),
        ((2, 2, 2), (3, 2, 4), (0.5, 1.0, 2.0), math.hypot(0.5, 4.0)),
        ((2, 2, 2), (2, 2, 6), np.diag([0.5, 0.5, 5.0, 1.0]), 20.0),  # spacing from an affine
    ],
)
def test_hd95_single_voxels(p, q, spacing, expected):
    a = np.zeros((8, 8, 8))
    a[p] = 1
    b = np.zeros((8, 8, 8))
    b[q] = 1
    assert hausdorff_distance_95_mm(a, b, spacing) == pytest.approx(expected, rel=1e-6)


def _surface(mask):
    """Foreground voxels with a face neighbour outside the mask (or on the array border)."""
    padded = np.pad(mask, 1)
    inner = padded[1:-1, 1:-1, 1:-1].copy()
    for axis in range(3):
        for shift in (-1, 1):
            inner &= np.roll(padded, shift, axis=axis)[1:-1, 1:-1, 1:-1]
    return mask & ~inner


def _brute_hd(a, b, spacing, q):
    pa = np.argwhere(_surface(a)) * np.asarray(spacing)
    pb = np.argwhere(_surface(b)) * np.asarray(spacing)
    d = cdist(pa, pb)
    return max(np.percentile(d.min(axis=1), q), np.percentile(d.min(axis=0), q))


@pytest.mark.parametrize("spacing", [(1.0, 1.0, 1.0), (0.5, 0.7, 3.0)])
@pytest.mark.parametrize("percentile", [95.0, 100.0])
def test_hd_concentric_and_shifted_boxes_match_brute_force(spacing, percentile):
    outer = _box((14, 14, 14), (2, 2, 2), (12, 12, 12))
    inner = _box((14, 14, 14), (4, 4, 4), (10, 10, 10))
    shifted = _box((14, 14, 14), (3, 2, 5), (13, 9, 12))
    for a, b in ((outer, inner), (inner, shifted), (outer, shifted)):
        expected = _brute_hd(a, b, spacing, percentile)
        assert hausdorff_distance_95_mm(a, b, spacing, percentile) == pytest.approx(expected, rel=1e-5)


def test_hd100_concentric_boxes_by_hand():
    # from the outer box's corner voxel to the inner box's corner: sqrt(3 * 2^2) voxels
    outer = _box((14, 14, 14), (2, 2, 2), (12, 12, 12))
    inner = _box((14, 14, 14), (4, 4, 4), (10, 10, 10))
    assert hausdorff_distance_95_mm(outer, inner, percentile=100) == pytest.approx(math.sqrt(12))


def test_empty_masks_give_nan_and_warn():
    a = _box((6, 6, 6), (1, 1, 1), (3, 3, 3))
    empty = np.zeros_like(a)
    with pytest.warns(EmptyMaskWarning, match="both empty"):
        assert math.isnan(dice_score(empty, empty))
    assert dice_score(a, empty) == 0.0
    with pytest.warns(EmptyMaskWarning, match="pred empty"):
        assert math.isnan(hausdorff_distance_95_mm(empty, a))
    with pytest.warns(EmptyMaskWarning, match="ref empty"):
        metrics = case_metrics(a, empty)
    assert metrics["dice"] == 0.0 and math.isnan(metrics["hd95_mm"])


@pytest.mark.parametrize(
    "kwargs",
    [
        {"pred": np.ones((4, 4, 4)), "ref": np.ones((4, 4, 5))},
        {"pred": np.ones((4,)), "ref": np.ones((4,))},
        {"pred": np.ones((4, 4, 4)), "ref": np.ones((4, 4, 4)), "spacing": (1.0, 0.0, 1.0)},
        {"pred": np.ones((4, 4, 4)), "ref": np.ones((4, 4, 4)), "spacing": (1.0, 1.0)},
        {"pred": np.ones((4, 4, 4)), "ref": np.ones((4, 4, 4)), "percentile": 0},
    ],
)
def test_bad_inputs(kwargs):
    with pytest.raises(ValueError):
        hausdorff_distance_95_mm(**kwargs)


def test_spacing_from_affine_tilted():
    t = np.deg2rad(20)
    affine = np.array([[0.5, 0, 0, 0], [0, 0.5, 5 * np.sin(t), 0], [0, 0, 5 * np.cos(t), 0], [0, 0, 0, 1]])
    assert spacing_from_affine(affine) == pytest.approx((0.5, 0.5, 5.0))


def test_spacing_from_affine_oblique_matches_libraries():
    from monai.data.utils import affine_to_spacing
    from nibabel.affines import voxel_sizes
    from scipy.spatial.transform import Rotation

    affine = np.eye(4)
    shear = np.array([[1.0, 0.0, 0.3], [0.0, 1.0, -0.2], [0.0, 0.0, 1.0]])  # a gantry-tilted, oblique grid
    affine[:3, :3] = (
        Rotation.from_euler("xyz", [12, -7, 31], degrees=True).as_matrix() @ shear @ np.diag([0.43, 0.5, 4.8])
    )
    affine[:3, 3] = (-100.0, 20.0, 35.0)
    expected = np.linalg.norm(affine[:3, :3], axis=0)
    assert spacing_from_affine(affine) == pytest.approx(tuple(voxel_sizes(affine)), abs=0)
    assert np.allclose(voxel_sizes(affine), expected, rtol=1e-12)
    assert np.allclose(affine_to_spacing(affine), expected, rtol=1e-12)
    assert spacing_from_affine(torch.as_tensor(affine)) == pytest.approx(tuple(expected), rel=1e-12)


def test_spacing_is_computed_in_one_place():
    """Spacing from an affine is nibabel's ``voxel_sizes`` everywhere; no module writes the column norms again."""
    import re
    from pathlib import Path

    pattern = re.compile(r"linalg\.norm\([^\n]*\[:3, :3\], axis=0\)")
    root = Path(__file__).resolve().parents[1] / "bundle"
    offenders = [str(p.relative_to(root)) for p in root.rglob("*.py") if pattern.search(p.read_text())]
    assert offenders == []


def test_summarize_and_format():
    values = [0.98, 0.99, 1.0, float("nan")]
    s = summarize(values)
    assert s["mean"] == pytest.approx(0.99)
    assert s["std"] == pytest.approx(0.01)  # sample std of (0.98, 0.99, 1.0)
    assert (s["n"], s["n_nan"], s["min"], s["max"]) == (3, 1, 0.98, 1.0)
    assert summarize(values, ddof=0)["std"] == pytest.approx(math.sqrt(2 / 3) * 0.01)
    assert format_summary(s) == "0.990 ± 0.010 (n=3), 1 undefined"
    one = summarize([0.5])
    assert one["mean"] == 0.5 and math.isnan(one["std"])
    with pytest.raises(ValueError, match="finite"):
        summarize([1.0, float("inf")])


def test_hd95_on_the_union_crop_equals_monai_on_the_whole_volume():
    """The crop to the masks' bounding box (a speed-up) gives MONAI's value on the full grid."""
    from monai.metrics import compute_hausdorff_distance

    rng = np.random.default_rng(0)
    a = np.zeros((40, 36, 30), bool)
    b = np.zeros_like(a)
    a[10:25, 8:20, 5:18] = True
    b[12:27, 9:22, 6:16] = True
    b |= rng.random(a.shape) > 0.9995  # a few far outliers
    full = compute_hausdorff_distance(
        torch.from_numpy(a[None, None]),
        torch.from_numpy(b[None, None]),
        include_background=True,
        percentile=95,
        spacing=[0.5, 0.7, 2.0],
    ).item()
    assert hausdorff_distance_95_mm(a, b, spacing=(0.5, 0.7, 2.0)) == pytest.approx(full, rel=1e-6)
