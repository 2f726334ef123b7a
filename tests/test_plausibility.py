# SPDX-License-Identifier: Apache-2.0
"""Plausibility findings for cranial-cavity masks: volume and scan range, and the shape checks (shell, leak below the
skull base, no cavity, fragments) on synthetic heads built here, with no false alarm on a right mask."""

from __future__ import annotations

import time

import numpy as np
import pytest

from bundle.data.phantoms import make_phantom
from bundle.plausibility import check_mask, mask_warnings

CAVITY_AXES_MM = (68.0, 82.0, 62.0)  # semi-axes (R, A, S) of the synthetic cavity: 1450 mL


@pytest.fixture(scope="module")
def phantom():
    return make_phantom(2, in_plane_size=64, num_slices=40)


def _head(spacing=(2.0, 2.0, 2.0), tilt_deg=0.0, top_mm=80.0, bottom_mm=-130.0, seed=0):
    """A synthetic head: (image HU, affine, parts): boolean cavity, skull, pharynx, tongue; world x, y, z in mm.

    An ellipsoidal cavity (brain 35 HU) inside a 7 mm skull (1000 HU) under 4 mm of scalp; below it a neck of soft
    tissue (45 HU) holding an air-filled pharynx (a 12 mm tube) and a tongue (60 HU) in a wider block. The scan runs
    from ``bottom_mm`` to ``top_mm`` (S, mm) and its grid is pitched by ``tilt_deg`` about the R axis.
    """
    spacing = np.asarray(spacing, np.float64)
    extent = np.array([200.0, 230.0, top_mm - bottom_mm])
    shape = tuple(int(round(e / s)) for e, s in zip(extent, spacing, strict=True))
    angle = np.deg2rad(tilt_deg)
    rotation = np.array([[1, 0, 0], [0, np.cos(angle), -np.sin(angle)], [0, np.sin(angle), np.cos(angle)]])
    affine = np.eye(4)
    affine[:3, :3] = rotation @ np.diag(spacing)
    affine[:3, 3] = rotation @ np.array([-100.0, -115.0, bottom_mm])
    ijk = np.stack(np.meshgrid(*[np.arange(n, dtype=np.float32) for n in shape], indexing="ij"), axis=-1)
    x, y, z = np.moveaxis(ijk @ affine[:3, :3].T.astype(np.float32) + affine[:3, 3].astype(np.float32), -1, 0)

    def ellipsoid(grow):
        return sum((c / (a + grow)) ** 2 for c, a in zip((x, y, z), CAVITY_AXES_MM, strict=True)) <= 1.0

    cavity, skull, scalp = ellipsoid(0.0), ellipsoid(7.0), ellipsoid(11.0)
    neck = (x**2 + (y + 10) ** 2 <= 55.0**2) & (z < -40)
    pharynx = (x**2 + (y - 5) ** 2 <= 12.0**2) & (z < -50)
    tongue = (np.abs(x) <= 28) & (y > 20) & (y < 60) & (z < -85) & (z > -115)
    rng = np.random.default_rng(seed)
    image = np.full(shape, -1000.0, np.float32)
    image[scalp | neck] = 45.0
    image[skull] = 1000.0
    image[tongue] = 60.0
    image[pharynx & ~skull] = -1000.0
    image[cavity] = 35.0
    image += rng.normal(0.0, 5.0, shape).astype(np.float32)
    parts = {"cavity": cavity, "skull": skull, "pharynx": pharynx & ~cavity, "tongue": tongue}
    return image, affine, {**parts, "x": x, "y": y, "z": z}


@pytest.fixture(scope="module")
def head():
    return _head()


def _codes(findings):
    return [f.code for f in findings]


def test_whole_head_phantom_has_no_warnings(phantom):
    assert mask_warnings(phantom.label, phantom.affine) == []


@pytest.mark.parametrize("seed", range(6))
def test_phantom_masks_with_their_images_have_no_findings(seed):
    p = make_phantom(seed, in_plane_size=64, num_slices=40)
    assert check_mask(p.label, p.affine, p.image) == []


@pytest.mark.parametrize(
    "kwargs",
    [{}, {"spacing": (0.8, 0.8, 5.0), "tilt_deg": 20.0}, {"spacing": (1.0, 1.0, 3.0), "tilt_deg": -15.0, "seed": 1}],
    ids=["iso", "thick_tilted", "tilted_back"],
)
def test_right_mask_has_no_findings(kwargs):
    image, affine, parts = _head(**kwargs)
    assert check_mask(parts["cavity"], affine, image) == []


def test_scan_cut_at_the_top_is_only_a_lower_bound():
    image, affine, parts = _head(spacing=(1.0, 1.0, 2.5), top_mm=25.0)
    findings = check_mask(parts["cavity"], affine, image, volume_range_ml=(0, 1e6))
    assert _codes(findings) == ["cut_top"]
    assert "lower bound" in findings[0].message and not findings[0].review
    assert findings[0].slices == (parts["cavity"].shape[2] - 1,)
    assert findings[0].slices_mm[0] == pytest.approx(23.75, abs=2.0)


def test_shell_is_flagged_with_its_slices(head):
    image, affine, parts = head
    x, y, z = parts["x"], parts["y"], parts["z"]
    # collapsed onto the inner table: a 14 mm layer, open below (the inner part reaches under the cavity), so that
    # 3D hole filling cannot close it
    inner = (x / 54) ** 2 + (y / 68) ** 2 + ((z + 20) / 68) ** 2 <= 1.0
    shell = parts["cavity"] & ~inner
    findings = check_mask(shell, affine, image, volume_range_ml=(0, 1e6))
    assert _codes(findings) == ["shell"]
    assert "hollow" in findings[0].message and findings[0].review and findings[0].slices
    coverage = float(findings[0].message.split("covers ")[1].split("%")[0]) / 100
    assert coverage < 0.7
    hollow = np.flatnonzero(inner.any(axis=(0, 1)) & parts["cavity"].any(axis=(0, 1)))
    assert all(hollow[0] <= s <= hollow[-1] for s in findings[0].slices)  # the hollow slices, not the solid cap
    assert check_mask(parts["cavity"], affine, image) == []


def test_post_operative_air_enclosed_in_the_cavity_is_not_a_leak(head):
    """Pneumocephalus: a frontal air pocket (about 14 mL) inside a right mask; a pharynx leak still fires beside it."""
    image, affine, parts = head
    x, y, z = parts["x"], parts["y"], parts["z"]
    pocket = parts["cavity"] & ((x / 25) ** 2 + ((y - 62) / 10) ** 2 + ((z - 20) / 12) ** 2 <= 1.0)
    with_air = image.copy()
    with_air[pocket] = -1000.0
    assert pocket.sum() * 8e-3 > 10  # mL at 2 mm voxels
    assert check_mask(parts["cavity"], affine, with_air) == []
    leaked = check_mask(parts["cavity"] | parts["pharynx"], affine, with_air, volume_range_ml=(0, 1e6))
    assert _codes(leaked) == ["leak"]


def test_leak_into_the_air_filled_pharynx(head):
    image, affine, parts = head
    # the pharynx and its way up through the skull base (z < -50 mm) into the cavity
    leaked = parts["cavity"] | parts["pharynx"]
    findings = check_mask(leaked, affine, image, volume_range_ml=(0, 1e6))
    assert _codes(findings) == ["leak"]  # the narrow tube at the bottom slice is not a cut cavity
    leak = findings[0]
    assert "mL of air" in leak.message and "axial slices 0-" in leak.message and "S -130 to" in leak.message
    assert all(parts["z"][0, 0, s] < -55 for s in leak.slices)  # the slices below the skull base
    assert leak.slices_mm == pytest.approx([parts["z"][0, 0, s] for s in leak.slices], abs=0.01)
    # spreading into the neck at the bottom of the scan: it reaches the scan's edge, but that is no lower bound
    neck = (parts["x"] ** 2 + parts["y"] ** 2 <= 40.0**2) & (parts["z"] < -118)
    findings = check_mask(leaked | neck, affine, image, volume_range_ml=(0, 1e6))
    assert _codes(findings) == ["leak", "cut_bottom"]
    cut = findings[1]
    assert "lower bound" not in cut.message and "scan's edge" in cut.message and cut.review
    assert check_mask(parts["cavity"], affine, image) == []


@pytest.mark.parametrize("with_image", [True, False])
def test_leak_into_the_tongue_is_found_by_the_area_profile(head, with_image):
    image, affine, parts = head
    x, y, z = parts["x"], parts["y"], parts["z"]
    channel = (x**2 + (y - 30) ** 2 <= 10.0**2) & (z > -100) & (z < -40)  # soft tissue, no air, through the skull base
    leaked = parts["cavity"] | parts["tongue"] | channel
    findings = check_mask(leaked, affine, image if with_image else None, volume_range_ml=(0, 1e6))
    assert _codes(findings) == ["leak"]
    message = findings[0].message
    assert "waist" in message and "widens again" in message and "of air" not in message
    waist = float(message.split("waist at axial slice ")[1].split("(S ")[1].split(" mm")[0])
    assert -85 <= waist <= -60  # between the cavity's floor and the tongue's top


def test_air_filled_skull_is_no_cavity(head):
    image, affine, parts = head
    air_skull = image.copy()
    air_skull[parts["cavity"]] = -1000.0 + np.random.default_rng(2).normal(0, 20, int(parts["cavity"].sum()))
    findings = check_mask(parts["cavity"], affine, air_skull)
    assert _codes(findings) == ["no_cavity"]
    assert findings[0].message.startswith("no cranial cavity found: the masked region is air (median -100")
    # fragments of air inside the skull, as the network gave on a plastic phantom
    pieces = np.zeros_like(parts["cavity"])
    pieces[30:45, 40:60, 45:60] = pieces[60:72, 60:75, 50:62] = pieces[40:55, 70:90, 70:80] = True
    findings = check_mask(pieces & parts["cavity"], affine, air_skull)
    assert _codes(findings) == ["no_cavity", "fragments", "volume"]
    assert "3 separate pieces" in findings[1].message


@pytest.mark.parametrize("flip", [False, True])
def test_cut_scan_is_reported_at_the_right_end(phantom, flip):
    label, affine = phantom.label.copy(), phantom.affine.copy()
    rows = np.flatnonzero(label.any(axis=(0, 1)))
    middle = (rows[0] + rows[-1]) // 2
    top_cut = label[:, :, : middle + 1]  # the scan stops half-way up the cavity
    bottom_cut = label[:, :, middle:]
    bottom_affine = affine.copy()
    bottom_affine[:3, 3] += affine[:3, 2] * middle
    if flip:  # voxel order from the top down (LPI-like): the same anatomy, the other end of the array
        flipper = np.eye(4)
        flipper[2, 2], flipper[2, 3] = -1, top_cut.shape[2] - 1
        top_cut, affine = top_cut[:, :, ::-1], affine @ flipper
        flipper[2, 3] = bottom_cut.shape[2] - 1
        bottom_cut, bottom_affine = bottom_cut[:, :, ::-1], bottom_affine @ flipper
    top = mask_warnings(top_cut, affine, volume_range_ml=(0, 1e6))
    bottom = mask_warnings(bottom_cut, bottom_affine, volume_range_ml=(0, 1e6))
    assert len(top) == 1 and "reaches the top axial slice" in top[0] and "lower bound" in top[0]
    assert len(bottom) == 1 and "reaches the bottom axial slice" in bottom[0]
    top_finding = check_mask(top_cut, affine, volume_range_ml=(0, 1e6))[0]
    assert top_finding.slices == ((top_cut.shape[2] - 1) if not flip else 0,)


def test_empty_and_implausible_volumes(phantom):
    assert "empty" in mask_warnings(np.zeros((8, 8, 8)), np.eye(4))[0]
    assert _codes(check_mask(np.zeros((8, 8, 8)), np.eye(4))) == ["empty"]
    small = mask_warnings(phantom.label, phantom.affine, volume_range_ml=(5000, 6000))
    assert len(small) == 1 and "outside the usual 5000-6000 mL" in small[0]


def test_finding_as_dict(head):
    image, affine, parts = head
    finding = check_mask(parts["cavity"][:, :, :90], affine, image[:, :, :90], volume_range_ml=(0, 1e6))[0]
    assert finding.to_dict() == {
        "code": "cut_top",
        "message": finding.message,
        "slices": [89],
        "slices_mm": [round(finding.slices_mm[0], 1)],
        "review": False,
    }


def test_checks_are_fast_on_a_full_size_scan():
    shape = (512, 512, 300)
    spacing = np.array([0.45, 0.45, 0.6])
    centre = np.array(shape) / 2
    axes = np.array(CAVITY_AXES_MM) / spacing
    grids = [((np.arange(n, dtype=np.float32) - c) / a) ** 2 for n, c, a in zip(shape, centre, axes, strict=True)]
    mask = grids[0][:, None, None] + grids[1][None, :, None] + grids[2][None, None, :] <= 1.0
    image = np.where(mask, np.int16(35), np.int16(-1000))
    affine = np.diag([*spacing, 1.0])
    check_mask(mask[::8, ::8, ::8], np.diag([*(spacing * 8), 1.0]), image[::8, ::8, ::8])  # imports, caches
    start = time.perf_counter()
    findings = check_mask(mask, affine, image)
    seconds = time.perf_counter() - start
    assert findings == []
    assert seconds < 2.0  # < 1 s on one idle core; margin for a shared machine


@pytest.mark.parametrize(
    "kwargs",
    [
        {"mask": np.zeros((4, 4))},
        {"affine": np.eye(3)},
        {"volume_range_ml": (10, 5)},
        {"edge_area_fraction": 1.5},
        {"image": np.zeros((4, 4, 5))},
    ],
)
def test_bad_arguments(kwargs):
    arguments = {"mask": np.ones((4, 4, 4)), "affine": np.eye(4), **kwargs}
    with pytest.raises(ValueError):
        mask_warnings(**arguments)
