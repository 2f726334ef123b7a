# SPDX-License-Identifier: Apache-2.0
"""Benchmarks that print tables, each against a baseline measured in the same run.

Usage (from the repository root)::

    python scripts/benchmark.py memory          # exact memory of a training step, paper preset, D = 32..320
    python scripts/benchmark.py timing          # CPU seconds per volume, reduced size, checkpointing on and off
    python scripts/benchmark.py augmentation    # augmentation seconds per 512x512x320 volume on one core
    python scripts/benchmark.py convergence     # train both stages on phantoms, test Dice and HD95 (lite, ~25 min)
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def memory(**kwargs):
    """Exact bytes saved for backward and peak bytes of one training step (see bundle.benchmarks.memory)."""
    from bundle.benchmarks.memory import benchmark_memory

    benchmark_memory(**kwargs)


def timing(**kwargs):
    """Measured CPU seconds per volume for inference and a training step (see bundle.benchmarks.memory)."""
    from bundle.benchmarks.memory import benchmark_timing

    benchmark_timing(**kwargs)


def augmentation(**kwargs):
    """Seconds per volume of the paper's augmentation against MONAI's RandAffined."""
    from bundle.benchmarks.augmentation import benchmark_augmentation

    benchmark_augmentation(**kwargs)


def convergence(**kwargs):
    """Train both stages of a preset on the phantom set and report test Dice and HD95."""
    from bundle.benchmarks.convergence import benchmark_convergence

    benchmark_convergence(**kwargs)


if __name__ == "__main__":
    import fire

    fire.Fire({"memory": memory, "timing": timing, "augmentation": augmentation, "convergence": convergence})
