# SPDX-License-Identifier: Apache-2.0
"""UNet2D, SliceNorm2d and UNetConvLSTM: shapes, exactness of segment checkpointing, causality, export, DDP."""

from __future__ import annotations

import copy
import io
import os

import pytest
import torch
import torch.multiprocessing as mp

from bundle.networks import SliceNorm2d, UNet2D, UNetConvLSTM, init_gates_from_slice_logits

TINY = {"features": 4, "hidden_channels": 3}

# (kwargs, input shape (B, C, H, W, D))
SHAPE_CASES = [
    ({"in_channels": 1, "out_channels": 2}, (1, 1, 32, 32, 1)),
    ({"in_channels": 1, "out_channels": 2}, (2, 1, 21, 19, 7)),
    ({"in_channels": 2, "out_channels": 1, "bidirectional": True}, (1, 2, 17, 35, 7)),
    ({"in_channels": 1, "out_channels": 3, "bidirectional": True, "segment_length": 4}, (1, 1, 15, 16, 33)),
    ({"in_channels": 2, "out_channels": 2, "segment_length": 0}, (1, 2, 9, 13, 33)),
    ({"in_channels": 1, "out_channels": 2, "segment_length": 1, "kernel_size": 5}, (1, 1, 31, 33, 7)),
]


@pytest.mark.parametrize("kwargs, shape", SHAPE_CASES)
@pytest.mark.parametrize("training", [True, False])
def test_output_shape_and_dtype(kwargs, shape, training):
    net = UNetConvLSTM(**TINY, **kwargs).train(training)
    x = torch.randn(*shape)
    with torch.set_grad_enabled(training):
        y = net(x)
    assert y.shape == (shape[0], kwargs["out_channels"], *shape[2:])
    assert y.dtype == torch.float32
    assert torch.isfinite(y).all()


ILL_CASES = [
    ({"in_channels": 0}, "in_channels"),
    ({"out_channels": -1}, "out_channels"),
    ({"features": 0}, "features"),
    ({"hidden_channels": 0}, "hidden_channels"),
    ({"kernel_size": 4}, "kernel_size"),
    ({"segment_length": -2}, "segment_length"),
    ({"segment_length": "fast"}, "segment_length"),
    ({"segment_length": 2.5}, "segment_length"),
    ({"bidirectional": "yes"}, "bidirectional"),
    ({"checkpoint": 1}, "checkpoint"),
    ({"offload_states": None}, "offload_states"),
]


@pytest.mark.parametrize("kwargs, name", ILL_CASES)
def test_invalid_arguments_name_the_argument(kwargs, name):
    with pytest.raises(ValueError, match=name):
        UNetConvLSTM(**{**TINY, **kwargs})


@pytest.mark.parametrize("shape", [(1, 2, 16, 16, 4), (1, 1, 16, 16), (1, 1, 16, 16, 0)])
def test_invalid_input_shape_raises(shape):
    net = UNetConvLSTM(in_channels=1, **TINY)
    with pytest.raises(ValueError, match="UNetConvLSTM"):
        net(torch.zeros(shape))


def test_unet2d_shapes_and_divisibility():
    net = UNet2D(in_channels=2, out_channels=5, features=4)
    assert net(torch.randn(3, 2, 48, 32)).shape == (3, 5, 48, 32)
    with pytest.raises(ValueError, match="divisible by 16"):
        net(torch.randn(1, 2, 40, 32))
    with pytest.raises(ValueError, match="features"):
        UNet2D(1, 1, features=0)


def test_unet2d_has_four_pools_and_doubling_filters():
    net = UNet2D(in_channels=1, out_channels=1, features=64)
    assert net.channels == [64, 128, 256, 512, 1024]
    assert len(net.encoder) == 5 and len(net.decoder) == 4


def test_slice_norm_equals_batchnorm_on_one_slice():
    """The paper's BatchNorm on a batch of one slice: same output and same running-statistics update."""
    torch.manual_seed(0)
    slice_norm, batch_norm = SliceNorm2d(6).double(), torch.nn.BatchNorm2d(6).double()
    with torch.no_grad():
        slice_norm.weight.uniform_(0.5, 1.5)
        slice_norm.bias.uniform_(-0.5, 0.5)
        batch_norm.weight.copy_(slice_norm.weight)
        batch_norm.bias.copy_(slice_norm.bias)
    for _ in range(3):
        x = torch.randn(1, 6, 10, 12, dtype=torch.float64)
        torch.testing.assert_close(slice_norm(x), batch_norm(x), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(slice_norm.running_mean, batch_norm.running_mean, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(slice_norm.running_var, batch_norm.running_var, rtol=1e-12, atol=1e-12)
    slice_norm.eval(), batch_norm.eval()
    x = torch.randn(4, 6, 10, 12, dtype=torch.float64)
    torch.testing.assert_close(slice_norm(x), batch_norm(x), rtol=1e-12, atol=1e-12)


def _training_step(net: UNetConvLSTM, x: torch.Tensor, target: torch.Tensor) -> dict:
    """One forward/backward in float64; returns outputs, gradients and norm running statistics."""
    x = x.clone().requires_grad_(True)
    net.zero_grad(set_to_none=True)
    logits = net(x)
    torch.nn.functional.binary_cross_entropy_with_logits(logits, target).backward()
    result = {"logits": logits.detach(), "input_grad": x.grad.detach()}
    result.update({f"grad:{n}": p.grad.detach().clone() for n, p in net.named_parameters()})
    result.update({f"buffer:{n}": b.detach().clone() for n, b in net.named_buffers() if "running" in n})
    return result


def _assert_results_equal(actual: dict, expected: dict, rel: float = 1e-10) -> None:
    assert actual.keys() == expected.keys()
    for key, value in expected.items():
        scale = value.abs().max().clamp_min(1e-30)
        error = (actual[key] - value).abs().max() / scale
        assert error <= rel, f"{key}: relative difference {error:.3g}"


def _float64_net(seed: int = 0, **kwargs) -> UNetConvLSTM:
    torch.manual_seed(seed)
    return UNetConvLSTM(in_channels=1, out_channels=2, **TINY, **kwargs).double().train()


@pytest.fixture(scope="module")
def volume():
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(2, 1, 18, 21, 9, dtype=torch.float64, generator=generator)
    target = (torch.rand(2, 2, 18, 21, 9, dtype=torch.float64, generator=generator) > 0.5).double()
    return x, target


@pytest.mark.slow
@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("segment_length", [1, 3, 0])
def test_checkpointing_changes_nothing(volume, bidirectional, segment_length):
    x, target = volume
    results = []
    for use_checkpoint in (False, True):
        net = _float64_net(bidirectional=bidirectional, segment_length=segment_length, checkpoint=use_checkpoint)
        results.append(_training_step(net, x, target))
    _assert_results_equal(results[1], results[0])


@pytest.mark.slow
@pytest.mark.parametrize("bidirectional", [False, True])
def test_segment_length_changes_nothing(volume, bidirectional):
    x, target = volume
    reference = _training_step(_float64_net(bidirectional=bidirectional, segment_length=0, checkpoint=False), x, target)
    for segment_length in (1, 3, 8):
        net = _float64_net(bidirectional=bidirectional, segment_length=segment_length, checkpoint=True)
        _assert_results_equal(_training_step(net, x, target), reference)


def test_running_statistics_are_updated_once_per_volume(volume):
    x, target = volume
    net = _float64_net(segment_length=2)
    norm = net.unet.encoder[0][1]
    before = norm.running_mean.clone()
    _training_step(net, x, target)
    assert not torch.equal(norm.running_mean, before)
    assert int(norm.num_batches_tracked) == 1
    assert int(norm._num_slices) == 0


def test_unidirectional_network_is_causal():
    net = _float64_net(segment_length=2).eval()
    x = torch.randn(1, 1, 16, 20, 8, dtype=torch.float64)
    changed = x.clone()
    changed[..., 5] += 3.0
    with torch.no_grad():
        y, y_changed = net(x), net(changed)
    torch.testing.assert_close(y_changed[..., :5], y[..., :5], rtol=0, atol=0)
    assert (y_changed[..., 5:] - y[..., 5:]).abs().amax(dim=(0, 1, 2, 3)).min() > 0


def test_bidirectional_network_sees_both_ways():
    net = _float64_net(segment_length=2, bidirectional=True).eval()
    x = torch.randn(1, 1, 16, 20, 8, dtype=torch.float64)
    changed = x.clone()
    changed[..., 5] += 3.0
    with torch.no_grad():
        difference = (net(changed) - net(x)).abs().amax(dim=(0, 1, 2, 3))
    assert (difference > 0).all()


def test_auto_segment_length():
    net = UNetConvLSTM(features=64, hidden_channels=16)
    lengths = [net.resolve_segment_length(d) for d in (1, 32, 64, 320)]
    assert lengths[0] == 1
    assert all(1 <= k <= d for k, d in zip(lengths, (1, 32, 64, 320), strict=True))
    assert lengths == sorted(lengths)
    assert UNetConvLSTM(segment_length=0, **TINY).resolve_segment_length(40) == 40
    assert UNetConvLSTM(segment_length=8, **TINY).resolve_segment_length(5) == 5


@pytest.mark.filterwarnings("ignore:`torch.jit:DeprecationWarning")
@pytest.mark.parametrize("bidirectional", [False, True])
def test_torchscript_matches_eager(bidirectional):
    torch.manual_seed(0)
    net = UNetConvLSTM(in_channels=1, out_channels=2, bidirectional=bidirectional, segment_length=3, **TINY).double()
    _training_step(
        net, torch.randn(1, 1, 16, 16, 5).double(), torch.ones(1, 2, 16, 16, 5).double()
    )  # non-trivial stats
    net = net.float().eval()
    scripted = torch.jit.script(net)
    buffer = io.BytesIO()
    torch.jit.save(scripted, buffer)
    buffer.seek(0)
    loaded = torch.jit.load(buffer)
    x = torch.randn(1, 1, 27, 30, 11)
    with torch.no_grad():
        expected = net(x)
        torch.testing.assert_close(scripted(x), expected)
        torch.testing.assert_close(loaded(x), expected)


def test_state_dict_round_trips_with_weights_only(tmp_path):
    net = UNetConvLSTM(in_channels=1, out_channels=2, bidirectional=True, **TINY)
    path = tmp_path / "model.pt"
    torch.save(net.state_dict(), path)
    state = torch.load(path, weights_only=True)
    other = UNetConvLSTM(in_channels=1, out_channels=2, bidirectional=True, **TINY)
    other.load_state_dict(state)
    for key, value in net.state_dict().items():
        torch.testing.assert_close(other.state_dict()[key], value, rtol=0, atol=0)


def _ddp_worker(rank: int, world_size: int, init_file: str, out_dir: str) -> None:
    torch.distributed.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size)
    try:
        torch.set_num_threads(1)
        net = _float64_net(seed=3, segment_length=2, checkpoint=True)
        model = torch.nn.parallel.DistributedDataParallel(net)
        x, target = _ddp_batch()
        logits = model(x[rank : rank + 1])
        torch.nn.functional.binary_cross_entropy_with_logits(logits, target[rank : rank + 1]).backward()
        torch.save({n: p.grad for n, p in net.named_parameters()}, os.path.join(out_dir, f"grads{rank}.pt"))
    finally:
        torch.distributed.destroy_process_group()


def _ddp_batch():
    generator = torch.Generator().manual_seed(7)
    x = torch.randn(2, 1, 16, 16, 6, dtype=torch.float64, generator=generator)
    target = (torch.rand(2, 2, 16, 16, 6, dtype=torch.float64, generator=generator) > 0.5).double()
    return x, target


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed is not built in")
@pytest.mark.slow
def test_ddp_two_processes_match_one(tmp_path):
    mp.spawn(_ddp_worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    net = _float64_net(seed=3, segment_length=2, checkpoint=True)
    x, target = _ddp_batch()
    torch.nn.functional.binary_cross_entropy_with_logits(net(x), target).backward()
    for rank in range(2):
        grads = torch.load(tmp_path / f"grads{rank}.pt", weights_only=True)
        for name, parameter in net.named_parameters():
            torch.testing.assert_close(grads[name], parameter.grad, rtol=1e-10, atol=1e-12)


def test_slice_norm_can_use_slice_statistics_in_evaluation():
    torch.manual_seed(0)
    norm = SliceNorm2d(3, eval_slice_statistics=True)
    x = torch.randn(2, 3, 8, 8) * 4 + 7
    training_output = norm.train()(x)
    torch.testing.assert_close(norm.eval()(x), training_output)
    running = SliceNorm2d(3).eval()
    running.load_state_dict(norm.state_dict())
    assert not torch.allclose(running(x), training_output)


# ---------------------------------------------------------------------------------------------------------------------
# init_gates_from_slice_logits: stage 2 starts from stage 1's segmentation
# ---------------------------------------------------------------------------------------------------------------------


def _trained_looking_stage1(features: int = 4) -> UNet2D:
    torch.manual_seed(3)
    stage1 = UNet2D(1, 2, features=features).eval()
    with torch.no_grad():  # confident logits, as after training, so the decision is not a rounding question
        stage1.output.weight.mul_(20.0)
    return stage1


@pytest.mark.parametrize("bidirectional", [False, True])
def test_pass_through_init_reproduces_stage1_decision_on_a_uniform_volume(bidirectional):
    stage1 = _trained_looking_stage1()
    network = UNetConvLSTM(1, 2, features=4, hidden_channels=3, bidirectional=bidirectional, checkpoint=False)
    network.unet.load_state_dict({k: v for k, v in stage1.state_dict().items() if not k.startswith("output.")}, False)
    init_gates_from_slice_logits(network, stage1.output.weight, stage1.output.bias, noise_scale=0.0)
    network.eval()
    image = torch.randn(1, 1, 32, 32)
    volume = image[..., None].expand(1, 1, 32, 32, 5).contiguous()  # the same slice 5 times: no context to add
    with torch.no_grad():
        expected = stage1(image).argmax(1)
        logits = network(volume)
    for z in range(5):
        assert torch.equal(logits[..., z].argmax(1), expected)
    # and it is a classifier with margin, not a coin toss: the logit difference has stage 1's sign
    assert (logits[:, 1] - logits[:, 0]).abs().mean() > 1.0


def test_pass_through_init_with_noise_agrees_with_stage1_on_varied_slices():
    stage1 = _trained_looking_stage1()
    network = UNetConvLSTM(1, 2, features=4, hidden_channels=4, checkpoint=False)
    network.unet.load_state_dict({k: v for k, v in stage1.state_dict().items() if not k.startswith("output.")}, False)
    random_network = copy.deepcopy(network).eval()
    init_gates_from_slice_logits(network, stage1.output.weight, stage1.output.bias)
    network.eval()
    volume = torch.randn(1, 1, 32, 32, 6)
    with torch.no_grad():
        expected = torch.stack([stage1(volume[..., z]).argmax(1) for z in range(6)], dim=-1)
        agreement = (network(volume).argmax(1) == expected).float().mean().item()
        random_agreement = (random_network(volume).argmax(1) == expected).float().mean().item()
    assert agreement > 0.95 > random_agreement


def test_pass_through_init_rejects_other_than_two_classes():
    network = UNetConvLSTM(1, 3, features=4, hidden_channels=2, checkpoint=False)
    stage1 = UNet2D(1, 3, features=4)
    with pytest.raises(ValueError, match="two classes"):
        init_gates_from_slice_logits(network, stage1.output.weight, stage1.output.bias)
