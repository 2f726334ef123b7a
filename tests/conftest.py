# SPDX-License-Identifier: Apache-2.0
"""Fixtures shared by the test modules: repository paths, shipped test data, thread settings and the CT pipelines."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]

# ignite imports torch.distributed.optim, whose functional optimizers torch itself compiles with torch.jit.script at
# import: 67 DeprecationWarnings from torch's own code, once per process. Importing it here without them keeps the
# deprecation visible wherever the project's code or tests script something.
with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import torch.distributed.optim  # noqa: F401


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


#: Test data shipped in the repository (``tests/data/NOTICE`` names sources and licences), so that a fresh clone
#: runs every test without the development machine's data folders.
TEST_DATA = REPO_ROOT / "tests" / "data"


@pytest.fixture(scope="session")
def real_ge_series() -> Path:
    """A slab of the real gantry-tilted GE head CT (``tests/data/dcm_qa_ct_GE``, see its ``NOTICE``)."""
    return TEST_DATA / "dcm_qa_ct_GE"


@pytest.fixture(scope="session")
def metadata_schema() -> Path:
    """The official MONAI bundle metadata schema, for offline ``verify_metadata``."""
    return TEST_DATA / "meta_schema_20240725.json"


@pytest.fixture
def one_thread():
    """Run a test with one torch thread (tiny volumes gain nothing from threads, and on a busy 2-core machine OpenMP
    spins); the previous setting is restored afterwards. Modules opt in with ``pytest.mark.usefixtures``."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture
def ras_loader():
    """The bundle's CT loading of ``"image"``: LoadImaged (CTImageReader), EnsureChannelFirstd, Orientationd RAS."""
    from monai.transforms import Compose, EnsureChannelFirstd, LoadImaged, Orientationd

    from bundle.io import CTImageReader

    return Compose(
        [
            LoadImaged("image", reader=CTImageReader()),
            EnsureChannelFirstd("image"),
            Orientationd("image", axcodes="RAS", labels=(("L", "R"), ("P", "A"), ("I", "S"))),
        ]
    )


@pytest.fixture
def invert_and_save(ras_loader, tmp_path):
    """``Invertd`` of ``"pred"`` through :func:`ras_loader`, then ``SaveImaged`` as ``tmp_path/out/NAME_mask.nii.gz``
    (uint8, no resampling): a prediction on the RAS array written back in the input's own geometry."""
    import numpy as np
    from monai.transforms import Compose, Invertd, SaveImaged

    return Compose(
        [
            Invertd("pred", transform=ras_loader, orig_keys="image", nearest_interp=True),
            SaveImaged(
                "pred",
                output_dir=tmp_path / "out",
                output_postfix="mask",
                separate_folder=False,
                output_dtype=np.uint8,
                resample=False,
                print_log=False,
            ),
        ]
    )


@pytest.fixture(scope="session")
def tiny_weights(tmp_path_factory) -> Path:
    """Seeded random weights for the tiny preset's network, built from the same configs the segmenter reads."""
    import torch
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config([str(REPO_ROOT / "configs" / "inference.json"), str(REPO_ROOT / "configs/presets/tiny.json")])
    torch.manual_seed(0)
    network = parser.get_parsed_content("network_def")
    path = tmp_path_factory.mktemp("weights") / "tiny.pt"
    torch.save(network.state_dict(), path)
    return path
