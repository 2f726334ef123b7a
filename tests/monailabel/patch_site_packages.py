# SPDX-License-Identifier: Apache-2.0
"""Two source fixes that MONAI Label 0.8.5 needs on torch 2.13 CPU + pydicom 3, applied inside the lane's venv only.

MONAI Label's import chain cannot load in this project's environment without them; both are small, exact and tracked
upstream, and each is applied only if the file holds exactly the expected text (otherwise this script fails, so a
version bump is noticed):

1. ``torchvision/_meta_registrations.py`` (torchvision 0.28.0). PyPI ships only CUDA builds of torchvision for Linux;
   against the CPU build of torch its ``_C`` extension cannot load (it links ``libtorch_cuda.so``), which torchvision
   tolerates everywhere except two unguarded ``torch.library.register_fake("torchvision::nms"/"qnms")`` decorators
   that raise "operator torchvision::nms does not exist" and break ``import torchvision``. The fix guards them with
   ``torchvision.extension._has_ops()``, exactly as the other registrations in the same file are guarded. MONAI Label
   only needs ``torchvision.utils.make_grid``/``save_image`` (pure Python); the C++ ops stay unavailable.
2. ``pydicom_seg/{reader,segmentation_dataset}.py`` (pydicom-seg 0.4.1, the latest release): ``from
   pydicom._storage_sopclass_uids import SegmentationStorage``; that private module was removed in pydicom 3 (this
   project pins pydicom 3.0.2). The fix imports the same UID from its public place, ``pydicom.uid`` (the change
   proposed upstream in razorx89/pydicom-seg#61 for issue #60; MONAI Label issue #1841 is the resulting server
   start-up failure).

It also deletes the stray top-level ``tests`` package that the monailabel wheel installs into site-packages (its own
test suite), so that it cannot shadow anything.

Usage: ``python patch_site_packages.py SITE_PACKAGES_DIR``
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

__all__ = ["PATCHES", "apply_patches"]

_GUARDED = "@(torch.library.register_fake if torchvision.extension._has_ops() else lambda *_a, **_k: lambda fn: fn)("

PATCHES: list[tuple[str, str, str, int]] = [
    # (file relative to site-packages, old text, new text, expected number of occurrences)
    ("torchvision/_meta_registrations.py", '@torch.library.register_fake("torchvision::nms")',
     _GUARDED + '"torchvision::nms")', 1),
    ("torchvision/_meta_registrations.py", '@torch.library.register_fake("torchvision::qnms")',
     _GUARDED + '"torchvision::qnms")', 1),
    ("pydicom_seg/reader.py", "from pydicom._storage_sopclass_uids import SegmentationStorage",
     "from pydicom.uid import SegmentationStorage", 1),
    ("pydicom_seg/segmentation_dataset.py", "from pydicom._storage_sopclass_uids import SegmentationStorage",
     "from pydicom.uid import SegmentationStorage", 1),
]  # fmt: skip


def apply_patches(site_packages: Path) -> list[str]:
    """Apply :data:`PATCHES` under ``site_packages`` (idempotent) and remove the stray ``tests`` package.

    Args:
        site_packages: the venv's site-packages folder.

    Returns:
        One line per action, for the log.

    Raises:
        ValueError: if a file is missing or holds neither the expected old text nor the patched text.
    """
    done = []
    for rel, old, new, count in PATCHES:
        path = site_packages / rel
        if not path.is_file():
            raise ValueError(f"{path}: file to patch not found (package version changed?)")
        text = path.read_text()
        if text.count(new) == count and old not in text:
            done.append(f"already patched: {rel}")
            continue
        if text.count(old) != count:
            raise ValueError(f"{path}: expected {count} occurrence(s) of {old!r}, found {text.count(old)}")
        path.write_text(text.replace(old, new))
        for cached in (path.parent / "__pycache__").glob(f"{path.stem}.*.pyc"):
            cached.unlink()
        done.append(f"patched: {rel}: {old!r}")
    stray = site_packages / "tests"
    records = list(site_packages.glob("monailabel-*.dist-info/RECORD"))
    if stray.is_dir() and records and any(line.startswith("tests/") for line in records[0].read_text().splitlines()):
        shutil.rmtree(stray)
        done.append(f"removed monailabel's stray top-level test folder {stray}")
    return done


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python patch_site_packages.py SITE_PACKAGES_DIR")
    for line in apply_patches(Path(sys.argv[1])):
        print(f"monailabel lane: {line}")
