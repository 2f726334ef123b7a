# SPDX-License-Identifier: Apache-2.0
"""The 2D U-Net of the paper (section 2.1), applied to one axial slice at a time."""

# No `from __future__ import annotations`: TorchScript needs real annotations on these modules.

from typing import List

import torch
import torch.nn as nn
import torch.nn.functional as F

from bundle.networks.slice_norm import SliceNorm2d

__all__ = ["UNet2D"]

NUM_POOLS = 4
DIVISOR = 2**NUM_POOLS


class _DoubleConv(nn.Sequential):
    """Two 3x3 convolutions with 1-pixel zero padding, each followed by per-slice normalisation and ReLU."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(
            nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1, bias=False),
            SliceNorm2d(out_channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(out_channels, out_channels, kernel_size=3, padding=1, bias=False),
            SliceNorm2d(out_channels),
            nn.ReLU(inplace=True),
        )


class _Up(nn.Module):
    """Nearest-neighbour upsampling by 2, concatenation with the skip, then a double convolution."""

    def __init__(self, in_channels: int, skip_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = _DoubleConv(in_channels + skip_channels, out_channels)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, scale_factor=2.0, mode="nearest")
        return self.conv(torch.cat([skip, x], dim=1))


class UNet2D(nn.Module):
    """2D U-Net with 4 max-pools, two 3x3 convolutions per level, nearest upsampling and long skip connections.

    As in the paper: every convolution has 1 pixel of zero padding (output size = input size), normalisation follows
    every convolution and precedes the ReLU, and upsampling is nearest-neighbour instead of deconvolution.
    Normalisation is :class:`~bundle.networks.slice_norm.SliceNorm2d`: statistics per slice in training (BatchNorm
    over a batch of one slice, the paper's setting), running averages in evaluation. The number of filters doubles at
    each pool: ``features`` = 64 gives the original U-Net's 64-128-256-512-1024.

    Args:
        in_channels: number of input channels.
        out_channels: number of output channels (a 1x1 convolution maps the last level to them).
        features: filters of the first level, doubled at each of the 4 pools. Defaults to 64.

    Example::

        >>> net = UNet2D(in_channels=1, out_channels=2, features=16)
        >>> net(torch.randn(4, 1, 128, 96)).shape
        torch.Size([4, 2, 128, 96])

    Note:
        Height and width must be divisible by 16; :class:`~bundle.networks.unet_convlstm.UNetConvLSTM` pads any
        size to that internally.
    """

    def __init__(self, in_channels: int, out_channels: int, features: int = 64) -> None:
        super().__init__()
        for name, value in (("in_channels", in_channels), ("out_channels", out_channels), ("features", features)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"`{name}` must be a positive integer, got {value!r}.")
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.features = features
        self.divisor = DIVISOR
        channels = [features * 2**level for level in range(NUM_POOLS + 1)]
        self.channels = channels
        self.encoder = nn.ModuleList(
            [_DoubleConv(in_channels if level == 0 else channels[level - 1], channels[level]) for level in range(5)]
        )
        self.decoder = nn.ModuleList(
            [_Up(channels[level + 1], channels[level], channels[level]) for level in reversed(range(NUM_POOLS))]
        )
        self.output = nn.Conv2d(channels[0], out_channels, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map ``(N, in_channels, H, W)`` to ``(N, out_channels, H, W)``; H and W must be divisible by 16."""
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"UNet2D expects (N, {self.in_channels}, H, W), got shape {list(x.shape)}.")
        if x.shape[2] % self.divisor != 0 or x.shape[3] % self.divisor != 0:
            raise ValueError(f"UNet2D needs H and W divisible by {self.divisor}, got {x.shape[2]}x{x.shape[3]}.")
        skips: List[torch.Tensor] = []
        for level, block in enumerate(self.encoder):
            if level > 0:
                x = F.max_pool2d(x, kernel_size=2)
            x = block(x)
            skips.append(x)
        skips.pop()
        for block in self.decoder:
            x = block(x, skips.pop())
        return self.output(x)

    def activation_floats_per_pixel(self) -> float:
        """Approximate number of values a training step saves for backward per input pixel (memory planning).

        Counts, per level, the tensors autograd keeps for two convolution + norm + ReLU blocks (block input, two
        convolution outputs, two ReLU outputs) at that level's resolution, plus the concatenated decoder inputs.
        """
        total = 0.0
        for level, channels in enumerate(self.channels):
            block_in = self.in_channels if level == 0 else self.channels[level - 1]
            total += (block_in + 4 * channels) / 4**level
        for level in range(NUM_POOLS):
            total += (self.channels[level + 1] + 5 * self.channels[level]) / 4**level
        return total + self.out_channels

    def inference_floats_per_pixel(self) -> float:
        """Approximate peak number of values alive per input pixel in a forward pass without autograd.

        At the first level of the decoder the skip, the upsampled input, their concatenation and the two
        convolution/norm outputs are alive at once (about ``8 * features``); deeper levels have more channels on
        4 times fewer pixels per level, and the skips of every level stay alive until the decoder uses them.
        """
        skips = sum(channels / 4**level for level, channels in enumerate(self.channels[:-1]))
        return 8.0 * self.channels[0] + skips + self.in_channels + self.out_channels
