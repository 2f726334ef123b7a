# SPDX-License-Identifier: Apache-2.0
"""Reading a weights file: the one loader that training (stage-1 initialisation) and inference (``bundle.segment``) use.

It sits outside ``bundle.workflows`` so that the segmenter does not import the training handlers (and ignite) to
load weights.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import torch

__all__ = ["load_state_dict_file"]


def load_state_dict_file(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a weights file safely (``weights_only=True``): a plain state_dict or a ``{"model": state_dict}``.

    Args:
        path: the ``.pt`` file.

    Returns:
        The state_dict (tensor values).

    Raises:
        ValueError: if the file is missing, unreadable, or holds no state_dict.

    Example:
        >>> state = load_state_dict_file("models/model.pt")  # doctest: +SKIP
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"weights file {path} does not exist.")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unpickling failure means the same thing to the user
        raise ValueError(f"weights file {path} cannot be read as a PyTorch state_dict: {err}") from err
    if isinstance(obj, Mapping) and "model" in obj and isinstance(obj["model"], Mapping):
        obj = obj["model"]
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ValueError(f"weights file {path} does not hold a state_dict of tensors.")
    return dict(obj)
