# SPDX-License-Identifier: Apache-2.0
"""``scripts/benchmark.py segmentation``: the network and the pseudo-labeller scored on the same tiny test phantoms."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from monai.bundle import ConfigParser

from scripts.benchmarks.segmentation import METHODS, benchmark_segmentation, format_segmentation_table

REPO_ROOT = Path(__file__).resolve().parents[1]
#: Two test phantoms of 64x64x24 (the tiny preset's 12 slices are too thick for the pseudo-labeller's 5 mm steps).
PHANTOMS = {"num_train": 1, "num_val": 1, "num_test": 2, "seed": 0, "in_plane_size": 64, "num_slices": 24}


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A randomly initialised tiny-preset network as ``model.pt``, benchmarked on two tiny test phantoms."""
    root = tmp_path_factory.mktemp("segmentation_benchmark")
    parser = ConfigParser()
    parser.read_config(
        [str(REPO_ROOT / "configs" / "train.json"), str(REPO_ROOT / "configs" / "presets" / "tiny.json")]
    )
    torch.manual_seed(0)
    (root / "models").mkdir()
    torch.save(parser.get_parsed_content("network_def").state_dict(), root / "models" / "model.pt")
    previous = torch.get_num_threads()
    rows = benchmark_segmentation(
        preset="tiny",
        ckpt_dir=str(root / "models"),
        work_dir=str(root / "work"),
        overrides={"phantom_dir": str(root / "phantoms"), "phantoms": PHANTOMS, "device": "cpu"},
        threads=1,
        logging_config=False,
    )
    return {"root": root, "rows": rows, "threads_before": previous}


def test_table_structure_and_restored_threads(tiny_run, capsys):
    rows = tiny_run["rows"]
    assert [row["method"] for row in rows] == list(METHODS.values())
    keys = {"method", "n", "dice_mean", "dice_std", "hd95_mm_mean", "hd95_mm_std", "seconds_per_case", "cases"}
    for row in rows:
        assert set(row) == keys and row["n"] == PHANTOMS["num_test"] == len(row["cases"])
        assert 0.0 <= row["dice_mean"] <= 1.0 and row["seconds_per_case"] > 0
        assert row["dice_mean"] == pytest.approx(sum(c["dice"] for c in row["cases"]) / row["n"])
        for case in row["cases"]:
            assert set(case) == {"case", "dice", "hd95_mm", "seconds"} and case["seconds"] > 0
    assert torch.get_num_threads() == tiny_run["threads_before"]
    table = format_segmentation_table(rows).splitlines()
    assert table[0] == "| method | case | n | Dice | HD95 mm | s/case |"
    assert len(table) == 2 + len(rows) * (1 + PHANTOMS["num_test"])
    assert all(line.count("|") == 7 for line in table)


def test_same_cases_and_network_rows_are_the_evaluation_outputs(tiny_run):
    rows, root = tiny_run["rows"], tiny_run["root"]
    datalist = json.loads(next((root / "phantoms").glob("*/datalist.json")).read_text())
    test_images = [Path(item["image"]).name for item in datalist["test"]]
    for row in rows:
        assert [Path(c["case"]).name for c in row["cases"]] == test_images
    for row, folder in zip(rows[:2], ("eval", "eval_postprocessed"), strict=True):
        written = json.loads((root / "work" / folder / "metrics_summary.json").read_text())
        assert [c["dice"] for c in row["cases"]] == [c["dice"] for c in written["cases"]]
        assert row["dice_mean"] == pytest.approx(written["summary"]["dice"]["mean"])


def test_pseudo_labeller_is_accurate_on_tiny_phantoms(tiny_run):
    pseudo = tiny_run["rows"][-1]
    for case in pseudo["cases"]:
        assert case["dice"] > 0.95, case
        assert math.isfinite(case["hd95_mm"]) and case["hd95_mm"] < 15.0, case


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"preset": "no_such_preset"}, "preset 'no_such_preset' not found"),
        ({"ckpt_dir": "no/such/folder"}, "ckpt_dir 'no/such/folder' holds no model.pt"),
        ({"threads": 0}, "threads must be an integer >= 1, got 0"),
        ({"threads": 1.5}, "threads must be an integer >= 1, got 1.5"),
    ],
)
def test_bad_arguments_raise_before_any_work(kwargs, match):
    with pytest.raises(ValueError, match=match):
        benchmark_segmentation(**kwargs)
