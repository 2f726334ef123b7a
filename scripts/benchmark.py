# SPDX-License-Identifier: Apache-2.0
"""Benchmarks that print tables, each against a baseline measured in the same run.

Usage (from the repository root)::

    python scripts/benchmark.py memory          # exact memory of a training step, paper preset, D = 32..320
    python scripts/benchmark.py timing          # CPU seconds per volume, reduced size, checkpointing on and off
    python scripts/benchmark.py augmentation    # augmentation seconds per 512x512x320 volume on one core
    python scripts/benchmark.py convergence     # train both stages on phantoms, test Dice and HD95 (lite, ~25 min)
    python scripts/benchmark.py segmentation    # shipped network vs pseudo-labeller on the same test phantoms
    python scripts/benchmark.py robustness      # the segmenter on the 53-case stress suite, per factor (~25 min)
    python scripts/benchmark.py gpu             # paper preset on a CUDA GPU: step seconds, peak memory (~8 min)
    python scripts/benchmark.py nnunet          # nnU-Net 2d/3d_fullres vs the plugin's C-LSTM, same budget (~30 min;
                                                # needs nnunetv2: run it with .venv-nnunet, see docs/nnunet.md)
    python scripts/benchmark.py nnunet_robustness   # those models on the first stress case of each factor
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main() -> None:
    import fire

    from scripts.benchmarks.augmentation import benchmark_augmentation
    from scripts.benchmarks.convergence import benchmark_convergence
    from scripts.benchmarks.gpu import benchmark_gpu
    from scripts.benchmarks.memory import benchmark_memory, benchmark_timing
    from scripts.benchmarks.nnunet import benchmark_nnunet, benchmark_nnunet_robustness
    from scripts.benchmarks.robustness import benchmark_robustness
    from scripts.benchmarks.segmentation import benchmark_segmentation

    fire.Fire(
        {
            "memory": benchmark_memory,
            "timing": benchmark_timing,
            "augmentation": benchmark_augmentation,
            "convergence": benchmark_convergence,
            "segmentation": benchmark_segmentation,
            "robustness": benchmark_robustness,
            "gpu": benchmark_gpu,
            "nnunet": benchmark_nnunet,
            "nnunet_robustness": benchmark_nnunet_robustness,
        },
        serialize=lambda rows: None,  # the functions print their tables; don't echo the returned rows
    )


if __name__ == "__main__":
    main()
