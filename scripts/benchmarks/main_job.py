# SPDX-License-Identifier: Apache-2.0
"""The main job's last step: segment the phantom test scans through the segmenter and print their scores.

``bash scripts/run_default.sh`` trains a model under ``runs/default/`` and then calls
``python scripts/main_job_report.py`` (:func:`main_job_report`), which

1. takes the test split of the training configs (``configs/train.json`` + the preset: the phantom test scans the
   training run generated, or generates them) and copies the scans and their labels into ``RUN/test_scans/``;
2. segments them with :func:`bundle.segment.segment`, the path of ``scripts/segment.py``, twice: with the trained
   weights (``RUN/models/model.pt``, the main job's preset) into ``RUN/masks/`` and with the shipped weights
   (``models/model.pt``, the ``lite`` preset they belong to) into ``RUN/masks_shipped/``; the labels are the
   segmenter's ``reference``, so each case gets its mask, QC picture (with the agreement overlay) and JSON report
   (with ``dice_vs_reference``), and each folder a ``summary.csv`` and ``segment.log``;
3. scores every mask against its label in the scan's native geometry with :func:`bundle.metrics.case_metrics`
   (Dice, HD95 in mm), beside the segmenter's volume (mL) and seconds per case (loading to the last file written);
4. prints one table, per case and mean +- sample std, trained and shipped side by side, and writes it to
   ``RUN/test_scores.md`` and ``RUN/test_scores.json``.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from scripts.benchmarks.convergence import REPO_ROOT, preset_config, repo_path

__all__ = [
    "TARGET_DICE",
    "format_main_job_table",
    "labelled_test_split",
    "main_job_report",
    "score_segmentation",
    "stage_test_scans",
]

logger = logging.getLogger(__name__)

#: The mean test Dice a good main-job model reaches (issue #11); the report says whether the run met it.
TARGET_DICE = 0.97
#: Per-case columns of the table: key, header, format.
_COLUMNS = (("dice", "Dice", ".4f"), ("hd95_mm", "HD95 mm", ".2f"), ("volume_ml", "mL", ".1f"), ("seconds", "s", ".2f"))


def _shown(path: str | Path) -> str:
    """A path as printed and stored: relative to the repository root when inside it, so the report moves with it."""
    path = Path(path)
    return str(path.relative_to(REPO_ROOT)) if path.is_relative_to(REPO_ROOT) else str(path)


def _json_ready(value: Any) -> Any:
    """``nan`` as ``null``: strict JSON has no NaN."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, Mapping):
        return {k: _json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_ready(v) for v in value]
    return value


def _nifti_stem(path: Path) -> str:
    name = path.name
    for suffix in (".nii.gz", ".nii"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def labelled_test_split(preset: str, overrides: Mapping[str, Any] | None = None) -> list[dict[str, str]]:
    """The labelled test cases of ``configs/train.json`` + a preset (the phantom set is generated if missing).

    Args:
        preset: a preset name in ``configs/presets``.
        overrides: config ids to override, e.g. ``{"phantom_dir": "/tmp/phantoms"}``. Defaults to None.

    Returns:
        ``[{"image": path, "label": path}, ...]`` with absolute paths.

    Raises:
        ValueError: for an unknown preset, or a test split without labels.

    Example:
        >>> len(labelled_test_split("quick"))  # doctest: +SKIP
        8
    """
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config([str(REPO_ROOT / "configs" / "train.json"), str(REPO_ROOT / "configs" / preset_config(preset))])
    parser.update({"bundle_root": str(REPO_ROOT), **dict(overrides or {})})
    cases = parser.get_parsed_content("datalist")["test"]
    unlabelled = [c["image"] for c in cases if not c.get("label")]
    if not cases or unlabelled:
        raise ValueError(f"the {preset!r} test split has no labelled cases to score (unlabelled: {unlabelled[:3]}).")
    return [{"image": str(c["image"]), "label": str(c["label"])} for c in cases]


def stage_test_scans(cases: Sequence[Mapping[str, str]], folder: str | Path) -> tuple[Path, Path]:
    """Copy the test scans to ``folder/images`` and their labels, under the scans' names, to ``folder/labels``.

    The phantom set keeps all splits in one ``images/`` folder, so the segmenter gets a folder of the test scans
    only; the labels under the same names are its ``reference`` folder. Files of an earlier run are removed first.

    Args:
        cases: ``{"image", "label"}`` NIfTI paths.
        folder: where to copy them (created).

    Returns:
        The images folder and the labels folder.

    Example:
        >>> images, labels = stage_test_scans(labelled_test_split("quick"), "runs/default/test_scans")  # doctest: +SKIP
    """
    images, labels = Path(folder) / "images", Path(folder) / "labels"
    for sub in (images, labels):
        shutil.rmtree(sub, ignore_errors=True)
        sub.mkdir(parents=True)
    for case in cases:
        image = Path(case["image"])
        shutil.copy2(image, images / image.name)
        shutil.copy2(case["label"], labels / f"{_nifti_stem(image)}.nii.gz")
    return images, labels


def score_segmentation(results: Sequence[Any], output: str | Path, labels: str | Path) -> list[dict[str, Any]]:
    """Score the segmenter's masks against the labels of the same names, in the scans' native geometry.

    Args:
        results: the :class:`bundle.segment.SeriesResult` list :func:`bundle.segment.segment` returned.
        output: the segmenter's output folder (``NAME_mask.nii.gz``).
        labels: folder of ``NAME.nii.gz`` reference masks.

    Returns:
        One row per case: ``case``, ``status``, ``dice``, ``hd95_mm``, ``volume_ml``, ``reference_ml``, ``seconds``.
        A failed case scores Dice 0 (so it pulls the mean down instead of vanishing from it), the rest ``nan``.

    Example:
        >>> rows = score_segmentation(segment(images, "out", reference=labels), "out", labels)  # doctest: +SKIP
    """
    import nibabel as nib
    import numpy as np

    from bundle.metrics import case_metrics
    from bundle.postprocessing import intracranial_volume_ml

    rows = []
    for result in results:
        label_img = nib.load(str(Path(labels) / f"{result.name}.nii.gz"))
        ref = np.asarray(label_img.dataobj) > 0
        row = {
            "case": result.name,
            "status": result.status,
            "reference_ml": intracranial_volume_ml(ref, label_img.affine),
        }
        if result.status == "failed":
            logger.error("%s: the segmenter failed: %s", result.name, result.error)
            rows.append({**row, "dice": 0.0, "hd95_mm": math.nan, "volume_ml": math.nan, "seconds": math.nan})
            continue
        mask_img = nib.load(str(Path(output) / f"{result.name}_mask.nii.gz"))
        mask = np.asarray(mask_img.dataobj) > 0
        rows.append(
            {
                **row,
                **case_metrics(mask, ref, mask_img.affine),
                "volume_ml": float(result.volume_ml),
                "seconds": float(result.report_data.get("seconds", math.nan)),
            }
        )
    return rows


def _summary(rows: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, float | int]]:
    from bundle.metrics import summarize

    return {key: summarize(row[key] for row in rows) for key, _, _ in _COLUMNS}


def format_main_job_table(models: Mapping[str, Sequence[Mapping[str, Any]]]) -> str:
    """Markdown table of per-case scores, one column group per model, then a mean +- std row.

    Args:
        models: model label (e.g. ``"trained"``, ``"shipped"``) -> the rows of :func:`score_segmentation`, all on
            the same cases in the same order.

    Returns:
        The table as text (no trailing newline); undefined values print as ``-``, failed cases as ``failed``.

    Raises:
        ValueError: if the models were scored on different cases.

    Example:
        >>> row = dict(case="p1", status="done", dice=0.98, hd95_mm=2.0, volume_ml=1400.0, seconds=1.2,
        ...            reference_ml=1410.0)
        >>> print(format_main_job_table({"trained": [row]}).splitlines()[2])
        | p1 | 1410.0 | 0.9800 | 2.00 | 1400.0 | 1.20 |
    """
    from bundle.metrics import summarize

    labels = list(models)
    cases = [[row["case"] for row in models[label]] for label in labels]
    if any(c != cases[0] for c in cases):
        raise ValueError(f"the models were scored on different cases: {dict(zip(labels, cases, strict=True))}.")
    header = ["case", "reference mL"] + [f"{label} {name}" for label in labels for _, name, _ in _COLUMNS]
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]

    def cell(value: float, fmt: str) -> str:
        return "-" if value is None or math.isnan(value) else format(value, fmt)

    for i, case in enumerate(cases[0] if labels else []):
        first = models[labels[0]][i]
        cells = [case, cell(first["reference_ml"], ".1f")]
        for label in labels:
            row = models[label][i]
            failed = row["status"] == "failed"
            cells += ["failed" if failed and key != "dice" else cell(row[key], fmt) for key, _, fmt in _COLUMNS]
        lines.append("| " + " | ".join(cells) + " |")
    if labels:
        reference = summarize(row["reference_ml"] for row in models[labels[0]])
        cells = ["mean ± std", f"{cell(reference['mean'], '.1f')} ± {cell(reference['std'], '.1f')}"]
        for label in labels:
            summary = _summary(models[label])
            cells += [f"{cell(summary[k]['mean'], fmt)} ± {cell(summary[k]['std'], fmt)}" for k, _, fmt in _COLUMNS]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _segment(
    images: Path, labels: Path, output: Path, weights: Path, preset: str, device: str
) -> tuple[list[dict[str, Any]], float]:
    import sys

    from bundle.segment import segment

    start = time.perf_counter()
    results = segment(
        images,
        output,
        device=device,
        preset=preset,
        weights=weights,
        qc=True,
        reference=labels,
        overwrite=True,  # the weights may have changed since the last run
        progress=sys.stderr.isatty(),
        log_file=True,
    )
    return score_segmentation(results, output, labels), time.perf_counter() - start


def main_job_report(
    run_dir: str = "runs/default",
    preset: str = "quick",
    weights: str | None = None,
    shipped_weights: str | None = "models/model.pt",
    shipped_preset: str = "lite",
    device: str = "auto",
    overrides: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Segment the test scans with the trained and the shipped weights, print and write the score table.

    Args:
        run_dir: the main job's folder (relative paths: to the repository root). Defaults to "runs/default".
        preset: the preset the model was trained with; fixes the test split and the segmenter's network. Defaults
            to "quick".
        weights: the trained weights. Defaults to None: ``run_dir/models/model.pt``.
        shipped_weights: the weights to compare with, or None ('' on the command line) for no comparison. Defaults
            to the shipped ``models/model.pt``.
        shipped_preset: the preset ``shipped_weights`` belong to. Defaults to "lite".
        device: the segmenter's device (auto, cpu, cuda, cuda:N). Defaults to "auto".
        overrides: config ids for :func:`labelled_test_split`, e.g. ``{"phantom_dir": ...}``. Defaults to None.

    Returns:
        ``{"preset", "target_dice", "test_scans", "models": {label: {"weights", "preset", "output", "seconds",
        "cases", "summary"}}}``, as written to ``run_dir/test_scores.json``.

    Raises:
        ValueError: for missing weights, an unknown preset or a test split without labels.
        bundle.segment.SegmentError: for weights that do not fit their preset.

    Example:
        >>> report = main_job_report("runs/default")  # doctest: +SKIP
        >>> report["models"]["trained"]["summary"]["dice"]["mean"] >= 0.97  # doctest: +SKIP
        True
    """
    run = repo_path(run_dir)
    models = {"trained": (repo_path(weights) if weights else run / "models" / "model.pt", preset, run / "masks")}
    if shipped_weights:
        models["shipped"] = (repo_path(shipped_weights), shipped_preset, run / "masks_shipped")
    missing = [_shown(path) for path, _, _ in models.values() if not path.is_file()]
    if missing:  # before the test split, which may generate a phantom set
        raise ValueError(f"weights not found: {', '.join(missing)} (has the training finished?).")
    cases = labelled_test_split(preset, overrides)
    images, labels = stage_test_scans(cases, run / "test_scans")
    report: dict[str, Any] = {"preset": preset, "target_dice": TARGET_DICE, "test_scans": _shown(images), "models": {}}
    for label, (path, model_preset, output) in models.items():
        print(
            f"segmenting {len(cases)} test scans: {label} weights {_shown(path)}, preset {model_preset} ...", flush=True
        )
        rows, seconds = _segment(images, labels, output, path, model_preset, device)
        report["models"][label] = {
            "weights": _shown(path),
            "preset": model_preset,
            "output": _shown(output),
            "seconds": seconds,
            "cases": rows,
            "summary": _summary(rows),
        }
    table = format_main_job_table({label: m["cases"] for label, m in report["models"].items()})
    dice = report["models"]["trained"]["summary"]["dice"]["mean"]
    verdict = "met" if dice >= TARGET_DICE else "NOT met"
    text = (
        f"Test scans ({len(cases)}, labels in {_shown(labels)}) segmented as scripts/segment.py does; Dice and HD95 "
        f"in the scans' native geometry, volume of the mask, seconds per case from loading to the last file written:"
        f"\n\n"
        f"{table}\n\ntarget mean test Dice >= {TARGET_DICE}: {verdict} (trained {dice:.4f})"
    )
    print("\n" + text)
    for label, model in report["models"].items():
        print(
            f"{label}: masks, QC pictures (NAME_qc.png), reports (NAME_report.json), summary.csv in {model['output']}"
        )
    (run / "test_scores.md").write_text(text + "\n")
    (run / "test_scores.json").write_text(json.dumps(_json_ready(report), indent=1) + "\n")
    print(f"table: {_shown(run / 'test_scores.md')}; scores: {_shown(run / 'test_scores.json')}")
    return report
