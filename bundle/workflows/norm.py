# SPDX-License-Identifier: Apache-2.0
"""Evaluation with per-slice normalisation statistics for networks built with ``SliceNorm2d`` defaults.

:class:`~bundle.networks.slice_norm.SliceNorm2d` normalises each slice with its own statistics in training (the
paper's BatchNorm over one slice) and with running averages in evaluation. Head-CT slices differ a lot (skull base,
vertex, air above the head), so one running mean and variance fit no slice well: on the phantom test set the lite
model's Dice is 0.965 with running averages and 0.973 when every slice is normalised with its own statistics, as in
training (measured by ``bundle.benchmarks.convergence``). :func:`use_slice_statistics` swaps every ``SliceNorm2d`` of
a network for :class:`SliceStatisticsNorm2d`, which behaves identically in training and uses the slice's own
statistics in evaluation. The state dict (keys, running statistics) is unchanged and the network stays scriptable,
so weights move freely between the two variants.
"""

from __future__ import annotations

import torch

from bundle.networks.slice_norm import SliceNorm2d

__all__ = ["SliceStatisticsNorm2d", "use_slice_statistics"]


class SliceStatisticsNorm2d(SliceNorm2d):
    """:class:`SliceNorm2d` that normalises with each slice's own statistics in evaluation too.

    Training is exactly ``SliceNorm2d``'s (including deferred and frozen running statistics, which are still kept,
    so the weights stay valid for ``SliceNorm2d``). In evaluation the running statistics are not used.

    Args:
        num_features: number of channels.
        eps: added to the variance for numerical stability. Defaults to 1e-5.
        momentum: weight of a new observation in the running averages. Defaults to 0.1.

    Example::

        >>> norm = SliceStatisticsNorm2d(8).eval()
        >>> y = norm(torch.randn(4, 8, 32, 32))  # each of the 4 slices normalised with its own mean and variance
    """

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float = 0.1) -> None:
        super().__init__(num_features, eps=eps, momentum=momentum, eval_slice_statistics=True)


def use_slice_statistics(network: torch.nn.Module, enabled: bool = True) -> torch.nn.Module:
    """Replace every ``SliceNorm2d`` of ``network`` (in place) by a :class:`SliceStatisticsNorm2d` with its state.

    Args:
        network: e.g. a :class:`~bundle.networks.UNetConvLSTM` or :class:`~bundle.networks.UNet2D`.
        enabled: False returns ``network`` unchanged (running statistics in evaluation). Defaults to True.

    Returns:
        ``network`` itself.

    Raises:
        ValueError: if ``network`` is not a ``torch.nn.Module``.

    Example:
        >>> from bundle.networks import UNetConvLSTM
        >>> net = use_slice_statistics(UNetConvLSTM(features=8, hidden_channels=8))
    """
    if not isinstance(network, torch.nn.Module):
        raise ValueError(f"network must be a torch.nn.Module, got {type(network).__name__}.")
    if not enabled:
        return network
    for parent in list(network.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is SliceNorm2d:
                swapped = SliceStatisticsNorm2d(child.num_features, eps=child.eps, momentum=child.momentum)
                swapped.load_state_dict(child.state_dict())
                swapped.train(child.training)
                swapped.to(device=child.weight.device, dtype=child.weight.dtype)
                setattr(parent, name, swapped)
    return network
