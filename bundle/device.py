# SPDX-License-Identifier: Apache-2.0
"""One place that turns a user's ``device`` argument into a :class:`torch.device`.

Every command-line tool and Python API of the bundle takes ``device="auto"`` and resolves it here, so the accepted
forms and the error messages are the same everywhere.
"""

from __future__ import annotations

import logging
import re

import torch

__all__ = ["ACCEPTED_DEVICE_FORMS", "resolve_device"]

logger = logging.getLogger(__name__)

ACCEPTED_DEVICE_FORMS = '"auto", "cpu", "cuda" or "cuda:N" (N a GPU index)'
_CUDA_PATTERN = re.compile(r"^cuda(?::(\d+))?$")


def _check_cuda(index: int | None, requested: str) -> torch.device:
    if not torch.cuda.is_available():
        raise ValueError(
            f"device={requested!r} was requested but no CUDA GPU is available to PyTorch "
            f"(torch {torch.__version__}, CUDA build {torch.version.cuda}); use device='cpu' or device='auto'."
        )
    count = torch.cuda.device_count()
    if index is not None and index >= count:
        raise ValueError(
            f"device={requested!r} names GPU {index}, but only {count} CUDA device(s) are visible "
            f"(indices 0..{count - 1})."
        )
    return torch.device("cuda", index) if index is not None else torch.device("cuda")


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """Resolve a device specification to a :class:`torch.device`, checking that it exists.

    Args:
        device: ``"auto"`` (a CUDA GPU if PyTorch sees one, else the CPU, which is logged), ``"cpu"``, ``"cuda"``
            (the current CUDA device), ``"cuda:N"`` or a :class:`torch.device` of type cpu or cuda. Case and
            surrounding spaces are ignored. Defaults to ``"auto"``.

    Returns:
        The resolved device.

    Raises:
        ValueError: if ``device`` is not one of the accepted forms, or names a CUDA device that is not available.

    Example:
        >>> resolve_device("cpu")
        device(type='cpu')
    """
    if isinstance(device, torch.device):
        if device.type == "cpu":
            return device
        if device.type == "cuda":
            return _check_cuda(device.index, str(device))
        raise ValueError(f"device={str(device)!r} is not supported; accepted forms: {ACCEPTED_DEVICE_FORMS}.")
    if not isinstance(device, str):
        raise ValueError(f"device={device!r} is not supported; accepted forms: {ACCEPTED_DEVICE_FORMS}.")
    spec = device.strip().lower()
    if spec == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        logger.info("device='auto': no CUDA GPU is available to PyTorch, running on the CPU")
        return torch.device("cpu")
    if spec == "cpu":
        return torch.device("cpu")
    match = _CUDA_PATTERN.match(spec)
    if match is None:
        raise ValueError(f"device={device!r} is not supported; accepted forms: {ACCEPTED_DEVICE_FORMS}.")
    index = int(match.group(1)) if match.group(1) is not None else None
    return _check_cuda(index, device)
