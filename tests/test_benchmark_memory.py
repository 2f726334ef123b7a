# SPDX-License-Identifier: Apache-2.0
"""The memory accounting behind ``scripts/benchmark.py memory``: meta-device figures equal real ones."""

from __future__ import annotations

import pytest
import torch

from scripts.benchmarks.memory import PeakMemory, simulate_training_step

SMALL = {"features": 4, "hidden_channels": 3}


def test_peak_memory_counts_live_storages():
    with PeakMemory() as memory:
        a = torch.ones(1024, device="meta")  # 4 KiB
        b = a * 2  # 8 KiB alive
        del a
        c = b + 1  # a freed: still 8 KiB
        del b, c
    assert memory.peak_bytes == 8192
    assert memory.current_bytes == 0


@pytest.mark.slow
@pytest.mark.parametrize(
    "kwargs", [{"checkpoint": False, "segment_length": 0}, {"checkpoint": True, "segment_length": 2}]
)
def test_meta_device_figures_equal_cpu_figures(kwargs):
    shape = (1, 1, 32, 32, 6)
    on_meta = simulate_training_step({**SMALL, **kwargs}, shape, device="meta")
    on_cpu = simulate_training_step({**SMALL, **kwargs}, shape, device="cpu")
    assert on_meta == on_cpu


def test_checkpointing_reduces_saved_bytes_and_peak():
    shape = (1, 1, 64, 64, 16)
    plain = simulate_training_step({**SMALL, "checkpoint": False, "segment_length": 0}, shape)
    checkpointed = simulate_training_step({**SMALL, "checkpoint": True, "segment_length": 1}, shape)
    assert checkpointed.saved_bytes * 5 < plain.saved_bytes
    assert checkpointed.peak_bytes < plain.peak_bytes
    # Saved bytes grow with D without checkpointing: one more slice adds at least one slice's activations.
    longer = simulate_training_step({**SMALL, "checkpoint": False, "segment_length": 0}, (1, 1, 64, 64, 17))
    assert longer.saved_bytes - plain.saved_bytes > (plain.saved_bytes / 16) * 0.9
