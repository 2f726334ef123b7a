# SPDX-License-Identifier: Apache-2.0
"""nnU-Net trainer of the C-LSTM: the stock ``nnUNetTrainer`` with deep supervision off and no ``torch.compile``.

This folder is what nnU-Net's ``nnUNet_extTrainer`` variable points at: ``nnUNetv2_train`` and ``nnUNetv2_predict``
import every module in it as a top-level module while looking for the ``-tr`` name, so it holds this module only.
"""

from __future__ import annotations

import torch
from torch import nn

try:  # the plugin's one module-level nnunetv2 import; the bundle itself never imports this package
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
    from nnunetv2.utilities.get_network_from_plans import get_network_from_plans
    from nnunetv2.utilities.plans_handling.plans_handler import ConfigurationManager, PlansManager
except ImportError as error:
    raise ImportError(
        "bundle.nnunet needs nnunetv2: pip install -c requirements.txt -r requirements-nnunet.txt (docs/nnunet.md)"
    ) from error

__all__ = ["nnUNetTrainerCLSTM"]


class nnUNetTrainerCLSTM(nnUNetTrainer):  # noqa: N801 (nnU-Net's trainer naming)
    """nnU-Net's default training (SGD, poly LR, Dice + CE, its augmentation) of the plans' ``NNUNetConvLSTM``.

    Differences from ``nnUNetTrainer``: no deep supervision (the C-LSTM has one output, at full resolution; the loss
    is then plain Dice + CE and the data loader makes no downsampled targets), and no ``torch.compile`` of the whole
    network (the network checkpoints its slice segments itself). Everything else, including the network, comes from
    the plans (:mod:`bundle.nnunet.plans`).

    Args:
        plans: the plans dictionary.
        configuration: configuration name in the plans (e.g. ``3d_clstm``).
        fold: cross-validation fold.
        dataset_json: the dataset's ``dataset.json``.
        device: training device. Defaults to CUDA.
    """

    def __init__(
        self,
        plans: dict,
        configuration: str,
        fold: int,
        dataset_json: dict,
        device: torch.device = torch.device("cuda"),  # noqa: B008 (nnU-Net's signature, read by its code)
    ) -> None:
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.enable_deep_supervision = False

    @staticmethod
    def build_network_architecture(
        plans_manager: PlansManager,
        configuration_manager: ConfigurationManager,
        num_input_channels: int,
        num_output_channels: int,
        enable_deep_supervision: bool = True,
    ) -> nn.Module:
        """The plans' network, always without deep supervision (nnU-Net's signature; also used by its predictor)."""
        return get_network_from_plans(
            configuration_manager.network_arch_class_name,
            configuration_manager.network_arch_init_kwargs,
            configuration_manager.network_arch_init_kwargs_req_import,
            num_input_channels,
            num_output_channels,
            allow_init=True,
            deep_supervision=False,
        )

    def set_deep_supervision_enabled(self, enabled: bool) -> None:
        """No-op: the network has no ``decoder.deep_supervision`` switch (nnU-Net toggles it around validation)."""

    def _do_i_compile(self) -> bool:
        return False
