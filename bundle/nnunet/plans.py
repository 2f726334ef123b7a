# SPDX-License-Identifier: Apache-2.0
"""Plans for the C-LSTM: a configuration added through nnU-Net's ``network_class_name`` / ``arch_kwargs`` mechanism.

:func:`add_clstm_configuration` reads the plans that ``nnUNetv2_plan_and_preprocess`` wrote (``nnUNetPlans.json``)
and writes a copy (``nnUNetPlansCLSTM.json``) with one more configuration, ``3d_clstm``. It inherits everything
from ``3d_fullres`` (target spacing, normalization, resampling, and its preprocessed data: nothing is preprocessed
again) and changes three things:

- ``architecture``: ``bundle.nnunet.network.NNUNetConvLSTM`` with the C-LSTM's sizes, segment checkpointing on, and
  ``slice_axis``, the axial (recurrence) axis in nnU-Net's transposed axis order;
- ``patch_size``: whole slices in-plane (the median in-plane size rounded up to a multiple of 16, the U-Net's four
  poolings), and along the slice axis the recurrence length (default: the median number of slices);
- ``batch_size``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Optional, Union

__all__ = ["CLSTM_NETWORK", "add_clstm_configuration", "slice_axis"]

#: Dotted name of the network class, resolved by nnU-Net with ``pydoc.locate``.
CLSTM_NETWORK = "bundle.nnunet.network.NNUNetConvLSTM"

# axis of the slice direction (the NIfTI's third voxel axis) in the arrays of each nnU-Net NIfTI reader: all of them
# give (z, y, x), the nibabel ones by transposing to SimpleITK's order
_READER_SLICE_AXIS = {"SimpleITKIO": 0, "SimpleITKIOWithReorient": 0, "NibabelIO": 0, "NibabelIOWithReorient": 0}


def slice_axis(plans: dict) -> int:
    """The axial axis of nnU-Net's preprocessed (transposed) arrays, from the plans' reader and ``transpose_forward``.

    Args:
        plans: the plans dictionary.

    Returns:
        0, 1 or 2.

    Raises:
        ValueError: for a reader whose axis order is not known here.
    """
    reader = plans["image_reader_writer"]
    if reader not in _READER_SLICE_AXIS:
        raise ValueError(f"unknown nnU-Net reader {reader!r}; known: {sorted(_READER_SLICE_AXIS)}.")
    return list(plans["transpose_forward"]).index(_READER_SLICE_AXIS[reader])


def add_clstm_configuration(
    preprocessed_dataset_dir: Union[str, Path],
    source_plans: str = "nnUNetPlans",
    plans_name: str = "nnUNetPlansCLSTM",
    configuration: str = "3d_clstm",
    base_configuration: str = "3d_fullres",
    features: int = 16,
    hidden_channels: int = 16,
    kernel_size: int = 3,
    bidirectional: bool = False,
    num_slices: Optional[int] = None,
    batch_size: int = 2,
    segment_length: Union[int, str] = "auto",
) -> Path:
    """Write ``<plans_name>.json`` beside the source plans, with a C-LSTM configuration added.

    Args:
        preprocessed_dataset_dir: ``$nnUNet_preprocessed/DatasetXXX_Name``.
        source_plans: plans identifier to copy. Defaults to ``nnUNetPlans``.
        plans_name: identifier of the new plans (``-p`` of ``nnUNetv2_train``/``nnUNetv2_predict``). Defaults to
            ``nnUNetPlansCLSTM``.
        configuration: name of the new configuration. Defaults to ``3d_clstm``.
        base_configuration: the 3D configuration it inherits from. Defaults to ``3d_fullres``.
        features: U-Net filters of the first level. Defaults to 16.
        hidden_channels: ConvLSTM state channels. Defaults to 16.
        kernel_size: ConvLSTM kernel size. Defaults to 3.
        bidirectional: add the backward LSTM. Defaults to False.
        num_slices: patch extent along the slice axis (the recurrence length); None: the median number of slices.
        batch_size: patches per step. Defaults to 2 (nnU-Net's minimum for 3D).
        segment_length: slices per checkpointed segment (``"auto"``: the network's choice). Defaults to ``"auto"``.

    Returns:
        The path of the new plans file.

    Raises:
        ValueError: if the source plans lack ``base_configuration`` or it inherits from another one.
    """
    folder = Path(preprocessed_dataset_dir)
    plans = json.loads((folder / f"{source_plans}.json").read_text())
    base = plans["configurations"].get(base_configuration)
    if base is None or "inherits_from" in base:
        raise ValueError(f"{source_plans} has no self-contained configuration {base_configuration!r}.")
    axis = slice_axis(plans)
    median = [int(round(v)) for v in base["median_image_size_in_voxels"]]
    patch = [max(16, 16 * math.ceil(v / 16)) for v in median]
    patch[axis] = int(num_slices) if num_slices is not None else median[axis]
    plans["plans_name"] = plans_name
    plans["configurations"][configuration] = {
        "inherits_from": base_configuration,
        "patch_size": patch,
        "batch_size": int(batch_size),
        "architecture": {
            "network_class_name": CLSTM_NETWORK,
            "arch_kwargs": {
                "slice_axis": axis,
                "features": int(features),
                "hidden_channels": int(hidden_channels),
                "kernel_size": int(kernel_size),
                "bidirectional": bool(bidirectional),
                "segment_length": segment_length,
                "checkpoint": True,
            },
            "_kw_requires_import": [],
        },
    }
    out = folder / f"{plans_name}.json"
    out.write_text(json.dumps(plans, indent=4) + "\n")
    return out
