# SPDX-License-Identifier: Apache-2.0
"""Constants of the MONAI Label lane, shared by its conftest and tests (imported as a top-level module)."""

from __future__ import annotations

__all__ = ["BUNDLE_ITEMS", "BUNDLE_NAME", "LABELED", "LANE_EPOCH_LENGTH", "PHANTOMS"]

BUNDLE_NAME = "brain_ct_convlstm_segmentation"
BUNDLE_ITEMS = ("configs", "models/model.pt", "bundle", "scripts", "docs", "LICENSE")
# (image id, make_phantom keyword arguments): phantoms of the size the shipped (lite) weights were trained on,
# one of them gantry-tilted (a sheared affine)
PHANTOMS = {
    "head_000": dict(seed=0, in_plane_size=128, num_slices=32, gantry_tilt_deg=0.0),
    "head_001": dict(seed=1, in_plane_size=128, num_slices=32, gantry_tilt_deg=0.0),
    "head_002": dict(seed=2, in_plane_size=128, num_slices=32, gantry_tilt_deg=0.0),
    "head_tilted": dict(seed=3, in_plane_size=128, num_slices=32, gantry_tilt_deg=15.0),
}
LABELED = ("head_000", "head_001", "head_002")
# MONAI Label counts training in epochs of the bundle's `epoch_length` iterations (25 in train.json); the lane's copy
# of train.json gets this value instead, so that its one-epoch fine-tune stays within a CPU budget.
LANE_EPOCH_LENGTH = 2
