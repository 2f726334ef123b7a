# SPDX-License-Identifier: Apache-2.0
"""nnU-Net as the measured peer: its default ``2d`` and ``3d_fullres`` U-Nets and the plugin's C-LSTM (``3d_clstm``)
trained on the same phantom split with the same CPU wall-time budget, scored on the same test phantoms.

Protocol (``python scripts/benchmark.py nnunet`` with the nnU-Net venv, ``docs/nnunet.md``):

- data: the quick preset's classic split (``configs/presets/quick.json``: 12 training, 3 validation, 8 test phantoms
  at 128 x 128 x 32, seed 0), written as an nnU-Net raw dataset; fold 0 is that 12/3 split;
- planning: ``nnUNetv2_plan_and_preprocess -c 2d 3d_fullres`` (nnU-Net's defaults), then
  :func:`bundle.nnunet.plans.add_clstm_configuration` (which reuses ``3d_fullres``'s preprocessed data);
- training: each configuration's trainer (``nnUNetTrainer`` for the U-Nets, ``nnUNetTrainerCLSTM``) unchanged except
  for the length: epochs of ``iterations`` steps (nnU-Net's default is 250) and, after the first epoch has been
  timed, as many epochs as fit in ``budget_s`` seconds of wall time, with nnU-Net's poly learning-rate schedule
  stretched over those epochs. One thread, augmentation in the training process (``nnUNet_n_proc_DA=0``);
- inference: nnU-Net's predictor on the final checkpoint, test-time mirroring off (on one CPU thread it multiplies
  the 3D time by 8), one case after another;
- scores: Dice, HD95 (mm) and signed ICV error (%) per test case (``bundle.metrics``), training seconds, inference
  seconds per volume, and the peak resident memory (RSS) of the training and of the inference process.

Each stage runs in its own process (``python -m scripts.benchmarks.nnunet train|predict ...``), so that its peak RSS
is its own.
"""

from __future__ import annotations

import json
import math
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from scripts.benchmarks.convergence import REPO_ROOT, repo_path

__all__ = ["benchmark_nnunet", "benchmark_nnunet_robustness", "format_nnunet_table"]

DATASET_ID = 502
DATASET_NAME = "PhantomsQuick"
CONFIGURATIONS = ("2d", "3d_fullres", "3d_clstm")
TRAINERS = {"2d": "nnUNetTrainer", "3d_fullres": "nnUNetTrainer", "3d_clstm": "nnUNetTrainerCLSTM"}
PLANS = {"2d": "nnUNetPlans", "3d_fullres": "nnUNetPlans", "3d_clstm": "nnUNetPlansCLSTM"}


def _env(root: Path) -> dict[str, str]:
    return {
        **os.environ,
        "nnUNet_raw": str(root / "raw"),
        "nnUNet_preprocessed": str(root / "preprocessed"),
        "nnUNet_results": str(root / "results"),
        "nnUNet_extTrainer": str(REPO_ROOT / "bundle" / "nnunet" / "trainers"),
        "PYTHONPATH": str(REPO_ROOT),
        "nnUNet_n_proc_DA": "0",
        "nnUNet_def_n_proc": "1",
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        "MPLBACKEND": "Agg",
    }


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _train(configuration: str, budget_s: float, iterations: int, val_iterations: int) -> dict[str, Any]:
    """Worker: train fold 0 of ``configuration`` within ``budget_s`` (runs in the nnU-Net environment)."""
    import torch
    from nnunetv2.run.run_training import get_trainer_from_args

    torch.set_num_threads(1)
    trainer = get_trainer_from_args(
        str(DATASET_ID), configuration, 0, TRAINERS[configuration], PLANS[configuration], device=torch.device("cpu")
    )
    trainer.num_iterations_per_epoch = iterations
    trainer.num_val_iterations_per_epoch = val_iterations
    start = time.monotonic()
    trainer.on_train_start()
    epochs = None
    while epochs is None or trainer.current_epoch < epochs:
        trainer.on_epoch_start()
        trainer.on_train_epoch_start()
        outputs = [trainer.train_step(next(trainer.dataloader_train)) for _ in range(trainer.num_iterations_per_epoch)]
        trainer.on_train_epoch_end(outputs)
        with torch.no_grad():
            trainer.on_validation_epoch_start()
            val = [trainer.validation_step(next(trainer.dataloader_val)) for _ in range(val_iterations)]
            trainer.on_validation_epoch_end(val)
        trainer.on_epoch_end()
        if epochs is None:  # the first epoch sets the length; the poly schedule then spans it
            epochs = max(1, math.floor(budget_s / (time.monotonic() - start)))
            trainer.num_epochs = epochs
            trainer.lr_scheduler.max_steps = epochs
    trainer.on_train_end()
    return {
        "train_s": time.monotonic() - start,
        "epochs": epochs,
        "iterations": epochs * iterations,
        "batch_size": trainer.batch_size,
        "patch_size": list(trainer.configuration_manager.patch_size),
        "parameters": sum(p.numel() for p in trainer.network.parameters()),
        "train_peak_rss_mb": _peak_rss_mb(),
    }


def _predict(configuration: str, input_dir: str, output_dir: str) -> dict[str, Any]:
    """Worker: predict every image of ``input_dir`` with fold 0's final checkpoint, one after another."""
    import torch
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    torch.set_num_threads(1)
    folder = Path(os.environ["nnUNet_results"]) / f"Dataset{DATASET_ID}_{DATASET_NAME}"
    folder = folder / f"{TRAINERS[configuration]}__{PLANS[configuration]}__{configuration}"
    predictor = nnUNetPredictor(
        use_mirroring=False, perform_everything_on_device=False, device=torch.device("cpu"), allow_tqdm=False
    )
    predictor.initialize_from_trained_model_folder(str(folder), (0,), "checkpoint_final.pth")
    count = len(list(Path(input_dir).glob("*.nii.gz")))
    start = time.monotonic()
    predictor.predict_from_files_sequential(input_dir, output_dir, save_probabilities=False, overwrite=True)
    return {"infer_s_per_volume": (time.monotonic() - start) / count, "infer_peak_rss_mb": _peak_rss_mb()}


def _worker(python: str, root: Path, verb: str, configuration: str, *args: str, reuse: bool = False) -> dict[str, Any]:
    """Run ``verb`` for ``configuration`` in a fresh process; with ``reuse``, a result already saved is returned."""
    out = root / f"{verb}_{configuration}.json"
    if reuse and out.is_file():
        return json.loads(out.read_text())
    cmd = [python, "-m", "scripts.benchmarks.nnunet", verb, configuration, *args, str(out)]
    subprocess.run(cmd, env=_env(root), cwd=REPO_ROOT, check=True)
    return json.loads(out.read_text())


def _score(pred_file: Path, label_file: Path) -> dict[str, float]:
    import nibabel as nib

    from bundle.metrics import case_metrics

    label = nib.load(label_file)
    ref = np.asarray(label.dataobj) > 0
    pred = np.asarray(nib.load(pred_file).dataobj) > 0
    metrics = case_metrics(pred, ref, label.affine)
    metrics["icv_error_pct"] = 100.0 * (float(pred.sum()) - float(ref.sum())) / max(float(ref.sum()), 1.0)
    return metrics


def format_nnunet_table(rows: Sequence[dict[str, Any]]) -> str:
    """Markdown table of :func:`benchmark_nnunet`'s rows (mean ± SD over the test cases)."""
    lines = [
        "| model | params | epochs x iters | test Dice | HD95 mm | abs ICV error % | train s | infer s/vol "
        "| peak RSS train / infer MB |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['parameters'] / 1e6:.2f} M | {r['epochs']} x {r['iterations'] // r['epochs']} "
            f"| {r['dice_mean']:.3f} ± {r['dice_sd']:.3f} | {r['hd95_mean']:.1f} ± {r['hd95_sd']:.1f} "
            f"| {r['abs_icv_error_mean']:.1f} | {r['train_s']:.0f} | {r['infer_s_per_volume']:.1f} "
            f"| {r['train_peak_rss_mb']:.0f} / {r['infer_peak_rss_mb']:.0f} |"
        )
    return "\n".join(lines)


def benchmark_nnunet(
    output: str = "runs/nnunet",
    budget_s: float = 600.0,
    iterations: int = 10,
    val_iterations: int = 2,
    configurations: Sequence[str] = CONFIGURATIONS,
    python: Optional[str] = None,
) -> list[dict[str, Any]]:
    """Train and score nnU-Net's ``2d``/``3d_fullres`` and the plugin's ``3d_clstm`` at the same wall-time budget.

    Args:
        output: work folder (phantoms, nnU-Net's raw/preprocessed/results folders, predictions, ``results.json``).
        budget_s: training wall time per model, seconds (one thread). Defaults to 600.
        iterations: training iterations per epoch. Defaults to 10.
        val_iterations: nnU-Net's validation iterations per epoch. Defaults to 2.
        configurations: which of ``2d``, ``3d_fullres``, ``3d_clstm``. Defaults to all three.
        python: interpreter with nnunetv2 installed (default: this one).

    Returns:
        One row per configuration (also written to ``<output>/results.json``; the table is printed).
    """
    from bundle.data.phantoms import make_phantom_dataset
    from bundle.nnunet.dataset import datalist_to_nnunet
    from bundle.nnunet.plans import add_clstm_configuration

    python = python or sys.executable
    root = repo_path(output)
    quick = json.loads((REPO_ROOT / "configs" / "presets" / "quick.json").read_text())["phantoms"]
    phantom_kwargs = {k: quick[k] for k in ("num_train", "num_val", "num_test", "seed", "in_plane_size", "num_slices")}
    datalist = make_phantom_dataset(root / "phantoms", scan=quick["scan"], **phantom_kwargs)
    raw = datalist_to_nnunet(datalist, root / "raw", DATASET_ID, DATASET_NAME)
    pre = root / "preprocessed" / raw.name
    timings: dict[str, float] = {}
    if not (pre / "nnUNetPlansCLSTM.json").is_file():
        start = time.monotonic()
        cmd = [str(Path(python).parent / "nnUNetv2_plan_and_preprocess"), "-d", str(DATASET_ID), "-c", "2d",
               "3d_fullres", "-np", "1", "1", "-npfp", "1"]  # fmt: skip
        subprocess.run(cmd, env={**_env(root), "nnUNet_n_proc_DA": "1"}, check=True)  # 0 breaks planning
        (pre / "splits_final.json").write_text((raw / "splits_final.json").read_text())
        add_clstm_configuration(pre)
        timings["plan_and_preprocess_s"] = time.monotonic() - start
    rows = []
    for configuration in configurations:
        row: dict[str, Any] = {"model": f"{configuration} ({TRAINERS[configuration]})"}
        # a finished training (its result file) is reused, so that a rerun only repeats what failed or is missing
        train_args = (str(budget_s), str(iterations), str(val_iterations))
        row.update(_worker(python, root, "train", configuration, *train_args, reuse=True))
        pred_dir = root / "predictions" / configuration
        pred_dir.mkdir(parents=True, exist_ok=True)
        row.update(_worker(python, root, "predict", configuration, str(raw / "imagesTs"), str(pred_dir)))
        cases = [_score(p, raw / "labelsTs" / p.name) for p in sorted(pred_dir.glob("*.nii.gz"))]
        for key, name in (("dice", "dice"), ("hd95_mm", "hd95"), ("icv_error_pct", "icv_error")):
            values = np.array([c[key] for c in cases], dtype=float)
            row[f"{name}_mean"], row[f"{name}_sd"] = float(np.nanmean(values)), float(np.nanstd(values, ddof=1))
        row["abs_icv_error_mean"] = float(np.mean([abs(c["icv_error_pct"]) for c in cases]))
        row["cases"] = cases
        rows.append(row)
        (root / "results.json").write_text(json.dumps({"timings": timings, "rows": rows}, indent=1) + "\n")
        print(format_nnunet_table(rows), flush=True)
    return rows


def benchmark_nnunet_robustness(
    output: str = "runs/nnunet",
    suite: str = "cache/robustness",
    cases_per_factor: int = 1,
    configurations: Sequence[str] = CONFIGURATIONS,
    python: Optional[str] = None,
) -> list[dict[str, Any]]:
    """Score the models that :func:`benchmark_nnunet` trained on the first cases of each stress-suite factor.

    The suite is ``scripts.benchmarks.robustness``'s (full-size phantoms at native grids, seeds and protocols unlike
    the training data); nnU-Net predicts each case at its plans' spacing and returns it in the native grid, scored
    like the robustness benchmark (Dice, HD95, signed ICV error).

    Args:
        output: :func:`benchmark_nnunet`'s work folder (trained models inside).
        suite: the stress-suite folder (generated there once, cases reused).
        cases_per_factor: cases per factor, the first ones in suite order. Defaults to 1.
        configurations: which trained configurations. Defaults to all three.
        python: interpreter with nnunetv2 installed (default: this one).

    Returns:
        One row per configuration and factor (also written to ``<output>/robustness.json``; a table is printed).
    """
    import shutil

    from scripts.benchmarks.robustness import STRESS_FACTORS, make_stress_suite

    python = python or sys.executable
    root = repo_path(output)
    cases = make_stress_suite(repo_path(suite), list(STRESS_FACTORS))
    per_factor: dict[str, int] = {}
    chosen = []
    for case, image, label in cases:
        per_factor[case.factor] = per_factor.get(case.factor, 0) + 1
        if per_factor[case.factor] <= cases_per_factor:
            chosen.append((case, image, label))
    inputs = root / "stress" / "images"
    inputs.mkdir(parents=True, exist_ok=True)
    for case, image, _ in chosen:
        shutil.copyfile(image, inputs / f"{case.name}_0000.nii.gz")
    rows = []
    lines = ["| model | factor | n | Dice mean | Dice worst | HD95 mm | ICV error % |", "|---|---|---|---|---|---|---|"]
    for configuration in configurations:
        pred_dir = root / "stress" / configuration
        pred_dir.mkdir(parents=True, exist_ok=True)
        timing = _worker(python, root, "predict", configuration, str(inputs), str(pred_dir))
        for case, _, label in chosen:
            rows.append({"model": configuration, "factor": case.factor, "case": case.name, **timing,
                         **_score(pred_dir / f"{case.name}.nii.gz", label)})  # fmt: skip
        scored = [r for r in rows if r["model"] == configuration]
        for factor in [*dict.fromkeys(r["factor"] for r in scored), "all"]:
            sel = [r for r in scored if factor in ("all", r["factor"])]
            dice = [r["dice"] for r in sel]
            lines.append(
                f"| {configuration} | {factor} | {len(sel)} | {np.mean(dice):.3f} | {np.min(dice):.3f} "
                f"| {np.nanmean([r['hd95_mm'] for r in sel]):.1f} "
                f"| {np.mean([r['icv_error_pct'] for r in sel]):+.1f} |"
            )
        (root / "robustness.json").write_text(json.dumps(rows, indent=1) + "\n")
    print("\n".join(lines), flush=True)
    return rows


if __name__ == "__main__":
    verb, *args, out_file = sys.argv[1:]
    if verb == "train":
        result = _train(args[0], float(args[1]), int(args[2]), int(args[3]))
    elif verb == "predict":
        result = _predict(*args)
    else:
        raise SystemExit(f"unknown worker verb {verb!r}")
    Path(out_file).write_text(json.dumps(result))
