# SPDX-License-Identifier: Apache-2.0
"""Static checks of the bundle's configs and shipped weights: what monai.bundle, the model zoo and MONAI Label read."""

from __future__ import annotations

import inspect
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from monai.bundle import ConfigParser, ckpt_export, verify_metadata, verify_net_in_out

from bundle.networks import cranial_cavity_network

REPO_ROOT = Path(__file__).resolve().parents[1]
CONFIGS = REPO_ROOT / "configs"
SCHEMA = REPO_ROOT / "tests" / "data" / "meta_schema_20240725.json"  # shipped: see tests/data/NOTICE
JSON_FILES = sorted(p.relative_to(REPO_ROOT).as_posix() for p in CONFIGS.rglob("*.json"))
PRESETS = sorted(p.stem for p in (CONFIGS / "presets").glob("*.json"))
# What inference.json and train.json both define. Each must stand alone (MONAI Label parses each on its own and the
# zoo's verify_net_in_out/ckpt_export read inference.json alone; MONAI's `%file.json#id` macros resolve against the
# working directory, not bundle_root), so these bundle-level ids are written in both and must agree. The network and
# its settings are not among them: both name bundle.networks.cranial_cavity_network (test_network_is_defined_once).
SHARED_IDS = [
    "bundle_root",
    "ckpt_dir",
    "output_dir",
    "phantom_dir",
    "dataset_dir",
    "datalist_file",
    "phantoms",
    "intensity_stats",
    "device",
    "amp",
    "amp_kwargs",
    "in_plane_size",
    "pixdim",
    "body_threshold_hu",
    "network_def",
    "network",
]
NETWORK_SETTINGS = set(inspect.signature(cranial_cavity_network).parameters)


def _load(name: str) -> dict:
    return json.loads((CONFIGS / name).read_text())


@pytest.fixture(scope="module")
def bundle_path(tmp_path_factory):
    """A copy of the bundle's configs and weights with the schema at ``eval/schema.json`` (as model-zoo CI does)."""
    root = tmp_path_factory.mktemp("bundle")
    shutil.copytree(CONFIGS, root / "configs")
    shutil.copytree(REPO_ROOT / "models", root / "models", ignore=shutil.ignore_patterns("checkpoint_*", "*.ts"))
    (root / "eval").mkdir()
    shutil.copy(SCHEMA, root / "eval" / "schema.json")
    return root


@pytest.mark.filterwarnings("ignore:No hash value provided:UserWarning")  # a local schema file has no hash
def test_metadata_verifies_against_schema_offline(bundle_path):
    verify_metadata(
        meta_file=str(bundle_path / "configs" / "metadata.json"), filepath=str(bundle_path / "eval" / "schema.json")
    )
    meta = _load("metadata.json")
    assert "optional_packages_version" not in meta  # both keys would silently override each other
    assert meta["version"] in meta["changelog"]


def test_one_version_everywhere():
    """metadata.json's version (the zoo's) is the bundle's: the package (DICOM SEG and reports name it) and
    pyproject.toml give the same; the changelog's newest entry is it."""
    import tomllib

    import bundle

    meta = _load("metadata.json")
    assert bundle.__version__ == meta["version"]
    assert tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["version"] == meta["version"]
    assert next(iter(meta["changelog"])) == meta["version"]


def test_metadata_matches_the_network():
    meta = _load("metadata.json")["network_data_format"]
    network = cranial_cavity_network()
    assert list(meta["inputs"]) == ["image"] and list(meta["outputs"]) == ["pred"]
    assert meta["inputs"]["image"]["num_channels"] == network.in_channels
    assert meta["outputs"]["pred"]["num_channels"] == network.out_channels
    assert meta["outputs"]["pred"]["channel_def"] == {"0": "background", "1": "cranial_cavity"}


@pytest.mark.parametrize("name", JSON_FILES)
def test_json_is_formatted_as_the_zoo_wants(name):
    text = (REPO_ROOT / name).read_text()
    assert text == json.dumps(json.loads(text), indent=4) + "\n"


def test_network_is_defined_once():
    """Every config's network_def is the one factory, without arguments; only stage 1 and the presets set any."""
    for name in ("train.json", "inference.json"):
        config = _load(name)
        assert config["network_def"] == {"_target_": "bundle.networks.cranial_cavity_network"}
        assert not NETWORK_SETTINGS & set(config), f"{name} restates a network setting"
    assert config["network"] == "$@network_def.to(@device)"
    for name in JSON_FILES:
        ids = {k for k in _load(Path(name).relative_to("configs").as_posix()) if k.startswith("network_def")}
        if name == "configs/train_stage1.json":
            assert ids == {"network_def#stage"}
        elif name.startswith("configs/presets/"):
            assert {k.split("#", 1)[1] for k in ids} <= NETWORK_SETTINGS - {"stage"}
        else:
            assert ids <= {"network_def"}, name


@pytest.mark.parametrize("config_id", SHARED_IDS)
def test_standalone_configs_agree_on_what_both_define(config_id):
    assert _load("inference.json")[config_id] == _load("train.json")[config_id]


def test_inference_preprocessing_is_the_training_image_chain():
    def image_chain(transforms):
        return [
            {k: v for k, v in t.items() if k not in ("keys", "mode", "anti_aliasing", "dtype")}
            for t in transforms
            if "image" in json.dumps(t.get("keys")) and t["_target_"] not in ("ResampleToMatchd",)
        ]

    train = image_chain(_load("train.json")["train"]["deterministic_transforms"])
    infer = image_chain(_load("inference.json")["preprocessing"]["transforms"])
    assert train == infer


@pytest.mark.parametrize("preset", PRESETS)
def test_presets_hold_only_what_differs_from_the_defaults(preset):
    """Flattened ids of train.json's settings (or the network's), each with a value other than the default."""
    train = _load("train.json")
    defaults = {k: v.default for k, v in inspect.signature(cranial_cavity_network).parameters.items()}
    for key, value in _load(f"presets/{preset}.json").items():
        if key.startswith("network_def#"):
            setting = key.split("#", 1)[1]
            assert setting in NETWORK_SETTINGS - {"stage"}, f"{preset}: {key} is not a network setting"
            default = defaults[setting]
        elif "#" in key:
            parent, setting = key.split("#", 1)
            assert isinstance(train.get(parent), dict) and setting in train[parent], f"{preset}: {key} is unknown"
            default = train[parent][setting]
        else:
            assert key in train, f"{preset}: {key} is not a setting of train.json"
            assert not isinstance(train[key], (dict, list)) or key in (
                "in_plane_size",
                "pixdim",
                "max_translation_vox",
                "stage1_optimizer",
            )
            assert not isinstance(train[key], str) or not train[key].startswith(("$", "@")), f"{key} is not a setting"
            default = train[key]
        assert value != default, f"{preset}: {key} restates the default {default!r}"


def test_lite_preset_is_the_default():
    """The base configs and the network's defaults are the lite preset, which the shipped weights belong to."""
    assert _load("presets/lite.json") == {}


@pytest.mark.parametrize("files", [["train.json"], ["train.json", "train_stage1.json"], ["inference.json"]])
def test_run_ids_and_sys_path_first(files):
    parser = ConfigParser()
    parser.read_config([str(CONFIGS / f) for f in files])
    alias = "inference" if files == ["inference.json"] else "training"
    assert parser[alias] == "$@run"
    assert parser["initialize"][0].startswith("$sys.path.insert(0, @bundle_root)")


def test_evaluate_and_multi_gpu_deltas():
    evaluate, multi = _load("evaluate.json"), _load("multi_gpu_train.json")
    assert evaluate["evaluating"] == "$@run" and evaluate["run"] == ["$@validate#evaluator.run()"]
    assert multi["initialize"][0].startswith("$sys.path.insert(0, @bundle_root)")
    # rank-0-only handlers are addressed by id, not by position (MONAI Label inserts a CheckpointLoader first)
    train = _load("train.json")["train"]
    assert train["trainer"]["train_handlers"] == "$@train#handlers + @train#logging_handlers"
    assert [h["_target_"] for h in train["logging_handlers"]] == ["StatsHandler", "TensorBoardStatsHandler"]
    assert "@train#logging_handlers if dist.get_rank() == 0" in multi["train#trainer#train_handlers"]
    assert "[:" not in json.dumps(multi)
    # DDP needs find_unused_parameters only while PretrainedUNetHandler keeps the stage-1 U-Net frozen
    assert multi["network"]["find_unused_parameters"] == "@frozen_pretrained_unet"
    assert "@freeze_iterations > 0" in multi["frozen_pretrained_unet"]


def test_shipped_weights_are_a_small_plain_state_dict():
    """A tensor-only state_dict in float16 (under the zoo's 1024 KB pre-commit limit, so no hosting is needed),
    loaded into the float32 network without a missing or unexpected key. Storing float16 was measured on 4 phantoms
    (256 px, 4 mm slices): probabilities within 0.0031, at most 4 of 500,000-700,000 voxels labelled differently."""
    path = REPO_ROOT / "models" / "model.pt"
    assert path.stat().st_size <= 1024 * 1024
    state = torch.load(path, map_location="cpu", weights_only=True)
    assert all(isinstance(v, torch.Tensor) for v in state.values())
    assert {v.dtype for v in state.values() if v.is_floating_point()} == {torch.float16}
    parser = ConfigParser()
    parser.read_config(str(CONFIGS / "inference.json"))
    parser["bundle_root"] = str(REPO_ROOT)
    network = parser.get_parsed_content("network_def")
    network.load_state_dict(state, strict=True)  # no "module." prefix, no missing key
    assert {p.dtype for p in network.parameters()} == {torch.float32}  # loading casts to the network's dtype


def _requirement_pins() -> dict[str, str]:
    pins = {}
    for line in (REPO_ROOT / "requirements.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if "==" in line:
            name, version = line.split("==")
            pins[name.strip().lower()] = version.strip()
    return pins


def test_metadata_pins_every_runtime_package_as_requirements_txt_does():
    """The zoo's premerge installs only metadata.json's pins: every package the bundle imports is there (DICOM SEG
    needs highdicom and pyjpegls, the QC pictures pillow), with requirements.txt's exact version."""
    meta, pins = _load("metadata.json"), _requirement_pins()
    required = meta["required_packages_version"]
    for name in ("nibabel", "pydicom", "scipy", "pytorch-ignite", "tqdm", "fire", "highdicom", "pyjpegls", "pillow"):
        assert name in required, name
    for name, version in required.items():
        assert pins.get(name.lower()) == version, f"{name}: metadata {version}, requirements.txt {pins.get(name)}"
    assert (meta["monai_version"], meta["pytorch_version"], meta["numpy_version"]) == (
        pins["monai"],
        pins["torch"],
        pins["numpy"],
    )


def test_verify_net_in_out(bundle_path, monkeypatch):
    monkeypatch.chdir(REPO_ROOT)
    verify_net_in_out(
        net_id="network_def",
        meta_file=str(bundle_path / "configs" / "metadata.json"),
        config_file=str(bundle_path / "configs" / "inference.json"),
        device="cpu",
        n=2,
        any=9,
    )


@pytest.mark.filterwarnings("ignore:`torch.jit:DeprecationWarning")  # TorchScript is what the zoo exports
def test_ckpt_export_torchscript_and_reload(bundle_path, monkeypatch):
    monkeypatch.chdir(REPO_ROOT)
    ts_path = bundle_path / "models" / "model.ts"
    ckpt_export(
        net_id="network_def",
        filepath=str(ts_path),
        ckpt_file=str(bundle_path / "models" / "model.pt"),
        meta_file=str(bundle_path / "configs" / "metadata.json"),
        config_file=str(bundle_path / "configs" / "inference.json"),
    )
    scripted = torch.jit.load(str(ts_path))
    parser = ConfigParser()
    parser.read_config(str(CONFIGS / "inference.json"))
    network = parser.get_parsed_content("network_def")
    network.load_state_dict(torch.load(bundle_path / "models" / "model.pt", weights_only=True))
    network.eval()
    x = torch.randn(1, 1, 40, 36, 5)
    with torch.no_grad():
        torch.testing.assert_close(scripted(x), network(x))


_WORKFLOW_FROM_PARENT = """
import sys
from monai.bundle import create_workflow
assert "bundle" not in sys.modules and not any(p in ("", ".") for p in sys.path[1:])
workflow = create_workflow(
    config_file="brain/configs/inference.json", workflow_type="inference", bundle_root="brain", logging_file=False,
    dataset_dir="inputs", output_dir="masks",
)
assert workflow.check_properties() == [], workflow.check_properties()
workflow.run()
workflow.finalize()
"""


@pytest.mark.filterwarnings("ignore:.*coarser than:UserWarning")
@pytest.mark.slow
def test_workflow_api_from_the_parent_folder(tmp_path):
    """monai.bundle's workflow API run from the folder above the bundle: every path goes through bundle_root (the
    intensity statistics, the weights) and the bundle package is found through it, not through the working folder."""
    import nibabel as nib
    import numpy as np

    from bundle.data.phantoms import make_phantom

    brain = tmp_path / "brain"
    for folder in ("configs", "bundle"):
        shutil.copytree(REPO_ROOT / folder, brain / folder, ignore=shutil.ignore_patterns("__pycache__", "nnunet"))
    (brain / "models").mkdir()
    shutil.copy(REPO_ROOT / "models" / "model.pt", brain / "models" / "model.pt")
    (tmp_path / "inputs").mkdir()
    phantom = make_phantom(1, in_plane_size=64, num_slices=16)
    nib.save(nib.Nifti1Image(phantom.image.astype(np.int16), phantom.affine), str(tmp_path / "inputs" / "case.nii.gz"))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | {"OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, "-c", _WORKFLOW_FROM_PARENT],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    mask = nib.load(str(tmp_path / "masks" / "case_seg.nii.gz"))
    assert mask.shape == phantom.image.shape
    assert np.asarray(mask.dataobj).any()
