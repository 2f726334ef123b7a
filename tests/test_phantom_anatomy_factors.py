# SPDX-License-Identifier: Apache-2.0
"""Forced anatomy factors of the phantoms: jaw and teeth, dental metal, mouth and pharynx air, sinus fluid, mastoid,
shoulders, atrophy and head scale. Each appears where expected, within its HU range, and is never labelled."""

from __future__ import annotations

import functools

import numpy as np
import pytest
from scipy import ndimage

from bundle.data import TISSUE_HU_RANGES, TISSUES, make_phantom
from bundle.data.phantom_acquisition import CoarseGrid
from bundle.data.phantom_anatomy import HeadPose, compose_head, draw_anatomy_params, override_anatomy
from bundle.data.phantom_template import LANDMARKS, get_template

SPACING = 2.0


@functools.cache
def _anatomy(seed: int, overrides: tuple = (), low: bool = False, head_scale: float | None = None):
    """Noise-free anatomy of ``seed`` with forced fields on a 2 mm grid (``low``: reaching down to the chest)."""
    _, anat_rng, field_rng, _, _ = (np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(5))
    params = override_anatomy(draw_anatomy_params(anat_rng, head_scale), dict(overrides))
    centre = HeadPose.from_params(params).centre_world
    if low:
        lo, size = centre + np.array([-140.0, -130.0, -330.0]), np.array([280.0, 260.0, 200.0])
    else:
        lo, size = centre + np.array([-110.0, -125.0, -190.0]), np.array([220.0, 250.0, 300.0])
    shape = tuple(int(v) for v in np.ceil(size / SPACING) + 1)
    grid = CoarseGrid(origin=lo, spacing=SPACING, shape=shape)
    comp = compose_head(grid, get_template(SPACING), params, field_rng, None, track_mixed=True)
    return comp, grid, params


def _template_coords(grid: CoarseGrid, params) -> np.ndarray:
    """(X, Y, Z, 3) template coordinates of the grid (pose only, without the small smooth displacement)."""
    pose = HeadPose.from_params(params)
    world = np.stack(np.meshgrid(*(grid.axis(d) for d in range(3)), indexing="ij"), axis=-1)
    return (world - pose.centre_world) @ pose.inverse.T + pose.centre_template


def _pure(comp, name: str) -> np.ndarray:
    """Voxels of tissue ``name`` with no partial volume in their 3x3x3 block."""
    pure = ndimage.minimum_filter(comp.tissue, size=3) == ndimage.maximum_filter(comp.tissue, size=3)
    pure &= ~ndimage.maximum_filter(comp.mixed, size=3)
    return pure & (comp.tissue == TISSUES[name])


def _check_tissue(comp, name: str, min_voxels: int = 1) -> np.ndarray:
    """``name`` is present, its pure voxels are within its HU range and none of it is cranial cavity."""
    mask = comp.tissue == TISSUES[name]
    assert mask.sum() >= min_voxels, (name, int(mask.sum()))
    values = comp.hu[_pure(comp, name)]
    lo, hi = TISSUE_HU_RANGES[name]
    if values.size:
        assert lo - 0.01 <= values.min() and values.max() <= hi + 0.01, (name, values.min(), values.max())
    assert comp.cavity[mask].max() < 0.5, name
    return mask


def _below_foramen_magnum_is_unlabelled(comp, grid) -> None:
    point, normal = comp.foramen_magnum
    height = sum(
        (grid.axis(d) - point[d]).reshape([-1 if e == d else 1 for e in range(3)]) * normal[d] for d in range(3)
    )
    assert comp.cavity[height < -SPACING].max() == 0.0


JAW = (("dental_metal", True), ("oral_air", 1.0), ("mouth_open_mm", 12.0), ("airway", 1.2))


def test_teeth_and_metal_between_palate_and_hyoid():
    comp, grid, params = _anatomy(21, JAW)
    teeth = _check_tissue(comp, "tooth", 20)
    metal = _check_tissue(comp, "metal", 2)
    t = _template_coords(grid, params)
    for mask in (teeth, metal):
        z = t[mask][:, 2]
        assert z.max() < 14.0 and z.min() > -42.0  # below the hard palate (z ~ 0-8), above the hyoid (z ~ -42)
        assert np.abs(t[mask][:, 0] - LANDMARKS["midline_x"][0]).max() < 45.0
    _below_foramen_magnum_is_unlabelled(comp, grid)


def test_no_metal_without_dental_metal():
    comp, _, _ = _anatomy(21, (("dental_metal", False),))
    assert not (comp.tissue == TISSUES["metal"]).any()
    assert (comp.tissue == TISSUES["tooth"]).any()


def test_mouth_and_pharynx_air_are_unlabelled_and_vary():
    open_comp, grid, params = _anatomy(21, JAW)
    closed, _, _ = _anatomy(21, (("oral_air", 0.0), ("mouth_open_mm", 0.0), ("airway", 0.2)))
    t = _template_coords(grid, params)
    region = (t[..., 2] < 5.0) & (t[..., 2] > -80.0) & (np.abs(t[..., 0] - 105.0) < 25.0)
    air = [(c.tissue == TISSUES["sinus_air"]) & region for c in (open_comp, closed)]
    assert air[0].sum() > 2 * air[1].sum() > 0  # wide airway and an open mouth hold much more air
    for c, a in zip((open_comp, closed), air, strict=True):
        assert c.cavity[a].max() < 0.5
    bone = (open_comp.tissue == TISSUES["cortical_bone"]) & (np.abs(t[..., 2] + 40.0) < 12.0) & (t[..., 1] > 150.0)
    assert bone.sum() > 10  # the mandible body reaches the chin


@pytest.mark.parametrize("seed", [22, 23])
def test_sinus_fluid_when_forced(seed):
    comp, grid, _ = _anatomy(seed, (("sinus_fluid", 1.0),))
    fluid = _check_tissue(comp, "sinus_fluid", 50)
    dry, _, _ = _anatomy(seed, (("sinus_fluid", 0.0),))
    assert not (dry.tissue == TISSUES["sinus_fluid"]).any()
    assert (dry.tissue == TISSUES["sinus_air"]).sum() > (comp.tissue == TISSUES["sinus_air"]).sum() + fluid.sum() // 2
    assert np.array_equal(comp.cavity, dry.cavity)  # sinus content never changes the cavity
    _below_foramen_magnum_is_unlabelled(comp, grid)


def test_mastoid_pneumatisation():
    sclerotic, grid, params = _anatomy(24, (("mastoid", 0.15),))
    airy, _, _ = _anatomy(24, (("mastoid", 1.35),))
    t = _template_coords(grid, params)
    near = np.linalg.norm(t - np.array(LANDMARKS["mastoid"]), axis=-1) < 22.0
    cells = [((c.tissue == TISSUES["sinus_air"]) & near).sum() for c in (sclerotic, airy)]
    assert cells[1] > 3 * cells[0] + 10
    assert airy.cavity[airy.tissue == TISSUES["sinus_air"]].max() < 0.5


def test_shoulders_low_in_a_large_field():
    comp, grid, params = _anatomy(25, (("shoulder_drop_mm", 130.0),), low=True)
    t = _template_coords(grid, params)
    lateral = np.abs(t[..., 0] - 105.0) > 60.0
    bone = np.isin(comp.tissue, [TISSUES["cortical_bone"], TISSUES["cancellous_bone"]]) & lateral
    assert bone.sum() > 100  # clavicles, scapulae, humeral heads
    assert ((comp.tissue == TISSUES["soft_tissue"]) & (np.abs(t[..., 0] - 105.0) > 110.0)).sum() > 1000
    for name in ("soft_tissue", "fat", "cortical_bone", "cancellous_bone"):
        _check_tissue(comp, name)
    assert comp.cavity.max() == 0.0  # far below the foramen magnum: nothing labelled


def test_atrophy_adds_csf_not_cavity():
    kwargs = {"in_plane_size": 128, "slice_spacing_mm": 2.0, "variant": "normal", "noise_sd_hu": 0.0}
    young = make_phantom(26, anatomy={"atrophy": 0.0}, **kwargs)
    old = make_phantom(26, anatomy={"atrophy": 1.0}, **kwargs)
    csf = [((ph.image <= 15) & (ph.label == 1)).sum() for ph in (young, old)]
    assert csf[1] > 1.3 * csf[0]
    assert old.info["volume_ml"] == pytest.approx(young.info["volume_ml"], rel=0.01)
    assert np.array_equal(old.label, young.label)


def test_cavity_volume_scales_with_head_scale():
    volumes = {}
    for scale in (0.84, 1.0, 1.16):
        comp, _, params = _anatomy(27, (), head_scale=scale)
        volumes[scale] = (comp.cavity.sum() * SPACING**3, float(np.prod(params.scale)))
    ref, ref_s = volumes[1.0]
    for volume, s in volumes.values():
        assert volume / ref == pytest.approx(s / ref_s, rel=0.06)  # the smooth deformation differs a little
    assert volumes[0.84][0] < 0.66 * ref and volumes[1.16][0] > 1.45 * ref


def test_drawn_factors_vary():
    draws = [draw_anatomy_params(np.random.default_rng(s)) for s in range(300)]
    scale = np.array([float(np.mean(p.scale)) for p in draws])
    assert (scale < 0.9).mean() > 0.04 and (scale > 1.1).mean() > 0.04 and scale.min() > 0.78 and scale.max() < 1.22
    atrophy = np.array([p.atrophy for p in draws])
    assert np.median(atrophy) < 0.25 and atrophy.max() > 0.6 and (atrophy == 0).mean() > 0.15
    assert 0.3 < np.mean([p.dental_metal for p in draws]) < 0.5
    assert 0.3 < np.mean([p.sinus_fluid > 0 for p in draws]) < 0.6
    assert np.mean([p.mouth_open_mm > 0 for p in draws]) > 0.05
    assert min(p.airway for p in draws) < 0.3 and min(p.oral_air for p in draws) == 0.0
    temporalis = np.array([p.temporalis_mm for p in draws])
    assert temporalis.min() < 5.0 and temporalis.max() > 15.0
