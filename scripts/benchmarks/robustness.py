# SPDX-License-Identifier: Apache-2.0
"""Stress benchmark: the segmenter on full-size phantoms built unlike the training data, one factor at a time.

``python scripts/benchmark.py robustness`` generates (once, into ``cache/robustness/``) a fixed stress suite of
full-size 512x512 phantoms at their native grids, **with seeds disjoint from every training seed and scan protocols
defined here, not in the training code**, so that nobody tunes the training data to the suite or the other way
round. Each factor of the robustness issue gets at least four cases:

========================  ==============================================================================
factor                    what changes (everything else drawn from this suite's own base protocol)
========================  ==============================================================================
range_in_cavity           the scan starts 8-45 mm above the foramen magnum, inside the cavity
range_from_neck           the scan starts 60-95 mm below the foramen magnum (C2-C3): jaw, teeth, metal
top_cut                   the scan stops 10-50 mm below the top of the cavity
fov_small                 150-185 mm field of view (0.29-0.36 mm pixels) that cuts the head
fov_large                 430-500 mm field of view (0.84-0.98 mm pixels), neck and shoulders in range
slices_thin               0.5-0.75 mm slices
slices_thick              5-7 mm slices
kernel_noise              bone kernel and/or 2-3x noise, beam hardening at the skull base
motion_tilt               patient motion, gantry tilt of 15-30 degrees either way
head_size_atrophy         a child's head, a large head, severe atrophy
bleeds                    large subdural, hygroma, large intraparenchymal haemorrhage
postop                    post-operative air, shunt, clips, craniectomy, cranioplasty
sinus_mastoid             fluid-filled paranasal sinuses and mastoid air cells
========================  ==============================================================================

Every case goes through :func:`bundle.segment.segment` (what ``scripts/segment.py`` runs: loading, the inference
pipeline of ``configs/inference.json``, inversion to the native grid, post-processing) and is scored against its
exact label with :mod:`bundle.metrics` at the native resolution: Dice, HD95 (mm) and the intracranial volume error
(%). The classical pseudo-labeller (:func:`bundle.pseudo_label.pseudo_label_cranial_cavity`) is scored beside it on
the same cases. The table has one row per factor (n, mean and worst Dice, mean HD95, mean ICV error) and an
"all" row; per-case results go to ``OUTPUT/robustness.json``.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bundle.data.phantom_scan import ScanProtocol
from scripts.benchmarks.convergence import repo_path

__all__ = [
    "STRESS_FACTORS",
    "STRESS_SEED_BASE",
    "StressCase",
    "benchmark_robustness",
    "format_robustness_table",
    "make_stress_suite",
    "stress_cases",
]

logger = logging.getLogger(__name__)

#: First seed of the suite. Training datasets use ``dataset_seed * 100000 + case``; the suite's seeds are above any
#: dataset seed below 900 (a test checks the training configs against it).
STRESS_SEED_BASE = 90_000_000

#: The suite's own base protocol (deliberately not the training protocol's numbers).
_BASE = ScanProtocol(
    fov_mm=(215.0, 255.0),
    start_below_fm_mm=(20.0, 55.0),
    above_vertex_mm=(2.0, 20.0),
    slice_spacing_mm=(0.625, 5.0),
    noise_scale=(0.8, 1.6),
    p_tilt=0.25,
    tilt_deg=(4.0, 20.0),
    signed_tilt=True,
    p_beam_hardening=0.5,
)


@dataclass(frozen=True)
class StressCase:
    """One case of the suite: ``make_phantom(seed, in_plane_size=512, scan=scan, **kwargs)``."""

    name: str
    factor: str
    seed: int
    scan: ScanProtocol
    kwargs: dict = field(default_factory=dict)


#: factor -> (description, base protocol changes, per-case ``make_phantom`` keyword arguments).
STRESS_FACTORS: dict[str, tuple[str, dict, list[dict]]] = {
    "range_in_cavity": (
        "scan starts 8-45 mm above the foramen magnum",
        {"p_start_in_cavity": 1.0, "start_in_cavity_mm": (8.0, 45.0)},
        [{}, {}, {}, {}],
    ),
    "range_from_neck": (
        "scan starts at C2-C3: jaw, teeth, dental metal",
        {"start_below_fm_mm": (60.0, 95.0)},
        [{}, {"anatomy": {"dental_metal": True}}, {"anatomy": {"dental_metal": True}}, {}],
    ),
    "top_cut": ("scan stops 10-50 mm below the cavity top", {"p_top_cut": 1.0, "top_cut_mm": (10.0, 50.0)}, [{}] * 4),
    "fov_small": (
        "150-185 mm field of view cutting the head",
        {"fov_mm": (150.0, 185.0), "fov_offset_mm": 10.0},
        [{}] * 4,
    ),
    "fov_large": (
        "430-500 mm field of view, neck and shoulders",
        {"fov_mm": (430.0, 500.0), "start_below_fm_mm": (70.0, 95.0)},
        [{}] * 4,
    ),
    "slices_thin": ("0.5-0.75 mm slices", {"slice_spacing_mm": (0.5, 0.75)}, [{}] * 4),
    "slices_thick": ("5-7 mm slices", {"slice_spacing_mm": (5.0, 7.0)}, [{}] * 4),
    "kernel_noise": (
        "bone kernel and/or 2-3x noise, beam hardening",
        {"p_beam_hardening": 1.0, "noise_scale": (2.0, 3.0)},
        [{"scan": {"p_bone_kernel": 1.0}}, {}, {"scan": {"p_bone_kernel": 1.0}}, {}],
    ),
    "motion_tilt": (
        "patient motion, 15-30 degree tilt",
        {"p_motion": 1.0, "p_tilt": 1.0, "tilt_deg": (15.0, 30.0)},
        [{}] * 4,
    ),
    "head_size_atrophy": (
        "child's head, large head, severe atrophy",
        {},
        [{"head_scale": 0.84}, {"head_scale": 1.12}, {"anatomy": {"atrophy": 1.0}}, {"anatomy": {"atrophy": 0.8}}],
    ),
    "bleeds": (
        "large subdural, hygroma, large haemorrhage",
        {},
        [{"variant": "subdural"}, {"variant": "hygroma"}, {"variant": "haemorrhage"}, {"variant": "subdural"}],
    ),
    "postop": (
        "post-operative air, shunt, clips, craniectomy, cranioplasty",
        {},
        [
            {"variant": "postop_air"},
            {"variant": "shunt"},
            {"variant": "clips"},
            {"variant": "craniectomy"},
            {"variant": "cranioplasty"},
        ],
    ),
    "sinus_mastoid": ("fluid-filled sinuses and mastoid cells", {}, [{"anatomy": {"sinus_fluid": 1.0}}] * 4),
}


def stress_cases(factors: Sequence[str] | None = None) -> list[StressCase]:
    """The cases of the suite (all factors, or the named ones), in table order.

    Args:
        factors: factor names of :data:`STRESS_FACTORS` (default None: all).

    Returns:
        The :class:`StressCase` list; case ``j`` of factor number ``f`` has seed ``STRESS_SEED_BASE + 100 f + j``.

    Raises:
        ValueError: for an unknown factor.

    Example:
        >>> len(stress_cases()) >= 48
        True
    """
    names = list(STRESS_FACTORS)
    unknown = sorted(set(factors or names) - set(names))
    if unknown:
        raise ValueError(f"unknown factors {unknown}; known: {names}.")
    cases = []
    for f, name in enumerate(names):
        if factors is not None and name not in factors:
            continue
        _, protocol_changes, per_case = STRESS_FACTORS[name]
        for j, kwargs in enumerate(per_case):
            kwargs = dict(kwargs)
            scan = _BASE.with_(**protocol_changes, **kwargs.pop("scan", {}))
            cases.append(StressCase(f"{name}_{j}", name, STRESS_SEED_BASE + 100 * f + j, scan, kwargs))
    return cases


def make_stress_suite(folder: str | Path, factors: Sequence[str] | None = None) -> list[tuple[StressCase, Path, Path]]:
    """Generate the suite's images and labels (NIfTI) into ``folder`` once; existing cases are reused.

    Args:
        folder: the suite folder (``images/``, ``labels/``, ``info/`` inside).
        factors: as :func:`stress_cases`.

    Returns:
        ``(case, image path, label path)`` per case.

    Example:
        >>> suite = make_stress_suite("cache/robustness", ["top_cut"])  # doctest: +SKIP
    """
    from tqdm.auto import tqdm

    from bundle.data.phantoms import GENERATOR_VERSION, make_phantom
    from bundle.io.writers import write_nifti
    from bundle.utils import atomic_write_text

    root = Path(folder) / f"v{GENERATOR_VERSION}"
    out = []
    for case in tqdm(stress_cases(factors), desc="stress suite", unit="case"):
        image, label, info = (
            root / d / f"{case.name}{ext}"
            for d, ext in (("images", ".nii.gz"), ("labels", ".nii.gz"), ("info", ".json"))
        )
        if not info.exists():
            phantom = make_phantom(case.seed, in_plane_size=512, scan=case.scan, **case.kwargs)
            write_nifti(phantom.image, phantom.affine, image, dtype=np.int16)
            write_nifti(phantom.label, phantom.affine, label, dtype=np.uint8)
            info.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_text(info, json.dumps({"factor": case.factor, **phantom.info}, indent=1, default=str))
        out.append((case, image, label))
    return out


def _score(pred: np.ndarray, ref: np.ndarray, affine: np.ndarray) -> dict[str, float]:
    from bundle.metrics import case_metrics

    metrics = case_metrics(pred, ref, affine)
    ref_volume = float(np.count_nonzero(ref))
    metrics["icv_error_pct"] = 100.0 * (float(np.count_nonzero(pred)) - ref_volume) / max(ref_volume, 1.0)
    return metrics


def benchmark_robustness(
    output: str = "runs/robustness",
    weights: str | None = None,
    preset: str = "lite",
    suite_dir: str = "cache/robustness",
    factors: Sequence[str] | None = None,
    device: str = "cpu",
    pseudo_label: bool = True,
    masks: str | None = None,
) -> list[dict[str, Any]]:
    """Segment the stress suite with the segmenter and print the per-factor table.

    Args:
        output: folder for the segmenter's outputs and ``robustness.json`` (relative paths: to the repository root).
            Defaults to "runs/robustness".
        weights: network weights (default None: the shipped ``models/model.pt``).
        preset: the segmenter's preset (a name in ``configs/presets`` or a ``.json`` file) that fits ``weights``.
            Defaults to "lite".
        suite_dir: where the suite is generated once. Defaults to "cache/robustness".
        factors: factor names (comma-separated string or list; default None: all).
        device: segmenter device. Defaults to "cpu".
        pseudo_label: also score the classical pseudo-labeller (its results are kept in ``SUITE/v*/pseudo_label.json``
            and reused: they do not depend on the weights). Defaults to True.
        masks: score the ``NAME_mask.nii.gz`` files already in this folder instead of running the segmenter (e.g.
            the masks of another version of the segmenter run on ``SUITE/images``). Defaults to None.

    Returns:
        One row per case: ``case``, ``factor``, ``method``, ``dice``, ``hd95_mm``, ``icv_error_pct``, ``seconds``,
        ``warnings``.
    """
    import nibabel as nib

    from bundle.data.phantoms import GENERATOR_VERSION
    from bundle.pseudo_label import pseudo_label_cranial_cavity
    from bundle.segment import segment

    if isinstance(factors, str):
        factors = [f.strip() for f in factors.split(",") if f.strip()]
    suite = make_stress_suite(repo_path(suite_dir), factors)
    out = repo_path(output)
    rows: list[dict[str, Any]] = []
    cache = repo_path(suite_dir) / f"v{GENERATOR_VERSION}" / "pseudo_label.json"  # it does not depend on the weights
    cached = {r["case"]: r for r in json.loads(cache.read_text())} if pseudo_label and cache.exists() else {}
    for case, image_path, label_path in suite:
        ref_img = nib.load(str(label_path))
        ref = np.asarray(ref_img.dataobj) != 0
        row = dict(case=case.name, factor=case.factor, method="network", warnings="")
        if masks is not None:
            pred = np.asarray(nib.load(str(repo_path(masks) / f"{case.name}_mask.nii.gz")).dataobj) != 0
            rows.append({**row, "seconds": float("nan"), **_score(pred, ref, ref_img.affine)})
        else:
            start = time.perf_counter()
            result = segment(
                str(image_path),
                out / "masks",
                device=device,
                weights=weights,
                preset=preset,
                qc=True,
                progress=False,
                overwrite=True,
            )[0]
            row["seconds"] = time.perf_counter() - start
            if result.status == "failed":
                logger.error("%s: the segmenter failed: %s", case.name, result.error)
                rows.append(
                    {**row, "dice": 0.0, "hd95_mm": float("nan"), "icv_error_pct": -100.0, "warnings": result.error}
                )
            else:
                pred = np.asarray(nib.load(str(out / "masks" / f"{result.name}_mask.nii.gz")).dataobj) != 0
                row["warnings"] = "; ".join(result.report_data.get("warnings", []))
                rows.append({**row, **_score(pred, ref, ref_img.affine)})
        if pseudo_label:
            if case.name not in cached:
                image = nib.load(str(image_path))
                start = time.perf_counter()
                mask = pseudo_label_cranial_cavity(np.asarray(image.dataobj, dtype=np.float32), image.affine)
                cached[case.name] = dict(
                    case=case.name,
                    factor=case.factor,
                    method="pseudo_label",
                    warnings="",
                    seconds=time.perf_counter() - start,
                    **_score(mask != 0, ref, ref_img.affine),
                )
                cache.write_text(json.dumps(list(cached.values()), indent=1, default=float))
            rows.append(cached[case.name])
        logger.info("%s: %s", case.name, rows[-2 if pseudo_label else -1])
    out.mkdir(parents=True, exist_ok=True)
    (out / "robustness.json").write_text(json.dumps(rows, indent=1, default=float))
    print(format_robustness_table(rows))
    return rows


def _stats(rows: list[dict[str, Any]]) -> dict[str, float]:
    dice = np.array([r["dice"] for r in rows], dtype=float)
    dice = np.nan_to_num(dice, nan=0.0)
    hd = np.array([r["hd95_mm"] for r in rows], dtype=float)
    icv = np.array([r["icv_error_pct"] for r in rows], dtype=float)
    return {
        "n": len(rows),
        "dice": float(dice.mean()),
        "worst": float(dice.min()),
        "hd95": float(np.nanmean(hd)) if np.isfinite(hd).any() else float("nan"),
        "icv": float(icv.mean()),
        "abs_icv": float(np.abs(icv).mean()),
    }


def format_robustness_table(rows: list[dict[str, Any]]) -> str:
    """The per-factor markdown table of :func:`benchmark_robustness`'s rows (network beside pseudo-labeller).

    Args:
        rows: the rows.

    Returns:
        A markdown table: factor, n, network mean/worst Dice, HD95 mm, mean and mean absolute ICV error %,
        pseudo-labeller mean/worst Dice; then an "all" row.

    Example:
        >>> r = [dict(case="a_0", factor="a", method="network", dice=0.9, hd95_mm=2.0, icv_error_pct=-1.0)]
        >>> "| a | 1 | 0.9000 | 0.9000 |" in format_robustness_table(r)
        True
    """
    factors = list(dict.fromkeys(r["factor"] for r in rows))
    lines = [
        "| factor | n | Dice mean | Dice worst | HD95 mm | ICV error % | abs ICV error % | pseudo-labeller Dice mean"
        " | pseudo-labeller Dice worst |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name in [*factors, "all"]:
        net = [r for r in rows if r["method"] == "network" and name in (r["factor"], "all")]
        pl = [r for r in rows if r["method"] == "pseudo_label" and name in (r["factor"], "all")]
        if not net:
            continue
        s = _stats(net)
        p = _stats(pl) if pl else None
        label = f"**{name}**" if name == "all" else name
        lines.append(
            f"| {label} | {s['n']} | {s['dice']:.4f} | {s['worst']:.4f} | {s['hd95']:.2f} | {s['icv']:+.2f} | "
            f"{s['abs_icv']:.2f} | {p['dice'] if p else float('nan'):.4f} | {p['worst'] if p else float('nan'):.4f} |"
        )
    return "\n".join(lines)
