# SPDX-License-Identifier: Apache-2.0
"""Scan-protocol factors of the phantoms: range, field of view, slices, kernel, artefacts, motion."""

from __future__ import annotations

import numpy as np
import pytest

from bundle.data import make_phantom
from bundle.data.phantom_scan import (
    CLASSIC_SCAN,
    SCAN_PROTOCOLS,
    TRAINING_SCAN,
    VARIED_SCAN,
    apply_kernel,
    beam_hardening,
    metal_streaks,
)
from bundle.data.phantoms import OUTSIDE_FOV_HU

SMALL = dict(in_plane_size=64, slice_spacing_mm=4.0, noise_sd_hu=0.0, gantry_tilt_deg=0.0, variant="normal")


def _phantom(seed=5, scan=CLASSIC_SCAN, **kwargs):
    return make_phantom(seed, scan=scan, **{**SMALL, **kwargs})


def test_classic_scan_covers_the_cavity_from_below_the_foramen_magnum_to_above_the_vertex():
    ph = _phantom()
    assert ph.label[:, :, 0].sum() == 0 and ph.label[:, :, -1].sum() == 0
    assert ph.info["scan"]["start_above_foramen_magnum_mm"] < -10


def test_scan_starting_inside_the_cavity_has_cavity_in_its_first_slice():
    ph = _phantom(scan=CLASSIC_SCAN.with_(p_start_in_cavity=1.0, start_in_cavity_mm=(25.0, 25.0)))
    assert ph.info["scan"]["start_above_foramen_magnum_mm"] == pytest.approx(25.0)
    assert ph.label[:, :, 0].sum() > 0.3 * ph.label.sum(axis=(0, 1)).max()


def test_scan_cut_below_the_vertex_has_cavity_in_its_last_slice():
    full = _phantom()
    cut = _phantom(scan=CLASSIC_SCAN.with_(p_top_cut=1.0, top_cut_mm=(30.0, 30.0)))
    assert cut.label[:, :, -1].sum() > 0.3 * cut.label.sum(axis=(0, 1)).max()
    assert cut.info["volume_ml"] < full.info["volume_ml"] - 50


def test_matrix_follows_the_field_of_view_at_a_given_pixel_size():
    ph = _phantom(in_plane_size=None, pixel_spacing_mm=2.0, scan=CLASSIC_SCAN.with_(fov_mm=(300.0, 300.0)))
    assert ph.image.shape[:2] == (150, 150)
    np.testing.assert_allclose(np.linalg.norm(ph.affine[:3, :2], axis=0), 2.0)
    with pytest.raises(ValueError, match="pixel_spacing_mm"):
        make_phantom(1, in_plane_size=None)


def test_small_field_of_view_cuts_image_and_label_alike():
    small = _phantom(scan=CLASSIC_SCAN.with_(fov_mm=(130.0, 130.0)))
    full = _phantom()
    outside = small.image == OUTSIDE_FOV_HU
    assert outside.any()
    assert not small.label[outside].any()  # nothing is labelled where nothing was reconstructed
    # the circle cuts the cavity: cavity touches the reconstruction edge in some slice
    assert small.info["volume_ml"] < full.info["volume_ml"] - 20


@pytest.mark.parametrize(
    "changes", [{"p_beam_hardening": 1.0}, {"p_bone_kernel": 1.0}, {"noise_scale": (3.0, 3.0)}], ids=str
)
def test_artefacts_change_the_image_not_the_label(changes):
    kwargs = dict(SMALL, noise_sd_hu=None, in_plane_size=160)  # pixels small enough for dense petrous bone
    plain = make_phantom(9, scan=CLASSIC_SCAN, **kwargs)
    artefact = make_phantom(9, scan=CLASSIC_SCAN.with_(**changes), **kwargs)
    np.testing.assert_array_equal(artefact.label, plain.label)
    assert np.abs(artefact.image.astype(float) - plain.image).max() > 10


def test_motion_moves_image_and_label_together():
    plain = _phantom(seed=4)
    moved = _phantom(seed=4, scan=CLASSIC_SCAN.with_(p_motion=1.0))
    motion = moved.info["scan"]["motion"]
    k = motion["slice"]
    shift = np.rint(np.array(motion["shift_mm"]) / moved.info["pixel_spacing_mm"]).astype(int)
    assert np.abs(shift).sum() > 0
    np.testing.assert_array_equal(moved.label[:, :, :k], plain.label[:, :, :k])
    expected = np.roll(plain.label[:, :, k:], tuple(shift), axis=(0, 1))
    inner = (slice(8, -8), slice(8, -8))  # away from the edges the roll wraps around
    np.testing.assert_array_equal(moved.label[inner][:, :, k:], expected[inner])
    assert moved.label.sum() == pytest.approx(plain.label.sum(), rel=0.02)


def test_metal_streaks_radiate_from_metal_and_spare_it():
    plane = np.full((96, 96), 35.0, np.float32)
    plane[46:50, 46:50] = 3000.0
    out = metal_streaks(plane.copy(), 0.5, np.random.default_rng(1))
    assert np.all(out[46:50, 46:50] == 3000.0)
    change = np.abs(out - plane)
    assert change[:, :30].max() > 20 and change[:, :30].mean() > 1  # streaks reach the far side
    np.testing.assert_array_equal(metal_streaks(np.full((8, 8), 40.0, np.float32), 1.0, np.random.default_rng(0)), 40.0)


def test_beam_hardening_darkens_between_dense_bones_only():
    plane = np.full((80, 80), 40.0, np.float32)
    plane[20:28, 10:18] = 1700.0
    plane[20:28, 62:70] = 1700.0
    out = beam_hardening(plane.copy(), 1.0, np.random.default_rng(0))
    assert out[24, 40] < 40.0 - 10  # on the line between the petrous-like bones
    assert out[70, 40] == pytest.approx(40.0, abs=0.5)  # far from it
    single = np.full((80, 80), 40.0, np.float32)
    single[20:28, 10:18] = 1700.0
    np.testing.assert_array_equal(beam_hardening(single.copy(), 1.0, np.random.default_rng(0)), single)


def test_bone_kernel_sharpens_and_soft_kernel_smooths():
    edge = np.zeros((32, 32), np.float32)
    edge[:, 16:] = 100.0
    assert apply_kernel(edge, True, 0.5, 1.0)[:, 16].max() > 110
    soft = apply_kernel(edge, False, 0.5, 1.0)
    assert 0 < soft[5, 15] < 50 and soft.max() <= 100.0 + 1e-3


def test_protocol_draws_are_independent_and_within_their_ranges():
    rng = np.random.default_rng(0)
    draws = [VARIED_SCAN.draw(rng) for _ in range(400)]
    assert all(150 <= d.fov_mm <= 500 and 0.5 <= d.slice_spacing_mm <= 7 for d in draws)
    in_cavity = np.mean([d.start_mm > 0 for d in draws])
    assert 0.12 < in_cavity < 0.28  # p_start_in_cavity = 0.2
    assert np.mean([d.top_cut_mm is not None for d in draws]) == pytest.approx(0.15, abs=0.06)
    assert min(d.start_mm for d in draws) >= -90.0 and max(d.start_mm for d in draws) <= 50.0
    # changing one distribution leaves the others' draws alone
    a = VARIED_SCAN.draw(np.random.default_rng(3))
    b = VARIED_SCAN.with_(p_motion=1.0).draw(np.random.default_rng(3))
    assert (a.fov_mm, a.start_mm, a.slice_spacing_mm) == (b.fov_mm, b.start_mm, b.slice_spacing_mm) and b.motion
    assert TRAINING_SCAN.slice_spacing_mm[0] >= 1.25 and set(SCAN_PROTOCOLS) >= {"classic", "varied", "training"}
