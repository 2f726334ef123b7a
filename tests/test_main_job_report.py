# SPDX-License-Identifier: Apache-2.0
"""The main job's test-score report (scripts.benchmarks.main_job, scripts/main_job_report.py): the table's numbers,
the segmenter's outputs beside the masks, and the command's exit status.

The network is the tiny preset with seeded random weights on two tiny phantoms: these tests check the plumbing and the
arithmetic of the table, not the model's accuracy.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from bundle.metrics import summarize
from scripts.benchmarks.main_job import format_main_job_table, main_job_report

REPO_ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py: one torch thread per test
#: Two tiny test phantoms and nothing else, so generating them takes a second.
PHANTOMS = dict(num_train=0, num_val=0, num_test=2, seed=0, in_plane_size=64, num_slices=12)


def row(case: str, dice: float, hd95: float = 2.0, status: str = "done") -> dict:
    return dict(case=case, status=status, dice=dice, hd95_mm=hd95, volume_ml=1400.0, seconds=1.0, reference_ml=1410.0)


def test_table_rows_and_mean_std():
    trained = [row("p1", 0.90), row("p2", 0.96, hd95=4.0)]
    shipped = [row("p1", 0.98), row("p2", 0.0, hd95=math.nan, status="failed")]
    lines = format_main_job_table({"trained": trained, "shipped": shipped}).splitlines()
    assert lines[0].startswith("| case | reference mL | trained Dice | trained HD95 mm |")
    assert "shipped Dice" in lines[0] and len(lines) == 2 + 2 + 1
    assert lines[2] == "| p1 | 1410.0 | 0.9000 | 2.00 | 1400.0 | 1.00 | 0.9800 | 2.00 | 1400.0 | 1.00 |"
    assert lines[3].endswith("| 0.0000 | failed | failed | failed |")  # a failed case counts as Dice 0
    std = summarize([0.90, 0.96])["std"]
    assert lines[4].startswith(f"| mean ± std | 1410.0 ± 0.0 | 0.9300 ± {std:.4f} | 3.00 ± 1.41 |")
    assert "| 0.4900 ± 0.6930 | 2.00 ± - |" in lines[4]  # one defined HD95: no std


def test_table_refuses_different_cases():
    with pytest.raises(ValueError, match="different cases"):
        format_main_job_table({"trained": [row("p1", 0.9)], "shipped": [row("p2", 0.9)]})


def test_report_segments_scores_and_writes(tmp_path, tiny_weights, capsys):
    run = tmp_path / "run"
    report = main_job_report(
        run_dir=str(run),
        preset="tiny",
        weights=str(tiny_weights),
        shipped_weights=str(tiny_weights),
        shipped_preset="tiny",
        device="cpu",
        overrides={"phantom_dir": str(tmp_path / "phantoms"), "phantoms": PHANTOMS},
    )
    printed = capsys.readouterr().out
    trained, shipped = report["models"]["trained"], report["models"]["shipped"]
    names = [c["case"] for c in trained["cases"]]
    assert len(names) == 2 and names == [c["case"] for c in shipped["cases"]]
    # the same weights and preset: the same masks, so the same scores
    assert [c["dice"] for c in trained["cases"]] == [c["dice"] for c in shipped["cases"]]
    assert trained["output"] == str(run / "masks") and shipped["output"] == str(run / "masks_shipped")
    for name, case in zip(names, trained["cases"], strict=True):
        for suffix in ("_mask.nii.gz", "_qc.png", "_report.json"):
            assert (run / "masks" / f"{name}{suffix}").is_file()
        segmenter = json.loads((run / "masks" / f"{name}_report.json").read_text())
        # the table's Dice is the segmenter's own agreement figure, and its volume the report's
        assert case["dice"] == pytest.approx(segmenter["dice_vs_reference"], abs=1e-5)
        assert case["volume_ml"] == pytest.approx(segmenter["intracranial_volume_ml"], abs=1e-3)
        assert case["reference_ml"] == pytest.approx(segmenter["reference_volume_ml"], abs=1e-3)
        assert f"| {name} |" in printed
    mean = summarize(c["dice"] for c in trained["cases"])["mean"]
    assert "| mean ± std |" in printed and f"{mean:.4f} ± " in printed
    assert "target mean test Dice >= 0.97: NOT met" in printed
    assert f"QC pictures (NAME_qc.png), reports (NAME_report.json), summary.csv in {run / 'masks'}" in printed
    written = json.loads((run / "test_scores.json").read_text())
    assert written["models"]["trained"]["summary"]["dice"]["n"] == 2
    assert "| mean ± std |" in (run / "test_scores.md").read_text()
    assert sorted(p.name for p in (run / "test_scans" / "images").iterdir()) == [f"{n}.nii.gz" for n in names]


@pytest.mark.slow
def test_cli_missing_weights_exit_2(tmp_path):
    result = subprocess.run(
        [sys.executable, str(REPO_ROOT / "scripts" / "main_job_report.py"), "--run_dir", str(tmp_path)],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        timeout=120,
    )
    assert result.returncode == 2, result.stderr
    assert "weights not found" in result.stderr and "has the training finished?" in result.stderr


def test_main_job_trains_and_segments_on_the_quick_preset():
    """run_default.sh's two trainings and its report use configs/presets/quick.json: the small classic phantom set."""
    from monai.bundle import ConfigParser

    from bundle.workflows.data import phantom_dataset_dir

    script = (REPO_ROOT / "scripts" / "run_default.sh").read_text()
    assert 'preset="configs/presets/quick.json"' in script
    assert "'configs/train.json','configs/train_stage1.json','$preset'" in script
    assert "'configs/train.json','$preset'" in script
    assert 'scripts/main_job_report.py --run_dir "$out" --preset quick' in script
    parser = ConfigParser()
    parser.read_config(
        [str(REPO_ROOT / "configs" / f) for f in ("train.json", "train_stage1.json", "presets/quick.json")]
    )
    assert phantom_dataset_dir("cache", parser["phantoms"]).name.startswith("12-3-8_size128_slices32_seed0_v")
    assert "_scan" not in phantom_dataset_dir("cache", parser["phantoms"]).name  # the classic protocol
    # the CPU recipe of docs/README.md: 1000 Adam iterations of stage 1, 100 of stage 2 from the pass-through start
    assert (parser["stage1_epochs"], parser["epochs"], parser["epoch_length"]) == (40, 4, 25)
    assert parser["stage1_optimizer"]["_target_"] == "torch.optim.Adam" and parser["optimizer"] == "@stage1_optimizer"
    assert parser["pass_through_init"] is True
