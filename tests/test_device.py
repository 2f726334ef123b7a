# SPDX-License-Identifier: Apache-2.0
"""Tests for bundle.device.resolve_device."""

from __future__ import annotations

import logging

import pytest
import torch

from bundle.device import resolve_device


@pytest.mark.parametrize("spec", ["cpu", "CPU", " cpu ", torch.device("cpu")])
def test_cpu_forms(spec):
    assert resolve_device(spec) == torch.device("cpu")


@pytest.mark.parametrize("spec", ["gpu", "cuda:", "cuda:-1", "cuda:x", "mps", "", "cuda:0:1", 0, None, 1.5])
def test_bad_forms_raise_naming_value_and_forms(spec):
    with pytest.raises(ValueError) as info:
        resolve_device(spec)
    message = str(info.value)
    assert repr(spec) in message
    assert "cuda:N" in message and "auto" in message


def _no_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)


def _two_gpus(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)


def test_auto_falls_back_to_cpu_and_logs(monkeypatch, caplog):
    _no_cuda(monkeypatch)
    with caplog.at_level(logging.INFO, logger="bundle.device"):
        assert resolve_device() == torch.device("cpu")
    assert "CPU" in caplog.text


@pytest.mark.parametrize("spec", ["cuda", "cuda:0", "CUDA:1", torch.device("cuda", 0)])
def test_cuda_unavailable_raises_clear_message(monkeypatch, spec):
    _no_cuda(monkeypatch)
    with pytest.raises(ValueError, match="no CUDA GPU is available"):
        resolve_device(spec)


@pytest.mark.parametrize(
    "spec, expected",
    [("auto", torch.device("cuda")), ("cuda", torch.device("cuda")), ("cuda:1", torch.device("cuda", 1))],
)
def test_cuda_forms_with_gpus(monkeypatch, spec, expected):
    _two_gpus(monkeypatch)
    assert resolve_device(spec) == expected


def test_cuda_index_out_of_range(monkeypatch):
    _two_gpus(monkeypatch)
    with pytest.raises(ValueError, match=r"only 2 CUDA device\(s\)"):
        resolve_device("cuda:2")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_real_gpu():
    device = resolve_device("auto")
    assert device.type == "cuda"
    assert torch.zeros(1, device=resolve_device("cuda:0")).device.type == "cuda"
