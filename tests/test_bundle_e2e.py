# SPDX-License-Identifier: Apache-2.0
"""End-to-end runs of the bundle's workflows on the tiny preset: properties, training (both stages), resume,
evaluation, inference geometry, the command line and multi-process DDP training on the CPU."""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.bundle import ConfigWorkflow
from monai.bundle import run as bundle_run

from bundle.workflows import prepare_datalist

REPO_ROOT = Path(__file__).resolve().parents[1]
CONFIGS = REPO_ROOT / "configs"
TINY = str(CONFIGS / "presets" / "tiny.json")
pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py: one torch thread per test


def _configs(*names: str) -> list[str]:
    return [str(CONFIGS / n) for n in names] + [TINY]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """Overrides that put every output of a run under a temporary folder, with the tiny phantom set generated."""
    root = tmp_path_factory.mktemp("tiny_bundle")
    overrides = {
        "bundle_root": str(REPO_ROOT),
        "phantom_dir": str(root / "phantoms"),
        "runs_dir": str(root / "runs"),
        "ckpt_dir": str(root / "models"),
        "output_dir": str(root / "eval"),
    }
    phantoms = json.loads(Path(TINY).read_text())["phantoms"]
    splits = prepare_datalist(root / "phantoms", phantom_dir=root / "phantoms", phantoms=phantoms)
    return {"root": root, "overrides": overrides, "splits": splits}


def _workflow(files: list[str], workflow_type: str, overrides: dict) -> ConfigWorkflow:
    return ConfigWorkflow(
        config_file=files,
        meta_file=str(CONFIGS / "metadata.json"),
        logging_file=False,
        workflow_type=workflow_type,
        **overrides,
    )


@pytest.mark.parametrize(
    "names, workflow_type",
    [
        (("train.json",), "train"),
        (("train.json", "train_stage1.json"), "train"),
        (("train.json", "evaluate.json"), "train"),
        (("inference.json",), "infer"),
    ],
)
def test_check_properties_after_initialize(tiny, names, workflow_type):
    files, overrides = _configs(*names), tiny["overrides"]
    if workflow_type == "infer":  # inference loads weights in `initialize`: the shipped lite ones
        files, overrides = files[:-1], {**overrides, "ckpt_dir": str(REPO_ROOT / "models")}
    workflow = _workflow(files, workflow_type, overrides)
    workflow.initialize()
    assert workflow.check_properties() == []


def test_two_stage_training_evaluation_and_inference(tiny, caplog):
    overrides, root = tiny["overrides"], tiny["root"]
    meta = str(CONFIGS / "metadata.json")
    with caplog.at_level(logging.INFO):
        bundle_run(
            "training",
            config_file=_configs("train.json", "train_stage1.json"),
            meta_file=meta,
            logging_file=False,
            **overrides,
        )
        stage1 = torch.load(root / "runs" / "stage1" / "model.pt", weights_only=True)
        assert "output.weight" in stage1 and not any(k.startswith("unet.") for k in stage1)  # a plain UNet2D
        bundle_run("training", config_file=_configs("train.json"), meta_file=meta, logging_file=False, **overrides)
    assert "loaded" in caplog.text and "U-Net tensors" in caplog.text  # stage 2 started from stage 1
    assert "U-Net weights fixed up to iteration 1" in caplog.text and "released at iteration 2" in caplog.text
    # progress on the console (log lines: pytest's stderr is not a terminal), training with its loss
    assert re.search(r"train: (\d+)/\1 iterations \(100%\), loss \d", caplog.text)
    assert re.search(r"validation: (\d+)/\1 cases \(100%\)", caplog.text)
    model = torch.load(root / "models" / "model.pt", weights_only=True)
    assert any(k.startswith("unet.") for k in model) and all(isinstance(v, torch.Tensor) for v in model.values())
    assert not (root / "runs" / "stage2" / "last.pt").exists()  # completed: nothing left to resume
    assert list((root / "runs" / "stage2").glob("events.out.tfevents.*"))  # TensorBoard

    bundle_run(
        "evaluating",
        config_file=_configs("train.json", "evaluate.json"),
        meta_file=meta,
        logging_file=False,
        **{**overrides, "device": "cpu"},  # a plain string, as MONAI Label passes it
    )
    rows = (root / "eval" / "metrics.csv").read_text().splitlines()
    assert rows[0] == "case,dice,hd95_mm" and len(rows) == 1 + len(tiny["splits"]["test"]) + 2
    summary = json.loads((root / "eval" / "metrics_summary.json").read_text())["summary"]
    assert 0.0 <= summary["dice"]["mean"] <= 1.0

    # plain `run` (no run id) from the command line, as the model zoo documents it
    output_dir = root / "inference"
    command = [
        sys.executable,
        "-m",
        "monai.bundle",
        "run",
        "--config_file",
        json.dumps(_configs("inference.json")),
        "--meta_file",
        meta,
        "--logging_file",
        str(CONFIGS / "logging.conf"),
        "--output_dir",
        str(output_dir),
    ]
    for key in ("bundle_root", "phantom_dir", "ckpt_dir"):
        command += [f"--{key}", overrides[key]]
    result = subprocess.run(
        command,
        cwd=REPO_ROOT,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        check=True,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert re.search(r"inference: (\d+)/\1 cases \(100%\)", result.stdout + result.stderr)
    source = nib.load(tiny["splits"]["test"][0]["image"])
    mask = nib.load(str(output_dir / (Path(tiny["splits"]["test"][0]["image"]).name[:-7] + "_seg.nii.gz")))
    assert mask.shape == source.shape and mask.get_data_dtype() == np.uint8
    np.testing.assert_allclose(mask.affine, source.affine, atol=1e-5)
    assert set(np.unique(np.asarray(mask.dataobj))) <= {0, 1}


def test_training_resumes_after_an_interruption(tiny, caplog):
    from ignite.engine import Events

    overrides = {**tiny["overrides"], "runs_dir": str(tiny["root"] / "resume_runs"), "stage1_epochs": 3}
    files = _configs("train.json", "train_stage1.json")
    workflow = _workflow(files, "train", overrides)
    workflow.initialize()
    trainer = workflow.parser.get_parsed_content("train#trainer")

    def interrupt(engine):
        raise RuntimeError("simulated power cut")

    trainer.add_event_handler(Events.EPOCH_COMPLETED(once=2), interrupt)  # after the resume state of epoch 2
    with pytest.raises(RuntimeError) as error:
        workflow.run()
    assert "power cut" in str(error.value.__cause__)
    resume_file = tiny["root"] / "resume_runs" / "stage1" / "last.pt"
    saved = torch.load(resume_file, weights_only=True)
    assert saved["trainer"]["iteration"] == 4 and "optimizer" in saved and "best_saver" in saved

    workflow = _workflow(files, "train", overrides)
    workflow.initialize()
    trainer = workflow.parser.get_parsed_content("train#trainer")
    seen = []
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: seen.append(e.state.iteration))
    with caplog.at_level(logging.INFO):
        workflow.run()
    assert "resumed training" in caplog.text
    assert seen == [5, 6]  # only the missing epoch ran
    assert not resume_file.exists()


def _write_oblique_lps_nifti(
    image: np.ndarray, label: np.ndarray, affine: np.ndarray, folder: Path
) -> tuple[Path, Path]:
    """Store the phantom with flipped X and Y axes (LPS voxel order) and an oblique (rotated) affine."""
    flip = np.diag([-1.0, -1.0, 1.0, 1.0])
    flip[:2, 3] = [image.shape[0] - 1, image.shape[1] - 1]
    angle = np.deg2rad(12.0)
    rotation = np.eye(4)
    rotation[:3, :3] = [[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]]
    new_affine = rotation @ affine @ flip
    paths = []
    for name, array, dtype in (("oblique_lps.nii.gz", image, np.int16), ("oblique_lps_label.nii.gz", label, np.uint8)):
        path = folder / name
        nib.save(nib.Nifti1Image(array[::-1, ::-1].astype(dtype), new_affine), str(path))
        paths.append(path)
    assert nib.aff2axcodes(new_affine) == ("L", "P", "S")
    return paths[0], paths[1]


def test_inference_writes_masks_in_the_input_geometry(tmp_path):
    """The shipped lite weights segment an oblique LPS NIfTI and a DICOM series; masks come back on their grids."""
    from bundle.data.phantoms import make_phantom
    from bundle.io import load_ct, write_ct_dicom_series
    from bundle.metrics import dice_score

    phantom = make_phantom(90210, in_plane_size=128, num_slices=32, gantry_tilt_deg=0.0, variant="normal")
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    nifti, nifti_label = _write_oblique_lps_nifti(phantom.image, phantom.label, phantom.affine, inputs)
    nifti_label = nifti_label.rename(tmp_path / nifti_label.name)  # only images in the input folder
    write_ct_dicom_series(phantom.image, phantom.affine, inputs / "series", series_description="test")
    output_dir = tmp_path / "masks"
    overrides = {"bundle_root": str(REPO_ROOT), "dataset_dir": str(inputs), "output_dir": str(output_dir)}
    bundle_run(
        "inference",
        config_file=str(CONFIGS / "inference.json"),
        meta_file=str(CONFIGS / "metadata.json"),
        logging_file=False,
        **overrides,
    )

    source = nib.load(str(nifti))
    mask = nib.load(str(output_dir / "oblique_lps_seg.nii.gz"))
    assert mask.shape == source.shape
    np.testing.assert_allclose(mask.affine, source.affine, atol=1e-4)
    assert nib.aff2axcodes(mask.affine) == ("L", "P", "S")
    reference = np.asarray(nib.load(str(nifti_label)).dataobj)
    assert dice_score(np.asarray(mask.dataobj), reference) > 0.9  # right place, not flipped

    _, dicom_affine, dicom_meta = load_ct(inputs / "series")
    series_mask = nib.load(str(output_dir / "series_seg.nii.gz"))
    np.testing.assert_allclose(series_mask.affine, dicom_meta["original_affine"], atol=1e-3)
    canonical = nib.as_closest_canonical(series_mask)
    np.testing.assert_allclose(canonical.affine, dicom_affine, atol=1e-3)
    assert dice_score(np.asarray(canonical.dataobj), phantom.label) > 0.9


def test_multi_gpu_train_runs_with_gloo_on_two_cpu_processes(tiny, tmp_path):
    from bundle.networks import UNet2D

    tiny_values = json.loads(Path(TINY).read_text())
    torch.save(UNet2D(1, 2, tiny_values["features"]).state_dict(), tmp_path / "stage1.pt")
    overrides = {
        **tiny["overrides"],
        "runs_dir": str(tmp_path / "runs"),
        "ckpt_dir": str(tmp_path / "models"),
        "pretrained_unet": str(tmp_path / "stage1.pt"),
    }
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nnodes=1",
        "--nproc_per_node=2",
        "-m",
        "monai.bundle",
        "run",
        "training",
        "--config_file",
        json.dumps(_configs("train.json", "multi_gpu_train.json")),
        "--meta_file",
        str(CONFIGS / "metadata.json"),
        "--logging_file",
        str(CONFIGS / "logging.conf"),
        "--device",
        "$torch.device('cpu')",
        "--dist_backend",
        "gloo",
    ]
    for key, value in overrides.items():
        command += [f"--{key}", str(value)]
    result = subprocess.run(
        command, cwd=tmp_path, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=400
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    log = result.stdout + result.stderr
    assert "released at iteration 2" in log  # freezing and releasing work under DDP
    assert len(re.findall(r"train: (\d+)/\1 iterations \(100%\)", log)) == 1  # progress from rank 0 only
    state = torch.load(tmp_path / "models" / "model.pt", weights_only=True)
    assert not any(k.startswith("module.") for k in state)  # saved unwrapped
