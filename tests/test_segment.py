# SPDX-License-Identifier: Apache-2.0
"""The segmenter (bundle.segment, scripts/segment.py): geometry of the masks, DICOM SEG, tree discovery, resume,
one bad case not stopping a batch, and every bad input of the data layer reported through the API and the CLI.

The network is the tiny preset with seeded random weights: these tests check the plumbing, not the model's accuracy.
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
import torch
from PIL import Image
from test_io_dicom import BAD_INPUTS
from test_io_nifti import BAD_NIFTI

import bundle.segment as segment_module
from bundle.data.phantoms import make_phantom
from bundle.io import CTImageReader, CTInputError, resample_to_source_slices
from bundle.io.writers import write_ct_dicom_series, write_nifti
from bundle.metrics import dice_score
from bundle.postprocessing import intracranial_volume_ml
from bundle.segment import FINISHED_STATUSES, REPORT_SUFFIX, SegmentError, segment
from bundle.segment_inputs import find_series

REPO_ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py: one torch thread per test


def segmented(results) -> list[str]:
    """Each case's status, with "done" and "needs_review" (the random network's masks get findings) as "ok"."""
    return ["ok" if getattr(r, "status", r) in FINISHED_STATUSES else getattr(r, "status", r) for r in results]


def run(input_path, output, weights, **kwargs):
    return segment(input_path, output, device="cpu", preset="tiny", weights=weights, progress=False, **kwargs)


def phantom(seed: int = 3):
    return make_phantom(seed, in_plane_size=64, num_slices=24, gantry_tilt_deg=0.0)


def oblique_lps(p) -> tuple[np.ndarray, np.ndarray]:
    """The phantom stored with flipped X and Y (LPS voxel order) and rotated 12 degrees about Z."""
    flip = np.diag([-1.0, -1.0, 1.0, 1.0])
    flip[:2, 3] = [p.image.shape[0] - 1, p.image.shape[1] - 1]
    angle = np.deg2rad(12.0)
    rotation = np.eye(4)
    rotation[:2, :2] = [[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]]
    return np.ascontiguousarray(p.image[::-1, ::-1]), rotation @ p.affine @ flip


# --------------------------------------------------------------------------------------------------------------------
# geometry and outputs
# --------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("layout", ["ras", "oblique_lps"])
def test_nifti_mask_has_the_input_shape_and_affine(tmp_path, tiny_weights, layout):
    p = phantom()
    image, affine = (p.image, p.affine) if layout == "ras" else oblique_lps(p)
    label = p.label if layout == "ras" else np.ascontiguousarray(p.label[::-1, ::-1])
    source = tmp_path / "in" / "case.nii.gz"
    write_nifti(image, affine, source, dtype=np.int16)
    write_nifti(label, affine, tmp_path / "case_label.nii.gz", dtype=np.uint8)
    results = run(source, tmp_path / "out", tiny_weights, reference=tmp_path / "case_label.nii.gz")

    assert segmented(results) == ["ok"]
    header = nib.load(str(source))
    mask = nib.load(str(tmp_path / "out" / "case_mask.nii.gz"))
    assert mask.shape == header.shape
    np.testing.assert_allclose(mask.affine, header.affine, atol=1e-5)
    assert nib.aff2axcodes(mask.affine) == nib.aff2axcodes(header.affine)
    data = np.asarray(mask.dataobj)
    assert mask.get_data_dtype() == np.uint8 and set(np.unique(data)) <= {0, 1}
    # written by bundle.io.writers.write_nifti, the one NIfTI writer: the same header as the input's
    assert mask.header.get_xyzt_units() == header.header.get_xyzt_units() == ("mm", "sec")
    assert (int(mask.header["sform_code"]), int(mask.header["qform_code"])) == (1, 1)

    report = json.loads((tmp_path / "out" / f"case{REPORT_SUFFIX}").read_text())
    assert report["intracranial_volume_ml"] == pytest.approx(intracranial_volume_ml(data, header.affine), abs=1e-3)
    assert report["num_slices"] == header.shape[2] and report["preset"] == "tiny" and report["device"] == "cpu"
    assert report["files"] == ["case_mask.nii.gz", "case_qc.png"]
    assert report["reference_volume_ml"] == pytest.approx(intracranial_volume_ml(label, affine), abs=1e-3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dice = dice_score(data, label)
    assert report["dice_vs_reference"] == (None if np.isnan(dice) else pytest.approx(dice, abs=1e-5))
    assert all((tmp_path / "out" / f).is_file() for f in report["files"])
    rows = list(csv.DictReader((tmp_path / "out" / "summary.csv").open()))
    assert [(r["name"], r["status"]) for r in rows] == [("case", results[0].status)]
    assert not list((tmp_path / "out").glob(".*tmp*"))  # no temporary files left behind


@pytest.mark.parametrize("tilt_deg", [0.0, 15.0])
def test_dicom_mask_geometry_and_dicom_seg_read_back(tmp_path, tiny_weights, tilt_deg):
    import highdicom as hd

    p = make_phantom(5, in_plane_size=64, num_slices=24, gantry_tilt_deg=tilt_deg)
    files = write_ct_dicom_series(
        p.image, p.affine, tmp_path / "in" / "series", gantry_tilt_deg=tilt_deg, series_description="head"
    )
    results = run(tmp_path / "in" / "series", tmp_path / "out", tiny_weights, dicom_seg=True, qc=False)
    assert segmented(results) == ["ok"]

    reader = CTImageReader()  # the loader's native grid for the series
    native, meta = reader.get_data(reader.read(tmp_path / "in" / "series"))
    mask = nib.load(str(tmp_path / "out" / "series_mask.nii.gz"))
    assert mask.shape == native.shape
    np.testing.assert_allclose(mask.affine, meta["affine"], atol=1e-4)
    assert results[0].report_data["dicom"]["tilt_corrected"] == (tilt_deg != 0.0)

    seg_path = tmp_path / "out" / "series_seg.dcm"
    ds = pydicom.dcmread(seg_path)
    sources = [pydicom.dcmread(f, stop_before_pixels=True) for f in files]
    assert ds.Modality == "SEG" and ds.SeriesInstanceUID != sources[0].SeriesInstanceUID
    referenced = ds.ReferencedSeriesSequence[0]
    assert referenced.SeriesInstanceUID == sources[0].SeriesInstanceUID
    assert {r.ReferencedSOPInstanceUID for r in referenced.ReferencedInstanceSequence} == {
        s.SOPInstanceUID for s in sources
    }
    frames = resample_to_source_slices(np.asarray(mask.dataobj), mask.affine, meta["ct_source_geometry"])
    non_empty = int((frames.reshape(len(frames), -1).max(axis=1) > 0).sum())
    assert int(ds.NumberOfFrames) == (non_empty if non_empty else len(sources))
    seg = hd.seg.segread(seg_path)
    assert seg.number_of_segments == 1
    assert seg.get_source_image_uids()[0][1] == sources[0].SeriesInstanceUID
    stored = ds.pixel_array.reshape(int(ds.NumberOfFrames), ds.Rows, ds.Columns)
    assert int(stored.astype(bool).sum()) == int(np.count_nonzero(frames))  # the mask on the source slice grid


def test_tree_groups_by_series_and_skips_non_ct(tmp_path):
    p = phantom(7)
    tree = tmp_path / "tree"
    write_ct_dicom_series(p.image, p.affine, tree / "patient1" / "study" / "ct", series_description="ct")
    # two series in one folder: in a tree each is its own case
    write_ct_dicom_series(p.image, p.affine, tree / "patient2" / "mixed", series_description="a")
    write_ct_dicom_series(p.image, p.affine, tree / "tmp_b", series_description="b", seed=1)
    for f in (tree / "tmp_b").iterdir():
        f.rename(tree / "patient2" / "mixed" / f"b_{f.name}")
    (tree / "tmp_b").rmdir()
    # a non-CT series and a non-image object
    mr_files = write_ct_dicom_series(p.image[:, :, :4], p.affine, tree / "patient3" / "mr", seed=2)
    for f in mr_files:
        ds = pydicom.dcmread(f)
        ds.Modality = "MR"
        ds.save_as(f)
    sr = pydicom.dcmread(mr_files[0])
    sr.Modality, sr.SOPClassUID, sr.SeriesInstanceUID = (
        "SR",
        "1.2.840.10008.5.1.4.1.1.88.11",
        pydicom.uid.generate_uid(),
    )
    sr.save_as(tree / "patient1" / "study" / "report.dcm")
    write_nifti(p.image, p.affine, tree / "patient4" / "scan.nii.gz", dtype=np.int16)
    (tree / "notes.txt").write_text("not an image")

    cases, skipped = find_series(tree)
    assert len(cases) == 4 and len({c.name for c in cases}) == 4
    dicom_cases = [c for c in cases if c.files is not None]
    assert sorted(len(c.files) for c in dicom_cases) == [24, 24, 24]
    assert len({c.series_instance_uid for c in dicom_cases}) == 3
    assert sorted(s.reason.split(" (")[1][:13] for s in skipped) == ["Modality MR, ", "Modality SR, "]
    # a series folder without sub-folders is one case handed to the loader as it is
    assert find_series(tree / "patient2" / "mixed")[0][0].files is None


# --------------------------------------------------------------------------------------------------------------------
# batch behaviour
# --------------------------------------------------------------------------------------------------------------------


def _three_cases(folder: Path) -> None:
    for seed in range(3):
        p = phantom(seed)
        write_nifti(p.image, p.affine, folder / f"case{seed}.nii.gz", dtype=np.int16)


def test_interrupted_run_resumes_without_redoing_or_losing_work(tmp_path, tiny_weights, monkeypatch):
    _three_cases(tmp_path / "in")
    original = segment_module._segment_one

    def interrupt_second(case, *args, **kwargs):
        if case.name == "case1":
            raise KeyboardInterrupt
        return original(case, *args, **kwargs)

    monkeypatch.setattr(segment_module, "_segment_one", interrupt_second)
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "in", tmp_path / "out", tiny_weights)
    monkeypatch.setattr(segment_module, "_segment_one", original)
    out = tmp_path / "out"
    finished = sorted(f.name for f in out.iterdir())
    assert finished == ["case0_mask.nii.gz", "case0_qc.png", "case0_report.json"]
    mtimes = {f: (out / f).stat().st_mtime_ns for f in finished}

    results = run(tmp_path / "in", out, tiny_weights)
    assert [r.name for r in results] == ["case0", "case1", "case2"]
    assert segmented(results) == ["skipped", "ok", "ok"]
    assert {f: (out / f).stat().st_mtime_ns for f in finished} == mtimes  # not redone
    for name in ("case0", "case1", "case2"):
        report = json.loads((out / f"{name}{REPORT_SUFFIX}").read_text())
        assert all((out / f).is_file() for f in report["files"])
    rows = list(csv.DictReader((out / "summary.csv").open()))
    assert segmented(r["status"] for r in rows) == ["skipped", "ok", "ok"]
    assert rows[0]["volume_ml"] != ""

    results = run(tmp_path / "in", out, tiny_weights, overwrite=True, qc=False)
    assert segmented(results) == ["ok"] * 3
    assert (out / "case0_mask.nii.gz").stat().st_mtime_ns != mtimes["case0_mask.nii.gz"]


def test_one_bad_case_is_reported_and_the_rest_segmented(tmp_path, tiny_weights):
    _three_cases(tmp_path / "in")
    bad = np.zeros((16, 16, 8), dtype=np.float32)
    bad[1, 1, 1] = np.nan
    nib.save(nib.Nifti1Image(bad, np.eye(4)), str(tmp_path / "in" / "broken.nii.gz"))
    results = run(tmp_path / "in", tmp_path / "out", tiny_weights, qc=False)
    status = dict(zip((r.name for r in results), segmented(results), strict=True))
    assert status == {"broken": "failed", "case0": "ok", "case1": "ok", "case2": "ok"}
    failed = next(r for r in results if r.status == "failed")
    assert "broken.nii.gz" in failed.error and "NaN" in failed.error
    assert not (tmp_path / "out" / f"broken{REPORT_SUFFIX}").exists()
    rows = {r["name"]: r for r in csv.DictReader((tmp_path / "out" / "summary.csv").open())}
    assert rows["broken"]["status"] == "failed" and "NaN" in rows["broken"]["error"]


@pytest.mark.parametrize("inside", ["same", "sub"])
def test_output_inside_input_is_refused(tmp_path, tiny_weights, inside):
    _three_cases(tmp_path / "in")
    output = tmp_path / "in" if inside == "same" else tmp_path / "in" / "masks"
    with pytest.raises(SegmentError, match="inside the input"):
        run(tmp_path / "in", output, tiny_weights)
    assert not (tmp_path / "in" / "masks").exists()


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"preset": "huge"}, "preset must be one of"),
        ({"device": "gpu"}, "device"),
        ({"weights": "missing.pt"}, "weights file missing.pt does not exist"),
        ({"reference": "a.nii.gz"}, "is one file but"),  # one reference file for a two-case input
    ],
)
def test_bad_arguments_raise_value_error_before_any_work(tmp_path, tiny_weights, kwargs, match, monkeypatch):
    p = phantom()
    for name in ("a", "b"):
        write_nifti(p.image, p.affine, tmp_path / "in" / f"{name}.nii.gz", dtype=np.int16)
    monkeypatch.chdir(tmp_path / "in")  # relative paths in the table
    args = {"device": "cpu", "preset": "tiny", "weights": tiny_weights, **kwargs}
    with pytest.raises(ValueError, match=match):
        segment(tmp_path / "in", tmp_path / "out", progress=False, **args)
    assert not (tmp_path / "out").exists()


# --------------------------------------------------------------------------------------------------------------------
# every bad input of the data layer, through the API and (a few) through the CLI
# --------------------------------------------------------------------------------------------------------------------

# a study folder holding a series sub-folder is bad for the loader but a valid tree for the segmenter
BAD = [f for f in BAD_INPUTS if f.__name__ != "_nested"] + BAD_NIFTI
NOT_NIFTI = {"_single_file", "_unsupported"}  # refused by the segmenter before the loader sees them


@pytest.mark.parametrize("make_bad", BAD, ids=[f"{f.__module__[8:]}{f.__name__}" for f in BAD])
def test_every_bad_input_is_reported_with_its_message(tmp_path, tiny_weights, make_bad):
    folder = tmp_path / "bad"
    folder.mkdir()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        path, fragments = make_bad(folder)
        try:
            results = run(path, tmp_path / "out", tiny_weights)
        except (CTInputError, SegmentError) as err:  # nothing to segment at all (missing path, not NIfTI)
            message = str(err)
        else:
            assert [r.status for r in results] == ["failed"]
            message = results[0].error
    assert str(path.name) in message
    for fragment in ["not NIfTI"] if make_bad.__name__ in NOT_NIFTI else fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"


@pytest.mark.parametrize("make_bad", [BAD_INPUTS[0], BAD_NIFTI[0]], ids=["two_series", "nan"])
@pytest.mark.slow
def test_cli_reports_bad_input_without_traceback(tmp_path, tiny_weights, make_bad):
    folder = tmp_path / "bad"
    folder.mkdir()
    path, fragments = make_bad(folder)
    cmd = [sys.executable, str(REPO_ROOT / "scripts" / "segment.py"), str(path), str(tmp_path / "out")]
    cmd += ["--device", "cpu", "--preset", "tiny", "--weights", str(tiny_weights), "--noqc"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr + proc.stdout
    assert "1 of 1 case(s) failed" in proc.stderr
    for fragment in fragments:
        assert fragment in proc.stderr


def test_two_series_sharing_a_folder_in_a_tree_are_segmented_separately(tmp_path, tiny_weights):
    p = phantom(9)
    folder = tmp_path / "tree" / "study" / "mixed"
    first = write_ct_dicom_series(p.image, p.affine, folder, series_description="a")
    second = write_ct_dicom_series(p.image, p.affine, tmp_path / "b", series_description="b", seed=1)
    second = [f.rename(folder / f"b_{f.name}") for f in second]
    results = run(tmp_path / "tree", tmp_path / "out", tiny_weights, dicom_seg=True, qc=False)
    assert segmented(results) == ["ok", "ok"]
    referenced = set()
    for r in results:
        seg = pydicom.dcmread(tmp_path / "out" / f"{r.name}_seg.dcm")
        referenced.add(str(seg.ReferencedSeriesSequence[0].SeriesInstanceUID))
        assert len(seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence) == len(first)
    expected = {str(pydicom.dcmread(f, stop_before_pixels=True).SeriesInstanceUID) for f in (first[0], second[0])}
    assert referenced == expected
    # the input folder is untouched: nothing written or removed there
    assert sorted(f.name for f in folder.iterdir()) == sorted(f.name for f in first + second)


def test_report_carries_the_mask_plausibility_findings(tmp_path, tiny_weights):
    from monai.data import MetaTensor
    from monai.transforms import Orientation

    from bundle.plausibility import check_mask

    p = phantom(5)
    source = tmp_path / "in" / "case.nii.gz"
    write_nifti(p.image, p.affine, source, dtype=np.int16)
    run(source, tmp_path / "out", tiny_weights, qc=False)
    report = json.loads((tmp_path / "out" / f"case{REPORT_SUFFIX}").read_text())
    written = nib.load(tmp_path / "out" / "case_mask.nii.gz")
    ras = Orientation(axcodes="RAS", labels=(("L", "R"), ("P", "A"), ("I", "S")))
    mask = ras(MetaTensor(torch.from_numpy(np.asarray(written.dataobj))[None], affine=torch.as_tensor(written.affine)))
    image = ras(MetaTensor(torch.from_numpy(p.image.astype(np.float32))[None], affine=torch.as_tensor(p.affine)))
    expected = check_mask(mask.numpy()[0], mask.affine.numpy(), image.numpy()[0])
    assert expected  # the seeded random tiny network gives an implausible mask: the check has something to report
    assert report["findings"] == [f.to_dict() for f in expected]
    assert all(f.message in report["warnings"] for f in expected)
    assert report["status"] == ("needs_review" if any(f.review for f in expected) else "done")
    rows = list(csv.DictReader((tmp_path / "out" / "summary.csv").open()))
    assert rows[0]["warnings"] == " | ".join(report["warnings"])
    assert rows[0]["warning_codes"] == ";".join(f.code for f in expected)
    assert rows[0]["status"] == report["status"]


def test_suspect_mask_is_written_flagged_for_review_and_drawn(tmp_path, tiny_weights, monkeypatch, caplog):
    import bundle.plausibility
    from bundle.plausibility import MaskFinding

    leak = MaskFinding("leak", "the mask leaks below the skull base into the face or neck", (1, 3), (-60.0, -50.0))
    cut = MaskFinding("cut_bottom", "the mask reaches the bottom axial slice (the scan's edge)", (0,), (-65.0,))
    monkeypatch.setattr(bundle.plausibility, "check_mask", lambda *args, **kwargs: [leak, cut])
    p = phantom(5)
    source = tmp_path / "in" / "case.nii.gz"
    write_nifti(p.image, p.affine, source, dtype=np.int16)
    with caplog.at_level("WARNING", logger="bundle.segment"):
        results = run(source, tmp_path / "out", tiny_weights)
    assert [r.status for r in results] == ["needs_review"]
    report = results[0].report_data
    assert report["status"] == "needs_review" and [f["code"] for f in report["findings"]] == ["leak", "cut_bottom"]
    assert report["findings"][0]["slices"] == [1, 3] and report["findings"][0]["slices_mm"] == [-60.0, -50.0]
    assert sum(leak.message in r.getMessage() for r in caplog.records) == 1  # logged once, with its code
    assert any(r.getMessage().startswith("case: leak: ") for r in caplog.records)
    rows = list(csv.DictReader((tmp_path / "out" / "summary.csv").open()))
    assert rows[0]["status"] == "needs_review" and rows[0]["warning_codes"] == "leak;cut_bottom"
    with Image.open(tmp_path / "out" / "case_qc.png") as png:
        height = png.size[1]
    monkeypatch.setattr(bundle.plausibility, "check_mask", lambda *args, **kwargs: [])
    plain = run(source, tmp_path / "plain", tiny_weights)
    assert [r.status for r in plain] == ["done"] and plain[0].report_data["findings"] == []
    with Image.open(tmp_path / "plain" / "case_qc.png") as png:
        assert height > png.size[1] + 200  # two rows of axial slices (panels of about 160 px at the default size)
    # a case needing review is finished: a rerun skips it and keeps its codes in the summary
    again = run(source, tmp_path / "out", tiny_weights)
    assert [r.status for r in again] == ["skipped"]
    rows = list(csv.DictReader((tmp_path / "out" / "summary.csv").open()))
    assert rows[0]["warning_codes"] == "leak;cut_bottom"


def test_find_series_one_level_serves_the_datalist(tmp_path):
    """``recursive=False`` is the workflows' finder: NIfTI files and series folders directly inside, in name order."""
    from bundle.workflows.data import find_ct_inputs

    (tmp_path / "b.nii").write_bytes(b"")
    (tmp_path / "A.NII.GZ").write_bytes(b"")
    (tmp_path / "notes.txt").write_text("x")
    (tmp_path / ".hidden.nii.gz").write_bytes(b"")
    (tmp_path / "series" / "deeper").mkdir(parents=True)
    (tmp_path / "series" / "IM1").write_bytes(b"")
    (tmp_path / "empty_folder").mkdir()
    cases, skipped = find_series(tmp_path, recursive=False)
    assert [(c.name, c.path.name, c.files) for c in cases] == [
        ("A", "A.NII.GZ", None),
        ("b", "b.nii", None),
        ("series", "series", None),
    ]
    assert skipped == [] and find_ct_inputs(tmp_path) == [str(c.path) for c in cases]
    assert [c.path for c in find_series(tmp_path / "series", recursive=False)[0]] == [tmp_path / "series"]
    with pytest.raises(CTInputError, match="holds no NIfTI file"):
        find_series(tmp_path / "empty_folder", recursive=False)
