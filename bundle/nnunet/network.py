# SPDX-License-Identifier: Apache-2.0
"""UNetConvLSTM with the constructor and tensor layout that nnU-Net's plans mechanism expects."""

from __future__ import annotations

from typing import Any, Optional

import torch

from bundle.networks import UNetConvLSTM
from bundle.networks.slice_norm import use_slice_statistics

__all__ = ["NNUNetConvLSTM"]


class NNUNetConvLSTM(UNetConvLSTM):
    """:class:`~bundle.networks.UNetConvLSTM` as an nnU-Net network: built by ``get_network_from_plans``.

    nnU-Net calls ``cls(input_channels=..., num_classes=..., **arch_kwargs, deep_supervision=...)`` and feeds
    ``(B, C, d0, d1, d2)`` patches in its transposed axis order. The network moves ``slice_axis`` (the axial axis, the
    recurrence axis) last and the other two in reverse order, which gives the bundle's ``(B, C, H, W, D)`` layout for
    NIfTI (nnU-Net's NIfTI readers give ``(z, y, x)`` arrays, so ``H, W, D = x, y, z``),
    and moves the logits back. The state dict is the plain ``UNetConvLSTM``'s, so trained weights load into the
    bundle's network unchanged (:mod:`bundle.nnunet.convert`).

    Args:
        input_channels: image channels (nnU-Net's name for ``in_channels``).
        num_classes: segmentation heads (nnU-Net's name for ``out_channels``).
        slice_axis: spatial axis (0, 1 or 2) of nnU-Net's patches that runs across slices. Defaults to 0.
        slice_statistics: normalise every slice with its own statistics in evaluation too, as the bundle's
            ``configs/*.json`` do (``bundle.workflows.use_slice_statistics``); False: running averages. Defaults to
            True (a short nnU-Net run leaves running averages that fit no slice).
        deep_supervision: nnU-Net's flag; only False or None (no auxiliary outputs; train with
            ``nnUNetTrainerCLSTM``, which turns deep supervision off).
        kwargs: the remaining :class:`~bundle.networks.UNetConvLSTM` arguments (``features``, ``hidden_channels``,
            ``checkpoint``, ``segment_length``, ...).

    Raises:
        ValueError: for ``deep_supervision=True`` or a ``slice_axis`` outside 0-2.

    Example:
        >>> net = NNUNetConvLSTM(1, 2, features=4, hidden_channels=4)
        >>> net(torch.randn(1, 1, 5, 32, 32)).shape
        torch.Size([1, 2, 5, 32, 32])
    """

    def __init__(
        self,
        input_channels: int,
        num_classes: int,
        slice_axis: int = 0,
        slice_statistics: bool = True,
        deep_supervision: Optional[bool] = None,
        **kwargs: Any,
    ) -> None:
        if deep_supervision:
            raise ValueError(
                "NNUNetConvLSTM has no deep-supervision outputs; train it with nnUNetTrainerCLSTM "
                "(bundle/nnunet/trainers), which disables nnU-Net's deep supervision."
            )
        if slice_axis not in (0, 1, 2):
            raise ValueError(f"slice_axis must be 0, 1 or 2, got {slice_axis}.")
        super().__init__(in_channels=input_channels, out_channels=num_classes, **kwargs)
        use_slice_statistics(self, slice_statistics)
        self.slice_axis = slice_axis
        in_plane = [a + 2 for a in (0, 1, 2) if a != slice_axis]
        self._to_bundle = (0, 1, in_plane[1], in_plane[0], slice_axis + 2)
        self._from_bundle = tuple(self._to_bundle.index(a) for a in range(5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of nnU-Net's ``(B, C, d0, d1, d2)`` patch, in the same layout."""
        return super().forward(x.permute(self._to_bundle)).permute(self._from_bundle)
