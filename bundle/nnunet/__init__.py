# SPDX-License-Identifier: Apache-2.0
"""nnU-Net v2 plugin: plan, train and predict :class:`~bundle.networks.UNetConvLSTM` with nnU-Net's own commands.

This package imports ``nnunetv2`` (see ``requirements-nnunet.txt`` and ``docs/nnunet.md``); nothing else in
``bundle/`` imports it. How nnU-Net finds each piece, without editing its installed files:

- the network: :mod:`bundle.nnunet.plans` adds a configuration (default ``3d_clstm``) to a copy of the plans whose
  ``architecture.network_class_name`` is ``bundle.nnunet.network.NNUNetConvLSTM``; nnU-Net builds it with
  ``pydoc.locate``, so the repository root must be on ``PYTHONPATH``;
- the trainer: ``nnUNetTrainerCLSTM`` lives alone in ``bundle/nnunet/trainers/``, the folder given to nnU-Net's
  ``nnUNet_extTrainer`` variable, which ``nnUNetv2_train -tr`` and ``nnUNetv2_predict -tr`` search after nnU-Net's
  own package;
- the bundle's weights: :mod:`bundle.nnunet.convert` writes ``models/model.pt`` from a trained fold.
"""
