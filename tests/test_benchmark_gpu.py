# SPDX-License-Identifier: Apache-2.0
"""``scripts/benchmark.py gpu``: refuses without CUDA, documents itself, and its table logic (on a CPU, tiny)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from scripts.benchmarks import gpu

REPO_ROOT = Path(__file__).resolve().parents[1]
TINY = {"depths": (2,), "in_plane": 32, "features": 4, "hidden_channels": 2, "peer_features": 2, "repeats": 1}
TINY["peer_roi"] = (32, 32, 32)

pytestmark = pytest.mark.usefixtures("one_thread")


def _script(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1", "PAGER": "cat"}
    command = [sys.executable, str(REPO_ROOT / "scripts" / "benchmark.py"), "gpu", *args]
    return subprocess.run(command, capture_output=True, text=True, env=env, cwd=REPO_ROOT, timeout=300)


@pytest.mark.slow
def test_refuses_without_cuda_and_documents_the_run():
    result = _script()
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "benchmark gpu: no CUDA device is available; this benchmark measures a GPU and needs one."
    ]
    assert "Traceback" not in result.stdout + result.stderr
    help_text = _script("--help")
    assert help_text.returncode == 0
    text = " ".join((help_text.stdout + help_text.stderr).split())  # fire writes the help to stderr
    for phrase in ("512x512xD", "max_memory_allocated", "offload_states", "sliding-window", "exits with status 2"):
        assert phrase in text, phrase


@pytest.mark.slow
def test_table_on_cpu_covers_every_row():
    rows = gpu.run_gpu_benchmark("cpu", predict=True, **TINY)
    runs = [(row["run"], row["dtype"]) for row in rows]
    assert len(runs) == 13 and len(set(runs)) == 13  # 8 training, channels-last, 2 inference, 2 peer
    baseline = rows[0]
    assert baseline["run"].startswith("no checkpoint") and baseline["time ratio"] == "1.00"
    assert all(row["status"] == "ok" and float(row["seconds"]) > 0 for row in rows)
    assert all(row["predicted (MiB)"] != "-" for row in rows if row["dtype"] == "fp32" and "checkpoint" in row["run"])
    assert {row["k"] for row in rows if row["run"].startswith("checkpoint k=1")} == {1}
    table = gpu.format_gpu_table(rows, "cpu", 32, 4, 2)
    assert all(column in table.splitlines()[1] for column in gpu.COLUMNS)
    assert len(table.splitlines()) == 3 + len(rows)


@pytest.mark.slow
def test_out_of_memory_and_time_limit_are_reported(monkeypatch):
    real_measure = gpu._measure
    calls = []

    def measure(function, device, warmup, repeats):
        calls.append(function)
        if len(calls) == 1:  # the uncheckpointed baseline
            raise gpu.OutOfMemory("CUDA out of memory")
        return real_measure(function, device, warmup, repeats)

    monkeypatch.setattr(gpu, "_measure", measure)
    rows = gpu.run_gpu_benchmark("cpu", predict=False, **{**TINY, "warmup": 0, "repeats": 0})
    assert rows[0]["seconds"] == "OOM" and rows[0]["peak (MiB)"] == "OOM"
    assert all(row["time ratio"] == "n/a" for row in rows[1:])
    skipped = gpu.run_gpu_benchmark("cpu", predict=False, time_limit_s=-1, **TINY)
    assert {row["seconds"] for row in skipped} == {"skipped"}


def test_oom_error_type_is_what_cuda_raises():
    assert issubclass(torch.cuda.OutOfMemoryError, gpu.OutOfMemory)
