# SPDX-License-Identifier: Apache-2.0
"""The convolutional LSTM recurrence of the paper's eq. (1), with the input transform computed outside the cell."""

# No `from __future__ import annotations`: TorchScript needs real annotations on these modules.

from typing import List, Tuple

import torch
import torch.nn as nn

__all__ = ["ConvLSTMCell", "ConvLSTMDirection"]


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

    Example::

        >>> cell = ConvLSTMCell(hidden_channels=8)
        >>> h = c = torch.zeros(1, 8, 32, 32)
        >>> h, c = cell(torch.randn(1, 32, 32, 32), h, c)
    """

    def __init__(self, hidden_channels: int, kernel_size: int = 3) -> None:
        super().__init__()
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
        gates = u + self.hidden_conv(h)
        i, f, o, g = gates.chunk(4, dim=1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
        return h, c


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
    """

    def __init__(
        self,
        hidden_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        reverse: bool = False,
        head_bias: bool = True,
    ) -> None:
        super().__init__()
        self.cell = ConvLSTMCell(hidden_channels, kernel_size)
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
        states: List[torch.Tensor] = []
        for step in range(num_slices):
            z = num_slices - 1 - step if self.reverse else step
            h, c = self.cell(u[:, z], h, c)
            states.append(h)
        if self.reverse:
            states.reverse()
        hidden = torch.stack(states, dim=1)  # (B, K, C, H, W)
        batch, _, channels, height, width = hidden.shape
        logits = self.head(hidden.reshape(batch * num_slices, channels, height, width))
        logits = logits.reshape(batch, num_slices, self.out_channels, height, width)
        return logits.permute(0, 2, 3, 4, 1), h, c
