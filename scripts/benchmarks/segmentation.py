# SPDX-License-Identifier: Apache-2.0
"""The shipped network and the classical pseudo-labeller, side by side on the same test cases.

``python scripts/benchmark.py segmentation`` measures, on the test split the convergence benchmark evaluates
(:mod:`scripts.benchmarks.convergence`: ``configs/train.json`` + ``configs/evaluate.json`` + the preset; for the
``lite`` preset the 8 test phantoms of the 12/3/8 phantom set):

1. **the network** (``ckpt_dir/model.pt``, by default the shipped ``models/model.pt``) through the bundle's own
   evaluation workflow: the preprocessing, per-slice statistics normalisation, inversion to each case's native grid
   and post-processing as ``configs/evaluate.json`` sets them (``postprocess=false``: argmax only), i.e. the figures
   of the model card's convergence table. With ``postprocessed=True`` (default) a second run of the same workflow
   with ``postprocess=true`` adds the largest connected component and 3D hole filling, what ``configs/inference.json``
   and ``scripts/segment.py`` apply;
2. **the pseudo-labeller** (:func:`bundle.pseudo_label.pseudo_label_cranial_cavity` with the defaults of
   ``scripts/pseudo_label.py``) on the same cases (the evaluation's ``validate#dataset#data``), each loaded by the
   evaluation's own preprocessing up to ``Orientationd``: HU, RAS, the native resolution, the label on the image
   grid.

Both are scored with :func:`bundle.metrics.case_metrics` (what the evaluation's
:class:`~bundle.workflows.CaseMetricsHandler` uses): Dice and HD95 in mm at the native resolution, mean +- sample
std over cases. Seconds per case are wall time from loading the case to its metrics, both included (for the
network: fetching the batch to the end of the evaluator's iteration, so pre-processing, inference, inversion,
post-processing and metrics). One table row per method, then one row per case.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from scripts.benchmarks.convergence import EVALUATION_CONFIGS, make_workflow, preset_config, repo_path

__all__ = ["METHODS", "benchmark_segmentation", "format_segmentation_table"]

logger = logging.getLogger(__name__)

#: Row names of the methods, in table order.
METHODS = {
    "network": "network (evaluate.json)",
    "network_postprocessed": "network + post-processing (segment.py)",
    "pseudo_label": "pseudo-labeller",
}


def _evaluate_network(
    config_files: list[str], overrides: Mapping[str, Any], logging_config: bool
) -> tuple[list[dict[str, Any]], Any, list[dict]]:
    """Run the evaluation workflow; per-case rows, the parsed workflow's parser and the evaluated data list."""
    from ignite.engine import Events

    workflow = make_workflow(config_files, "infer", overrides, logging_file=logging_config)
    parser = workflow.parser
    data = parser.get_parsed_content("validate#dataset#data")
    evaluator = parser.get_parsed_content("validate#evaluator")
    clock: dict[str, float] = {}
    seconds: list[float] = []

    def batch_started(engine) -> None:
        clock["start"] = time.perf_counter()

    def iteration_completed(engine) -> None:  # attached last: after the metrics handler of the same event
        outputs = engine.state.output
        count = len(outputs) if isinstance(outputs, list) else 1
        seconds.extend([(time.perf_counter() - clock["start"]) / count] * count)

    evaluator.add_event_handler(Events.GET_BATCH_STARTED, batch_started)
    evaluator.add_event_handler(Events.ITERATION_COMPLETED, iteration_completed)
    workflow.run()
    workflow.finalize()
    output_dir = Path(parser.get_parsed_content("output_dir"))
    cases = json.loads((output_dir / "metrics_summary.json").read_text())["cases"]
    if len(cases) != len(seconds):
        raise RuntimeError(f"{output_dir}: {len(cases)} cases in metrics_summary.json but {len(seconds)} timed.")
    rows = [
        {"case": str(c["case"]), "dice": float(c["dice"]), "hd95_mm": float(c["hd95_mm"]), "seconds": s}
        for c, s in zip(cases, seconds, strict=True)
    ]
    return rows, parser, data


def _pseudo_label_cases(parser: Any, data: list[dict], **pseudo_label_kwargs: Any) -> list[dict[str, Any]]:
    """Pseudo-label the evaluation's cases, loaded by its own preprocessing up to ``Orientationd``, and score them."""
    from bundle.metrics import case_metrics
    from bundle.pseudo_label import pseudo_label_cranial_cavity

    preprocessing = parser.get_parsed_content("validate#preprocessing")
    names = [type(t).__name__ for t in preprocessing.transforms]
    if "Orientationd" not in names:
        raise ValueError(f"validate#preprocessing has no Orientationd step to stop at (steps: {names}).")
    end = names.index("Orientationd") + 1
    rows = []
    for item in data:
        start = time.perf_counter()
        loaded = preprocessing(dict(item), end=end)
        image, label = loaded["image"], loaded["label"]
        affine = image.affine.numpy()
        mask = pseudo_label_cranial_cavity(image.numpy()[0], affine, **pseudo_label_kwargs)
        values = case_metrics(mask, label.numpy()[0], affine)
        rows.append({"case": str(item["image"]), **values, "seconds": time.perf_counter() - start})
    return rows


def _summary_row(method: str, cases: list[dict[str, Any]]) -> dict[str, Any]:
    from bundle.metrics import summarize

    dice = summarize(c["dice"] for c in cases)
    hd95 = summarize(c["hd95_mm"] for c in cases)
    return {
        "method": method,
        "n": dice["n"],
        "dice_mean": dice["mean"],
        "dice_std": dice["std"],
        "hd95_mm_mean": hd95["mean"],
        "hd95_mm_std": hd95["std"],
        "seconds_per_case": sum(c["seconds"] for c in cases) / max(len(cases), 1),
        "cases": cases,
    }


def format_segmentation_table(rows: list[dict[str, Any]], per_case: bool = True) -> str:
    """Markdown table of :func:`benchmark_segmentation` rows: one row per method, then (optionally) per case.

    Args:
        rows: the rows returned by :func:`benchmark_segmentation`.
        per_case: add one row per method and case. Defaults to True.

    Returns:
        The table as text (no trailing newline).

    Example:
        >>> print(format_segmentation_table(rows))  # doctest: +SKIP
        | method | case | n | Dice | HD95 mm | s/case |
        ...
    """
    lines = ["| method | case | n | Dice | HD95 mm | s/case |", "| --- | --- | --- | --- | --- | --- |"]
    for row in rows:
        lines.append(
            f"| {row['method']} | all | {row['n']} | {row['dice_mean']:.4f} ± {row['dice_std']:.4f} "
            f"| {row['hd95_mm_mean']:.2f} ± {row['hd95_mm_std']:.2f} | {row['seconds_per_case']:.2f} |"
        )
    if per_case:
        for row in rows:
            for case in row["cases"]:
                name = Path(case["case"]).name
                lines.append(
                    f"| {row['method']} | {name} | 1 | {case['dice']:.4f} | {case['hd95_mm']:.2f} "
                    f"| {case['seconds']:.2f} |"
                )
    return "\n".join(lines)


def benchmark_segmentation(
    preset: str = "lite",
    ckpt_dir: str = "models",
    work_dir: str = "runs/segmentation",
    overrides: Mapping[str, Any] | None = None,
    postprocessed: bool = True,
    threads: int = 1,
    per_case: bool = True,
    logging_config: bool = True,
) -> list[dict[str, Any]]:
    """Dice, HD95 and seconds per case of the network and the pseudo-labeller on the same test split; print a table.

    Args:
        preset: ``configs/presets/<preset>.json``; it fixes the test split (the phantom settings) and the network,
            and must be the one the weights were trained with. Defaults to ``"lite"`` (the shipped weights).
        ckpt_dir: folder holding the weights ``model.pt`` (a state_dict), relative to the repository root or
            absolute. Defaults to ``"models"`` (the shipped weights).
        work_dir: folder for the evaluation's ``metrics.csv`` and ``metrics_summary.json`` (sub-folders ``eval`` and
            ``eval_postprocessed``), relative to the repository root or absolute. Defaults to ``"runs/segmentation"``.
        overrides: extra config ids for the evaluation (e.g. ``{"datalist_file": "my_datalist.json"}`` for a
            labelled test split of your own). Defaults to None (nothing).
        postprocessed: also evaluate the network with ``postprocess=true`` (largest component, 3D holes filled), as
            ``scripts/segment.py`` segments. Defaults to True.
        threads: ``torch.set_num_threads`` during the run (restored afterwards), >= 1. Defaults to 1.
        per_case: print one row per method and case after the summary rows. Defaults to True.
        logging_config: apply ``configs/logging.conf`` as the bundle's runs do (INFO to stdout). Defaults to True.

    Returns:
        One dict per method, in :data:`METHODS` order: ``method``, ``n``, ``dice_mean``, ``dice_std``,
        ``hd95_mm_mean``, ``hd95_mm_std``, ``seconds_per_case`` and ``cases`` (per case: ``case`` (the image path),
        ``dice``, ``hd95_mm``, ``seconds``).

    Raises:
        ValueError: for an unknown preset, a ``ckpt_dir`` without ``model.pt``, or ``threads`` < 1.

    Example:
        >>> rows = benchmark_segmentation(preset="lite", threads=1)  # doctest: +SKIP
        >>> [row["method"] for row in rows]  # doctest: +SKIP
        ['network (evaluate.json)', 'network + post-processing (segment.py)', 'pseudo-labeller']
    """
    config_files = [*EVALUATION_CONFIGS, preset_config(preset)]
    weights_dir = repo_path(ckpt_dir)
    if not (weights_dir / "model.pt").is_file():
        raise ValueError(f"ckpt_dir {str(ckpt_dir)!r} holds no model.pt: {weights_dir / 'model.pt'} does not exist.")
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ValueError(f"threads must be an integer >= 1, got {threads!r}.")
    work = repo_path(work_dir)
    common = {"runs_dir": str(work / "runs"), "ckpt_dir": str(weights_dir), **dict(overrides or {})}
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        network, parser, data = _evaluate_network(
            config_files, {**common, "output_dir": str(work / "eval")}, logging_config
        )
        rows = [_summary_row(METHODS["network"], network)]
        if postprocessed:
            post, _, post_data = _evaluate_network(
                config_files, {**common, "postprocess": True, "output_dir": str(work / "eval_postprocessed")}, False
            )
            if [item["image"] for item in post_data] != [item["image"] for item in data]:
                raise RuntimeError("the post-processed evaluation ran on other cases than the first one.")
            rows.append(_summary_row(METHODS["network_postprocessed"], post))
        rows.append(_summary_row(METHODS["pseudo_label"], _pseudo_label_cases(parser, data)))
    finally:
        torch.set_num_threads(previous_threads)
    print(
        f"Segmentation of the {preset!r} test split ({len(data)} cases) by {weights_dir / 'model.pt'} and the "
        f"pseudo-labeller; torch threads {threads}; s/case from loading to metrics:"
    )
    print(format_segmentation_table(rows, per_case=per_case))
    return rows
