# SPDX-License-Identifier: Apache-2.0
"""Convergence of the bundle's two-stage training on phantoms, measured end to end through the bundle's own configs.

``python scripts/benchmark.py convergence`` runs, in one process and with the configs a user runs:

1. stage 1 (``configs/train.json`` + ``configs/train_stage1.json`` + the preset): the 2D U-Net on random slices;
2. stage 2 (``configs/train.json`` + the preset): the U-Net-in-ConvLSTM initialised from stage 1's best U-Net;
3. evaluation (``configs/train.json`` + ``configs/evaluate.json`` + the preset) of the best stage-2 model on the
   phantom test split, in each case's native geometry;

then prints one table: iterations and seconds per iteration of each stage, best validation Dice, and the test Dice
and HD95 (mm) mean +- std. Everything is written under ``work_dir``; ``ship=True`` then copies the best weights to
``models/model.pt`` (a plain state_dict). Settings are overridden with the same ids as on the command line, e.g.
``--overrides "{'epochs': 8, 'learning_rate': 1e-4}"``.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from monai.bundle import ConfigWorkflow

__all__ = [
    "EVALUATION_CONFIGS",
    "LITE_SCHEDULE",
    "benchmark_convergence",
    "make_workflow",
    "preset_config",
    "run_config",
]

REPO_ROOT = Path(__file__).resolve().parents[2]


def repo_path(path: str | Path) -> Path:
    """``path`` itself if absolute, else relative to the repository root (how the benchmarks read their options).

    Example:
        >>> repo_path("runs/x") == REPO_ROOT / "runs/x"
        True
    """
    return Path(path) if Path(path).is_absolute() else REPO_ROOT / path


#: The longer schedule of the shipped lite weights (the lite preset itself is the short main-job schedule):
#: stage 1 1500 iterations, stage 2 400 iterations of which the first 100 with the U-Net fixed.
LITE_SCHEDULE = {"stage1_epochs": 60, "epochs": 16, "freeze_iterations": 100}
#: The configs of the evaluation on the test split (the preset goes last), relative to ``configs/``.
EVALUATION_CONFIGS = ("train.json", "evaluate.json")
logger = logging.getLogger(__name__)


def preset_config(preset: str) -> str:
    """The config path of a preset, relative to ``configs/``, after checking that it exists.

    Args:
        preset: a preset name in ``configs/presets`` (``"tiny"``, ``"lite"``, ``"paper"``).

    Returns:
        ``"presets/<preset>.json"``.

    Raises:
        ValueError: for an unknown preset.

    Example:
        >>> preset_config("lite")
        'presets/lite.json'
    """
    preset_file = REPO_ROOT / "configs" / "presets" / f"{preset}.json"
    if not preset_file.is_file():
        raise ValueError(f"preset {preset!r} not found: {preset_file} does not exist.")
    return f"presets/{preset}.json"


def make_workflow(
    config_files: list[str], workflow_type: str, overrides: Mapping[str, Any], logging_file: bool = True
) -> ConfigWorkflow:
    """Build and initialise one bundle workflow in this process, as ``monai.bundle run`` does.

    Args:
        config_files: config paths relative to ``configs/``, merged in order.
        workflow_type: ``"train"`` or ``"infer"``.
        overrides: config ids to override (``bundle_root`` is the repository root unless overridden).
        logging_file: apply ``configs/logging.conf`` (INFO to stdout). Defaults to True.

    Returns:
        The initialised :class:`monai.bundle.ConfigWorkflow`; ``workflow.parser`` gives its parsed objects.

    Example:
        >>> workflow = make_workflow([*EVALUATION_CONFIGS, "presets/lite.json"], "infer", {})  # doctest: +SKIP
    """
    from monai.bundle import ConfigWorkflow

    configs = [str(REPO_ROOT / "configs" / name) for name in config_files]
    workflow = ConfigWorkflow(
        config_file=configs,
        meta_file=str(REPO_ROOT / "configs" / "metadata.json"),
        logging_file=str(REPO_ROOT / "configs" / "logging.conf") if logging_file else False,
        workflow_type=workflow_type,
        **{"bundle_root": str(REPO_ROOT), **overrides},
    )
    workflow.initialize()
    return workflow


def run_config(config_files: list[str], workflow_type: str, overrides: Mapping[str, Any]) -> dict[str, Any]:
    """Run one bundle workflow in this process and time it.

    Args:
        config_files: config paths relative to the repository root, merged in order.
        workflow_type: ``"train"`` or ``"infer"``.
        overrides: config ids to override.

    Returns:
        ``{"seconds", "iterations", "seconds_per_iteration", "best_metric"}`` (training) or ``{"seconds"}``.
    """
    workflow = make_workflow(config_files, workflow_type, overrides)
    result: dict[str, Any] = {}
    start = time.perf_counter()
    workflow.run()
    result["seconds"] = time.perf_counter() - start
    if workflow_type == "train":
        trainer = workflow.parser.get_parsed_content("train#trainer")
        evaluator = workflow.parser.get_parsed_content("validate#evaluator")
        result["iterations"] = trainer.state.iteration
        result["seconds_per_iteration"] = result["seconds"] / max(trainer.state.iteration, 1)
        result["best_metric"] = float(evaluator.state.best_metric)
    workflow.finalize()
    return result


def benchmark_convergence(
    preset: str = "lite",
    work_dir: str = "runs/convergence",
    overrides: Mapping[str, Any] | None = None,
    stage1: bool = True,
    ship: bool = False,
    threads: int | None = None,
) -> dict[str, Any]:
    """Train both stages and evaluate on the phantom test split; print the convergence table.

    Args:
        preset: ``configs/presets/<preset>.json`` (``"tiny"``, ``"lite"``, ``"paper"``). Defaults to ``"lite"``.
        work_dir: folder (relative to the repository root, or absolute) for phantoms' training outputs, weights and
            evaluation results. Defaults to ``"runs/convergence"``.
        overrides: extra config ids for all three runs (e.g. ``{"epochs": 8}``). Defaults to None:
            :data:`LITE_SCHEDULE` for the lite preset, nothing for the others.
        stage1: run stage 1 (False reuses ``work_dir/runs/stage1/model.pt``). Defaults to True.
        ship: copy the best stage-2 weights to ``models/model.pt`` afterwards. Defaults to False.
        threads: ``torch.set_num_threads`` during the run; None keeps the current setting. Defaults to None.

    Returns:
        The table row as a dict (timings and metrics).

    Raises:
        ValueError: for an unknown preset.
    """
    preset_file = preset_config(preset)
    work = Path(work_dir) if Path(work_dir).is_absolute() else REPO_ROOT / work_dir
    if overrides is None:
        overrides = LITE_SCHEDULE if preset == "lite" else {}
    common = {"runs_dir": str(work / "runs"), "ckpt_dir": str(work / "models"), **dict(overrides)}
    previous_threads = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        start = time.perf_counter()
        s1 = {}
        if stage1:
            s1 = run_config(["train.json", "train_stage1.json", preset_file], "train", common)
        s2 = run_config(["train.json", preset_file], "train", common)
        evaluation = run_config(
            [*EVALUATION_CONFIGS, preset_file], "infer", {**common, "output_dir": str(work / "eval")}
        )
        total = time.perf_counter() - start
    finally:
        torch.set_num_threads(previous_threads)
    summary = json.loads((work / "eval" / "metrics_summary.json").read_text())["summary"]
    dice, hd95 = summary["dice"], summary["hd95_mm"]
    row = {
        "preset": preset,
        "threads": threads or previous_threads,
        "stage 1 it": s1.get("iterations", 0),
        "stage 1 s/it": round(s1.get("seconds_per_iteration", 0.0), 3),
        "stage 1 val Dice": round(s1.get("best_metric", float("nan")), 4),
        "stage 2 it": s2["iterations"],
        "stage 2 s/it": round(s2["seconds_per_iteration"], 2),
        "stage 2 val Dice": round(s2["best_metric"], 4),
        "test Dice": f"{dice['mean']:.4f} ± {dice['std']:.4f} (n={dice['n']})",
        "test HD95 mm": f"{hd95['mean']:.2f} ± {hd95['std']:.2f}",
        "eval s": round(evaluation["seconds"], 1),
        "total min": round(total / 60.0, 1),
    }
    print("Convergence on phantoms (s/it includes data loading, augmentation and validation every epoch):")
    print(" | ".join(row))
    print(" | ".join(str(v) for v in row.values()))
    if ship:
        target = REPO_ROOT / "models" / "model.pt"
        tmp = target.with_name(".model.pt.tmp")
        shutil.copyfile(work / "models" / "model.pt", tmp)
        os.replace(tmp, target)
        print(f"shipped {work / 'models' / 'model.pt'} -> {target}")
    return row
