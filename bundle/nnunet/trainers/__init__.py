# SPDX-License-Identifier: Apache-2.0
"""The folder for nnU-Net's ``nnUNet_extTrainer``: trainer modules only (see ``nnunet_trainer_clstm``)."""
