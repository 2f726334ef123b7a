# SPDX-License-Identifier: Apache-2.0
"""Tests for bundle.qc: picture size and proportions, agreement colours, radiological orientation, atomic PNG."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from PIL import Image

from bundle.qc import QC_COLOURS, render_qc, save_qc_png

SHAPE = (40, 48, 12)  # X (towards patient right), Y (anterior), Z (superior)
SPACING = (1.0, 1.0, 4.0)  # thick slices: Z extent 48 mm like Y


def _ct() -> np.ndarray:
    ct = np.full(SHAPE, 30.0, np.float32)
    ct[:2] = ct[-2:] = 1000.0  # "bone" on the left/right walls
    return ct


def _pixel(picture, view, voxel):
    """Picture pixel (row, col) of a voxel centre, from the display conventions (independent of the renderer)."""
    left, top, _, _ = picture.panels[view].box
    scale = picture.panels[view].mm_per_pixel
    x, y, z = voxel
    nx, ny, nz = SHAPE
    sx, sy, sz = SPACING
    if view == "axial":  # cols: patient right -> left (X decreasing); rows: anterior -> posterior (Y decreasing)
        return top + int((ny - 1 - y + 0.5) * sy / scale), left + int((nx - 1 - x + 0.5) * sx / scale)
    if view == "coronal":  # cols: X decreasing; rows: superior -> inferior
        return top + int((nz - 1 - z + 0.5) * sz / scale), left + int((nx - 1 - x + 0.5) * sx / scale)
    # sagittal: cols: anterior -> posterior (Y decreasing); rows: superior -> inferior
    return top + int((nz - 1 - z + 0.5) * sz / scale), left + int((ny - 1 - y + 0.5) * sy / scale)


def test_png_written_with_expected_size_and_proportions(tmp_path):
    mask = np.zeros(SHAPE, np.uint8)
    mask[10:31, 12:37, 3:10] = 1  # centre of mass (20, 24, 6)
    path = tmp_path / "sub" / "case_qc.png"
    picture = save_qc_png(path, _ct(), mask, SPACING, case_name="case_007", panel_size=96)
    assert path.is_file() and not list(path.parent.glob(".*tmp"))
    with Image.open(path) as png:
        assert png.format == "PNG" and png.size == (picture.rgb.shape[1], picture.rgb.shape[0])
        np.testing.assert_array_equal(np.asarray(png.convert("RGB")), picture.rgb)
    # one scale for all panels: 48 mm (the largest extent) -> 96 px; 4 mm slices are not squashed
    sizes = {view: panel.box[2:] for view, panel in picture.panels.items()}
    assert sizes == {"sagittal": (96, 96), "coronal": (80, 96), "axial": (80, 96)}
    assert picture.centre == (20, 24, 6)
    assert [picture.panels[v].slice_index for v in ("sagittal", "coronal", "axial")] == [20, 24, 6]
    assert picture.volume_ml == pytest.approx(21 * 25 * 7 * 4.0 / 1000.0)
    assert picture.title_lines[0] == "case_007" and "14.7 mL" in picture.title_lines[1]


def test_agreement_colours_at_known_voxels():
    ref = np.zeros(SHAPE, bool)
    pred = np.zeros(SHAPE, bool)
    ref[4:16, 8:40, 2:10] = True  # patient's left half (low X) ...
    pred[4:16, 8:40, 2:10] = True  # ... agrees: TP
    ref[24:36, 8:24, 2:10] = True  # right half, posterior: missed -> FN
    pred[24:36, 28:40, 2:10] = True  # right half, anterior: extra -> FP
    picture = render_qc(_ct(), pred, SPACING, reference=ref, point=(10, 20, 6), panel_size=192)
    rgb = picture.rgb.astype(int)
    grey = 30 * 255 / 80  # 30 HU in the window L40 W80
    for voxel, key in (((10, 20, 6), "tp"), ((30, 14, 6), "fn"), ((30, 34, 6), "fp"), ((20, 4, 6), None)):
        r, g, b = rgb[_pixel(picture, "axial", voxel)]
        if key is None:  # outside every mask: plain grey
            assert r == g == b == round(grey)
            continue
        if key == "tp":
            assert g > r + 60 and g > b + 60, (r, g, b)
        elif key == "fn":
            assert r > g + 60 and r > b + 60, (r, g, b)
        else:  # purple: red and blue well above green, blue the strongest
            assert r > g + 40 and b > r, (r, g, b)
        expected = 0.6 * grey + 0.4 * np.asarray(QC_COLOURS[key])  # alpha 0.4 over the grey
        np.testing.assert_allclose((r, g, b), expected, atol=1)
    assert picture.dice == pytest.approx(2 * (12 * 32 * 8) / (2 * 12 * 32 * 8 + 12 * 16 * 8 + 12 * 12 * 8))


def _quadrant(picture, view, colour):
    left, top, width, height = picture.panels[view].box
    panel = picture.rgb[top : top + height, left : left + width].astype(int)
    rows, cols = np.nonzero(np.all(np.abs(panel - np.asarray(colour)) <= 2, axis=-1))
    assert rows.size, f"marker not visible in the {view} view"
    return ("top" if rows.mean() < height / 2 else "bottom", "left" if cols.mean() < width / 2 else "right")


def test_orientation_right_anterior_superior_marker():
    ct = np.full(SHAPE, -1000.0, np.float32)
    ct[30:36, 38:44, 8:11] = 80.0  # patient right, anterior, superior: white in the brain window
    picture = render_qc(ct, np.zeros(SHAPE), SPACING, point=(33, 41, 9))
    white = (255, 255, 255)
    assert _quadrant(picture, "axial", white) == ("top", "left")  # anterior up, patient right on image left
    assert _quadrant(picture, "coronal", white) == ("top", "left")  # superior up, patient right on image left
    assert _quadrant(picture, "sagittal", white) == ("top", "left")  # superior up, anterior on the left


@pytest.mark.parametrize("kind", ["torch", "meta"])
def test_tensor_inputs_with_channel(kind):
    ct = torch.as_tensor(_ct())[None]
    mask = torch.zeros((1, *SHAPE))
    mask[0, 10:30, 10:30, 2:8] = 1
    if kind == "meta":
        ct = MetaTensor(ct, affine=torch.diag(torch.tensor([*SPACING, 1.0], dtype=torch.float64)))
        picture = render_qc(ct, mask)
    else:
        picture = render_qc(ct, mask, SPACING)
    assert picture.volume_ml == pytest.approx(20 * 20 * 6 * 4 / 1000)
    row, col = _pixel(picture, "axial", (20, 20, 5))
    r, g, b = picture.rgb[row, col].astype(int)
    assert r > b + 60 and g > b + 30  # orange fill over grey


def test_findings_that_name_slices_add_a_row_of_those_axial_slices():
    from bundle.plausibility import MaskFinding

    ct = _ct()
    ct[30:36, 38:44, 2] = -1000.0  # a black marker in slice 2 only
    mask = np.zeros(SHAPE, np.uint8)
    mask[10:31, 12:37, 3:10] = 1
    plain = render_qc(ct, mask, SPACING, panel_size=96)
    leak = MaskFinding("leak", "the mask leaks below the skull base " + "into the neck " * 30, (2, 9), (-70.0, -40.0))
    volume = MaskFinding("volume", "intracranial volume 5 mL is outside the usual 900-2100 mL")
    picture = render_qc(ct, mask, SPACING, panel_size=96, findings=[volume, leak])
    assert plain.finding_panels == [] and plain.rgb.shape[1] == picture.rgb.shape[1]
    axial_h = picture.panels["axial"].box[3]
    assert picture.rgb.shape[0] > plain.rgb.shape[0] + axial_h  # one row (a finding without slices adds none)
    assert picture.title_lines[-1] == "findings: volume, leak"
    assert [(p.finding, p.slice_index) for p in picture.finding_panels] == [("leak", 2), ("leak", 9)]
    assert all(p.box[1] >= plain.rgb.shape[0] for p in picture.finding_panels)  # below the main views
    for panel, visible in zip(picture.finding_panels, (True, False), strict=True):
        left, top, width, height = panel.box
        crop = picture.rgb[top : top + height, left : left + width].astype(int)
        assert np.all(crop == 0, axis=-1).any() == visible  # each panel shows its own slice
    with pytest.raises(ValueError, match="outside the volume"):
        render_qc(ct, mask, SPACING, findings=[MaskFinding("leak", "x", (12,))])


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"mask": np.zeros((4, 4, 4))}, "differs"),
        ({"reference": np.zeros((4, 4, 4))}, "differs"),
        ({"point": (0, 0, 99)}, "outside"),
        ({"affine_or_spacing": None}, "required"),
        ({"affine_or_spacing": (1.0, 1.0)}, "affine_or_spacing"),
        ({"affine_or_spacing": (1.0, 0.0, 1.0)}, "positive"),
        ({"window_width": 0}, "window_width"),
        ({"alpha": 2.0}, "alpha"),
        ({"image": np.zeros((4, 4))}, r"\(X, Y, Z\)"),
    ],
)
def test_bad_arguments(kwargs, match):
    args = {"image": _ct(), "mask": np.zeros(SHAPE), "affine_or_spacing": SPACING, **kwargs}
    with pytest.raises(ValueError, match=match):
        render_qc(**args)


def test_save_requires_png_suffix(tmp_path):
    with pytest.raises(ValueError, match=r"\.png"):
        save_qc_png(tmp_path / "qc.jpg", _ct(), np.zeros(SHAPE), SPACING)
    assert not list(tmp_path.iterdir())


def test_centre_of_mass_matches_scipy():
    from scipy import ndimage

    from bundle.qc import _centre_of_mass

    rng = np.random.default_rng(4)
    mask = ndimage.gaussian_filter(rng.normal(size=(30, 40, 20)), 2) > 0.1
    np.testing.assert_allclose(_centre_of_mass(mask), ndimage.center_of_mass(mask), rtol=1e-12)
