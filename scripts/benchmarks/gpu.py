# SPDX-License-Identifier: Apache-2.0
"""The paper's scale on a GPU: seconds and peak memory of a training step and of inference, in one table.

``python scripts/benchmark.py gpu`` (needs a CUDA device; about 5-8 minutes on one H100) measures the paper preset
(U-Net features 64, LSTM hidden 16, unidirectional) on random 512x512xD volumes, D = 64, 128, 320, batch 1:

- **training step** (forward, backward; no optimiser): seconds per step and ``torch.cuda.max_memory_allocated``, in
  float32 and in bf16 autocast, for the uncheckpointed network (the **baseline**, where it fits; "OOM" where it does
  not), checkpointed segments of k = 1 and k = auto, and k = 1 with ``offload_states``; one k = auto bf16 row in
  channels-last memory format at the middle depth;
- **inference** (evaluation, no autograd): seconds per volume and peak, float32 and bf16;
- **the conventional peer**: MONAI's 3D ``UNet`` (channels 16-256, 2 residual units) with
  ``sliding_window_inference`` (ROI 128x128x64, batch 4, overlap 0.25) on the same volume, float32 and bf16;
- **prediction**: the peak the meta-device simulation of :mod:`scripts.benchmarks.memory` predicts for float32
  training rows (offload derived from k = 1 as there), beside the measured peak.

Ratios are to the baseline of the same depth (float32 uncheckpointed training; "n/a" where it ran out of memory).
Each row runs ``warmup`` untimed and ``repeats`` timed iterations; ``cudnn.benchmark`` is on for training (the
network's default) and the convolutions may use TF32 (PyTorch's default for cuDNN). Rows after ``time_limit_s``
are printed as "skipped" so that a run always ends with its table.
"""

from __future__ import annotations

import functools
import gc
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch

from bundle.networks import UNetConvLSTM
from scripts.benchmarks.memory import MIB, _format_table, simulate_training_step

__all__ = ["benchmark_gpu", "run_gpu_benchmark", "format_gpu_table"]

COLUMNS = ["D", "run", "dtype", "k", "seconds", "time ratio", "peak (MiB)", "predicted (MiB)", "peak ratio"]
PEER_ROI = (128, 128, 64)

OutOfMemory = getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError)


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _reset_peak(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def _peak(device: torch.device) -> int | None:
    return torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None


def _measure(function: Callable[[], Any], device: torch.device, warmup: int, repeats: int) -> tuple[float, int | None]:
    """Seconds per call (mean of ``repeats`` after ``warmup``) and the peak allocated bytes over all calls."""
    _reset_peak(device)
    for _ in range(warmup):
        function()
    _synchronize(device)
    start = time.perf_counter()
    for _ in range(repeats):
        function()
    _synchronize(device)
    return (time.perf_counter() - start) / max(repeats, 1), _peak(device)


def _autocast(device: torch.device, dtype: torch.dtype | None):
    return torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None)


def _training_step(network: torch.nn.Module, volume: torch.Tensor, dtype: torch.dtype | None) -> None:
    network.zero_grad(set_to_none=True)
    with _autocast(volume.device, dtype):
        loss = network(volume).float().mean()
    loss.backward()


def _inference(network: torch.nn.Module, volume: torch.Tensor, dtype: torch.dtype | None) -> None:
    with torch.inference_mode(), _autocast(volume.device, dtype):
        network(volume)


def _peer_inference(
    network: torch.nn.Module, volume: torch.Tensor, dtype: torch.dtype | None, roi: Sequence[int]
) -> None:
    from monai.inferers import sliding_window_inference

    # a volume smaller than the ROI is padded by sliding_window_inference
    with torch.inference_mode(), _autocast(volume.device, dtype):
        sliding_window_inference(volume, roi, 4, network, overlap=0.25)


def _peer_network(features: int) -> torch.nn.Module:
    from monai.networks.nets import UNet

    channels = tuple(features * 2**level for level in range(5))
    return UNet(3, 1, 2, channels=channels, strides=(2, 2, 2, 2), num_res_units=2)


def _predicted_peak(network_kwargs: dict[str, Any], shape: Sequence[int], hidden_channels: int) -> int:
    """The meta-device peak of a float32 training step; offload is derived from k = 1 as the memory benchmark does."""
    kwargs = dict(network_kwargs)
    host = 0
    if kwargs.pop("offload_states", False):
        kwargs["segment_length"] = 1
        host = (shape[-1] - 1) * 2 * hidden_channels * shape[2] * shape[3] * 4
    return simulate_training_step(kwargs, shape).peak_bytes - host


def format_gpu_table(rows: list[dict[str, Any]], device_name: str, in_plane: int, features: int, hidden: int) -> str:
    """The benchmark's table with a one-line heading.

    Args:
        rows: dicts with the keys of ``COLUMNS`` (as :func:`run_gpu_benchmark` returns them).
        device_name: the card's name, printed in the heading.
        in_plane: in-plane size of the volumes.
        features: U-Net first-level filters.
        hidden: LSTM hidden channels.

    Returns:
        the heading and the table, one string.

    Example::

        >>> print(format_gpu_table(run_gpu_benchmark(device="cpu", depths=(4,), in_plane=32, features=4,
        ...     hidden_channels=2, peer_features=2, repeats=1), "cpu", 32, 4, 2))  # doctest: +SKIP
    """
    heading = (
        f"UNetConvLSTM on {device_name}: features={features}, hidden={hidden}, {in_plane}x{in_plane}xD, batch 1; "
        "training step = forward + backward; ratios to the float32 uncheckpointed step of the same D"
    )
    return heading + "\n" + _format_table(rows, COLUMNS)


def run_gpu_benchmark(
    device: str | torch.device = "cuda",
    depths: Sequence[int] = (64, 128, 320),
    in_plane: int = 512,
    features: int = 64,
    hidden_channels: int = 16,
    peer_features: int = 16,
    peer_roi: Sequence[int] = PEER_ROI,
    warmup: int = 1,
    repeats: int = 2,
    predict: bool = True,
    time_limit_s: float = 450.0,
    progress: Callable[[str], None] | None = None,
) -> list[dict[str, Any]]:
    """Measure every row of the table on ``device`` (the same code on a CPU, for tests at a tiny size).

    Args:
        device: where to run; ``"cuda"`` for the benchmark, ``"cpu"`` only to exercise the code.
        depths: numbers of slices D.
        in_plane: in-plane size (512 in the paper).
        features: U-Net first-level filters (64: the paper).
        hidden_channels: LSTM state channels (16: the paper).
        peer_features: first-level channels of the 3D MONAI U-Net peer.
        peer_roi: its sliding-window ROI (each size divisible by 16).
        warmup: untimed iterations per row (the first also tunes cuDNN).
        repeats: timed iterations per row.
        predict: add the meta-device prediction of the float32 training peaks.
        time_limit_s: rows that would start after this many seconds are reported as "skipped".
        progress: called with a line per finished row (e.g. ``print``); None prints nothing.

    Returns:
        one dict per row, with the printed columns and the raw ``seconds_value`` and ``peak_bytes``.
    """
    device = torch.device(device)
    began = time.perf_counter()
    rows: list[dict[str, Any]] = []
    base = {"in_channels": 1, "out_channels": 2, "features": features, "hidden_channels": hidden_channels}
    dtypes: list[tuple[str, torch.dtype | None]] = [("fp32", None), ("bf16", torch.bfloat16)]
    for depth in depths:
        shape = (1, 1, in_plane, in_plane, depth)
        volume = torch.randn(*shape, device=device)
        trainings: list[tuple[str, dict[str, Any]]] = [
            ("no checkpoint (baseline)", {"checkpoint": False}),
            ("checkpoint k=1", {"segment_length": 1}),
            ("checkpoint k=auto", {"segment_length": "auto"}),
            ("checkpoint k=1 + offload", {"segment_length": 1, "offload_states": True}),
        ]
        runs: list[tuple[str, str, dict[str, Any] | None, torch.dtype | None]] = [
            (name, dtype_name, kwargs, dtype) for name, kwargs in trainings for dtype_name, dtype in dtypes
        ]
        if depth == depths[len(depths) // 2]:
            runs.append(("checkpoint k=auto, channels-last", "bf16", {"channels_last": True}, torch.bfloat16))
        runs += [("inference", name, None, dtype) for name, dtype in dtypes]
        runs += [("MONAI 3D UNet, sliding window", name, None, dtype) for name, dtype in dtypes]
        baseline: dict[str, Any] | None = None
        for name, dtype_name, kwargs, dtype in runs:
            row: dict[str, Any] = {"D": depth, "run": name, "dtype": dtype_name, "k": "-"}
            row.update({"seconds_value": None, "peak_bytes": None, "predicted_bytes": None})
            if time.perf_counter() - began > time_limit_s:
                row["status"] = "skipped"
            else:
                row.update(_run_row(name, kwargs, dtype, base, shape, volume, peer_features, peer_roi, warmup, repeats))
                if predict and kwargs is not None and dtype is None:
                    network_kwargs = {**base, "checkpoint": kwargs.get("checkpoint", True), **kwargs}
                    network_kwargs.pop("channels_last", None)
                    row["predicted_bytes"] = _predicted_peak(network_kwargs, shape, hidden_channels)
            if baseline is None and kwargs is not None and not kwargs.get("checkpoint", True):
                baseline = row
            rows.append(_format_row(row, baseline))
            if progress is not None:
                progress(" | ".join(str(rows[-1][c]) for c in COLUMNS))
        del volume
    return rows


def _run_row(
    name: str,
    kwargs: dict[str, Any] | None,
    dtype: torch.dtype | None,
    base: dict[str, Any],
    shape: Sequence[int],
    volume: torch.Tensor,
    peer_features: int,
    peer_roi: Sequence[int],
    warmup: int,
    repeats: int,
) -> dict[str, Any]:
    device = volume.device
    torch.manual_seed(0)
    result: dict[str, Any] = {}
    step: Callable[[], None] | None = None
    try:
        if name.startswith("MONAI"):
            step = functools.partial(
                _peer_inference, _peer_network(peer_features).to(device).eval(), volume, dtype, peer_roi
            )
        elif kwargs is None:
            step = functools.partial(_inference, UNetConvLSTM(**base).to(device).eval(), volume, dtype)
        else:
            network = UNetConvLSTM(**{**base, **kwargs}).to(device).train()
            if kwargs.get("checkpoint", True):
                result["k"] = network.resolve_segment_length(shape[-1])
            step = functools.partial(_training_step, network, volume, dtype)
            del network
        seconds, peak = _measure(step, device, warmup, repeats)
        result.update({"seconds_value": seconds, "peak_bytes": peak, "status": "ok"})
    except OutOfMemory:
        result["status"] = "OOM"
    finally:
        step = None  # frees the network (and, after an OOM, what it held) before the next row
        _reset_peak(device)
    return result


def _format_row(row: dict[str, Any], baseline: dict[str, Any] | None) -> dict[str, Any]:
    ok = row.get("status", "ok") == "ok"
    seconds, peak, predicted = row["seconds_value"], row["peak_bytes"], row["predicted_bytes"]
    row["seconds"] = f"{seconds:.3f}" if ok else row["status"]
    row["peak (MiB)"] = f"{peak / MIB:,.0f}" if peak is not None else ("-" if ok else row["status"])
    row["predicted (MiB)"] = f"{predicted / MIB:,.0f}" if predicted is not None else "-"
    row["time ratio"] = row["peak ratio"] = "n/a" if ok else "-"
    if ok and baseline is not None and baseline.get("status") == "ok":
        row["time ratio"] = f"{seconds / baseline['seconds_value']:.2f}"
        if peak is not None and baseline["peak_bytes"]:
            row["peak ratio"] = f"{peak / baseline['peak_bytes']:.3f}"
    return row


def benchmark_gpu(
    depths: Sequence[int] = (64, 128, 320),
    in_plane: int = 512,
    warmup: int = 1,
    repeats: int = 2,
    predict: bool = True,
    time_limit_s: float = 450.0,
) -> list[dict[str, Any]]:
    """Seconds and peak GPU memory of the paper preset (features 64, hidden 16) at 512x512xD, batch 1.

    Needs a CUDA device: without one it prints a one-line message and exits with status 2. For each D, rows in
    float32 and bf16 autocast: a training step (forward + backward, no optimiser) of the uncheckpointed network (the
    baseline; "OOM" where it does not fit), checkpointed k=1, k=auto and k=1 + offload_states (plus k=auto in
    channels-last at the middle D); inference seconds per volume; MONAI's 3D UNet with sliding-window inference on
    the same volume (the conventional peer). Columns: seconds, torch.cuda.max_memory_allocated, the meta-device
    prediction of float32 training peaks (scripts.benchmarks.memory), ratios to the float32 baseline of the same D.
    Prints one line per row as it finishes, then the table; about 5-8 minutes on one H100.

    Args:
        depths: numbers of slices D. Defaults to (64, 128, 320).
        in_plane: in-plane size. Defaults to 512 (the paper).
        warmup: untimed iterations per row. Defaults to 1.
        repeats: timed iterations per row. Defaults to 2.
        predict: show the meta-device prediction beside float32 training peaks. Defaults to True.
        time_limit_s: rows that would start later are reported as "skipped". Defaults to 450 (under 8 minutes).

    Returns:
        one dict per row.

    Example::

        python scripts/benchmark.py gpu
        python scripts/benchmark.py gpu --depths '[64]' --repeats 1
    """
    if not torch.cuda.is_available():
        print(
            "benchmark gpu: no CUDA device is available; this benchmark measures a GPU and needs one.", file=sys.stderr
        )
        raise SystemExit(2)
    device = torch.device("cuda")
    name = torch.cuda.get_device_name(device)
    features, hidden = 64, 16
    print(f"Measuring on {name} ...", flush=True)
    rows = run_gpu_benchmark(
        device,
        depths=depths,
        in_plane=in_plane,
        features=features,
        hidden_channels=hidden,
        warmup=warmup,
        repeats=repeats,
        predict=predict,
        time_limit_s=time_limit_s,
        progress=lambda line: print(line, flush=True),
    )
    print(format_gpu_table(rows, name, in_plane, features, hidden))
    return rows
