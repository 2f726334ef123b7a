# SPDX-License-Identifier: Apache-2.0
"""Fixtures of the MONAI Label lane: the ``monaibundle`` sample app with this bundle placed as one of its models.

The lane runs in ``.venv-monailabel`` (``scripts/run_monailabel_lane.sh``), with ``MONAILABEL_LANE=1``; there a
missing ``monailabel`` is an error. In the main suite (no monailabel installed) the lane's tests are skipped.

The bundle is copied the way a user places it (``<app>/model/<name>/``: configs, models/model.pt, bundle/, scripts/,
docs/, LICENSE); only ``epoch_length`` in the copy's train.json is lowered (``LANE_EPOCH_LENGTH``). The lane runs
with the repository root *off* ``sys.path``: the bundle's Python code is then found only through the copy, as
MONAI Label finds it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from monailabel_lane import BUNDLE_ITEMS, BUNDLE_NAME, LABELED, LANE_EPOCH_LENGTH, PHANTOMS


def pytest_configure(config: pytest.Config) -> None:
    if os.environ.get("MONAILABEL_LANE") == "1":
        import monailabel.tasks.infer.bundle  # noqa: F401  (in the lane a missing MONAI Label is an error)


def _import_from_copy(bundle_dir: Path):
    """Import the placed bundle's phantom generator and NIfTI writer (from the copy, like MONAI Label does)."""
    sys.path.insert(0, str(bundle_dir))
    try:
        from bundle.data.phantoms import make_phantom
        from bundle.io.writers import write_nifti
    finally:
        sys.path.remove(str(bundle_dir))
    return make_phantom, write_nifti


@pytest.fixture(scope="session")
def app_dir(tmp_path_factory: pytest.TempPathFactory, repo_root: Path) -> Path:
    """``monailabel apps --download --name monaibundle`` plus this bundle at ``model/<BUNDLE_NAME>``."""
    out = tmp_path_factory.mktemp("apps")
    subprocess.run(
        [sys.executable, "-m", "monailabel.main", "apps", "--download", "--name", "monaibundle", "--output", str(out)],
        check=True,
        capture_output=True,
        timeout=120,
    )
    app = out / "monaibundle"
    if not (app / "main.py").is_file():
        raise RuntimeError(f"monailabel apps --download did not create {app}/main.py")
    target = app / "model" / BUNDLE_NAME
    for item in BUNDLE_ITEMS:
        src = repo_root / item
        if src.is_dir():
            shutil.copytree(src, target / item, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            (target / item).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, target / item)
    train_json = target / "configs" / "train.json"
    train = json.loads(train_json.read_text())
    if not isinstance(train.get("epoch_length"), int):
        raise RuntimeError(f"{train_json} has no integer `epoch_length` for the lane to shorten")
    train["epoch_length"] = LANE_EPOCH_LENGTH
    train_json.write_text(json.dumps(train, indent=4) + "\n")
    return app


@pytest.fixture(scope="session")
def bundle_dir(app_dir: Path) -> Path:
    return app_dir / "model" / BUNDLE_NAME


@pytest.fixture(scope="session")
def metadata(bundle_dir: Path) -> dict:
    return json.loads((bundle_dir / "configs" / "metadata.json").read_text())


@pytest.fixture(scope="session")
def studies(tmp_path_factory: pytest.TempPathFactory, bundle_dir: Path) -> Path:
    """A MONAI Label local datastore: phantom NIfTI images, with final labels for the ``LABELED`` ones."""
    make_phantom, write_nifti = _import_from_copy(bundle_dir)
    folder = tmp_path_factory.mktemp("studies")
    for image_id, kwargs in PHANTOMS.items():
        phantom = make_phantom(**kwargs)
        write_nifti(phantom.image, phantom.affine, folder / f"{image_id}.nii.gz", dtype=np.int16)
        if image_id in LABELED:
            write_nifti(
                phantom.label, phantom.affine, folder / "labels" / "final" / f"{image_id}.nii.gz", dtype=np.uint8
            )
    return folder


@pytest.fixture(scope="session")
def app_conf() -> dict[str, str]:
    """The ``--conf`` options of an offline start: local bundle only, no SAM2, nothing preloaded."""
    return {"models": BUNDLE_NAME, "zoo_source": "github", "sam2": "false", "preload": "false"}
