# SPDX-License-Identifier: Apache-2.0
"""Networks: the paper's 2D U-Net, the ConvLSTM recurrence and the segment-checkpointed U-Net-in-ConvLSTM."""

from __future__ import annotations

from bundle.networks.convlstm import ConvLSTMCell, ConvLSTMDirection
from bundle.networks.slice_norm import SliceNorm2d, use_slice_statistics
from bundle.networks.unet2d import UNet2D
from bundle.networks.unet_convlstm import UNetConvLSTM

__all__ = ["ConvLSTMCell", "ConvLSTMDirection", "SliceNorm2d", "UNet2D", "UNetConvLSTM", "use_slice_statistics"]
