# SPDX-License-Identifier: Apache-2.0
"""Networks: the paper's 2D U-Net, the ConvLSTM recurrence and the segment-checkpointed U-Net-in-ConvLSTM.

:func:`cranial_cavity_network` is the one definition of the bundle's network that every config instantiates.
"""

from __future__ import annotations

from bundle.networks.convlstm import ConvLSTMCell, ConvLSTMDirection
from bundle.networks.factory import cranial_cavity_network
from bundle.networks.gate_init import init_gates_from_slice_logits
from bundle.networks.slice_norm import SliceNorm2d, use_slice_statistics
from bundle.networks.unet2d import UNet2D
from bundle.networks.unet_convlstm import UNetConvLSTM

__all__ = [
    "ConvLSTMCell",
    "ConvLSTMDirection",
    "SliceNorm2d",
    "UNet2D",
    "UNetConvLSTM",
    "cranial_cavity_network",
    "init_gates_from_slice_logits",
    "use_slice_statistics",
]
