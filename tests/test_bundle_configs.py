# SPDX-License-Identifier: Apache-2.0
"""Static checks of the bundle's configs and shipped weights: what monai.bundle, the model zoo and MONAI Label read."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from monai.bundle import ConfigParser, ckpt_export, verify_metadata, verify_net_in_out

REPO_ROOT = Path(__file__).resolve().parents[1]
CONFIGS = REPO_ROOT / "configs"
SCHEMA = REPO_ROOT / "tests" / "data" / "meta_schema_20240725.json"  # shipped: see tests/data/NOTICE
JSON_FILES = sorted(p.relative_to(REPO_ROOT).as_posix() for p in CONFIGS.rglob("*.json"))
PRESETS = sorted(p.stem for p in (CONFIGS / "presets").glob("*.json"))
# settings that inference.json repeats from train.json (MONAI Label parses inference.json alone, so it cannot
# reference train.json): they must stay identical
SHARED_IDS = [
    "ckpt_dir",
    "output_dir",
    "phantom_dir",
    "phantoms",
    "intensity_stats",
    "device",
    "amp_kwargs",
    "in_channels",
    "out_channels",
    "features",
    "hidden_channels",
    "kernel_size",
    "bidirectional",
    "segment_length",
    "checkpoint",
    "offload_states",
    "in_plane_size",
    "slice_statistics",
    "network_def",
    "network",
]


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
    import bundle

    assert bundle.__version__ == meta["version"]  # DICOM SEG and reports name the package version


def test_metadata_matches_the_network():
    meta = _load("metadata.json")["network_data_format"]
    train = _load("train.json")
    assert list(meta["inputs"]) == ["image"] and list(meta["outputs"]) == ["pred"]
    assert meta["inputs"]["image"]["num_channels"] == train["in_channels"]
    assert meta["outputs"]["pred"]["num_channels"] == train["out_channels"]
    assert meta["outputs"]["pred"]["channel_def"] == {"0": "background", "1": "cranial_cavity"}


@pytest.mark.parametrize("name", JSON_FILES)
def test_json_is_formatted_as_the_zoo_wants(name):
    text = (REPO_ROOT / name).read_text()
    assert text == json.dumps(json.loads(text), indent=4) + "\n"


@pytest.mark.parametrize("config_id", SHARED_IDS)
def test_inference_repeats_training_settings_exactly(config_id):
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
def test_presets_are_flat_and_only_set_known_settings(preset):
    train = _load("train.json")
    values = _load(f"presets/{preset}.json")
    for key, value in values.items():
        assert "#" not in key and "::" not in key, "presets must be top-level ids so they apply to every config"
        assert key in train, f"{preset}: {key} is not a setting of train.json"
        assert not isinstance(train[key], str) or not train[key].startswith(("$", "@")), f"{key} is not a setting"
        if isinstance(train[key], dict):
            assert set(value) == set(train[key])


def test_lite_preset_is_the_default():
    """The base configs are the lite preset, which the shipped weights belong to."""
    train, inference = _load("train.json"), _load("inference.json")
    for key, value in _load("presets/lite.json").items():
        assert train[key] == value
        if key in inference:
            assert inference[key] == value


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
    assert multi["train#trainer#train_handlers"].startswith("$@train#handlers[: -2")
    assert multi["initialize"][0].startswith("$sys.path.insert(0, @bundle_root)")
    handlers = _load("train.json")["train"]["handlers"]
    assert [h["_target_"] for h in handlers[-2:]] == ["StatsHandler", "TensorBoardStatsHandler"]  # rank-0 only


def test_shipped_weights_are_a_small_plain_state_dict():
    path = REPO_ROOT / "models" / "model.pt"
    assert path.stat().st_size < 5 * 2**20
    state = torch.load(path, map_location="cpu", weights_only=True)
    assert all(isinstance(v, torch.Tensor) for v in state.values())
    parser = ConfigParser()
    parser.read_config(str(CONFIGS / "inference.json"))
    parser["bundle_root"] = str(REPO_ROOT)
    network = parser.get_parsed_content("network_def")
    network.load_state_dict(state, strict=True)  # no "module." prefix, no missing key


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
