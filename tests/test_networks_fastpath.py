# SPDX-License-Identifier: Apache-2.0
"""The network's fast path against float64 reference implementations: one U-Net pass for both directions, batched
evaluation, the fused cell, bf16 autocast, offloaded states, and the shipped weights."""

from __future__ import annotations

import copy
import math
from pathlib import Path
from unittest import mock

import pytest
import torch
import torch.nn.functional as F
from monai.data import MetaTensor

from bundle.networks import UNetConvLSTM
from bundle.networks import unet_convlstm as unet_convlstm_module
from bundle.networks.convlstm import ConvLSTMCell

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = {"in_channels": 1, "out_channels": 2, "features": 4, "hidden_channels": 3}
LITE = {"in_channels": 1, "out_channels": 2, "features": 8, "hidden_channels": 8}
SHIPPED_WEIGHTS = Path(__file__).resolve().parents[1] / "models" / "model.pt"


def reference_forward(net: UNetConvLSTM, x: torch.Tensor) -> torch.Tensor:
    """Eq. (1) written out: the U-Net on one slice at a time, then each direction's recurrence step by step.

    U-Net channels ``[4H d, 4H (d + 1))`` are direction ``d``'s gates (input, forget, output, candidate); the logits
    are the sum of each direction's 1x1 head.
    """
    _, _, height, width, num_slices = x.shape
    hidden = net.hidden_channels
    pad_h = max((-height) % 16, 32 - height)
    pad_w = max((-width) % 16, 32 - width)
    unet_out = [
        net.unet(F.pad(x[..., z], [0, pad_w, 0, pad_h], mode="replicate"))[:, :, :height, :width]
        for z in range(num_slices)
    ]
    logits = torch.zeros(())
    for d, direction in enumerate(net.directions):
        conv = direction.cell.hidden_conv
        h = c = x.new_zeros(x.shape[0], hidden, height, width)
        outputs: list[torch.Tensor | None] = [None] * num_slices
        for z in reversed(range(num_slices)) if d == 1 else range(num_slices):
            gates = unet_out[z][:, 4 * hidden * d : 4 * hidden * (d + 1)]
            gates = gates + F.conv2d(h, conv.weight, conv.bias, padding=conv.padding)
            i, f, o, g = gates.split(hidden, dim=1)
            c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
            h = torch.sigmoid(o) * torch.tanh(c)
            outputs[z] = F.conv2d(h, direction.head.weight, direction.head.bias)
        logits = logits + torch.stack(outputs, dim=-1)
    return logits


def _loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return F.binary_cross_entropy_with_logits(logits, target)


def _step(net: torch.nn.Module, x: torch.Tensor, target: torch.Tensor, forward=None) -> dict[str, torch.Tensor]:
    """Outputs and gradients (input and parameters) of one forward/backward."""
    x = x.clone().requires_grad_(True)
    net.zero_grad(set_to_none=True)
    logits = (forward or net)(x)
    _loss(logits, target).backward()
    result = {"logits": logits.detach(), "input": x.grad}
    result.update({n: p.grad for n, p in net.named_parameters()})
    return result


def _assert_close(actual: dict, expected: dict, rel: float) -> None:
    assert actual.keys() == expected.keys()
    for key, value in expected.items():
        error = (actual[key] - value).abs().max() / value.abs().max().clamp_min(1e-30)
        assert error <= rel, f"{key}: relative difference {error:.3g}"


@pytest.fixture(scope="module")
def volume():
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(2, 1, 18, 21, 9, dtype=torch.float64, generator=generator)
    target = (torch.rand(2, 2, 18, 21, 9, generator=generator) > 0.5).double()
    return x, target


def _net(seed: int = 0, **kwargs) -> UNetConvLSTM:
    torch.manual_seed(seed)
    net = UNetConvLSTM(**{**TINY, **kwargs}).double()
    with torch.no_grad():  # gates away from 0 so that every term of the cell matters
        for direction in net.directions:
            direction.cell.hidden_conv.bias.uniform_(-1, 1)
    return net


@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("checkpoint, segment_length", [(False, "auto"), (True, 1), (True, 4), (True, 0)])
def test_training_equals_float64_reference(volume, bidirectional, checkpoint, segment_length):
    x, target = volume
    net = _net(bidirectional=bidirectional, checkpoint=checkpoint, segment_length=segment_length).train()
    reference_net = copy.deepcopy(net)
    actual = _step(net, x, target)
    expected = _step(reference_net, x, target, forward=lambda v: reference_forward(reference_net, v))
    _assert_close(actual, expected, rel=1e-10)


@pytest.mark.parametrize("bidirectional", [False, True])
def test_evaluation_equals_float64_reference(volume, bidirectional):
    x, _ = volume
    net = _net(bidirectional=bidirectional).eval()
    with torch.no_grad():
        torch.testing.assert_close(net(x), reference_forward(net, x), rtol=1e-10, atol=1e-12)


def _count_unet_slices(net: UNetConvLSTM) -> list[int]:
    """Batch sizes of every U-Net call, collected by a forward hook."""
    calls: list[int] = []
    net.unet.register_forward_hook(lambda module, args, output: calls.append(args[0].shape[0]))
    return calls


@pytest.mark.parametrize("bidirectional", [False, True])
def test_one_unet_pass_per_slice_feeds_both_directions(volume, bidirectional):
    x, target = volume
    num_slices = x.shape[0] * x.shape[-1]
    net = _net(bidirectional=bidirectional, checkpoint=True, segment_length=2).train()
    calls = _count_unet_slices(net)
    net.eval()
    with torch.no_grad():
        net(x)
    assert sum(calls) == num_slices
    calls.clear()
    net.train()
    _loss(net(x), target).backward()
    assert sum(calls) == 2 * num_slices  # the forward pass and one recomputation per checkpointed segment


@pytest.mark.parametrize("checkpoint", [True, False])
def test_evaluation_batches_the_unet_over_slices(checkpoint):
    num_slices = 32
    net = UNetConvLSTM(**LITE, checkpoint=checkpoint).eval()  # segment_length "auto" would be 1 here
    assert net.resolve_segment_length(num_slices) < 8
    calls = _count_unet_slices(net)
    x = torch.randn(1, 1, 96, 80, num_slices)
    with torch.no_grad():
        expected = net(x)
    assert len(calls) <= math.ceil(num_slices / 8)
    # A smaller budget cuts the volume into more calls and changes nothing.
    per_slice = 4 * (net.unet.inference_floats_per_pixel() + 2 * 8) * 96 * 80
    net.eval_batch_bytes = net._fixed_eval_batch_bytes = int(5 * per_slice)
    assert net.slices_per_call(96, 80, num_slices, x.device) == 5
    calls.clear()
    with torch.no_grad():
        torch.testing.assert_close(net(x), expected, rtol=1e-5, atol=1e-5)
    assert calls == [5] * 6 + [2]


@pytest.mark.parametrize("fusion", ["script", "none"])
def test_cell_fusions_agree(fusion):
    torch.manual_seed(0)
    cell = ConvLSTMCell(hidden_channels=3, fusion=fusion).double()
    reference = ConvLSTMCell(hidden_channels=3, fusion="none").double()
    reference.load_state_dict(cell.state_dict())
    u, h, c = (torch.randn(2, n, 7, 9, dtype=torch.float64, requires_grad=True) for n in (12, 3, 3))
    outputs = cell(u, h, c)
    expected = reference(u, h, c)
    for actual, wanted in zip(outputs, expected, strict=True):
        torch.testing.assert_close(actual, wanted, rtol=1e-12, atol=1e-12)
    grads = torch.autograd.grad(sum(o.sum() for o in outputs), (u, h, c))
    wanted = torch.autograd.grad(sum(o.sum() for o in expected), (u, h, c))
    for actual, want in zip(grads, wanted, strict=True):
        torch.testing.assert_close(actual, want, rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="fusion"):
        ConvLSTMCell(3, fusion="fast")


@pytest.mark.filterwarnings("ignore:`torch.jit:DeprecationWarning")
def test_scripted_network_with_fused_cell_matches_eager():
    net = _net(bidirectional=True, cell_fusion="script").float().eval()
    scripted = torch.jit.script(net)
    x = torch.randn(1, 1, 20, 24, 6)
    with torch.no_grad():
        torch.testing.assert_close(scripted(x), net(x))


def test_channels_last_changes_nothing(volume):
    x, target = volume
    expected = _step(_net(bidirectional=True).train(), x, target)
    _assert_close(_step(_net(bidirectional=True, channels_last=True).train(), x, target), expected, rel=1e-10)


@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("segment_length", [1, 3])
def test_offloaded_states_change_nothing_on_cpu(volume, bidirectional, segment_length):
    x, target = volume
    kwargs = {"bidirectional": bidirectional, "checkpoint": True, "segment_length": segment_length}
    expected = _step(_net(**kwargs).train(), x, target)
    real_offload = unet_convlstm_module._to_pinned_host
    with mock.patch.object(unet_convlstm_module, "_to_pinned_host", side_effect=real_offload) as offload:
        actual = _step(_net(**kwargs, offload_states=True).train(), x, target)
    _assert_close(actual, expected, rel=1e-10)
    segments = math.ceil(x.shape[-1] / segment_length)
    # h and c entering every segment of every direction, plus the kept backward gates of every segment
    assert offload.call_count == (2 * segments) * (2 if bidirectional else 1) + (segments if bidirectional else 0)


@pytest.mark.parametrize("training", [False, True])
def test_bf16_autocast_on_cpu_is_close_to_float32(training):
    torch.manual_seed(0)
    net = UNetConvLSTM(**LITE, bidirectional=True, segment_length=2).train(training)
    x = torch.randn(1, 1, 40, 36, 6)
    with torch.set_grad_enabled(training):
        expected = net(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            actual = net(x)
    assert actual.dtype == torch.bfloat16  # the head's convolution autocasts; the cell states stay float32
    # Relative L2 error: about 0.003 in evaluation, 0.03 in training, where the U-Net's 3x3-pixel bottom level
    # is normalised with bf16 statistics of 9 values.
    error = (actual.float() - expected).norm() / expected.norm()
    assert error < 0.05, f"bf16 relative error {error:.3g}"
    if training:
        actual.float().mean().backward()
        assert all(torch.isfinite(p.grad).all() for p in net.parameters() if p.grad is not None)


def test_invalid_fast_path_arguments():
    for kwargs, name in (
        ({"eval_batch_bytes": 0}, "eval_batch_bytes"),
        ({"channels_last": "yes"}, "channels_last"),
        ({"cudnn_benchmark": 1}, "cudnn_benchmark"),
        ({"cell_fusion": "fast"}, "fusion"),
    ):
        with pytest.raises(ValueError, match=name):
            UNetConvLSTM(**TINY, **kwargs)


@pytest.mark.skipif(not SHIPPED_WEIGHTS.is_file(), reason="no shipped weights")
def test_shipped_weights_load_and_match_the_reference():
    """``models/model.pt`` (unidirectional lite) keeps its keys and its meaning: the batched, checkpointed code gives
    the step-by-step reference's logits in float64, with running and with per-slice statistics."""
    from bundle.networks import use_slice_statistics

    state = torch.load(SHIPPED_WEIGHTS, weights_only=True)
    x = torch.randn(1, 1, 40, 36, 11, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    for slice_statistics in (False, True):
        net = use_slice_statistics(UNetConvLSTM(**LITE, checkpoint=True), slice_statistics)
        assert list(net.state_dict().keys()) == list(state.keys())
        net.load_state_dict(state)
        net.double().eval()
        with torch.no_grad():
            torch.testing.assert_close(net(x), reference_forward(net, x), rtol=1e-10, atol=1e-10)
        net.train()
        with torch.no_grad():
            torch.testing.assert_close(net(x), reference_forward(copy.deepcopy(net), x), rtol=1e-10, atol=1e-10)


@pytest.mark.skipif(not SHIPPED_WEIGHTS.is_file(), reason="no shipped weights")
def test_segmenter_autocasts_with_the_configured_dtype(monkeypatch):
    """``bundle/segment.py`` takes the autocast dtype from ``amp_kwargs`` like the workflows (bf16), not fp16."""
    from bundle import segment

    pipeline = segment._Pipeline("lite", None, "cpu")
    assert pipeline.amp_kwargs == {"dtype": torch.bfloat16}
    assert pipeline.amp is False  # autocast only on CUDA, as in the workflows
    seen = []
    real_autocast = torch.autocast
    monkeypatch.setattr(
        torch, "autocast", lambda *args, **kwargs: seen.append(kwargs) or real_autocast(*args, **kwargs)
    )
    pipeline.amp = True  # as on a GPU with "amp": true; a CPU autocasts bf16 too
    image = MetaTensor(torch.randn(1, 40, 36, 4))
    pipeline.preprocessing = lambda data, start=0, end=None: {"image": image} if end else data
    pipeline.postprocessing = lambda data: data
    pred, _, _ = pipeline(Path("unused.nii.gz"))
    assert seen and seen[-1]["dtype"] == torch.bfloat16 and seen[-1]["enabled"] is True
    assert pred.shape == (2, 40, 36, 4)
