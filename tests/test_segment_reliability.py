# SPDX-License-Identifier: Apache-2.0
# ruff: noqa: F811 - the tests take test_segment's ``tiny_weights`` fixture, imported by name
"""Issue 15, reliability of the segmenter: unusable outputs, garbage inputs, interruption, concurrent runs, report
noise, and the same bad inputs through the bundle's ``inference`` workflow.

Permission cases do not depend on running as root: a file where the folder should be, a monkeypatched probe, or a
subprocess that drops its privileges. Interruption and concurrency use real subprocesses and signals. The network is
the tiny preset with seeded random weights (``tiny_weights`` of ``test_segment``); inputs are 64x64x24 phantoms.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pydicom
import pytest
from test_segment import phantom, run, segmented

import bundle.segment as segment_module
from bundle.io import CTImageReader, CTInputError
from bundle.io.checks import MIN_SPIKES, check_slice_pixels
from bundle.io.writers import write_ct_dicom_series, write_nifti
from bundle.segment import REPORT_SUFFIX, SegmentError, SummaryError

REPO_ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.usefixtures("one_thread")


def cli(inp, out, weights, *extra: str) -> list[str]:
    cmd = [sys.executable, str(REPO_ROOT / "scripts" / "segment.py"), str(inp), str(out), "--device", "cpu"]
    return cmd + ["--preset", "tiny", "--weights", str(weights), *extra]


def env(**extra: str) -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", **extra}


def cases(folder: Path, count: int) -> Path:
    for seed in range(count):
        p = phantom(seed)
        write_nifti(p.image, p.affine, folder / f"case{seed}.nii.gz", dtype=np.int16)
    return folder


def hidden(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


# --------------------------------------------------------------------------------------------------------------------
# 1. output problems
# --------------------------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_cli_output_under_a_file_is_one_line_exit_2(tmp_path, tiny_weights):
    source = cases(tmp_path / "in", 1)
    (tmp_path / "file").write_text("not a folder")
    proc = subprocess.run(
        cli(source, tmp_path / "file" / "out", tiny_weights), capture_output=True, text=True, env=env()
    )
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr and "cannot be created" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_unwritable_and_full_output_refused_before_any_work(tmp_path, tiny_weights, monkeypatch):
    source = cases(tmp_path / "in", 1)
    monkeypatch.setattr(segment_module, "_get_pipeline", lambda *a: pytest.fail("work started"))
    monkeypatch.setattr(segment_module.shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(10**9, 10**9, 10**6))
    with pytest.raises(SegmentError, match="has only 1 MB free"):
        run(source, tmp_path / "out", tiny_weights)
    monkeypatch.undo()
    monkeypatch.setattr(segment_module, "_get_pipeline", lambda *a: pytest.fail("work started"))
    real_open = open

    def refuse(path, *args, **kwargs):  # what a read-only or immutable folder answers, for root too
        if ".segment_write_test_" in str(path):
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr("builtins.open", refuse)
    with pytest.raises(SegmentError, match="out is not writable"):
        run(source, tmp_path / "out", tiny_weights)


def test_a_case_that_cannot_be_written_fails_alone_and_the_summary_is_written(tmp_path, tiny_weights):
    source = cases(tmp_path / "in", 2)
    out = tmp_path / "out"
    (out / "case1_mask.nii.gz" / "x").mkdir(parents=True)  # a folder where the mask should go
    results = run(source, out, tiny_weights, qc=False)
    assert segmented(results) == ["ok", "failed"]
    assert "could not write or read" in results[1].error and "case1_mask.nii.gz" in results[1].error
    rows = {r["name"]: r for r in csv.DictReader((out / "summary.csv").open())}
    assert rows["case1"]["status"] == "failed" and rows["case1"]["error"] == results[1].error
    assert not [n for n in hidden(out) if "tmp" in n]

    (out / "summary.csv").unlink()
    (out / "summary.csv" / "x").mkdir(parents=True)
    with pytest.raises(SummaryError, match="summary.csv could not be written") as info:
        run(source, out, tiny_weights, qc=False)
    assert [r.name for r in info.value.results] == ["case0", "case1"]


# --------------------------------------------------------------------------------------------------------------------
# 2. input checks
# --------------------------------------------------------------------------------------------------------------------


def corrupt_dicom(folder: Path) -> tuple[Path, Path]:
    """A 24-slice series with 6000 bytes in the middle of one slice's pixel data overwritten by random bytes."""
    p = phantom(4)
    files = write_ct_dicom_series(p.image, p.affine, folder / "series")
    victim = files[11]
    ds = pydicom.dcmread(victim)
    data = bytearray(ds.PixelData)
    middle = len(data) // 2 - 3000
    data[middle : middle + 6000] = np.random.default_rng(0).integers(0, 256, 6000, dtype=np.uint8).tobytes()
    ds.PixelData = bytes(data)
    ds.save_as(victim)
    return folder / "series", victim


def test_corrupted_dicom_slice_is_named_and_the_series_refused(tmp_path, tiny_weights):
    series, victim = corrupt_dicom(tmp_path / "in")
    results = run(series, tmp_path / "out", tiny_weights, qc=False)
    assert [r.status for r in results] == ["failed"]
    assert results[0].error.startswith(str(victim)) and "corrupted pixel data" in results[0].error
    assert not (tmp_path / "out" / "series_mask.nii.gz").exists()


def test_corrupted_nifti_slice_is_named(tmp_path):
    p = phantom(2)
    image = p.image.astype(np.int16)
    image[10:50, 10:50, 7] = np.random.default_rng(1).integers(-32765, 32765, (40, 40))
    write_nifti(image, p.affine, tmp_path / "c.nii.gz", dtype=np.int16)
    reader = CTImageReader()
    with pytest.raises(CTInputError, match=r"c.nii.gz: slice 7 of 24 \(axis 2\) has corrupted pixel data"):
        reader.get_data(reader.read(tmp_path / "c.nii.gz"))


def test_metal_and_noise_are_not_corruption():
    p = phantom(8)
    image = p.image.astype(np.float32) + np.random.default_rng(2).normal(0, 30, p.image.shape).astype(np.float32)
    image[30:33, 30:33, :] = 30000.0  # a 3x3 metal blob on the extended HU scale
    image[40, 40, :] = 3071.0  # a one-pixel bright spot (ceiling of the 12-bit scale)
    for k in range(image.shape[2]):
        check_slice_pixels(image[:, :, k], "p.nii.gz")
    spikes = np.full((20, 20), -1000.0)
    spikes[::2, ::2] = 30000.0  # 81 isolated spikes inside the border
    assert 81 >= MIN_SPIKES
    with pytest.raises(CTInputError, match="corrupted"):
        check_slice_pixels(spikes, "s.dcm")


@pytest.mark.parametrize(
    "shape, spacing, value, fragments",
    [
        ((64, 64, 24), 3.7, 0.0, ["is constant (every voxel 0 HU): no image content"]),
        ((64, 64, 24), 3.7, "air", ["has no image content"]),
        ((20, 20, 10), 10.0, None, ["20 pixels across", "10 mm pixels", "No head CT has this grid"]),
        ((64, 64, 24), 1.0, None, ["64 mm field of view"]),
    ],
    ids=["all_zero", "air_only", "10mm_20x20x10", "small_fov"],
)
def test_blank_volumes_and_impossible_grids_are_refused(tmp_path, tiny_weights, shape, spacing, value, fragments):
    rng = np.random.default_rng(0)
    if value == "air":
        image = rng.normal(-1000, 5, shape)
    elif value is None:
        image = phantom(1).image
        image = (image[::3, ::3, ::2] if shape[0] < 64 else image)[: shape[0], : shape[1], : shape[2]]
    else:
        image = np.full(shape, value)
    source = tmp_path / "in" / "bad.nii.gz"
    write_nifti(image, np.diag([spacing, spacing, 8.0, 1.0]), source, dtype=np.int16)
    results = run(source, tmp_path / "out", tiny_weights, qc=False)
    assert [r.status for r in results] == ["failed"]
    assert results[0].error.startswith(str(source))
    for fragment in fragments:
        assert fragment in results[0].error


def test_coarse_pixels_are_a_warning_in_the_report(tmp_path, tiny_weights):
    source = cases(tmp_path / "in", 1) / "case0.nii.gz"
    results = run(source, tmp_path / "out", tiny_weights, qc=False)
    assert segmented(results) == ["ok"]
    assert any("coarser than 2 mm" in w for w in results[0].report_data["warnings"])


# --------------------------------------------------------------------------------------------------------------------
# 3. interruption (real signals)
# --------------------------------------------------------------------------------------------------------------------


def start_and_wait_for_first_report(cmd, tmp_env) -> tuple[subprocess.Popen, list[str]]:
    proc = subprocess.Popen(
        cmd,
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
        env=tmp_env,
        # a test run started in the background inherits SIGINT ignored, and Python keeps it ignored; a user's Ctrl-C
        # reaches a foreground process with the default handling, which is what this test is about
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    timer = threading.Timer(240, proc.kill)
    timer.start()
    lines = []
    for line in proc.stderr:
        lines.append(line)
        if REPORT_SUFFIX in line:
            break
    timer.cancel()
    return proc, lines


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL], ids=["ctrl_c", "kill"])
@pytest.mark.slow
def test_interrupted_cli_says_how_to_resume_and_leaves_nothing_behind(tmp_path, tiny_weights, sig):
    # enough cases that the signal lands mid-run even when stderr reaches the test late on a loaded machine
    source = cases(tmp_path / "in", 16)
    out, tmp = tmp_path / "out", tmp_path / "tmpdir"
    tmp.mkdir()
    proc, lines = start_and_wait_for_first_report(cli(source, out, tiny_weights), env(TMPDIR=str(tmp)))
    proc.send_signal(sig)
    rest = proc.stderr.read()
    proc.wait(timeout=120)
    if sig == signal.SIGINT:
        assert proc.returncode == 130
        assert "Traceback" not in rest and "KeyboardInterrupt" not in rest
        last = rest.strip().splitlines()[-1]
        assert "interrupted:" in last and "case(s) finished" in last and "run the same command again" in last
        assert hidden(out) == []  # no temporaries, locks or staging folders
    else:
        assert proc.returncode == -signal.SIGKILL
        # what a kill mid-write leaves: a temporary mask, the case's lock and the staging folder of this pid
        (out / ".case3_mask.nii.gz.0badf00d.tmp.nii.gz").write_bytes(b"")
        host = __import__("socket").gethostname()
        (out / f".segment_stage_{host}_{proc.pid}_abcdef" / "case3").mkdir(parents=True)
        (out / ".case3.lock").write_text(json.dumps({"pid": proc.pid, "host": host, "started": 0}))
    assert list(tmp.iterdir()) == []  # nothing in the system temp folder
    again = subprocess.run(cli(source, out, tiny_weights, "--noqc"), capture_output=True, text=True, env=env())
    assert again.returncode == 0, again.stderr
    assert hidden(out) == []
    reports = sorted(p.name for p in out.glob(f"*{REPORT_SUFFIX}"))
    assert reports == sorted(f"case{i}{REPORT_SUFFIX}" for i in range(16))


# --------------------------------------------------------------------------------------------------------------------
# 4. concurrency (two real processes) and stale locks
# --------------------------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_two_runs_on_one_output_split_the_work(tmp_path, tiny_weights):
    source = cases(tmp_path / "in", 6)
    out = tmp_path / "out"
    procs = [
        subprocess.Popen(cli(source, out, tiny_weights, "--noqc"), stderr=subprocess.PIPE, text=True, env=env())
        for _ in range(2)
    ]
    logs = [p.communicate(timeout=300)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], logs
    for i in range(6):
        written = sum(log.count(f"wrote {out / f'case{i}_mask.nii.gz'}") for log in logs)
        assert written == 1, f"case{i} segmented {written} times"
    assert hidden(out) == []
    rows = list(csv.DictReader((out / "summary.csv").open()))
    assert len(rows) == 6


def test_stale_lock_is_recovered_and_a_live_one_respected(tmp_path, tiny_weights):
    import socket

    source = cases(tmp_path / "in", 2)
    out = tmp_path / "out"
    out.mkdir()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    host = socket.gethostname()
    (out / ".case0.lock").write_text(json.dumps({"pid": int(dead.stdout), "host": host, "started": 0}))
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        (out / ".case1.lock").write_text(json.dumps({"pid": alive.pid, "host": host, "started": 0}))
        results = run(source, out, tiny_weights, qc=False)
        assert segmented(results) == ["ok", "in_progress"]
        assert f"pid {alive.pid}" in results[1].error
        assert not (out / ".case0.lock").exists() and (out / ".case1.lock").exists()
    finally:
        alive.kill()
        alive.wait()


# --------------------------------------------------------------------------------------------------------------------
# 5. reports
# --------------------------------------------------------------------------------------------------------------------


def test_signed_tilt_and_library_warnings_out_of_the_report(tmp_path, tiny_weights):
    from bundle.data.phantoms import make_phantom

    p = make_phantom(6, in_plane_size=64, num_slices=24, gantry_tilt_deg=-18.5)
    files = write_ct_dicom_series(p.image, p.affine, tmp_path / "in" / "series", gantry_tilt_deg=-18.5)
    for i, f in enumerate(files):  # an invalid UI (leading zero in a component): pydicom warns once per file
        ds = pydicom.dcmread(f)
        ds.SOPInstanceUID = f"1.2.826.0.1.3680043.8.498.0{i}"
        ds.save_as(f)
    results = run(tmp_path / "in" / "series", tmp_path / "out", tiny_weights, qc=False)
    report = results[0].report_data
    assert report["dicom"]["gantry_tilt_deg"] == pytest.approx(-18.5, abs=0.05)
    assert not any("Invalid value for VR" in w for w in report["warnings"])
    assert len(report["warnings"]) == len(set(report["warnings"]))
    rows = list(csv.DictReader((tmp_path / "out" / "summary.csv").open()))
    assert "Invalid value" not in rows[0]["warnings"]


@pytest.mark.slow
def test_cli_verbose_keeps_library_debug_in_the_log_file(tmp_path, tiny_weights):
    p = phantom(6)
    write_ct_dicom_series(p.image, p.affine, tmp_path / "in" / "series")
    out = tmp_path / "out"
    proc = subprocess.run(
        cli(tmp_path / "in" / "series", out, tiny_weights, "--noqc", "--dicom_seg", "--verbose"),
        capture_output=True,
        text=True,
        env=env(),
    )
    assert proc.returncode == 0, proc.stderr
    log = (out / "segment.log").read_text()
    assert " DEBUG highdicom" in log and "highdicom" not in proc.stderr
    assert "wrote" in proc.stderr  # the bundle's own messages still show


# --------------------------------------------------------------------------------------------------------------------
# 6. the same bad inputs through `monai.bundle run inference`
# --------------------------------------------------------------------------------------------------------------------


def _zeros(folder: Path) -> tuple[Path, str]:
    write_nifti(np.zeros((64, 64, 24)), np.diag([3.7, 3.7, 8.0, 1.0]), folder / "zeros.nii.gz", dtype=np.int16)
    return folder / "zeros.nii.gz", "no image content"


def _coarse(folder: Path) -> tuple[Path, str]:
    image = phantom(1).image[::3, ::3, ::2][:20, :20, :10]
    write_nifti(image, np.diag([10.0, 10.0, 10.0, 1.0]), folder / "coarse.nii.gz", dtype=np.int16)
    return folder / "coarse.nii.gz", "No head CT has this grid"


def _corrupt(folder: Path) -> tuple[Path, str]:
    series, _ = corrupt_dicom(folder)
    return series, "corrupted pixel data"


@pytest.mark.parametrize("make_bad", [_zeros, _coarse, _corrupt], ids=["zeros", "coarse", "corrupt"])
def test_bundle_inference_workflow_refuses_with_the_same_message(tmp_path, tiny_weights, make_bad):
    from monai.bundle import run as bundle_run

    data = tmp_path / "data"
    data.mkdir()
    path, fragment = make_bad(data)
    expected = str(pytest.raises(CTInputError, CTImageReader(check_head_ct=True).get_data, _pending(path)).value)
    (tmp_path / "models").mkdir()
    shutil.copy(tiny_weights, tmp_path / "models" / "model.pt")
    overrides = {"bundle_root": str(REPO_ROOT), "dataset_dir": str(data), "output_dir": str(tmp_path / "masks")}
    with pytest.raises(Exception) as info:
        bundle_run(
            "inference",
            config_file=[str(REPO_ROOT / "configs" / "inference.json"), str(REPO_ROOT / "configs/presets/tiny.json")],
            logging_file=False,
            ckpt_dir=str(tmp_path / "models"),
            device="cpu",
            **overrides,
        )
    cause = segment_module._expected_cause(info.value, (CTInputError,))
    assert cause is not None and str(cause) == expected and fragment in expected
    assert not (tmp_path / "masks").exists() or not list((tmp_path / "masks").iterdir())


def _pending(path: Path):
    return CTImageReader().read(path)
