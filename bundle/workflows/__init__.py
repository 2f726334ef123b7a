# SPDX-License-Identifier: Apache-2.0
"""Workflow pieces the bundle's configs use: data resolution, stage-1 slice sampling, handlers, progress, writers.

See ``configs/train.json`` (stage 2), ``configs/train_stage1.json`` (stage 1), ``configs/evaluate.json`` and
``configs/inference.json`` for how they fit together.
"""

from __future__ import annotations

from bundle.workflows.data import NIFTI_SUFFIXES, find_ct_inputs, phantom_dataset_dir, prepare_datalist
from bundle.workflows.handlers import (
    AtomicCheckpointSaver,
    CaseMetricsHandler,
    PretrainedUNetHandler,
    ResumeHandler,
    load_state_dict_file,
    unwrap,
)
from bundle.workflows.norm import SliceStatisticsNorm2d, use_slice_statistics
from bundle.workflows.progress import ProgressHandler
from bundle.workflows.transforms import AxialSlice, RandAxialSliced
from bundle.workflows.writers import AtomicNibabelWriter, atomic_output

__all__ = [
    "AtomicCheckpointSaver",
    "AtomicNibabelWriter",
    "atomic_output",
    "AxialSlice",
    "CaseMetricsHandler",
    "NIFTI_SUFFIXES",
    "PretrainedUNetHandler",
    "ProgressHandler",
    "RandAxialSliced",
    "ResumeHandler",
    "SliceStatisticsNorm2d",
    "find_ct_inputs",
    "load_state_dict_file",
    "phantom_dataset_dir",
    "prepare_datalist",
    "unwrap",
    "use_slice_statistics",
]
