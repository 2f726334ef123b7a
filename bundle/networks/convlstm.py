# SPDX-License-Identifier: Apache-2.0
"""The convolutional LSTM recurrence of the paper's eq. (1), with the input transform computed outside the cell."""

# No `from __future__ import annotations`: TorchScript needs real annotations on these modules.

import warnings
from typing import List, Tuple

import torch
import torch.nn as nn

__all__ = ["ConvLSTMCell", "ConvLSTMDirection", "lstm_pointwise"]

CELL_FUSIONS = ("auto", "none", "script", "compile")


def _lstm_pointwise_eager(
    u: torch.Tensor, hidden_gates: torch.Tensor, c: torch.Tensor
) -> Tuple[torch.Tensor, torch.Tensor]:
    gates = u + hidden_gates
    i, f, o, g = gates.chunk(4, dim=1)
    c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    h = torch.sigmoid(o) * torch.tanh(c)
    return h, c


# Scripted once at import: on a GPU TorchScript's fuser turns the ~8 element-wise kernels of a step into one or two
# (after two profiling runs); the arithmetic is the eager function's, so results agree to rounding.
with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)  # torch >= 2.5 marks torch.jit.script deprecated
    lstm_pointwise = torch.jit.script(_lstm_pointwise_eager)
lstm_pointwise.__doc__ = """The element-wise part of eq. (1): ``h_z, c_z`` from gate pre-activations and ``c_{z-1}``.

    Args:
        u: input pre-activations ``(B, 4 * hidden, H, W)`` in the gate order input, forget, output, candidate.
        hidden_gates: the hidden-to-hidden convolution of ``h_{z-1}`` with its bias, same shape as ``u``.
        c: the cell state ``c_{z-1}``, ``(B, hidden, H, W)``.

    Returns:
        ``h_z`` and ``c_z``.

    Example::

        >>> h, c = lstm_pointwise(torch.randn(1, 8, 4, 4), torch.randn(1, 8, 4, 4), torch.zeros(1, 2, 4, 4))
    """

_COMPILED: List[torch.nn.Module] = []


@torch.jit.unused
def _lstm_pointwise_compiled(
    u: torch.Tensor, hidden_gates: torch.Tensor, c: torch.Tensor
) -> Tuple[torch.Tensor, torch.Tensor]:
    if not _COMPILED:
        _COMPILED.append(torch.compile(_lstm_pointwise_eager, dynamic=True))  # one compilation for every size
    return _COMPILED[0](u, hidden_gates, c)


class ConvLSTMCell(nn.Module):
    """One step of eq. (1) given precomputed input pre-activations ``u_z``.

    ``i, f, o, g = split(u_z + conv(h_{z-1}) + b)``; ``c_z = sigmoid(f) * c_{z-1} + sigmoid(i) * tanh(g)``;
    ``h_z = sigmoid(o) * tanh(c_z)``. The hidden-to-hidden convolution ``W_i, W_f, W_o, W_c`` and the biases
    ``b`` are this module's only parameters; the forget-gate bias starts at 1, a common choice that lets the cell
    carry context across many slices from the start of training.

    Args:
        hidden_channels: channels of ``h`` and ``c``; ``u_z`` has ``4 * hidden_channels`` channels in the gate order
            input, forget, output, candidate.
        kernel_size: odd size of the hidden-to-hidden convolution (zero padding keeps the size). Defaults to 3.
        fusion: how the element-wise part runs: ``"script"`` (:data:`lstm_pointwise`, fused by TorchScript on a
            GPU), ``"compile"`` (``torch.compile``, needs a compiler, compiles on first use), ``"none"`` (eager) or
            ``"auto"``: ``"script"`` on a GPU, eager on a CPU, where TorchScript does not fuse and measured no faster.
            All give the same result up to rounding. Defaults to ``"auto"``.

    Example::

        >>> cell = ConvLSTMCell(hidden_channels=8)
        >>> h = c = torch.zeros(1, 8, 32, 32)
        >>> h, c = cell(torch.randn(1, 32, 32, 32), h, c)
    """

    def __init__(self, hidden_channels: int, kernel_size: int = 3, fusion: str = "auto") -> None:
        super().__init__()
        if fusion not in CELL_FUSIONS:
            raise ValueError(f"`fusion` must be one of {CELL_FUSIONS}, got {fusion!r}.")
        self.fusion = fusion
        if isinstance(hidden_channels, bool) or not isinstance(hidden_channels, int) or hidden_channels < 1:
            raise ValueError(f"`hidden_channels` must be a positive integer, got {hidden_channels!r}.")
        if isinstance(kernel_size, bool) or not isinstance(kernel_size, int) or kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"`kernel_size` must be a positive odd integer, got {kernel_size!r}.")
        self.hidden_channels = hidden_channels
        self.hidden_conv = nn.Conv2d(hidden_channels, 4 * hidden_channels, kernel_size, padding=kernel_size // 2)
        with torch.no_grad():
            self.hidden_conv.bias.zero_()
            self.hidden_conv.bias[hidden_channels : 2 * hidden_channels].fill_(1.0)

    def forward(self, u: torch.Tensor, h: torch.Tensor, c: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        hidden_gates = self.hidden_conv(h)
        if self.fusion == "script" or (self.fusion == "auto" and u.device.type == "cuda"):
            return lstm_pointwise(u, hidden_gates, c)
        if self.fusion == "compile" and not torch.jit.is_scripting():
            return _lstm_pointwise_compiled(u, hidden_gates, c)
        return _lstm_pointwise_eager(u, hidden_gates, c)


class ConvLSTMDirection(nn.Module):
    """Runs :class:`ConvLSTMCell` over the slices of a segment in one direction and maps each ``h_z`` to logits.

    Args:
        hidden_channels: channels of the hidden and cell states.
        out_channels: number of output logits per pixel (a 1x1 convolution of ``h_z``).
        kernel_size: odd size of the hidden-to-hidden convolution. Defaults to 3.
        reverse: run from the last slice to the first (the second direction of a bidirectional network).
            Defaults to False.
        head_bias: give the 1x1 head a bias. A bidirectional network gives it to one direction only, so that the
            sum of the two heads equals one 1x1 convolution of the concatenated states. Defaults to True.
        fusion: the cell's element-wise fusion, see :class:`ConvLSTMCell`. Defaults to ``"auto"``.

    Example::

        >>> direction = ConvLSTMDirection(hidden_channels=4, out_channels=2)
        >>> h = c = torch.zeros(1, 4, 16, 16)
        >>> logits, h, c = direction(torch.randn(1, 5, 16, 16, 16), h, c)  # 5 slices -> logits (1, 2, 16, 16, 5)
    """

    def __init__(
        self,
        hidden_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        reverse: bool = False,
        head_bias: bool = True,
        fusion: str = "auto",
    ) -> None:
        super().__init__()
        self.cell = ConvLSTMCell(hidden_channels, kernel_size, fusion)
        self.head = nn.Conv2d(hidden_channels, out_channels, kernel_size=1, bias=head_bias)
        self.hidden_channels = hidden_channels
        self.out_channels = out_channels
        self.reverse = reverse

    def forward(
        self, u: torch.Tensor, h: torch.Tensor, c: torch.Tensor
    ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Recurrence over one segment.

        Args:
            u: gate pre-activations from the U-Net, ``(B, K, 4 * hidden_channels, H, W)`` for K slices in
                anatomical order.
            h: hidden state entering the segment, ``(B, hidden_channels, H, W)``.
            c: cell state entering the segment, same shape as ``h``.

        Returns:
            logits ``(B, out_channels, H, W, K)`` in anatomical order, and the states leaving the segment.
        """
        num_slices = u.shape[1]
        # unbind, not u[:, z]: the backward of each of K selects writes a zero tensor of u's whole size (K^2 traffic;
        # measured 35 % of a CPU training step at K = 46), unbind's backward stacks the K gradients once
        slices = u.unbind(1)
        states: List[torch.Tensor] = []
        for step in range(num_slices):
            z = num_slices - 1 - step if self.reverse else step
            h, c = self.cell(slices[z], h, c)
            states.append(h)
        if self.reverse:
            states.reverse()
        hidden = torch.stack(states, dim=1)  # (B, K, C, H, W)
        batch, _, channels, height, width = hidden.shape
        logits = self.head(hidden.reshape(batch * num_slices, channels, height, width))
        logits = logits.reshape(batch, num_slices, self.out_channels, height, width)
        return logits.permute(0, 2, 3, 4, 1), h, c
