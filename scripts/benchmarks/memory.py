# SPDX-License-Identifier: Apache-2.0
"""Memory and speed of one training step of :class:`~bundle.networks.UNetConvLSTM`, with and without checkpointing.

Two kinds of figures, both against the uncheckpointed network measured in the same run:

- **Exact sizes at any scale** (``simulate``): the network runs on PyTorch's ``meta`` device, where tensors have
  shapes but no data, so the paper preset (512x512x320) needs no GPU and no time. A dispatch mode follows every
  tensor storage from creation to release and reports the peak of live bytes over forward and backward (what
  ``torch.cuda.max_memory_allocated`` reports on a GPU, less allocator rounding and workspaces), and
  ``saved_tensors_hooks`` count the bytes kept for backward (autograd's saved tensors plus the inputs each
  checkpointed segment holds for its recomputation). Parameters and their gradients are included in the peak.
- **Measured time** (``timing``): real forward and training-step times on this machine's CPU at a reduced size.
"""

from __future__ import annotations

import contextlib
import functools
import time
import weakref
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator, Sequence
from unittest import mock

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from bundle.networks import UNetConvLSTM
from bundle.networks import unet_convlstm as unet_convlstm_module

__all__ = ["PeakMemory", "count_saved_bytes", "simulate_training_step", "benchmark_memory", "benchmark_timing"]

MIB = 2**20


class PeakMemory(TorchDispatchMode):
    """Follows every tensor storage that an operator creates and records the peak of the bytes alive.

    Storages that exist before the mode is entered (parameters, inputs) are added with :meth:`add_existing`.

    Example::

        >>> with PeakMemory() as memory:
        ...     y = torch.ones(1024, device="meta") * 2
        >>> memory.peak_bytes
        4096
    """

    def __init__(self) -> None:
        super().__init__()
        self.current_bytes = 0
        self.peak_bytes = 0
        self._live: dict[int, int] = {}

    def add_existing(self, tensors: Iterable[torch.Tensor]) -> None:
        for tensor in tensors:
            self._track(tensor)

    def _track(self, tensor: torch.Tensor) -> None:
        storage = tensor.untyped_storage()
        key = storage._cdata
        if key in self._live:
            return
        size = storage.nbytes()
        self._live[key] = size
        self.current_bytes += size
        self.peak_bytes = max(self.peak_bytes, self.current_bytes)
        weakref.finalize(storage, self._release, key)

    def _release(self, key: int) -> None:
        self.current_bytes -= self._live.pop(key, 0)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for value in tree_flatten(out)[0]:
            if isinstance(value, torch.Tensor):
                self._track(value)
        return out


@contextlib.contextmanager
def count_saved_bytes(exclude: Iterable[torch.Tensor] = ()) -> Iterator[dict[str, int]]:
    """Count the unique bytes kept for backward while the context is open.

    Counts tensors autograd saves (``saved_tensors_hooks``) and the arguments of every checkpointed segment (which
    non-reentrant checkpointing keeps for recomputation), each storage once; storages of ``exclude`` (the
    parameters) are not counted.

    Yields:
        a dict whose ``"bytes"`` entry holds the running total.
    """
    seen = {tensor.untyped_storage()._cdata for tensor in exclude}
    result = {"bytes": 0}

    def remember(tensor: torch.Tensor) -> None:
        storage = tensor.untyped_storage()
        if storage._cdata not in seen:
            seen.add(storage._cdata)
            result["bytes"] += storage.nbytes()

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        remember(tensor)
        return tensor

    real_checkpoint: Callable[..., Any] = unet_convlstm_module.torch_checkpoint

    def counting_checkpoint(function, *args, **kwargs):
        for value in args:
            if isinstance(value, torch.Tensor):
                remember(value)
        return real_checkpoint(function, *args, **kwargs)

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        with mock.patch.object(unet_convlstm_module, "torch_checkpoint", counting_checkpoint):
            yield result


@dataclass
class StepMemory:
    """Bytes of one training step: kept for backward after the forward, and the peak over forward and backward."""

    saved_bytes: int
    peak_bytes: int
    segment_length: int


def simulate_training_step(
    network_kwargs: dict[str, Any], shape: Sequence[int], device: str | torch.device = "meta"
) -> StepMemory:
    """Run one forward/backward of a freshly built network and measure its memory.

    Args:
        network_kwargs: keyword arguments of :class:`UNetConvLSTM`.
        shape: input shape ``(B, C, H, W, D)``.
        device: ``"meta"`` (sizes only, any scale, no compute) or a real device. Defaults to ``"meta"``.
    """
    with torch.device(device):
        network = UNetConvLSTM(**network_kwargs).train()
        volume = torch.randn(*shape)
    parameters = list(network.parameters()) + list(network.buffers())
    with PeakMemory() as memory:
        memory.add_existing(parameters + [volume])
        with count_saved_bytes(exclude=parameters) as saved:
            logits = network(volume)
        saved_bytes = saved["bytes"]
        logits.float().mean().backward()
        del logits
    return StepMemory(saved_bytes, memory.peak_bytes, network.resolve_segment_length(shape[-1]))


def _format_table(rows: list[dict[str, Any]], columns: Sequence[str]) -> str:
    widths = {c: max(len(c), *(len(str(r[c])) for r in rows)) for c in columns}
    lines = [" | ".join(c.ljust(widths[c]) for c in columns), "-+-".join("-" * widths[c] for c in columns)]
    lines += [" | ".join(str(r[c]).ljust(widths[c]) for c in columns) for r in rows]
    return "\n".join(lines)


def benchmark_memory(
    depths: Sequence[int] = (32, 64, 128, 320),
    segment_lengths: Sequence[int | str] = (1, 4, 16, "auto"),
    in_plane: int = 512,
    features: int = 64,
    hidden_channels: int = 16,
    out_channels: int = 2,
    bidirectional: bool = False,
) -> list[dict[str, Any]]:
    """Exact memory of one training step at the paper preset, for several depths and segment lengths.

    For each depth D the uncheckpointed network is the baseline (ratios are to it). ``offload`` rows are derived
    from the k=1 run: with ``offload_states`` the D boundary states live in host memory (the meta device cannot
    copy to the host), so the device figures are the k=1 ones less D - 1 states (one is copied back for the
    segment being recomputed) and the host figure is those states.

    Returns:
        one dict per row of the printed table.
    """
    rows: list[dict[str, Any]] = []
    base_kwargs = dict(
        in_channels=1,
        out_channels=out_channels,
        features=features,
        hidden_channels=hidden_channels,
        bidirectional=bidirectional,
    )
    num_directions = 2 if bidirectional else 1
    state_bytes = 2 * hidden_channels * num_directions * in_plane * in_plane * 4
    best_rows: list[tuple[int, StepMemory]] = []
    for depth in depths:
        shape = (1, 1, in_plane, in_plane, depth)
        baseline = simulate_training_step({**base_kwargs, "checkpoint": False, "segment_length": 0}, shape)
        rows.append(_memory_row(depth, "no checkpoint", baseline, baseline))
        best: StepMemory | None = None
        per_slice: StepMemory | None = None
        for length in segment_lengths:
            step = simulate_training_step({**base_kwargs, "checkpoint": True, "segment_length": length}, shape)
            rows.append(_memory_row(depth, f"checkpoint k={length}", step, baseline))
            best = step if best is None or step.peak_bytes < best.peak_bytes else best
            per_slice = step if length == 1 else per_slice
        if per_slice is None:
            per_slice = simulate_training_step({**base_kwargs, "checkpoint": True, "segment_length": 1}, shape)
        host = (depth - 1) * state_bytes
        offloaded = StepMemory(per_slice.saved_bytes - host, per_slice.peak_bytes - host, 1)
        rows.append(_memory_row(depth, "checkpoint k=1 + offload (derived)", offloaded, baseline, host))
        if best is not None:
            best_rows.append((depth, best))
    columns = ["D", "network", "k", "saved for backward (MiB)", "ratio", "peak (MiB)", "ratio ", "host (MiB)"]
    columns = ["D", "network", "k", "saved for backward (MiB)", "ratio", "peak (MiB)", "ratio ", "host (MiB)"]
    print(
        f"One training step, exact tensor sizes (meta device): features={features}, hidden={hidden_channels}, "
        f"{in_plane}x{in_plane}xD, float32, batch 1"
    )
    print(_format_table(rows, columns))
    if len(best_rows) > 1:
        (first_depth, first), (last_depth, last) = best_rows[0], best_rows[-1]
        print(
            f"Best checkpointed peak grows {last.peak_bytes / first.peak_bytes:.2f}x from D={first_depth} to "
            f"D={last_depth} ({last_depth / first_depth:.1f}x the slices)."
        )
    return rows


def _memory_row(depth: int, name: str, step: StepMemory, baseline: StepMemory, host: int = 0) -> dict[str, Any]:
    return {
        "D": depth,
        "network": name,
        "k": step.segment_length,
        "saved for backward (MiB)": f"{step.saved_bytes / MIB:,.0f}",
        "ratio": f"{step.saved_bytes / baseline.saved_bytes:.4f}",
        "peak (MiB)": f"{step.peak_bytes / MIB:,.0f}",
        "ratio ": f"{step.peak_bytes / baseline.peak_bytes:.4f}",
        "host (MiB)": f"{host / MIB:,.0f}",
        "saved_bytes": step.saved_bytes,
        "peak_bytes": step.peak_bytes,
    }


def _inference(network: UNetConvLSTM, volume: torch.Tensor) -> None:
    with torch.inference_mode():
        network.eval()(volume)


def _training_step(network: UNetConvLSTM, volume: torch.Tensor) -> None:
    network.train().zero_grad(set_to_none=True)
    network(volume).float().mean().backward()


def _time(function: Callable[[], Any], repeats: int) -> float:
    function()  # warm-up
    start = time.perf_counter()
    for _ in range(repeats):
        function()
    return (time.perf_counter() - start) / repeats


def benchmark_timing(
    depths: Sequence[int] = (32, 64),
    segment_lengths: Sequence[int | str] = (1, 4, "auto"),
    in_plane: int = 128,
    features: int = 16,
    hidden_channels: int = 8,
    repeats: int = 2,
    threads: int | None = None,
) -> list[dict[str, Any]]:
    """Measured seconds per volume on this machine's CPU: inference forward and one training step.

    Args:
        depths: numbers of slices D.
        segment_lengths: checkpointed segment lengths to compare with the uncheckpointed network.
        in_plane: in-plane size (a reduced size: the paper's 512x512 with 64 features is GPU work).
        features: U-Net first-level filters.
        hidden_channels: LSTM state channels.
        repeats: timed repetitions after one warm-up.
        threads: ``torch.set_num_threads`` for the run; None keeps the current setting.
    """
    previous_threads = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    rows: list[dict[str, Any]] = []
    try:
        for depth in depths:
            volume = torch.randn(1, 1, in_plane, in_plane, depth)
            baseline_step = None
            for length in [None, *segment_lengths]:
                torch.manual_seed(0)
                network = UNetConvLSTM(
                    features=features,
                    hidden_channels=hidden_channels,
                    checkpoint=length is not None,
                    segment_length=0 if length is None else length,
                )

                forward_seconds = _time(functools.partial(_inference, network, volume), repeats)
                step_seconds = _time(functools.partial(_training_step, network, volume), repeats)
                baseline_step = baseline_step or step_seconds
                rows.append(
                    {
                        "D": depth,
                        "network": "no checkpoint" if length is None else f"checkpoint k={length}",
                        "k": network.resolve_segment_length(depth),
                        "forward (s)": f"{forward_seconds:.2f}",
                        "train step (s)": f"{step_seconds:.2f}",
                        "step ratio": f"{step_seconds / baseline_step:.2f}",
                    }
                )
    finally:
        torch.set_num_threads(previous_threads)
    print(
        f"Seconds per volume on CPU ({torch.get_num_threads() if threads is None else threads} threads): "
        f"features={features}, hidden={hidden_channels}, {in_plane}x{in_plane}xD, float32, batch 1"
    )
    print(_format_table(rows, ["D", "network", "k", "forward (s)", "train step (s)", "step ratio"]))
    return rows
