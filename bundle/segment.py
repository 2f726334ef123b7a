# SPDX-License-Identifier: Apache-2.0
"""Segment the cranial cavity in head CT files, series folders or whole study trees: masks, DICOM SEG, QC, reports.

:func:`segment` is the Python API behind ``scripts/segment.py``. The inference pipeline is the bundle's own: the
pre-processing, network, inferer and post-processing are built from ``configs/inference.json`` plus a preset with
``monai.bundle.ConfigParser`` (the ``SaveImaged`` step is replaced by this module's writers), so the CLI and the
bundle's ``inference`` workflow give the same masks.

Per case ``NAME`` it writes into OUTPUT, each file atomically (temporary file, then ``os.replace``):

- ``NAME_mask.nii.gz``: uint8 mask (1 = cranial cavity) in the input's native geometry (a NIfTI input's shape and
  affine; for DICOM the loader's native grid: tilt-corrected, regular spacing, axes along the rows, columns and slice
  normal, see ``docs/segment.md``);
- ``NAME_seg.dcm`` (``dicom_seg=True``): a DICOM SEG with one frame per source slice on the source slice grid;
- ``NAME_qc.png`` (``qc=True``): the QC picture (:mod:`bundle.qc`), with ``reference`` the agreement overlay;
- ``NAME_report.json``: written last; its presence marks the case as finished, so a rerun skips it.

and ``summary.csv`` over all cases.

Reliability (``docs/segment.md``): OUTPUT is created and write-tested before any work (:class:`SegmentError`
otherwise); a case whose outputs cannot be written fails with a message and the batch goes on. A run claims each case
with a lock file ``OUTPUT/.NAME.lock`` (pid and host), so several runs on the same OUTPUT share the work and never
replace each other's files; a lock of a killed run is recovered. Temporary files live in OUTPUT only (hidden,
``.NAME_*.tmp*`` and ``.segment_stage_*``) and a later run removes the ones a killed run left. An interruption raises
:class:`SegmentInterrupted` (a ``KeyboardInterrupt``) saying what finished; a rerun resumes.

Every mask is checked for plausibility (:func:`bundle.plausibility.check_mask`,
on the RAS mask and HU image): the findings are logged, listed in the report (``warnings``, ``findings``) and in the
summary (``warning_codes``), and drawn in the QC picture; a case with a finding that questions the mask itself is
still written, with status ``needs_review`` instead of ``done``.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import logging
import os
import platform
import shutil
import socket
import time
import uuid
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from nibabel.affines import voxel_sizes

from bundle.io.errors import CTInputError
from bundle.segment_inputs import SeriesInput, SkippedSeries, find_series
from bundle.utils import FileLock, LockHeld, atomic_write_text, pid_alive

__all__ = [
    "SegmentError",
    "SegmentInterrupted",
    "SummaryError",
    "SeriesResult",
    "segment",
    "build_report",
    "REPORT_SUFFIX",
    "FINISHED_STATUSES",
    "MIN_FREE_BYTES",
]

logger = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[1]
#: Suffix of the per-case JSON report, the file written last.
REPORT_SUFFIX = "_report.json"
_SUMMARY_FIELDS = [
    "name",
    "status",
    "source",
    "volume_ml",
    "num_slices",
    "spacing_mm",
    "seconds",
    "error",
    "warning_codes",
    "warnings",
]
#: Report statuses of a finished case: segmented, and segmented with a plausibility finding a reader should check.
FINISHED_STATUSES = ("done", "needs_review")
#: Free space OUTPUT needs before a run starts: a case writes 1-20 MB (mask, QC picture, DICOM SEG of a thin series).
MIN_FREE_BYTES = 64 * 1024**2
#: The files a case writes, by suffix: their temporary files (``.NAME<suffix>.<hex>.tmp...``) are cleaned per case.
_CASE_SUFFIXES = ("_mask.nii.gz", "_seg.dcm", "_qc.png", REPORT_SUFFIX)
_STAGE_PREFIX = ".segment_stage_"
_BUNDLE_DIR = Path(__file__).resolve().parent


class SegmentError(ValueError):
    """An unusable call as a whole (input missing, OUTPUT inside INPUT or not writable, unknown preset, bad weights)."""


class SummaryError(OSError):
    """Every case was processed (see ``results``) but ``summary.csv`` could not be written."""

    def __init__(self, message: str, results: list):
        super().__init__(message, results)  # every argument, so that the error pickles and copies
        self.message, self.results = message, results

    def __str__(self) -> str:
        return self.message


class SegmentInterrupted(KeyboardInterrupt):
    """The run was interrupted (Ctrl-C); ``results`` holds the cases finished before, ``remaining`` the rest.

    Its message says what finished and how to resume (run the same command again: finished cases are skipped).
    """

    def __init__(self, output: Path, results: list, remaining: int):
        self.output, self.results, self.remaining = output, results, remaining
        finished = sum(r.status in FINISHED_STATUSES + ("skipped",) for r in results)
        super().__init__(
            f"interrupted: {finished} case(s) finished in {output}, {remaining} not done; run the same command "
            "again to resume (finished cases are skipped)."
        )


@dataclasses.dataclass
class SeriesResult:
    """The outcome for one case.

    Attributes:
        name: the case name (prefix of its output files).
        source: the input file or series folder.
        status: "done" (segmented now), "needs_review" (segmented now, with a plausibility finding that questions the
            mask: check the QC picture), "skipped" (finished by an earlier run), "in_progress" (claimed by another
            run that is still working on it), or "failed".
        error: why it failed ("" otherwise).
        volume_ml: intracranial volume in mL (None if failed).
        report: path of the JSON report (None if failed).
        report_data: the report's content (empty if failed).
    """

    name: str
    source: str
    status: str
    error: str = ""
    volume_ml: float | None = None
    report: Path | None = None
    report_data: dict = dataclasses.field(default_factory=dict)


def _expected_errors() -> tuple[type[BaseException], ...]:
    from bundle.io.dicom_seg import DicomSegError

    return (CTInputError, DicomSegError)


def _expected_cause(err: BaseException, expected: tuple[type[BaseException], ...]) -> BaseException | None:
    """The expected error behind ``err`` (MONAI's ``apply_transform`` wraps errors in RuntimeError), or None."""
    seen = set()
    while err is not None and id(err) not in seen:
        if isinstance(err, expected):
            return err
        seen.add(id(err))
        err = err.__cause__ or err.__context__
    return None


def _resolve_preset(preset: str) -> Path:
    candidate = Path(preset)
    if candidate.suffix == ".json":
        if not candidate.is_file():
            raise SegmentError(f"preset file {preset} does not exist.")
        return candidate
    path = REPO_ROOT / "configs" / "presets" / f"{preset}.json"
    if not path.is_file():
        names = sorted(p.stem for p in (REPO_ROOT / "configs" / "presets").glob("*.json"))
        raise SegmentError(f"preset must be one of {names} or a .json file, got {preset!r}.")
    return path


class _Pipeline:
    """The bundle's inference pipeline from ``configs/inference.json`` + a preset, with weights loaded."""

    def __init__(self, preset: str, weights: str | os.PathLike | None, device: str) -> None:
        import torch
        from monai.bundle import ConfigParser
        from monai.transforms import Compose, SaveImaged

        from bundle.device import resolve_device
        from bundle.io.reader import quiet_gpu_decoder_notice
        from bundle.weights import load_state_dict_file

        self.device = resolve_device(device)
        preset_file = _resolve_preset(preset)
        self.preset = preset_file.stem if Path(preset).suffix != ".json" else str(preset_file)
        self.weights = Path(weights) if weights is not None else REPO_ROOT / "models" / "model.pt"
        if not self.weights.is_file():
            raise SegmentError(
                f"weights file {self.weights} does not exist; train the bundle or pass --weights PATH.pt."
            )
        parser = ConfigParser()
        parser.read_config([str(REPO_ROOT / "configs" / "inference.json"), str(preset_file)])
        parser["bundle_root"] = str(REPO_ROOT)
        with quiet_gpu_decoder_notice():  # LoadImaged instantiates MONAI's GPU DICOM decoder, unused here
            self.preprocessing = parser.get_parsed_content("preprocessing")
        self.network = parser.get_parsed_content("network_def")
        self.inferer = parser.get_parsed_content("inferer")
        post = parser.get_parsed_content("postprocessing")
        self.postprocessing = Compose([t for t in post.transforms if not isinstance(t, SaveImaged)])
        try:
            state = load_state_dict_file(self.weights)
            self.network.load_state_dict(state)
        except (ValueError, RuntimeError) as err:
            raise SegmentError(f"weights file {self.weights} does not fit preset {self.preset!r}: {err}") from err
        self.network.to(self.device).eval()
        # The same switch and dtype as the workflows (`amp`, `amp_kwargs` in the config), which autocast on CUDA only;
        # bf16 also when a config gives no dtype (torch.autocast's own default on CUDA is fp16).
        self.amp = bool(parser.get_parsed_content("amp")) and self.device.type == "cuda"
        configured = dict(parser.get_parsed_content("amp_kwargs") or {}) if "amp_kwargs" in parser else {}
        self.amp_kwargs = {"dtype": torch.bfloat16, **configured}
        self._torch = torch
        # the number of pre-processing steps up to and including Orientationd: the image there is HU, RAS
        names = [type(t).__name__ for t in self.preprocessing.transforms]
        self._ras_end = names.index("Orientationd") + 1 if "Orientationd" in names else 1

    def __call__(self, path: Path) -> tuple[Any, Any, dict]:
        """Segment one input; returns (native mask MetaTensor (1, ...), RAS HU image MetaTensor (1, ...), meta)."""
        torch = self._torch
        data = self.preprocessing({"image": str(path)}, end=self._ras_end)
        hu_ras = data["image"].clone()
        data = self.preprocessing(data, start=self._ras_end)
        image = data["image"]
        with torch.inference_mode(), torch.autocast(self.device.type, enabled=self.amp, **self.amp_kwargs):
            logits = self.inferer(image[None].to(self.device), self.network)
        data["pred"] = logits[0].float().cpu()
        data = self.postprocessing(data)
        return data["pred"], hu_ras, dict(data["image"].meta)


_PIPELINES: dict[tuple, _Pipeline] = {}


def _get_pipeline(preset: str, weights: str | os.PathLike | None, device: str) -> _Pipeline:
    """Build the pipeline once per (preset, weights file and its mtime, device); repeated API calls reuse it."""
    weights_path = Path(weights) if weights is not None else REPO_ROOT / "models" / "model.pt"
    stamp = weights_path.stat().st_mtime_ns if weights_path.is_file() else None
    key = (str(preset), str(weights_path.resolve()), stamp, str(device))
    if key not in _PIPELINES:
        _PIPELINES.clear()  # keep at most one network in memory
        _PIPELINES[key] = _Pipeline(preset, weights, device)
    return _PIPELINES[key]


def build_report(
    *,
    case: SeriesInput,
    mask_shape: Sequence[int],
    mask_affine: np.ndarray,
    volume_ml: float,
    meta: dict,
    seconds: float,
    pipeline_info: dict,
    warnings_list: Sequence[str],
    files: Sequence[str],
    findings: Sequence[dict] = (),
) -> dict:
    """The per-case JSON report (a pure function of its arguments).

    Args:
        case: the case.
        mask_shape: shape of the native mask.
        mask_affine: its 4x4 RAS affine.
        volume_ml: intracranial volume in mL.
        meta: the loader's metadata (``ct_*`` keys).
        seconds: time taken for the case (loading to last output).
        pipeline_info: model, preset, weights, device, bundle and library versions.
        warnings_list: warnings raised while processing.
        files: output files written, relative to OUTPUT.
        findings: the mask's plausibility findings (:meth:`bundle.plausibility.MaskFinding.to_dict`); any with
            ``review`` set makes the status "needs_review". Defaults to ().

    Returns:
        A JSON-serialisable dict.

    Example:
        >>> report = build_report(case=case, mask_shape=(64, 64, 24), ...)  # doctest: +SKIP
    """
    spacing = [float(v) for v in voxel_sizes(np.asarray(mask_affine, dtype=np.float64))]
    findings = [dict(f) for f in findings]
    report = {
        "name": case.name,
        "status": "needs_review" if any(f.get("review", True) for f in findings) else "done",
        "source": str(case.path),
        "format": str(meta.get("ct_format", "nifti")),
        "intracranial_volume_ml": round(float(volume_ml), 3),
        "shape": [int(v) for v in mask_shape],
        "num_slices": int(mask_shape[-1]),
        "spacing_mm": [round(v, 5) for v in spacing],
        "affine": np.asarray(mask_affine, dtype=float).round(6).tolist(),
        "seconds": round(float(seconds), 3),
        "warnings": list(warnings_list),
        "findings": findings,
        "files": list(files),
        **pipeline_info,
    }
    if meta.get("ct_format") == "dicom":
        report["dicom"] = {
            "series_instance_uid": str(meta.get("ct_series_instance_uid", case.series_instance_uid)),
            "series_description": str(meta.get("ct_series_description", "")),
            "num_source_slices": int(meta.get("ct_num_source_slices", 0)),
            "gantry_tilt_deg": float(meta.get("ct_gantry_tilt_deg", 0.0)),
            "tilt_corrected": bool(meta.get("ct_tilt_corrected", False)),
            "slice_spacing_mm": float(meta.get("ct_slice_spacing_mm", spacing[-1])),
            "spacing_resampled": bool(meta.get("ct_spacing_resampled", False)),
        }
    return report


def _finished(output: Path, name: str) -> dict | None:
    path = output / f"{name}{REPORT_SUFFIX}"
    if not path.is_file():
        return None
    try:
        report = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if report.get("status") not in FINISHED_STATUSES or not all(
        (output / f).is_file() for f in report.get("files", [])
    ):
        return None
    return report


def _skipped(output: Path, case: SeriesInput, done: dict) -> SeriesResult:
    report_path = output / f"{case.name}{REPORT_SUFFIX}"
    return SeriesResult(case.name, str(case.path), "skipped", "", done.get("intracranial_volume_ml"), report_path, done)


def _stage(case: SeriesInput, tmp_root: Path) -> tuple[Path, dict[str, Path]]:
    """The folder to hand to the loader, and the map from its file names to the original files."""
    if case.files is None:
        return case.path, {}
    folder = case.files[0].parent
    own = {p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")}
    if all(p.parent == folder for p in case.files) and own == set(case.files):
        return folder, {}
    staged = tmp_root / case.name
    shutil.rmtree(staged, ignore_errors=True)
    staged.mkdir(parents=True)
    mapping = {}
    for i, src in enumerate(case.files):
        link = staged / f"{i:05d}_{src.name}"
        try:
            link.symlink_to(src.resolve())
        except OSError:
            shutil.copyfile(src, link)
        mapping[link.name] = src
    return staged, mapping


def _load_reference(path: Path, shape: tuple[int, ...], affine: np.ndarray):
    import nibabel as nib

    try:
        ref = nib.load(str(path))
        data = np.asarray(ref.dataobj)
    except Exception as err:  # noqa: BLE001 - nibabel raises many types for bad files
        raise CTInputError(path, f"is not a readable NIfTI reference mask ({type(err).__name__}: {err}).") from err
    while data.ndim > 3 and data.shape[-1] == 1:
        data = data[..., 0]
    if tuple(data.shape) != tuple(shape) or not np.allclose(ref.affine, affine, atol=1e-3):
        raise CTInputError(path, f"reference mask shape {data.shape} or affine differs from the input's {shape}.")
    return data > 0


def _reference_for(reference: Path | None, case: SeriesInput, single: bool) -> Path | None:
    if reference is None:
        return None
    if reference.is_file():
        return reference if single else None
    for suffix in (".nii.gz", ".nii"):
        candidate = reference / f"{case.name}{suffix}"
        if candidate.is_file():
            return candidate
    return None


def _case_warnings(caught: Sequence[warnings.WarningMessage], case: SeriesInput, load_path: Path) -> list[str]:
    """The bundle's warnings for a case, each distinct one once; library warnings go to the DEBUG log only.

    Libraries repeat theirs per file (pydicom's "Invalid value for VR UI: '...'" once per slice, with each slice's
    UID), which would bury the bundle's own warnings in the report and the summary; they say nothing about the mask.
    """
    messages: list[str] = []
    library: dict[str, int] = {}
    for w in caught:
        text = str(w.message).replace(str(load_path), str(case.path))
        if not Path(w.filename).resolve().is_relative_to(_BUNDLE_DIR):
            key = f"{w.category.__name__}: {text[:60]}"
            library[key] = library.get(key, 0) + 1
            if library[key] == 1:
                logger.debug("%s: library warning (%s): %s", case.name, Path(w.filename).name, text)
            continue
        if text not in messages:
            messages.append(text)
            logger.warning("%s: %s", case.name, text)
    if library:
        logger.debug("%s: %d library warning(s) kept out of the report", case.name, sum(library.values()))
    return messages


def _orient_ras(array: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """A native-geometry mask in the RAS voxel order of the checks and the QC picture (slice indices of its views)."""
    import torch
    from monai.data import MetaTensor
    from monai.transforms import Orientation

    orient = Orientation(axcodes="RAS", labels=(("L", "R"), ("P", "A"), ("I", "S")))
    return orient(MetaTensor(torch.from_numpy(array)[None], affine=torch.as_tensor(affine))).numpy()[0]


def _plausibility_findings(case: SeriesInput, mask_ras: np.ndarray, hu_ras, volume: float, messages: list[str]) -> list:
    """The mask's plausibility findings (on the RAS mask and HU image); each new message is logged and appended."""
    from bundle.plausibility import check_mask

    findings = check_mask(mask_ras, hu_ras.affine.numpy(), hu_ras.numpy()[0], volume_ml=volume)
    for finding in findings:
        if finding.message not in messages:
            messages.append(finding.message)
            logger.warning("%s: %s: %s", case.name, finding.code, finding.message)
    return findings


def _write_seg(
    case: SeriesInput,
    output: Path,
    native: np.ndarray,
    affine: np.ndarray,
    meta: dict,
    sources: tuple[Path, dict[str, Path]],
    messages: list[str],
) -> str | None:
    """Write the DICOM SEG on the source slices (``sources``: folder loaded, staged names); None if not DICOM."""
    if meta.get("ct_format") != "dicom":
        messages.append("dicom_seg requested but the input is not DICOM; no SEG written")
        logger.warning("%s: %s", case.name, messages[-1])
        return None
    from bundle.io.dicom_seg import write_dicom_seg
    from bundle.io.dicom_series import SourceGeometry, read_dicom_file, resample_to_source_slices

    load_path, staged_map = sources
    geometry = SourceGeometry.from_json(meta["ct_source_geometry"])
    frames = resample_to_source_slices(native, affine, geometry, order=0)
    paths = [staged_map.get(f, Path(load_path) / f) for f in geometry.files]
    datasets = [read_dicom_file(p, stop_before_pixels=True) for p in paths]
    seg_path = output / f"{case.name}_seg.dcm"
    write_dicom_seg(frames, datasets, seg_path)  # logs the file written
    return seg_path.name


def _agreement(reference: Path, native: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, dict]:
    """The reference mask (input geometry) and the report's agreement entries (its volume, the Dice score)."""
    from bundle.metrics import dice_score
    from bundle.postprocessing import intracranial_volume_ml

    ref = _load_reference(reference, native.shape, affine)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # both empty: nan, reported as null
        dice = dice_score(native, ref)
    return ref, {
        "reference": str(reference),
        "reference_volume_ml": round(float(intracranial_volume_ml(ref, affine)), 3),
        "dice_vs_reference": None if np.isnan(dice) else round(float(dice), 5),
    }


def _segment_one(
    case: SeriesInput,
    output: Path,
    pipeline: _Pipeline,
    pipeline_info: dict,
    *,
    dicom_seg: bool,
    qc: bool,
    reference: Path | None,
    tmp_root: Path,
) -> SeriesResult:
    """Segment one case and write its files: mask, DICOM SEG, QC picture, then the report (last)."""
    from bundle.io.writers import write_nifti
    from bundle.postprocessing import intracranial_volume_ml

    start = time.perf_counter()
    load_path, staged_map = _stage(case, tmp_root)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        mask, hu_ras, meta = pipeline(load_path)
    messages = _case_warnings(caught, case, load_path)

    native = np.asarray(mask.detach().cpu().numpy()[0] > 0, dtype=np.uint8)
    affine = np.asarray(mask.affine.detach().cpu().numpy(), dtype=np.float64)
    mask_path = write_nifti(native, affine, output / f"{case.name}_mask.nii.gz")
    logger.info("wrote %s", mask_path)
    files = [mask_path.name]
    volume = intracranial_volume_ml(native, affine)
    mask_ras = _orient_ras(native, affine)
    findings = _plausibility_findings(case, mask_ras, hu_ras, volume, messages)
    if dicom_seg:
        seg_name = _write_seg(case, output, native, affine, meta, (load_path, staged_map), messages)
        files += [seg_name] if seg_name else []
    ref, agreement = _agreement(reference, native, affine) if reference is not None else (None, {})
    if qc:
        from bundle.qc import save_qc_png

        qc_path = output / f"{case.name}_qc.png"
        ref_ras = None if ref is None else _orient_ras(ref.astype(np.uint8), affine)
        save_qc_png(
            qc_path,
            hu_ras.numpy()[0],
            mask_ras,
            hu_ras.affine.numpy(),
            reference=ref_ras,
            case_name=case.name,
            findings=findings,
        )  # logs the file written
        files.append(qc_path.name)

    report = build_report(
        case=case,
        mask_shape=native.shape,
        mask_affine=affine,
        volume_ml=volume,
        meta=meta,
        seconds=time.perf_counter() - start,
        pipeline_info=pipeline_info,
        warnings_list=messages,
        files=files,
        findings=[f.to_dict() for f in findings],
    )
    report.update(agreement)
    report_path = output / f"{case.name}{REPORT_SUFFIX}"
    atomic_write_text(report_path, json.dumps(report, indent=2) + "\n")
    logger.info("wrote %s", report_path)
    return SeriesResult(case.name, str(case.path), report["status"], "", float(volume), report_path, report)


def _write_summary(output: Path, results: Sequence[SeriesResult], skipped: Sequence[SkippedSeries]) -> Path:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=_SUMMARY_FIELDS, lineterminator="\n")
    writer.writeheader()
    for r in results:
        data = r.report_data
        writer.writerow(
            {
                "name": r.name,
                "status": r.status,
                "source": r.source,
                "volume_ml": "" if r.volume_ml is None else f"{r.volume_ml:.3f}",
                "num_slices": data.get("num_slices", ""),
                "spacing_mm": " ".join(f"{v:g}" for v in data.get("spacing_mm", [])),
                "seconds": data.get("seconds", ""),
                "error": r.error,
                "warning_codes": ";".join(f.get("code", "") for f in data.get("findings", [])),
                "warnings": " | ".join(data.get("warnings", [])),
            }
        )
    for s in skipped:
        writer.writerow({"name": "", "status": "not_ct", "source": str(s.path), "error": s.reason})
    path = output / "summary.csv"
    atomic_write_text(path, buffer.getvalue())
    logger.info("wrote %s", path)
    return path


def _check_paths(input_path: Path, output: Path) -> None:
    if not input_path.exists():
        raise SegmentError(f"input {input_path} does not exist.")
    src = input_path.resolve()
    out = output.resolve()
    if out == src or (src.is_dir() and out.is_relative_to(src)):
        raise SegmentError(f"output {output} is inside the input {input_path}; choose a folder outside the input.")
    if out.exists() and not out.is_dir():
        raise SegmentError(f"output {output} exists and is not a folder.")


def _prepare_output(output: Path) -> bool:
    """Create OUTPUT and prove it writable, before any work; returns whether it was created here.

    Raises:
        SegmentError: it cannot be created or written, or has less than :data:`MIN_FREE_BYTES` free.
    """
    created = not output.exists()
    try:
        output.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise SegmentError(
            f"output {output} cannot be created ({err.strerror or err}); choose a folder you can write to."
        ) from None
    probe = output / f".segment_write_test_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    try:
        with open(probe, "wb") as f:
            f.write(b"ok")
        probe.unlink()
    except OSError as err:
        raise SegmentError(
            f"output {output} is not writable ({err.strerror or err}); choose a folder you can write to."
        ) from None
    free = shutil.disk_usage(output).free
    if free < MIN_FREE_BYTES:
        raise SegmentError(
            f"output {output} has only {free / 1024**2:.0f} MB free; a run needs at least "
            f"{MIN_FREE_BYTES // 1024**2} MB."
        )
    return created


def _remove_stale_stages(output: Path) -> None:
    """Remove the staging folders of runs on this host that no longer run (killed: nothing else removes them)."""
    host = socket.gethostname()
    for folder in output.glob(f"{_STAGE_PREFIX}*"):
        owner_host, _, pid = folder.name[len(_STAGE_PREFIX) :].rpartition("_")[0].rpartition("_")
        if owner_host == host and pid.isdigit() and not pid_alive(int(pid)):
            shutil.rmtree(folder, ignore_errors=True)
            logger.info("removed %s, left by an interrupted run", folder.name)


def _remove_stale_lock(path: Path) -> None:
    """Remove the lock of a finished case if its owner is gone (killed between the report and the release)."""
    if path.exists():
        try:
            FileLock(path).acquire().release()
        except LockHeld:
            pass  # a live run still holds it; it releases it itself


def _remove_case_temporaries(output: Path, name: str) -> None:
    """Remove the temporary files of ``name``'s outputs; call only while holding the case's lock."""
    for suffix in _CASE_SUFFIXES:
        for tmp in output.glob(f".{name}{suffix}.*.tmp*"):
            tmp.unlink(missing_ok=True)
            logger.info("%s: removed %s, left by an interrupted run", name, tmp.name)


def _failure_message(err: BaseException) -> str:
    """One line for an OSError while processing a case (a disk full, a file where a folder should be ...)."""
    if isinstance(err, OSError) and err.strerror:
        where = f"{err.filename}: " if err.filename else ""
        return f"could not write or read {where}{err.strerror}"
    return f"{type(err).__name__}: {err}"


def segment(
    input: str | os.PathLike,
    output: str | os.PathLike,
    *,
    device: str = "auto",
    preset: str = "lite",
    weights: str | os.PathLike | None = None,
    dicom_seg: bool = False,
    qc: bool = True,
    reference: str | os.PathLike | None = None,
    overwrite: bool = False,
    progress: bool = True,
    log_file: bool = False,
) -> list[SeriesResult]:
    """Segment the cranial cavity of every CT case under ``input`` into ``output``.

    Args:
        input: a NIfTI file (HU), a folder holding one DICOM series, or a tree of studies (searched recursively;
            DICOM files grouped by SeriesInstanceUID; non-CT series skipped with a logged note).
        output: folder for the results (created; must not be inside ``input``).
        device: "auto", "cpu", "cuda" or "cuda:N" (:func:`bundle.device.resolve_device`). Defaults to "auto".
        preset: a preset name in ``configs/presets`` or a preset ``.json``; must match the weights. Defaults to "lite".
        weights: a state_dict ``.pt`` file (read with ``weights_only=True``). Defaults to None: ``models/model.pt``.
        dicom_seg: also write a DICOM SEG per DICOM series. Defaults to False.
        qc: write the QC picture per case. Defaults to True.
        reference: a reference mask NIfTI in the input's native geometry (single-case input) or a folder holding
            ``<name>.nii.gz`` per case; adds the agreement overlay to the QC picture. Defaults to None.
        overwrite: redo cases whose report already exists. Defaults to False (skip them, so a rerun resumes).
        progress: show a tqdm progress bar. Defaults to True.
        log_file: append every log record of the run (DEBUG, libraries included) to ``output/segment.log``.
            Defaults to False.

    Returns:
        One :class:`SeriesResult` per case, in name order; ``summary.csv`` in ``output`` lists the same.

    Raises:
        SegmentError: the call as a whole is unusable (input missing, output inside input or not writable or full,
            bad preset or weights).
        SegmentInterrupted: on Ctrl-C (a ``KeyboardInterrupt``), after removing this run's temporary files and locks.
        SummaryError: every case was processed but ``summary.csv`` could not be written.
        CTInputError: the input holds nothing to segment.
        ValueError: a bad ``device``.

    Example:
        >>> results = segment("ct/case_001.nii.gz", "masks/", device="cpu")  # doctest: +SKIP
        >>> results[0].status, round(results[0].volume_ml)  # doctest: +SKIP
        ('done', 1402)
    """

    from bundle.device import resolve_device

    input_path, output = Path(input), Path(output)
    _check_paths(input_path, output)
    resolve_device(device)  # eager argument checks, before any work
    _resolve_preset(preset)
    if weights is not None and not Path(weights).is_file():
        raise SegmentError(f"weights file {weights} does not exist.")
    reference_path = Path(reference) if reference is not None else None
    if reference_path is not None and not reference_path.exists():
        raise SegmentError(f"reference {reference_path} does not exist.")
    created = _prepare_output(output)
    handler = _attach_log_file(output) if log_file else None
    try:
        return _segment_cases(
            input_path,
            output,
            created=created,
            device=device,
            preset=preset,
            weights=weights,
            dicom_seg=dicom_seg,
            qc=qc,
            reference_path=reference_path,
            overwrite=overwrite,
            progress=progress,
        )
    finally:
        if handler is not None:
            logging.getLogger().removeHandler(handler)
            handler.close()


def _attach_log_file(output: Path) -> logging.Handler:
    """A DEBUG file handler on the root logger, so that the libraries' debug messages reach the file only."""
    handler = logging.FileHandler(output / "segment.log", encoding="utf-8")
    handler.setLevel(logging.DEBUG)
    handler.setFormatter(logging.Formatter("%(asctime)s %(process)d %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    if root.level > logging.DEBUG or root.level == logging.NOTSET:
        for other in root.handlers:  # keep the console at the level it had
            if other is not handler and other.level == logging.NOTSET:
                other.setLevel(root.level or logging.WARNING)
        root.setLevel(logging.DEBUG)
    return handler


def _segment_cases(
    input_path: Path,
    output: Path,
    *,
    created: bool,
    device: str,
    preset: str,
    weights: str | os.PathLike | None,
    dicom_seg: bool,
    qc: bool,
    reference_path: Path | None,
    overwrite: bool,
    progress: bool,
) -> list[SeriesResult]:
    """The body of :func:`segment` once the arguments and OUTPUT are checked."""
    from tqdm.auto import tqdm

    import bundle

    try:
        cases, skipped = find_series(input_path)
        if reference_path is not None and reference_path.is_file() and len(cases) > 1:
            raise SegmentError(
                f"reference {reference_path} is one file but {input_path} holds {len(cases)} cases; "
                "pass a folder holding NAME.nii.gz per case."
            )
    except BaseException:
        if created:
            shutil.rmtree(output, ignore_errors=True)  # only what this call created: nothing was written yet
        raise
    _remove_stale_stages(output)
    pipeline: _Pipeline | None = None
    expected = _expected_errors()
    results: list[SeriesResult] = []
    # staging links live in OUTPUT (not the system temp folder), named with host and pid, so that a later run finds
    # and removes the folder of a killed run
    stage = output / f"{_STAGE_PREFIX}{socket.gethostname()}_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    case = None
    try:
        for case in tqdm(cases, desc="segment", unit="series", disable=not progress):
            done = None if overwrite else _finished(output, case.name)
            if done is not None:
                logger.info("%s: already finished (%s), skipped", case.name, case.name + REPORT_SUFFIX)
                results.append(_skipped(output, case, done))
                _remove_stale_lock(output / f".{case.name}.lock")
                continue
            lock = FileLock(output / f".{case.name}.lock")
            try:
                lock.acquire()
            except LockHeld as held:
                owner = f"pid {held.owner.get('pid', '?')} on {held.owner.get('host', '?')}"
                logger.info("%s: being segmented by another run (%s), left to it", case.name, owner)
                results.append(SeriesResult(case.name, str(case.path), "in_progress", f"claimed by {owner}"))
                continue
            try:
                done = None if overwrite else _finished(output, case.name)
                if done is not None:  # another run finished it since the check above
                    logger.info("%s: finished by another run, skipped", case.name)
                    results.append(_skipped(output, case, done))
                    continue
                _remove_case_temporaries(output, case.name)
                if pipeline is None:
                    pipeline = _get_pipeline(preset, weights, device)
                    info = {
                        "model": "UNetConvLSTM",
                        "preset": pipeline.preset,
                        "weights": str(pipeline.weights),
                        "bundle_version": bundle.__version__,
                        "device": str(pipeline.device),
                        "python": platform.python_version(),
                    }
                single = len(cases) == 1
                ref = _reference_for(reference_path, case, single)
                try:
                    results.append(
                        _segment_one(
                            case, output, pipeline, info, dicom_seg=dicom_seg, qc=qc, reference=ref, tmp_root=stage
                        )
                    )
                except Exception as err:  # noqa: BLE001 - one bad case must not stop the batch
                    cause = _expected_cause(err, expected)
                    if cause is not None:  # bad input: the message names the file and the problem; no traceback
                        logger.error("%s: failed: %s", case.name, cause)
                        results.append(SeriesResult(case.name, str(case.path), "failed", str(cause)))
                    elif isinstance(err, OSError):  # an output that cannot be written: a message, no traceback
                        logger.error("%s: failed: %s", case.name, _failure_message(err))
                        logger.debug("%s: details", case.name, exc_info=True)
                        results.append(SeriesResult(case.name, str(case.path), "failed", _failure_message(err)))
                    else:
                        logger.exception("%s: failed with an unexpected error", case.name)
                        results.append(SeriesResult(case.name, str(case.path), "failed", _failure_message(err)))
            finally:
                lock.release()
    except KeyboardInterrupt as err:
        remaining = len(cases) - len(results)
        raise SegmentInterrupted(output, results, remaining) from err
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    try:
        _write_summary(output, results, skipped)
    except OSError as err:
        raise SummaryError(f"{output / 'summary.csv'} could not be written: {_failure_message(err)}", results) from err
    failed = [r for r in results if r.status == "failed"]
    logger.info(
        "%d case(s): %d segmented (%d of them need review), %d already done, %d left to another run, %d failed; "
        "%d non-CT series skipped",
        len(results),
        sum(r.status in FINISHED_STATUSES for r in results),
        sum(r.status == "needs_review" for r in results),
        sum(r.status == "skipped" for r in results),
        sum(r.status == "in_progress" for r in results),
        len(failed),
        len(skipped),
    )
    return results
