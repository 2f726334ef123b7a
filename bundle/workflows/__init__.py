# SPDX-License-Identifier: Apache-2.0
"""Workflow pieces the bundle's configs use: data resolution, Ignite handlers, progress, the atomic NIfTI writer.

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
    unwrap,
)
from bundle.workflows.progress import ProgressHandler
from bundle.workflows.writers import AtomicNibabelWriter

__all__ = [
    "AtomicCheckpointSaver",
    "AtomicNibabelWriter",
    "CaseMetricsHandler",
    "NIFTI_SUFFIXES",
    "PretrainedUNetHandler",
    "ProgressHandler",
    "ResumeHandler",
    "find_ct_inputs",
    "phantom_dataset_dir",
    "prepare_datalist",
    "unwrap",
]
