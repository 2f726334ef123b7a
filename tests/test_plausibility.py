# SPDX-License-Identifier: Apache-2.0
"""Plausibility warnings for cranial-cavity masks."""

from __future__ import annotations

import numpy as np
import pytest

from bundle.data.phantoms import make_phantom
from bundle.plausibility import mask_warnings


@pytest.fixture(scope="module")
def phantom():
    return make_phantom(2, in_plane_size=64, num_slices=40)


def test_whole_head_phantom_has_no_warnings(phantom):
    assert mask_warnings(phantom.label, phantom.affine) == []


@pytest.mark.parametrize("flip", [False, True])
def test_cut_scan_is_reported_at_the_right_end(phantom, flip):
    label, affine = phantom.label.copy(), phantom.affine.copy()
    rows = np.flatnonzero(label.any(axis=(0, 1)))
    middle = (rows[0] + rows[-1]) // 2
    top_cut = label[:, :, : middle + 1]  # the scan stops half-way up the cavity
    bottom_cut = label[:, :, middle:]
    bottom_affine = affine.copy()
    bottom_affine[:3, 3] += affine[:3, 2] * middle
    if flip:  # voxel order from the top down (LPI-like): the same anatomy, the other end of the array
        flipper = np.eye(4)
        flipper[2, 2], flipper[2, 3] = -1, top_cut.shape[2] - 1
        top_cut, affine = top_cut[:, :, ::-1], affine @ flipper
        flipper[2, 3] = bottom_cut.shape[2] - 1
        bottom_cut, bottom_affine = bottom_cut[:, :, ::-1], bottom_affine @ flipper
    top = mask_warnings(top_cut, affine, volume_range_ml=(0, 1e6))
    bottom = mask_warnings(bottom_cut, bottom_affine, volume_range_ml=(0, 1e6))
    assert len(top) == 1 and "reaches the top axial slice" in top[0]
    assert len(bottom) == 1 and "reaches the bottom axial slice" in bottom[0]


def test_empty_and_implausible_volumes(phantom):
    assert "empty" in mask_warnings(np.zeros((8, 8, 8)), np.eye(4))[0]
    small = mask_warnings(phantom.label, phantom.affine, volume_range_ml=(5000, 6000))
    assert len(small) == 1 and "outside the usual 5000-6000 mL" in small[0]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"mask": np.zeros((4, 4))},
        {"affine": np.eye(3)},
        {"volume_range_ml": (10, 5)},
        {"edge_area_fraction": 1.5},
    ],
)
def test_bad_arguments(kwargs):
    arguments = {"mask": np.ones((4, 4, 4)), "affine": np.eye(4), **kwargs}
    with pytest.raises(ValueError):
        mask_warnings(**arguments)
