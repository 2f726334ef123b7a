# SPDX-License-Identifier: Apache-2.0
"""The bundle's network, defined once: every config's ``network_def`` is :func:`cranial_cavity_network`.

``configs/inference.json`` and ``configs/train.json`` must each stand alone (MONAI Label parses each of them on its
own, and the model zoo's ``verify_net_in_out``/``ckpt_export`` read ``inference.json`` alone), and MONAI's
``%file.json#id`` macros resolve file paths against the working directory rather than ``bundle_root``, so one
config cannot include another's network. Both therefore name this function, whose defaults are the settings of the
shipped ``lite`` weights; presets change them with flattened ids (``"network_def#features": 64``), which apply to
every config, and ``configs/train_stage1.json`` sets ``"network_def#stage": 1``.
"""

from __future__ import annotations

from typing import Union

import torch

from bundle.networks.slice_norm import use_slice_statistics
from bundle.networks.unet2d import UNet2D
from bundle.networks.unet_convlstm import UNetConvLSTM

__all__ = ["cranial_cavity_network"]


def cranial_cavity_network(
    stage: int = 2,
    in_channels: int = 1,
    out_channels: int = 2,
    features: int = 8,
    hidden_channels: int = 8,
    kernel_size: int = 3,
    bidirectional: bool = False,
    segment_length: Union[int, str] = "auto",
    checkpoint: bool = False,
    offload_states: bool = False,
    slice_statistics: bool = True,
) -> torch.nn.Module:
    """The cranial-cavity network of the bundle's configs (stage 2: U-Net-in-ConvLSTM; stage 1: its 2D U-Net).

    The defaults are the ``lite`` preset, which ``models/model.pt`` belongs to.

    Args:
        stage: 2 builds the :class:`~bundle.networks.UNetConvLSTM` that the bundle ships and infers with; 1 builds
            the :class:`~bundle.networks.UNet2D` that stage 1 trains on single slices (the recurrent settings
            ``hidden_channels`` to ``offload_states`` are then unused). Defaults to 2.
        in_channels: input channels (one CT channel). Defaults to 1.
        out_channels: output channels (background, cranial cavity). Defaults to 2.
        features: U-Net features at the first level. Defaults to 8.
        hidden_channels: ConvLSTM hidden channels per direction. Defaults to 8.
        kernel_size: ConvLSTM kernel size. Defaults to 3.
        bidirectional: run the ConvLSTM in both directions along z. Defaults to False.
        segment_length: slices per checkpointed segment, or ``"auto"``. Defaults to ``"auto"``.
        checkpoint: segment checkpointing in training (memory for compute). Defaults to False.
        offload_states: keep segment boundary states in host memory. Defaults to False.
        slice_statistics: normalise every slice with its own statistics in evaluation too
            (:func:`~bundle.networks.slice_norm.use_slice_statistics`). Defaults to True.

    Returns:
        The network (weights at their initialisation).

    Raises:
        ValueError: if ``stage`` is not 1 or 2 (the networks check their own arguments).

    Example::

        >>> net = cranial_cavity_network()  # the lite network of models/model.pt
        >>> unet = cranial_cavity_network(stage=1, features=64)  # stage 1 of the paper preset
    """
    if stage not in (1, 2) or isinstance(stage, bool):
        raise ValueError(f"`stage` must be 1 (2D U-Net) or 2 (U-Net-in-ConvLSTM), got {stage!r}.")
    if stage == 1:
        network: torch.nn.Module = UNet2D(in_channels, out_channels, features)
    else:
        network = UNetConvLSTM(
            in_channels=in_channels,
            out_channels=out_channels,
            features=features,
            hidden_channels=hidden_channels,
            kernel_size=kernel_size,
            bidirectional=bidirectional,
            segment_length=segment_length,
            checkpoint=checkpoint,
            offload_states=offload_states,
        )
    return use_slice_statistics(network, slice_statistics)
