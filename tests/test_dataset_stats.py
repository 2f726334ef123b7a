# SPDX-License-Identifier: Apache-2.0
"""scripts/dataset_stats.py and bundle.transforms.stats: training-set mean/std written as JSON."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from bundle.io.writers import write_nifti
from bundle.transforms.stats import RunningMoments, compute_dataset_stats


def make_datalist(root, sizes=((10, 12, 6), (8, 9, 5), (7, 7, 4)), num_val=1):
    rng = np.random.default_rng(0)
    volumes, splits = [], {"training": [], "validation": []}
    for i, shape in enumerate([*sizes, *[(6, 6, 3)] * num_val]):
        image = rng.integers(-1200, 1500, size=shape).astype(np.int16)
        write_nifti(image, np.eye(4), root / "images" / f"case{i}.nii.gz", dtype=np.int16)
        split = "training" if i < len(sizes) else "validation"
        splits[split].append({"image": f"images/case{i}.nii.gz", "label": f"images/case{i}.nii.gz"})
        if split == "training":
            volumes.append(np.maximum(image.astype(np.float64), -1024))  # the loader clips below air
    path = root / "datalist.json"
    path.write_text(json.dumps(splits))
    return path, np.concatenate([v.ravel() for v in volumes])


def test_stats_match_numpy_over_the_training_split(tmp_path):
    datalist, values = make_datalist(tmp_path)
    out = tmp_path / "models" / "stats.json"
    stats = compute_dataset_stats(datalist, out, progress=False)
    saved = json.loads(out.read_text())
    assert saved == stats
    assert stats["num_cases"] == 3 and stats["num_voxels"] == values.size
    assert stats["mean"] == pytest.approx(values.mean(), rel=1e-10)
    assert stats["std"] == pytest.approx(values.std(), rel=1e-10)
    assert stats["min"] == values.min() and stats["max"] == values.max()
    assert sorted(p.name for p in out.parent.iterdir()) == ["stats.json"]  # no temporary file left


def test_running_moments_are_chunk_independent():
    values = np.random.default_rng(1).normal(-500, 300, size=10_000)
    one, many = RunningMoments(), RunningMoments()
    one.update(values)
    for part in np.array_split(values, 7):
        many.update(part, chunk=333)
    assert many.count == one.count == values.size
    assert many.mean == pytest.approx(values.mean()) and many.std == pytest.approx(values.std())
    assert one.std == pytest.approx(many.std, rel=1e-12)


@pytest.mark.slow
def test_cli_writes_the_json(tmp_path, repo_root):
    datalist, values = make_datalist(tmp_path, sizes=((6, 6, 4), (5, 5, 3)), num_val=0)
    out = tmp_path / "stats.json"
    subprocess.run(
        [sys.executable, str(repo_root / "scripts" / "dataset_stats.py"), str(datalist), str(out), "--progress=False"],
        check=True,
        capture_output=True,
        timeout=120,
    )
    stats = json.loads(out.read_text())
    assert stats["num_cases"] == 2 and stats["mean"] == pytest.approx(values.mean())


@pytest.mark.parametrize(
    "content,match",
    [
        ({"validation": []}, "no entries under 'training'"),
        ({"training": []}, "no entries"),
        ("{oops", "not valid JSON"),
    ],
)
def test_bad_datalists(tmp_path, content, match):
    path = tmp_path / "datalist.json"
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    with pytest.raises(ValueError, match=match):
        compute_dataset_stats(path, tmp_path / "out.json", progress=False)
    assert not (tmp_path / "out.json").exists()


def test_missing_datalist(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        compute_dataset_stats(tmp_path / "nope.json", tmp_path / "out.json", progress=False)
