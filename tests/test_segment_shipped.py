# SPDX-License-Identifier: Apache-2.0
"""The shipped weights through the segmenter's default (lite) path: the physical-grid resampling (crop to the body,
2 x 2 x 4 mm) and its inversion give masks in the input's exact native geometry, and the masks are right.

These are small phantoms (seconds on a CPU) built with the stress suite's kind of settings, not a benchmark: the
stress table comes from ``python scripts/benchmark.py robustness``.
"""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from bundle.data.phantom_scan import CLASSIC_SCAN
from bundle.data.phantoms import make_phantom
from bundle.io.writers import write_nifti
from bundle.metrics import dice_score
from bundle.segment import segment

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_thread")]

CASES = {
    # a thin-slice tilted scan stored in LPS voxel order
    "thin_tilted_lps": dict(in_plane_size=160, slice_spacing_mm=1.25, gantry_tilt_deg=-14.0, variant="normal"),
    # a thick-slice scan starting inside the cavity
    "thick_starts_in_cavity": dict(
        in_plane_size=128,
        slice_spacing_mm=6.0,
        variant="normal",
        scan=CLASSIC_SCAN.with_(p_start_in_cavity=1.0, start_in_cavity_mm=(25.0, 25.0)),
    ),
}


@pytest.mark.parametrize("name", list(CASES))
def test_shipped_weights_native_geometry_and_accuracy(tmp_path, name):
    p = make_phantom(777, **CASES[name])
    image, label, affine = p.image, p.label, p.affine
    if name.endswith("lps"):
        flip = np.diag([-1.0, -1.0, 1.0, 1.0])
        flip[:2, 3] = [image.shape[0] - 1, image.shape[1] - 1]
        image, label, affine = image[::-1, ::-1].copy(), label[::-1, ::-1].copy(), affine @ flip
    source = tmp_path / "in" / f"{name}.nii.gz"
    write_nifti(image, affine, source, dtype=np.int16)
    results = segment(source, tmp_path / "out", device="cpu", progress=False, qc=False)
    assert results[0].status in ("done", "needs_review")
    mask_img = nib.load(str(tmp_path / "out" / f"{name}_mask.nii.gz"))
    assert mask_img.shape == image.shape
    np.testing.assert_allclose(mask_img.affine, nib.load(str(source)).affine, atol=1e-5)
    mask = np.asarray(mask_img.dataobj)
    assert dice_score(mask, label) > 0.95
