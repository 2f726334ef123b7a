# SPDX-License-Identifier: Apache-2.0
"""Full-volume cranial cavity segmentation in non-contrast head CT with a U-Net-in-ConvLSTM (MONAI bundle code)."""

__version__ = "0.2.0"
