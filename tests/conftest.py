# SPDX-License-Identifier: Apache-2.0
from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(scope="session")
def shared_data_dir() -> Path:
    """The project's shared development data (``../shared/data`` beside the clone, or ``$BRAINCT_SHARED_DATA``).

    A user's clone may not have it, so tests that need it skip there; in CI (``CI`` set) its absence is an error.
    """
    path = Path(os.environ.get("BRAINCT_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))
    if not path.is_dir():
        if os.environ.get("CI"):
            pytest.fail(f"shared data folder not found at {path}")
        pytest.skip(f"shared data folder not found at {path}")
    return path
