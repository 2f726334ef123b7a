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


def _to_pinned_host(tensor: torch.Tensor) -> torch.Tensor:
    """A copy of a device tensor in page-locked host memory, made without waiting for the device."""
    host = torch.empty(tensor.shape, dtype=tensor.dtype, pin_memory=True)
    return host.copy_(tensor, non_blocking=True)


class UNetConvLSTM(nn.Module):
    """A convolutional LSTM over the axial slices whose input transform is a 2D U-Net (the paper's eq. (1)).

    For slice ``z``: ``u_z = unet(x_z)`` gives ``4 * hidden_channels`` gate pre-activations; the gates add a
    ``kernel_size`` convolution of ``h_{z-1}`` and a bias; ``c_z = f * c_{z-1} + i * g``; ``h_z = o * tanh(c_z)``;
    a 1x1 convolution maps ``h_z`` to the class logits of slice ``z``.

    **Segment checkpointing.** The slices are cut into segments of ``segment_length`` slices. Because the U-Net does
    not depend on ``h``, a segment runs the U-Net as one batch over its slices, then the cheap recurrence. With
    ``checkpoint`` the whole segment (U-Net, recurrence and head) is one ``torch.utils.checkpoint`` call: only the
    states at segment boundaries, the input and the per-slice logits stay alive, and the backward pass recomputes
    one segment at a time. ``segment_length=1`` is the paper's per-step checkpointing; longer segments trade memory
    for speed. With ``offload_states`` the boundary states are kept in host memory, so GPU memory no longer grows
    with the number of slices beyond the input and the logits.

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
        offload_states: keep checkpointed segment-boundary states in host memory (only matters on a GPU).
            Defaults to False.

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
    ) -> None:
        super().__init__()
        for name, value in (
            ("bidirectional", bidirectional),
            ("checkpoint", checkpoint),
            ("offload_states", offload_states),
        ):
            if not isinstance(value, bool):
                raise ValueError(f"`{name}` must be a bool, got {value!r}.")
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
        self._fixed_segment_length: int = -1 if segment_length == AUTO else int(segment_length)
        self.unet = UNet2D(in_channels, 4 * hidden_channels * num_directions, features)
        self.directions = nn.ModuleList(
            [
                ConvLSTMDirection(hidden_channels, out_channels, kernel_size, reverse=d == 1, head_bias=d == 0)
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
        if self.training and not torch.jit.is_scripting():
            return self._forward_training(x)
        return self._forward_volume(x, False)

    @torch.jit.unused
    def _forward_training(self, x: torch.Tensor) -> torch.Tensor:
        norms = [module for module in self.modules() if isinstance(module, SliceNorm2d)]
        for norm in norms:
            norm.defer_running_stats = True
        try:
            logits = self._forward_volume(x, self.checkpoint and torch.is_grad_enabled())
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

    def _forward_volume(self, x: torch.Tensor, use_checkpoint: bool) -> torch.Tensor:
        batch, _, height, width, num_slices = x.shape
        length = self.resolve_segment_length(num_slices)
        starts = list(range(0, num_slices, length))
        logits_sum: Optional[torch.Tensor] = None
        for index, direction in enumerate(self.directions):
            h = x.new_zeros((batch, self.hidden_channels, height, width))
            c = x.new_zeros((batch, self.hidden_channels, height, width))
            pieces: List[torch.Tensor] = []
            for step in range(len(starts)):
                start = starts[len(starts) - 1 - step] if direction.reverse else starts[step]
                segment = x[:, :, :, :, start : min(start + length, num_slices)]
                if use_checkpoint:
                    logits, h, c = self._checkpointed_segment(index, segment, h, c)
                else:
                    logits, h, c = direction(self._gate_inputs(segment, index), h, c)
                pieces.append(logits)
            if direction.reverse:
                pieces.reverse()
            logits = torch.cat(pieces, dim=-1)
            logits_sum = logits if logits_sum is None else logits_sum + logits
        if logits_sum is None:
            raise RuntimeError("UNetConvLSTM has no recurrent direction.")
        return logits_sum

    def _gate_inputs(self, segment: torch.Tensor, direction_index: int) -> torch.Tensor:
        """U-Net over the slices of ``segment`` as one batch: ``(B, C, H, W, K)`` -> ``(B, K, 4 * hidden, H, W)``."""
        batch, channels, height, width, num_slices = segment.shape
        slices = segment.permute(0, 4, 1, 2, 3).reshape(batch * num_slices, channels, height, width)
        # At least two pixels at the U-Net's coarsest level, where per-slice statistics need more than one value.
        pad_h = max((-height) % self.unet.divisor, 2 * self.unet.divisor - height)
        pad_w = max((-width) % self.unet.divisor, 2 * self.unet.divisor - width)
        if pad_h > 0 or pad_w > 0:
            slices = F.pad(slices, [0, pad_w, 0, pad_h], mode="replicate")
        gates = self.unet(slices)[:, :, :height, :width]
        size = 4 * self.hidden_channels
        gates = gates[:, direction_index * size : (direction_index + 1) * size]
        return gates.reshape(batch, num_slices, size, height, width)

    @torch.jit.unused
    def _checkpointed_segment(
        self, direction_index: int, segment: torch.Tensor, h: torch.Tensor, c: torch.Tensor
    ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        direction = self.directions[direction_index]
        device = h.device
        if self.offload_states and device.type != "cpu":
            # Asynchronous copies into pinned host memory: the device keeps computing while the state travels, and
            # the copy back is queued on the same stream, so it can never overtake the copy out.
            h, c = _to_pinned_host(h), _to_pinned_host(c)

        def run_segment(segment: torch.Tensor, h: torch.Tensor, c: torch.Tensor):
            gates = self._gate_inputs(segment, direction_index)
            return direction(gates, h.to(device, non_blocking=True), c.to(device, non_blocking=True))

        return torch_checkpoint(run_segment, segment, h, c, use_reentrant=False, context_fn=self._checkpoint_contexts)

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
            recomputation, the per-slice ``logits`` and their ``total``. ``scripts/benchmark.py memory`` measures
            the real figures.
        """
        pixels = float(height * width)
        length = self.resolve_segment_length(num_slices)
        num_segments = math.ceil(num_slices / length)
        num_directions = len(self.directions)
        states = num_segments * 2 * self.hidden_channels * num_directions * pixels * 4
        activation = self.unet.activation_floats_per_pixel() + 14.0 * self.hidden_channels
        segment = length * activation * pixels * bytes_per_value
        logits = num_slices * self.out_channels * num_directions * pixels * bytes_per_value
        return {
            "segment_length": float(length),
            "states": states,
            "segment": segment,
            "logits": logits,
            "total": states + segment + logits,
        }
