# SPDX-License-Identifier: Apache-2.0
"""Per-slice normalisation with running statistics whose update can be deferred to the end of a volume.

In the paper every LSTM step runs the U-Net on one axial slice, so BatchNorm's training statistics are those of one
slice. :class:`SliceNorm2d` keeps exactly that (statistics per sample, i.e. per slice) when the U-Net runs batched
over many slices, and keeps running averages for evaluation like BatchNorm.

Two controls make the running statistics independent of how a volume is cut into segments and of checkpointing:

- ``defer_running_stats``: instead of one momentum update per call, per-slice statistics are summed and applied as
  one update (with the mean over every slice seen) by :meth:`SliceNorm2d.commit_running_stats`.
- ``freeze_running_stats``: statistics are not touched at all (used while a checkpointed segment is recomputed
  during the backward pass, which would otherwise count every slice twice).
"""

# No `from __future__ import annotations`: TorchScript needs real annotations on these modules.

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["SliceNorm2d", "use_slice_statistics"]


class SliceNorm2d(nn.InstanceNorm2d):
    """Normalisation over each sample's (H, W) plane with learnable affine and BatchNorm-like running statistics.

    In training each 2D sample is normalised with its own per-channel mean and variance, which equals
    ``BatchNorm2d`` applied to a batch of one slice (the paper's setting); in evaluation the running averages are
    used. The state dict has the keys of ``nn.InstanceNorm2d(affine=True, track_running_stats=True)``.

    Args:
        num_features: number of channels.
        eps: added to the variance for numerical stability. Defaults to 1e-5.
        momentum: weight of a new observation in the running averages. Defaults to 0.1.
        eval_slice_statistics: in evaluation too, normalise each slice with its own statistics (as in training)
            instead of the running averages. Head-CT slices differ a lot (skull base, mid-brain, vertex), so one
            running mean fits none of them well. Running statistics are still kept. Defaults to False.

    Example::

        >>> norm = SliceNorm2d(32)
        >>> y = norm(torch.randn(8, 32, 64, 64))  # 8 slices, each normalised on its own
    """

    def __init__(
        self, num_features: int, eps: float = 1e-5, momentum: float = 0.1, eval_slice_statistics: bool = False
    ) -> None:
        super().__init__(num_features, eps=eps, momentum=momentum, affine=True, track_running_stats=True)
        self.eval_slice_statistics = eval_slice_statistics
        self.defer_running_stats = False
        self.freeze_running_stats = False
        self.register_buffer("_mean_sum", torch.zeros(num_features), persistent=False)
        self.register_buffer("_var_sum", torch.zeros(num_features), persistent=False)
        self.register_buffer("_num_slices", torch.zeros((), dtype=torch.long), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4:
            raise ValueError(f"SliceNorm2d expects a (N, C, H, W) input, got shape {list(x.shape)}.")
        if not self.training and self.eval_slice_statistics:
            return F.instance_norm(x, None, None, self.weight, self.bias, True, 0.0, self.eps)
        if not self.training:
            return F.instance_norm(x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps)
        update_now = not self.defer_running_stats and not self.freeze_running_stats
        if self.defer_running_stats and not self.freeze_running_stats:
            with torch.no_grad():
                var, mean = torch.var_mean(x.detach().to(self._mean_sum.dtype), dim=(2, 3), unbiased=True)
                self._mean_sum.add_(mean.sum(0).to(self._mean_sum.dtype))
                self._var_sum.add_(var.sum(0).to(self._var_sum.dtype))
                self._num_slices.add_(x.shape[0])
        momentum = self.momentum if self.momentum is not None else 0.0
        return F.instance_norm(
            x,
            self.running_mean if update_now else None,
            self.running_var if update_now else None,
            self.weight,
            self.bias,
            True,
            momentum,
            self.eps,
        )

    @torch.jit.unused
    def commit_running_stats(self) -> None:
        """Apply the statistics summed while ``defer_running_stats`` was set as one momentum update, then reset."""
        with torch.no_grad():
            if self.running_mean is not None and self.running_var is not None:
                # Tensor arithmetic rather than `if count > 0` keeps this free of a host-device synchronisation.
                observed = (self._num_slices > 0).to(self._mean_sum.dtype)
                weight = observed * (self.momentum if self.momentum is not None else 0.0)
                count = self._num_slices.clamp_min(1).to(self._mean_sum.dtype)
                self.running_mean.mul_(1 - weight).add_(self._mean_sum / count * weight)
                self.running_var.mul_(1 - weight).add_(self._var_sum / count * weight)
                if self.num_batches_tracked is not None:
                    self.num_batches_tracked.add_((self._num_slices > 0).long())
        self.discard_running_stats()

    @torch.jit.unused
    def discard_running_stats(self) -> None:
        """Forget the statistics summed while ``defer_running_stats`` was set (e.g. after a failed forward)."""
        with torch.no_grad():
            self._mean_sum.zero_()
            self._var_sum.zero_()
            self._num_slices.zero_()


def use_slice_statistics(network: torch.nn.Module, enabled: bool = True) -> torch.nn.Module:
    """Set ``eval_slice_statistics`` on every :class:`SliceNorm2d` of ``network`` (in place).

    Head-CT slices differ a lot (skull base, vertex, air above the head), so one running mean and variance fit no
    slice well: on the phantom test set the lite model's Dice is 0.965 with running averages and 0.973 when every
    slice is normalised with its own statistics in evaluation too, as in training (measured by
    ``scripts.benchmarks.convergence``). Training, the state dict (keys, running statistics) and scriptability are
    unchanged, so weights move freely between the two settings.

    Args:
        network: e.g. a :class:`~bundle.networks.UNetConvLSTM` or :class:`~bundle.networks.UNet2D`.
        enabled: the value to set: True normalises each slice with its own statistics in evaluation, False with
            the running averages. Defaults to True.

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
    for module in network.modules():
        if isinstance(module, SliceNorm2d):
            module.eval_slice_statistics = bool(enabled)
    return network
