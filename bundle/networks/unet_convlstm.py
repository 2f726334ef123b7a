# SPDX-License-Identifier: Apache-2.0
"""U-Net-in-ConvLSTM (van de Leemput et al. 2018) with segment checkpointing over the axial slices."""

# No `from __future__ import annotations`: TorchScript needs real annotations on these modules.

import contextlib
import math
from typing import Dict, Iterator, List, Optional, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint as torch_checkpoint

from bundle.networks.convlstm import ConvLSTMDirection
from bundle.networks.slice_norm import SliceNorm2d
from bundle.networks.unet2d import UNet2D

__all__ = ["UNetConvLSTM"]

AUTO = "auto"


# Evaluation batches the U-Net over this many bytes of estimated activations on devices other than CUDA.
DEFAULT_EVAL_BATCH_BYTES = 2**30


def _to_pinned_host(tensor: torch.Tensor) -> torch.Tensor:
    """A copy of a device tensor in page-locked host memory, made without waiting for the device.

    On the CPU the tensor is returned as it is: it already lives in host memory, and the rest of the offload path
    (the copy back with ``.to(device)``) is then a no-op, so the path can be tested without a GPU.
    """
    if tensor.device.type == "cpu":
        return tensor
    host = torch.empty(tensor.shape, dtype=tensor.dtype, pin_memory=True)
    return host.copy_(tensor, non_blocking=True)


@contextlib.contextmanager
def _cudnn_benchmark(enabled: bool) -> Iterator[None]:
    previous = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = enabled
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark = previous


class UNetConvLSTM(nn.Module):
    """A convolutional LSTM over the axial slices whose input transform is a 2D U-Net (the paper's eq. (1)).

    For slice ``z``: ``u_z = unet(x_z)`` gives ``4 * hidden_channels`` gate pre-activations; the gates add a
    ``kernel_size`` convolution of ``h_{z-1}`` and a bias; ``c_z = f * c_{z-1} + i * g``; ``h_z = o * tanh(c_z)``;
    a 1x1 convolution maps ``h_z`` to the class logits of slice ``z``.

    **Batched U-Net.** The U-Net does not depend on ``h``, so it runs as one batch over many slices, then the cheap
    recurrence. In evaluation (and in training without checkpointing) a call takes as many slices as an activation
    budget allows (``eval_batch_bytes``; on a GPU half of the free memory), so a volume needs few launch-bound calls.

    **Segment checkpointing.** In checkpointed training the slices are cut into segments of ``segment_length``
    slices and each segment (U-Net, recurrence and head) is one ``torch.utils.checkpoint`` call: only the states at
    segment boundaries, the input and the per-slice logits stay alive, and the backward pass recomputes one segment
    at a time. ``segment_length=1`` is the paper's per-step checkpointing; longer segments trade memory for speed.
    With ``offload_states`` the boundary states are kept in host memory, so GPU memory no longer grows with the
    number of slices beyond the input and the logits.

    **Bidirectional.** One U-Net pass per slice feeds both directions: its ``8 * hidden_channels`` outputs are the
    forward direction's gates followed by the backward direction's. The forward sweep keeps the backward gates
    (``4 * hidden_channels`` values per voxel, in host memory with ``offload_states``) for the backward sweep, which
    then costs only the recurrence.

    Normalisation is per slice (:class:`~bundle.networks.slice_norm.SliceNorm2d`), as in the paper where each step
    sees one slice. Hence in training the outputs and gradients do not depend on ``segment_length``, and neither do
    the running statistics: one training forward applies one momentum update with the per-slice statistics averaged
    over the whole volume, and recomputation during backward does not touch them.

    Args:
        in_channels: input channels. Defaults to 1.
        out_channels: output logits per voxel. Defaults to 2 (background, cranial cavity).
        features: U-Net filters of the first level, doubled at each of its 4 pools; 64 is the original U-Net (the
            paper). Defaults to 64.
        hidden_channels: channels of the LSTM hidden and cell states. Defaults to 16.
        kernel_size: odd size of the hidden-to-hidden convolution. Defaults to 3.
        bidirectional: add a second LSTM running from the last slice to the first; the logits are a 1x1 convolution
            of both directions' hidden states. The paper is unidirectional. Defaults to False.
        segment_length: slices per checkpointed segment; 0 puts the whole volume in one segment; ``"auto"`` chooses
            about ``sqrt(D * state_size / activation_size)``, which minimises boundary states plus one segment's
            activations (1 with ``offload_states``). Defaults to ``"auto"``.
        checkpoint: checkpoint each segment in training (when gradients are enabled). Defaults to True.
        offload_states: keep checkpointed segment-boundary states (and a bidirectional network's kept backward
            gates) in host memory (only matters on a GPU; on a CPU the copies are no-ops). Defaults to False.
        eval_batch_bytes: activation bytes one batched U-Net call may use in evaluation or uncheckpointed training;
            None: half of the free memory on a CUDA device, 1 GiB elsewhere. Defaults to None.
        cell_fusion: the ConvLSTM cell's element-wise fusion (``"auto"``, ``"script"``, ``"compile"``, ``"none"``,
            see :class:`~bundle.networks.convlstm.ConvLSTMCell`). Defaults to ``"auto"``.
        channels_last: run the U-Net in channels-last memory format. Off by default: every convolution is followed
            by an instance norm, which computes in NCHW and so copies back and forth (to be measured on a GPU by
            ``scripts/benchmark.py gpu``). Defaults to False.
        cudnn_benchmark: set ``torch.backends.cudnn.benchmark`` during the forward pass; None: on in training (the
            crop size repeats, so tuned algorithms are reused), left as it is in evaluation (every scan has a new
            size). Defaults to None.

    Example::

        >>> net = UNetConvLSTM(in_channels=1, out_channels=2, features=16, hidden_channels=8, segment_length=4)
        >>> net(torch.randn(1, 1, 100, 90, 33)).shape
        torch.Size([1, 2, 100, 90, 33])
    """

    def __init__(
        self,
        in_channels: int = 1,
        out_channels: int = 2,
        features: int = 64,
        hidden_channels: int = 16,
        kernel_size: int = 3,
        bidirectional: bool = False,
        segment_length: Union[int, str] = AUTO,
        checkpoint: bool = True,
        offload_states: bool = False,
        eval_batch_bytes: Optional[int] = None,
        cell_fusion: str = "auto",
        channels_last: bool = False,
        cudnn_benchmark: Optional[bool] = None,
    ) -> None:
        super().__init__()
        for name, value in (
            ("bidirectional", bidirectional),
            ("checkpoint", checkpoint),
            ("offload_states", offload_states),
            ("channels_last", channels_last),
        ):
            if not isinstance(value, bool):
                raise ValueError(f"`{name}` must be a bool, got {value!r}.")
        if cudnn_benchmark is not None and not isinstance(cudnn_benchmark, bool):
            raise ValueError(f"`cudnn_benchmark` must be a bool or None, got {cudnn_benchmark!r}.")
        if eval_batch_bytes is not None and (
            isinstance(eval_batch_bytes, bool) or not isinstance(eval_batch_bytes, int) or eval_batch_bytes < 1
        ):
            raise ValueError(f"`eval_batch_bytes` must be a positive integer or None, got {eval_batch_bytes!r}.")
        for name, value in (("out_channels", out_channels), ("hidden_channels", hidden_channels)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"`{name}` must be a positive integer, got {value!r}.")
        if isinstance(segment_length, str):
            if segment_length != AUTO:
                raise ValueError(f"`segment_length` must be a non-negative integer or 'auto', got {segment_length!r}.")
        elif isinstance(segment_length, bool) or not isinstance(segment_length, int) or segment_length < 0:
            raise ValueError(f"`segment_length` must be a non-negative integer or 'auto', got {segment_length!r}.")
        num_directions = 2 if bidirectional else 1
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.hidden_channels = hidden_channels
        self.bidirectional = bidirectional
        self.segment_length = segment_length
        self.checkpoint = checkpoint
        self.offload_states = offload_states
        self.eval_batch_bytes = eval_batch_bytes
        self.channels_last = channels_last
        self.cudnn_benchmark = cudnn_benchmark
        self._fixed_segment_length: int = -1 if segment_length == AUTO else int(segment_length)
        self._fixed_eval_batch_bytes: int = DEFAULT_EVAL_BATCH_BYTES if eval_batch_bytes is None else eval_batch_bytes
        self.unet = UNet2D(in_channels, 4 * hidden_channels * num_directions, features)
        self.directions = nn.ModuleList(
            [
                ConvLSTMDirection(
                    hidden_channels, out_channels, kernel_size, reverse=d == 1, head_bias=d == 0, fusion=cell_fusion
                )
                for d in range(num_directions)
            ]
        )
        # Values kept per pixel: boundary states (h and c of every direction) versus one slice's activations.
        # Offloaded states cost no device memory, so the smallest segments are then best.
        self._state_to_activation_ratio: float = (
            0.0
            if offload_states
            else (2.0 * hidden_channels * num_directions)
            / (self.unet.activation_floats_per_pixel() + 14.0 * hidden_channels)
        )

    def resolve_segment_length(self, num_slices: int) -> int:
        """The number of slices per segment used for a volume of ``num_slices`` slices (between 1 and D)."""
        if self._fixed_segment_length > 0:
            return min(self._fixed_segment_length, num_slices)
        if self._fixed_segment_length == 0:
            return num_slices
        best = int(math.floor(math.sqrt(num_slices * self._state_to_activation_ratio) + 0.5))
        return max(1, min(num_slices, best))

    def slices_per_call(self, height: int, width: int, num_slices: int, device: torch.device) -> int:
        """Slices per batched U-Net call in evaluation and uncheckpointed training (between 1 and D).

        The budget (``eval_batch_bytes``, or half of the free memory of a CUDA device) divided by an estimate of one
        slice's live activations: the widest level of the U-Net plus the gates of every direction, in float32.
        """
        budget = self._fixed_eval_batch_bytes
        if not torch.jit.is_scripting():
            budget = self._eval_budget(device)
        pad_h = height + max((-height) % self.unet.divisor, 2 * self.unet.divisor - height)
        pad_w = width + max((-width) % self.unet.divisor, 2 * self.unet.divisor - width)
        floats = self.unet.inference_floats_per_pixel() + 2 * self.hidden_channels * len(self.directions)
        per_slice = 4.0 * floats * pad_h * pad_w
        return max(1, min(num_slices, int(budget // per_slice)))

    @torch.jit.unused
    def _eval_budget(self, device: torch.device) -> int:
        if self.eval_batch_bytes is None and device.type == "cuda":
            free, _ = torch.cuda.mem_get_info(device)
            return max(1, free // 2)
        return self._fixed_eval_batch_bytes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Segment a volume.

        Args:
            x: ``(B, in_channels, H, W, D)``; the recurrence runs over the last (axial) axis, from index 0 upwards.
                Any ``D >= 1`` and any ``H``, ``W``: the U-Net input is padded with edge values to a multiple of
                16 (and at least 32) inside, and the result cropped back.

        Returns:
            logits ``(B, out_channels, H, W, D)``.
        """
        if x.dim() != 5 or x.shape[1] != self.in_channels:
            raise ValueError(f"UNetConvLSTM expects (B, {self.in_channels}, H, W, D), got shape {list(x.shape)}.")
        if x.shape[2] < 1 or x.shape[3] < 1 or x.shape[4] < 1:
            raise ValueError(f"UNetConvLSTM got an empty volume of shape {list(x.shape)}.")
        if not torch.jit.is_scripting():
            return self._forward_eager(x)
        return self._forward_batched(x, self.channels_last)

    @torch.jit.unused
    def _forward_eager(self, x: torch.Tensor) -> torch.Tensor:
        benchmark = self.training if self.cudnn_benchmark is None else self.cudnn_benchmark
        context = _cudnn_benchmark(True) if x.is_cuda and benchmark else contextlib.nullcontext()
        if self.cudnn_benchmark is False and x.is_cuda:
            context = _cudnn_benchmark(False)
        with context:
            if self.training:
                return self._forward_training(x)
            return self._forward_batched(x, self.channels_last)

    @torch.jit.unused
    def _forward_training(self, x: torch.Tensor) -> torch.Tensor:
        norms = [module for module in self.modules() if isinstance(module, SliceNorm2d)]
        for norm in norms:
            norm.defer_running_stats = True
        try:
            if self.checkpoint and torch.is_grad_enabled():
                logits = self._forward_checkpointed(x)
            else:
                logits = self._forward_batched(x, self.channels_last)
        except BaseException:
            for norm in norms:
                norm.discard_running_stats()
            raise
        finally:
            for norm in norms:
                norm.defer_running_stats = False
        for norm in norms:
            norm.commit_running_stats()
        return logits

    def _forward_batched(self, x: torch.Tensor, channels_last: bool) -> torch.Tensor:
        """No checkpointing: the U-Net over as many slices per call as the budget allows, each slice once."""
        batch, _, height, width, num_slices = x.shape
        length = self.slices_per_call(height, width, num_slices, x.device)
        size = 4 * self.hidden_channels
        h = x.new_zeros((batch, self.hidden_channels, height, width))
        c = x.new_zeros((batch, self.hidden_channels, height, width))
        pieces: List[torch.Tensor] = []
        kept: List[torch.Tensor] = []
        for start in range(0, num_slices, length):
            gates = self._gate_inputs(x[:, :, :, :, start : min(start + length, num_slices)], channels_last)
            for index, direction in enumerate(self.directions):
                if index == 0:
                    logits, h, c = direction(gates[:, :, :size], h, c)
                    pieces.append(logits)
                else:
                    # A copy, so that the forward gates of this call can be freed.
                    kept.append(gates[:, :, size:].clone())
        logits = torch.cat(pieces, dim=-1)
        for index, direction in enumerate(self.directions):
            if index == 1:
                zeros = x.new_zeros((batch, self.hidden_channels, height, width))
                reverse_logits, _, _ = direction(torch.cat(kept, dim=1), zeros, zeros)
                logits = logits + reverse_logits
        return logits

    @torch.jit.unused
    def _forward_checkpointed(self, x: torch.Tensor) -> torch.Tensor:
        """Checkpointed segments of ``segment_length`` slices; a bidirectional network's backward sweep reuses the
        gates its forward sweep computed (kept per segment, in host memory with ``offload_states``)."""
        batch, _, height, width, num_slices = x.shape
        length = self.resolve_segment_length(num_slices)
        size = 4 * self.hidden_channels
        bidirectional = len(self.directions) == 2
        forward_direction = self.directions[0]
        device = x.device
        offload = _to_pinned_host if self.offload_states else (lambda tensor: tensor)
        channels_last = self.channels_last

        def forward_segment(segment: torch.Tensor, h: torch.Tensor, c: torch.Tensor):
            gates = self._gate_inputs(segment, channels_last)
            logits, h, c = forward_direction(
                gates[:, :, :size], h.to(device, non_blocking=True), c.to(device, non_blocking=True)
            )
            if bidirectional:
                return logits, h, c, gates[:, :, size:].clone()
            return logits, h, c

        h = x.new_zeros((batch, self.hidden_channels, height, width))
        c = x.new_zeros((batch, self.hidden_channels, height, width))
        pieces: List[torch.Tensor] = []
        kept: List[torch.Tensor] = []
        for start in range(0, num_slices, length):
            segment = x[:, :, :, :, start : min(start + length, num_slices)]
            outputs = self._checkpoint(forward_segment, segment, offload(h), offload(c))
            logits, h, c = outputs[0], outputs[1], outputs[2]
            pieces.append(logits)
            if bidirectional:
                kept.append(offload(outputs[3]))
        logits = torch.cat(pieces, dim=-1)
        if not bidirectional:
            return logits
        reverse_direction = self.directions[1]

        def reverse_segment(gates: torch.Tensor, h: torch.Tensor, c: torch.Tensor):
            return reverse_direction(
                gates.to(device, non_blocking=True), h.to(device, non_blocking=True), c.to(device, non_blocking=True)
            )

        h = x.new_zeros((batch, self.hidden_channels, height, width))
        c = x.new_zeros((batch, self.hidden_channels, height, width))
        reverse_pieces: List[torch.Tensor] = []
        for gates in reversed(kept):
            reverse_logits, h, c = self._checkpoint(reverse_segment, gates, offload(h), offload(c))
            reverse_pieces.append(reverse_logits)
        reverse_pieces.reverse()
        return logits + torch.cat(reverse_pieces, dim=-1)

    @torch.jit.unused
    def _checkpoint(self, function, *args: torch.Tensor):
        return torch_checkpoint(function, *args, use_reentrant=False, context_fn=self._checkpoint_contexts)

    def _gate_inputs(self, segment: torch.Tensor, channels_last: bool) -> torch.Tensor:
        """U-Net over the slices of ``segment`` as one batch: ``(B, C, H, W, K)`` -> ``(B, K, gates, H, W)``.

        The ``4 * hidden_channels`` gates of the forward direction, then (bidirectional) those of the backward one.
        """
        batch, channels, height, width, num_slices = segment.shape
        slices = segment.permute(0, 4, 1, 2, 3).reshape(batch * num_slices, channels, height, width)
        # At least two pixels at the U-Net's coarsest level, where per-slice statistics need more than one value.
        pad_h = max((-height) % self.unet.divisor, 2 * self.unet.divisor - height)
        pad_w = max((-width) % self.unet.divisor, 2 * self.unet.divisor - width)
        if pad_h > 0 or pad_w > 0:
            slices = F.pad(slices, [0, pad_w, 0, pad_h], mode="replicate")
        if channels_last:
            slices = slices.contiguous(memory_format=torch.channels_last)
        gates = self.unet(slices)[:, :, :height, :width]
        return gates.reshape(batch, num_slices, gates.shape[1], height, width)

    def _checkpoint_contexts(self) -> Tuple[contextlib.AbstractContextManager, contextlib.AbstractContextManager]:
        return contextlib.nullcontext(), self._frozen_norm_statistics()

    @contextlib.contextmanager
    def _frozen_norm_statistics(self) -> Iterator[None]:
        norms = [module for module in self.modules() if isinstance(module, SliceNorm2d)]
        for norm in norms:
            norm.freeze_running_stats = True
        try:
            yield
        finally:
            for norm in norms:
                norm.freeze_running_stats = False

    @torch.jit.unused
    def estimate_training_memory(
        self, height: int, width: int, num_slices: int, bytes_per_value: int = 4
    ) -> Dict[str, float]:
        """Rough bytes kept during one checkpointed training step, for choosing ``segment_length`` and a device.

        Args:
            height: in-plane rows of the volume.
            width: in-plane columns.
            num_slices: D, the number of axial slices.
            bytes_per_value: 4 for float32, 2 for bf16/fp16 activations. Defaults to 4.

        Returns:
            ``segment_length`` and bytes for the boundary ``states``, one ``segment``'s activations during
            recomputation, the per-slice ``logits``, a bidirectional network's kept backward ``gates`` (0 when
            unidirectional or offloaded) and their ``total``. ``scripts/benchmark.py memory`` measures the real
            figures.

        Example::

            >>> UNetConvLSTM(features=64, hidden_channels=16).estimate_training_memory(512, 512, 320)["total"] / 2**30
        """
        pixels = float(height * width)
        length = self.resolve_segment_length(num_slices)
        num_segments = math.ceil(num_slices / length)
        num_directions = len(self.directions)
        states = num_segments * 2 * self.hidden_channels * num_directions * pixels * 4
        activation = self.unet.activation_floats_per_pixel() + 14.0 * self.hidden_channels
        segment = length * activation * pixels * bytes_per_value
        logits = num_slices * self.out_channels * num_directions * pixels * bytes_per_value
        kept = num_directions - 1 if not self.offload_states else 0
        gates = kept * num_slices * 4 * self.hidden_channels * pixels * bytes_per_value
        return {
            "segment_length": float(length),
            "states": states,
            "segment": segment,
            "logits": logits,
            "gates": gates,
            "total": states + segment + logits + gates,
        }
