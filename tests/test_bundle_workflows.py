# SPDX-License-Identifier: Apache-2.0
"""Unit tests of bundle.workflows: data resolution, stage-1 slice sampling, training handlers, atomic writers.

The atomic-output helper itself is tested in test_utils.py.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from ignite.engine import Engine, Events
from monai.data import MetaTensor
from monai.handlers import CheckpointLoader

from bundle.data.datalist import DatalistError
from bundle.networks import SliceNorm2d, UNet2D, UNetConvLSTM, use_slice_statistics
from bundle.transforms import AxialSlice, RandAxialSliced, sample_axial_plane
from bundle.transforms.augmentation import RotateTranslate, rotation_translation_matrix
from bundle.workflows import (
    AtomicCheckpointSaver,
    AtomicNibabelWriter,
    CaseMetricsHandler,
    PretrainedUNetHandler,
    ResumeHandler,
    find_ct_inputs,
    phantom_dataset_dir,
    prepare_datalist,
)

TINY_PHANTOMS = {"num_train": 1, "num_val": 1, "num_test": 1, "seed": 0, "in_plane_size": 32, "num_slices": 8}


def _nifti(path: Path, shape=(8, 8, 4), dtype=np.int16) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(np.zeros(shape, dtype=dtype), np.eye(4)), str(path))
    return path


# ---------------------------------------------------------------------------------------------------------------------
# data resolution
# ---------------------------------------------------------------------------------------------------------------------


def test_prepare_datalist_generates_phantoms_once(tmp_path):
    cache = tmp_path / "phantoms"
    splits = prepare_datalist(cache, phantom_dir=cache, phantoms=TINY_PHANTOMS)
    assert [len(splits[s]) for s in ("training", "validation", "test")] == [1, 1, 1]
    folder = phantom_dataset_dir(cache, TINY_PHANTOMS)
    assert Path(splits["training"][0]["image"]).parent.parent == folder.resolve()
    stamp = os.stat(splits["training"][0]["image"]).st_mtime_ns
    again = prepare_datalist(cache, phantom_dir=cache, phantoms=TINY_PHANTOMS)
    assert again == splits
    assert os.stat(splits["training"][0]["image"]).st_mtime_ns == stamp  # reused, not rewritten


def test_prepare_datalist_reads_datalist_file_and_folder_datalist(tmp_path):
    _nifti(tmp_path / "a.nii.gz")
    _nifti(tmp_path / "a_label.nii.gz", dtype=np.uint8)
    (tmp_path / "datalist.json").write_text(
        json.dumps({"training": [{"image": "a.nii.gz", "label": "a_label.nii.gz"}]})
    )
    from_folder = prepare_datalist(tmp_path)
    from_file = prepare_datalist("/nonexistent", datalist_file=tmp_path / "datalist.json")
    assert from_folder == from_file
    assert from_folder["training"][0]["image"] == str((tmp_path / "a.nii.gz").resolve())
    assert from_folder["validation"] == [] and from_folder["test"] == []


def test_prepare_datalist_pairs_decathlon_layout(tmp_path):
    for name in ("c1", "c2", "c3", "c4", "c5"):
        _nifti(tmp_path / "imagesTr" / f"{name}.nii.gz")
        _nifti(tmp_path / "labelsTr" / f"{name}.nii.gz", dtype=np.uint8)
    _nifti(tmp_path / "imagesTs" / "t1.nii.gz")
    splits = prepare_datalist(tmp_path, val_fraction=0.4)
    assert [Path(e["image"]).name for e in splits["training"]] == ["c1.nii.gz", "c2.nii.gz", "c3.nii.gz"]
    assert [Path(e["label"]).name for e in splits["validation"]] == ["c4.nii.gz", "c5.nii.gz"]
    assert [Path(e["image"]).name for e in splits["test"]] == ["t1.nii.gz"]


def test_prepare_datalist_folder_of_scans_is_the_test_split(tmp_path):
    _nifti(tmp_path / "b.nii")
    _nifti(tmp_path / "a.nii.gz")
    series = tmp_path / "dicom_case"
    series.mkdir()
    (series / "IM0001.dcm").write_bytes(b"")
    (tmp_path / "notes.txt").write_text("not a scan")
    splits = prepare_datalist(tmp_path)
    assert [Path(e["image"]).name for e in splits["test"]] == ["a.nii.gz", "b.nii", "dicom_case"]
    assert find_ct_inputs(series) == [str(series.resolve())]  # a folder of DICOM files is one series


@pytest.mark.parametrize(
    "layout, kwargs, message",
    [
        ("missing", {}, "does not exist"),
        ("empty", {}, "holds no NIfTI"),
        ("unpaired", {}, "do not pair up"),
        ("datalist", {"datalist_file": "missing.json"}, "does not exist"),
    ],
)
def test_prepare_datalist_errors_name_the_problem(tmp_path, layout, kwargs, message):
    root = tmp_path / "data"
    if layout == "empty":
        root.mkdir()
    if layout == "unpaired":
        _nifti(root / "imagesTr" / "c1.nii.gz")
        _nifti(root / "labelsTr" / "c2.nii.gz")
    if "datalist_file" in kwargs:
        kwargs = {"datalist_file": tmp_path / kwargs["datalist_file"]}
    with pytest.raises(DatalistError, match=message):
        prepare_datalist(root, **kwargs)


@pytest.mark.parametrize(
    "kwargs", [{"val_fraction": 1.0}, {"val_fraction": -0.1}, {"phantom_dir": "x", "phantoms": {"num_train": 1}}]
)
def test_prepare_datalist_bad_arguments(tmp_path, kwargs):
    phantom_dir = kwargs.get("phantom_dir")
    if phantom_dir:
        kwargs = {**kwargs, "phantom_dir": tmp_path / phantom_dir}
    with pytest.raises(ValueError):
        prepare_datalist(tmp_path / "x", **kwargs)


# ---------------------------------------------------------------------------------------------------------------------
# stage-1 slice sampling
# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("input_type", [np.asarray, torch.as_tensor, MetaTensor])
def test_axial_slice(input_type):
    volume = np.arange(2 * 4 * 5 * 6, dtype=np.float32).reshape(2, 4, 5, 6)
    out = AxialSlice(index=-2)(input_type(volume))
    assert tuple(out.shape) == (2, 4, 5)
    assert not isinstance(out, MetaTensor)
    np.testing.assert_array_equal(np.asarray(out), volume[..., 4])


@pytest.mark.parametrize("args, shape", [({"index": 1.5}, (1, 4, 4, 4)), ({"index": 4}, (1, 4, 4, 4)), ({}, (4, 4, 4))])
def test_axial_slice_rejects_bad_input(args, shape):
    with pytest.raises(ValueError):
        AxialSlice(**args)(torch.zeros(shape))


def test_rand_axial_sliced_without_augmentation_takes_one_slice_for_all_keys():
    volume = torch.arange(1 * 6 * 6 * 10, dtype=torch.float32).reshape(1, 6, 6, 10)
    sampler = RandAxialSliced(["image", "label"], prob=0.0).set_random_state(seed=3)
    seen = set()
    for _ in range(30):
        out = sampler({"image": volume, "label": volume.clone()})
        torch.testing.assert_close(out["image"], out["label"])
        index = int(out["image"][0, 0, 0].item()) % 10
        torch.testing.assert_close(out["image"], volume[..., index])
        seen.add(index)
    assert len(seen) > 5  # the slice is drawn at random


@pytest.mark.parametrize(
    "angles, shift, index", [((6.0, -8.0, 9.0), (3.0, -4.0, 1.5), 10), ((-10.0, 0.0, 4.0), (0, 2, -1), 6)]
)
def test_augmented_slice_equals_slice_of_augmented_volume(angles, shift, index):
    from bundle.data.phantoms import make_phantom

    phantom = make_phantom(3, in_plane_size=64, num_slices=16)
    affine = torch.as_tensor(phantom.affine)
    image = MetaTensor(torch.as_tensor(phantom.image[None].astype(np.float32)), affine=affine)
    label = MetaTensor(torch.as_tensor(phantom.label[None]), affine=affine)
    full_image = RotateTranslate(angles, shift, "bilinear", "border")(image)[0, ..., index]
    full_label = RotateTranslate(angles, shift, "binary", "zeros")(label)[0, ..., index].bool()
    matrix = rotation_translation_matrix(image.shape[1:], angles, shift, np.linalg.norm(phantom.affine[:3, :3], axis=0))
    plane_image = sample_axial_plane(image, matrix, index, "bilinear", "border")[0]
    plane_label = sample_axial_plane(label, matrix, index, "binary", "zeros")[0].bool()
    dice = 2 * (full_label & plane_label).sum() / (full_label.sum() + plane_label.sum())
    assert plane_label.dtype == torch.bool and dice > 0.97
    # the separable passes smooth a little more than one trilinear lookup: compare with the HU range of the slice
    assert (full_image - plane_image).abs().mean() < 0.03 * (full_image.max() - full_image.min())


def test_rand_axial_sliced_draws_like_stage_two_and_samples_that_plane():
    affine = torch.diag(torch.tensor([0.8, 0.8, 3.0, 1.0], dtype=torch.float64))
    image = MetaTensor(torch.randn(1, 24, 20, 12), affine=affine)
    label = MetaTensor((torch.randn(1, 24, 20, 12) > 0).to(torch.uint8), affine=affine)
    sampler = RandAxialSliced(["image", "label"]).set_random_state(seed=5)
    out = sampler({"image": image, "label": label})
    assert all(abs(a) <= 10 for a in sampler.angles_deg) and all(abs(t) <= 20 for t in sampler.translation_vox)
    matrix = rotation_translation_matrix(image.shape[1:], sampler.angles_deg, sampler.translation_vox, (0.8, 0.8, 3.0))
    torch.testing.assert_close(out["image"], sample_axial_plane(image, matrix, sampler.index, "bilinear", "border"))
    expected_label = sample_axial_plane(label, matrix, sampler.index, "binary", "zeros")
    assert out["label"].dtype == torch.uint8 and torch.equal(out["label"], expected_label)
    again = RandAxialSliced(["image", "label"]).set_random_state(seed=5)({"image": image, "label": label})
    torch.testing.assert_close(again["image"], out["image"])


def test_rand_axial_sliced_bad_arguments():
    with pytest.raises(ValueError):
        RandAxialSliced(["image"], max_rotation_deg=-1.0)
    with pytest.raises(ValueError):
        RandAxialSliced(["image"], mode="cubic")
    with pytest.raises(ValueError, match="differ in shape"):
        RandAxialSliced(["image", "label"])({"image": torch.zeros(1, 4, 4, 4), "label": torch.zeros(1, 4, 4, 5)})


# ---------------------------------------------------------------------------------------------------------------------
# handlers
# ---------------------------------------------------------------------------------------------------------------------


def _dummy_engine(max_epochs: int, epoch_length: int, step=None) -> Engine:
    engine = Engine(step or (lambda e, b: None))
    engine.state.max_epochs = max_epochs
    engine.state.epoch_length = epoch_length
    return engine


def test_pretrained_unet_handler_transfers_all_but_output_and_freezes(tmp_path):
    torch.manual_seed(0)
    stage1 = UNet2D(1, 2, features=4)
    torch.save(stage1.state_dict(), tmp_path / "unet.pt")
    network = UNetConvLSTM(1, 2, features=4, hidden_channels=4)
    output_before = network.unet.output.weight.detach().clone()
    handler = PretrainedUNetHandler(network, tmp_path / "unet.pt", freeze_iterations=3)
    states = []
    engine = Engine(lambda e, b: states.append(network.unet.encoder[0][0].weight.requires_grad))
    handler.attach(engine)
    for name, value in stage1.state_dict().items():
        if not name.startswith("output."):
            torch.testing.assert_close(network.unet.state_dict()[name], value)
    torch.testing.assert_close(network.unet.output.weight, output_before)  # different shape: not transferred
    engine.run(range(5), max_epochs=1)
    assert states == [False, False, False, True, True]
    assert network.unet.output.weight.requires_grad  # the final conv is never frozen
    assert all(p.requires_grad for p in network.parameters())  # released at the end


def test_pretrained_unet_handler_without_file_warns_and_does_nothing(tmp_path, caplog):
    network = UNetConvLSTM(1, 2, features=4, hidden_channels=4)
    before = {k: v.clone() for k, v in network.state_dict().items()}
    handler = PretrainedUNetHandler(network, tmp_path / "missing.pt", freeze_iterations=3)
    engine = Engine(lambda e, b: None)
    with caplog.at_level(logging.WARNING):
        handler.attach(engine)
    assert "not found" in caplog.text and not handler.loaded
    engine.run(range(2), max_epochs=1)
    assert all(p.requires_grad for p in network.parameters())
    for key, value in network.state_dict().items():
        torch.testing.assert_close(value, before[key])


def test_pretrained_unet_handler_is_quiet_when_a_checkpoint_loader_initialises_the_network(tmp_path, caplog):
    """MONAI Label fine-tunes from models/model.pt with a CheckpointLoader inserted first in train#handlers: the
    missing stage-1 file is then not worth a warning."""
    network = UNetConvLSTM(1, 2, features=4, hidden_channels=4)
    torch.save(network.state_dict(), tmp_path / "model.pt")
    engine = Engine(lambda e, b: None)
    CheckpointLoader(str(tmp_path / "model.pt"), {"model": network}).attach(engine)
    handler = PretrainedUNetHandler(network, tmp_path / "missing.pt", freeze_iterations=3)
    with caplog.at_level(logging.INFO):
        handler.attach(engine)
    assert not handler.loaded
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING and "not found" in r.getMessage()]
    assert "loaded from other weights" in caplog.text


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"freeze_iterations": -1}, "freeze_iterations"),
        ({"checkpoint": "wrong_features"}, "do not fit"),
        ({"checkpoint": "junk"}, "cannot be read"),
    ],
)
def test_pretrained_unet_handler_errors(tmp_path, kwargs, match):
    torch.save(UNet2D(1, 2, features=8).state_dict(), tmp_path / "wrong_features")
    (tmp_path / "junk").write_bytes(b"not a checkpoint")
    network = UNetConvLSTM(1, 2, features=4, hidden_channels=4)
    if "checkpoint" in kwargs:
        kwargs = {"checkpoint": tmp_path / kwargs["checkpoint"]}
    with pytest.raises(ValueError, match=match):
        PretrainedUNetHandler(network, **kwargs).attach(Engine(lambda e, b: None))


def _training(model: torch.nn.Module, optimizer: torch.optim.Optimizer, fail_at: int | None = None) -> Engine:
    data = [(torch.full((1, 3), float(i)), torch.tensor([[float(i % 3)]])) for i in range(4)]

    def step(engine, batch):
        if fail_at is not None and engine.state.iteration == fail_at:
            raise KeyboardInterrupt("simulated interruption")
        x, y = batch
        optimizer.zero_grad()
        loss = torch.nn.functional.mse_loss(model(x), y)
        loss.backward()
        optimizer.step()
        return loss.item()

    engine = Engine(step)
    engine._data = data
    return engine


def _make_model() -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 1)
    return model, torch.optim.RMSprop(model.parameters(), lr=0.01, momentum=0.5)


def test_resume_handler_continues_exactly_where_it_stopped(tmp_path):
    model_a, opt_a = _make_model()
    engine_a = _training(model_a, opt_a)
    engine_a.run(engine_a._data, max_epochs=4, epoch_length=4)

    model_b, opt_b = _make_model()
    engine_b = _training(model_b, opt_b, fail_at=11)  # dies during epoch 3, after epoch 2 was saved
    ResumeHandler(tmp_path, {"model": model_b, "optimizer": opt_b}).attach(engine_b)
    with pytest.raises(KeyboardInterrupt):
        engine_b.run(engine_b._data, max_epochs=4, epoch_length=4)
    assert (tmp_path / "last.pt").is_file()
    saved = torch.load(tmp_path / "last.pt", weights_only=True)
    assert saved["trainer"]["iteration"] == 8

    model_c, opt_c = _make_model()  # a new process: fresh objects
    engine_c = _training(model_c, opt_c)
    iterations = []
    engine_c.add_event_handler(Events.ITERATION_COMPLETED, lambda e: iterations.append(e.state.iteration))
    ResumeHandler(tmp_path, {"model": model_c, "optimizer": opt_c}).attach(engine_c)
    engine_c.run(engine_c._data, max_epochs=4, epoch_length=4)
    assert iterations == list(range(9, 17))
    for a, c in zip(model_a.parameters(), model_c.parameters(), strict=True):
        torch.testing.assert_close(a, c)
    assert not (tmp_path / "last.pt").exists()  # a completed run leaves nothing to resume


def test_resume_handler_disabled_and_bad_file(tmp_path):
    model, opt = _make_model()
    engine = _training(model, opt)
    ResumeHandler(tmp_path, {"model": model}, enabled=False).attach(engine)
    engine.run(engine._data, max_epochs=1, epoch_length=4)
    assert not any(tmp_path.iterdir())
    torch.save({"model": {"weight": torch.zeros(2, 2)}}, tmp_path / "last.pt")
    engine = _training(*_make_model())
    model, opt = _make_model()
    ResumeHandler(tmp_path, {"model": model, "optimizer": opt}).attach(engine)
    with pytest.raises(ValueError, match="different configuration"):
        engine.run(engine._data, max_epochs=1, epoch_length=4)
    with pytest.raises(ValueError):
        ResumeHandler(tmp_path, {})


def test_case_metrics_handler_writes_per_case_and_summary(tmp_path):
    affine = torch.diag(torch.tensor([2.0, 2.0, 5.0, 1.0]))
    ref = torch.zeros(1, 10, 10, 6)
    ref[:, 2:8, 2:8, 1:5] = 1
    half = ref.clone()
    half[:, 5:8] = 0
    cases = [(ref, ref), (half, ref)]
    outputs = []
    for i, (pred, label) in enumerate(cases):
        meta = {"filename_or_obj": f"case{i}.nii.gz"}
        onehot = torch.cat([1 - pred, pred])
        outputs.append({"pred": MetaTensor(onehot, affine=affine, meta=meta), "label": torch.cat([1 - label, label])})
    engine = Engine(lambda e, b: [outputs[e.state.iteration - 1]])
    handler = CaseMetricsHandler(tmp_path)
    handler.attach(engine)
    engine.run(range(2), max_epochs=1)
    rows = (tmp_path / "metrics.csv").read_text().splitlines()
    assert rows[0] == "case,dice,hd95_mm"
    assert rows[1].startswith("case0.nii.gz,1.000000,0.0000")
    expected = 2 * 3 * 6 * 4 / (3 * 6 * 4 + 6 * 6 * 4)
    assert rows[2].startswith(f"case1.nii.gz,{expected:.6f},6.0000")  # 3 voxels of 2 mm
    assert rows[3].startswith("mean,") and rows[4].startswith("std,")
    summary = json.loads((tmp_path / "metrics_summary.json").read_text())["summary"]
    assert summary["dice"]["mean"] == pytest.approx((1 + expected) / 2)


def test_atomic_checkpoint_saver_keeps_the_previous_best_model_when_a_save_fails(tmp_path, monkeypatch):
    """The best model is replaced in place each time it improves; a save that fails half way leaves the last one."""
    net = torch.nn.Linear(2, 1)
    saver = AtomicCheckpointSaver(
        str(tmp_path), {"model": net}, save_key_metric=True, key_metric_name="dice", key_metric_filename="model.pt"
    )
    engine = Engine(lambda e, b: None)

    @engine.on(Events.EPOCH_COMPLETED)
    def improve(e):  # runs before the saver (attached later): weights = epoch number, a better metric every epoch
        with torch.no_grad():
            net.weight.fill_(e.state.epoch)
        e.state.metrics["dice"] = 0.1 * e.state.epoch

    saver.attach(engine)
    real_save = torch.save

    def save_failing_in_epoch_3(obj, f, *args, **kwargs):
        if engine.state.epoch == 3:
            Path(f).write_bytes(b"truncated")
            raise OSError("disk full")
        real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", save_failing_in_epoch_3)
    with pytest.raises(OSError, match="disk full"):
        engine.run(range(1), max_epochs=3)
    state = torch.load(tmp_path / "model.pt", map_location="cpu", weights_only=True)
    torch.testing.assert_close(state["weight"], torch.full((1, 2), 2.0))  # epoch 2's model replaced epoch 1's
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pt"]  # no temporary file left


def test_atomic_nibabel_writer(tmp_path):
    writer = AtomicNibabelWriter(output_dtype=np.uint8)
    data = torch.zeros(4, 5, 6)
    data[1:3] = 1
    writer.set_data_array(data, channel_dim=None)
    writer.set_metadata({"affine": np.diag([2.0, 2.0, 3.0, 1.0]), "original_affine": np.diag([2.0, 2.0, 3.0, 1.0])})
    writer.write(tmp_path / "mask.nii.gz")
    image = nib.load(str(tmp_path / "mask.nii.gz"))
    assert image.shape == (4, 5, 6) and image.get_data_dtype() == np.uint8
    np.testing.assert_array_equal(np.asarray(image.dataobj), data.numpy().astype(np.uint8))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mask.nii.gz"]


# ---------------------------------------------------------------------------------------------------------------------
# evaluation with per-slice statistics
# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:`torch.jit:DeprecationWarning")  # TorchScript is what the zoo exports
def test_slice_statistics_train_identically_and_evaluate_like_training():
    torch.manual_seed(0)
    plain = UNetConvLSTM(1, 2, features=4, hidden_channels=4, checkpoint=True, segment_length=3)
    swapped = UNetConvLSTM(1, 2, features=4, hidden_channels=4, checkpoint=True, segment_length=3)
    swapped.load_state_dict(plain.state_dict())
    assert use_slice_statistics(swapped) is swapped
    assert all(m.eval_slice_statistics for m in swapped.modules() if isinstance(m, SliceNorm2d))
    x = torch.randn(1, 1, 32, 32, 7)
    outputs = [net.train()(x) for net in (plain, swapped)]
    torch.testing.assert_close(outputs[0], outputs[1])
    for out in outputs:
        out.square().mean().backward()
    for (name, p), q in zip(plain.named_parameters(), swapped.parameters(), strict=True):
        torch.testing.assert_close(p.grad, q.grad, msg=name)
    for key, value in plain.state_dict().items():  # same keys, same running statistics
        torch.testing.assert_close(swapped.state_dict()[key], value)
    with torch.no_grad():
        evaluated = swapped.eval()(x)
        torch.testing.assert_close(evaluated, outputs[1].detach(), atol=1e-5, rtol=1e-5)  # slice statistics
        assert not torch.allclose(plain.eval()(x), evaluated, atol=1e-3)  # running averages differ
        torch.testing.assert_close(torch.jit.script(swapped)(x), evaluated)


def test_use_slice_statistics_disabled_and_bad_input():
    network = UNet2D(1, 2, features=4)
    assert use_slice_statistics(network, enabled=False) is network
    assert not any(m.eval_slice_statistics for m in network.modules() if isinstance(m, SliceNorm2d))
    with pytest.raises(ValueError):
        use_slice_statistics("not a network")
