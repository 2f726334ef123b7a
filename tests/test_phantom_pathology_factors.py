# SPDX-License-Identifier: Apache-2.0
"""Tests of the pathology and post-operative phantom variants: draw frequencies, tissue placement, label rules."""

from __future__ import annotations

import functools

import numpy as np
import pytest
from scipy import ndimage

from bundle.data import TISSUE_HU_RANGES, TISSUES, make_phantom
from bundle.data.phantom_acquisition import CoarseGrid
from bundle.data.phantom_anatomy import HeadPose, compose_head, draw_anatomy_params
from bundle.data.phantom_pathology import VARIANT_PROBABILITIES, VARIANTS, Pathology, draw_pathology
from bundle.data.phantom_template import get_template
from bundle.data.phantoms import phantom_anatomy

NEW_VARIANTS = ("subdural", "hygroma", "postop_air", "shunt", "clips", "cranioplasty")
SPACING = 2.0


@functools.cache
def anatomy(seed: int, variant: str):
    """``phantom_anatomy`` at 2 mm, cached (tests only read it)."""
    return phantom_anatomy(seed, variant=variant, spacing_mm=SPACING)


def composed(variant: str, pathology_params: dict, seed: int = 0):
    """A head painted with a given pathology (forced parameters) on a 2 mm grid."""
    params = draw_anatomy_params(np.random.default_rng(seed))
    centre = HeadPose.from_params(params).centre_world
    shape = tuple(int(v) for v in np.ceil(np.array([230.0, 255.0, 230.0]) / SPACING) + 1)
    grid = CoarseGrid(origin=centre + np.array([-115.0, -130.0, -120.0]), spacing=SPACING, shape=shape)
    pathology = Pathology(variant, dict(pathology_params))
    return compose_head(grid, get_template(SPACING), params, np.random.default_rng(seed + 1), pathology, True)


def pure_values(comp, name: str) -> np.ndarray:
    """HU of the voxels of tissue ``name`` without partial volume (no painted coverage strictly between 0 and 1)."""
    return comp.hu[~comp.mixed & (comp.tissue == TISSUES[name])]


def world_axis(grid, d: int, shape) -> np.ndarray:
    """World coordinate ``d`` of every voxel of ``grid``."""
    return np.broadcast_to(grid.axis(d).reshape([-1 if e == d else 1 for e in range(3)]), shape)


def depth_mm(comp) -> np.ndarray:
    """Distance (mm) of each voxel inside the cavity from its border (0 outside)."""
    return ndimage.distance_transform_edt(comp.cavity >= 0.5) * SPACING


def test_variant_probabilities():
    p = np.asarray(VARIANT_PROBABILITIES)
    assert len(p) == len(VARIANTS) and p.sum() == pytest.approx(1.0)
    assert set(NEW_VARIANTS) <= set(VARIANTS) and {"haemorrhage", "infarct", "craniectomy"} <= set(VARIANTS)
    assert VARIANTS[int(np.argmax(p))] == "normal" and 0.25 <= p[0] <= 0.35
    assert p.min() >= 0.05


def test_variants_are_drawn_with_their_probabilities():
    """The draw of ``make_phantom`` (one choice on the pathology stream of each seed) follows the probabilities."""
    n = 4000
    counts = np.zeros(len(VARIANTS))
    for seed in range(n):
        path_rng = np.random.default_rng(np.random.SeedSequence(seed).spawn(5)[3])
        counts[int(path_rng.choice(len(VARIANTS), p=VARIANT_PROBABILITIES))] += 1
    p = np.asarray(VARIANT_PROBABILITIES)
    np.testing.assert_array_less(np.abs(counts / n - p), 4.0 * np.sqrt(p * (1 - p) / n))
    drawn = make_phantom(0, in_plane_size=32, num_slices=8).info["variant"]
    path_rng = np.random.default_rng(np.random.SeedSequence(0).spawn(5)[3])
    assert drawn == VARIANTS[int(path_rng.choice(len(VARIANTS), p=VARIANT_PROBABILITIES))]


def test_draw_pathology_parameter_ranges():
    """Each variant's parameters cover their documented ranges over many seeded draws."""
    template = get_template(4.0)
    draws = {v: [draw_pathology(np.random.default_rng(s), v, template).params for s in range(150)] for v in VARIANTS}
    assert all(d == {} for d in draws["normal"])
    iph = [d for d in draws["haemorrhage"] if d["type"] == "intraparenchymal"]
    largest = np.array([max(d["radii_mm"]) for d in iph])
    assert largest.max() <= 45.0 and (largest >= 30).mean() > 0.1 and (largest < 20).mean() > 0.3
    assert any(d["intraventricular"] for d in iph) and not any(
        d["intraventricular"] for d in iph if max(d["radii_mm"]) < 20
    )
    sdh = draws["subdural"]
    assert all(10 <= d["thickness_mm"] <= 25 and 50 <= d["hu"] <= 90 and d["side"] in (-1, 1) for d in sdh)
    assert 0.2 < np.mean([d["mixed"] for d in sdh]) < 0.6
    assert 0.3 < np.mean([d["bilateral"] for d in draws["hygroma"]]) < 0.9
    assert all(0 <= d["hu"] <= 15 for d in draws["hygroma"])
    assert {d["access"] for d in draws["postop_air"]} == {"burr_hole", "craniotomy", "none"}
    assert {d["approach"] for d in draws["shunt"]} == {"frontal", "parietal"}
    assert {len(d["clip_centres"]) for d in draws["clips"]} == {1, 2, 3}
    assert all(2 <= len(d["burr_holes"]) <= 4 and 3 <= len(d["plates"]) <= 5 for d in draws["cranioplasty"])
    for v in ("shunt", "cranioplasty", "postop_air"):
        assert all(2500 <= d["metal_hu"] <= 3071 for d in draws[v])
    assert all(2500 <= d["hu"] <= 3071 for d in draws["clips"])


@pytest.mark.parametrize("variant,tissue", [("subdural", "haemorrhage"), ("hygroma", "hygroma")])
@pytest.mark.parametrize("seed", [0, 1])
def test_subdural_collections(seed, variant, tissue):
    """Subdural blood and hygroma: inside the cavity, in range, along the inner table, frontal for the hygroma."""
    comp, grid = anatomy(seed, variant)
    mask = comp.tissue == TISSUES[tissue]
    assert mask.sum() * SPACING**3 / 1000 > 5.0  # mL
    assert np.all(comp.cavity[mask] >= 0.5)
    values = pure_values(comp, tissue)
    lo, hi = TISSUE_HU_RANGES[tissue]
    assert values.size and lo <= values.min() and values.max() <= hi
    assert np.median(depth_mm(comp)[mask]) < 10.0  # a crescent under the inner table, not a deep lesion
    if variant == "hygroma":
        y = world_axis(grid, 1, comp.tissue.shape)
        assert np.median(y[mask]) > np.median(y[comp.cavity >= 0.5]) + 30.0  # anterior (frontal)


@pytest.mark.parametrize("seed,variant,tissue", [(1, "hygroma", "hygroma"), (1, "subdural", "haemorrhage")])
def test_subdural_collections_are_label_one(seed, variant, tissue):
    ph = make_phantom(
        seed, variant=variant, in_plane_size=96, slice_spacing_mm=3.0, noise_sd_hu=0.0, return_tissues=True
    )
    mask = ph.info["tissue_map"] == TISSUES[tissue]
    assert mask.sum() > 20 and np.all(ph.label[mask] == 1)


def test_large_haemorrhage_extends_into_the_ventricles():
    template = get_template(4.0)
    params = next(
        p.params
        for s in range(200)
        if (p := draw_pathology(np.random.default_rng(s), "haemorrhage", template)).params.get("intraventricular")
    )
    assert max(params["radii_mm"]) >= 25
    cast = composed("haemorrhage", {**params, "ivh_level_y": 150.0})
    without = composed("haemorrhage", {**params, "intraventricular": False})
    normal = composed("normal", {})
    extra = (cast.tissue == TISSUES["haemorrhage"]) & (without.tissue != TISSUES["haemorrhage"])
    assert extra.sum() * SPACING**3 / 1000 > 1.0  # mL of hyperdense ventricles
    assert np.all(normal.hu[extra] < 20) and np.all(depth_mm(normal)[extra] > 15)  # was deep CSF
    assert np.all(normal.cavity[extra] >= 0.5)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_postop_air_is_uppermost_inside_the_cavity(seed):
    comp, grid = anatomy(seed, "postop_air")
    air = comp.tissue == TISSUES["intracranial_air"]
    cavity = comp.cavity >= 0.5
    assert air.sum() > 20 and np.all(comp.cavity[air] >= 0.5)
    y = world_axis(grid, 1, comp.tissue.shape)[cavity]  # world +y is up (the patient lies on the head holder)
    lo, hi = y.min(), y.max()
    assert world_axis(grid, 1, comp.tissue.shape)[air].min() > lo + 0.5 * (hi - lo)
    values = pure_values(comp, "intracranial_air")
    assert values.size and values.max() <= TISSUE_HU_RANGES["intracranial_air"][1]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_shunt_catheter_reaches_a_ventricle_from_the_skull(seed):
    comp, _ = anatomy(seed, "shunt")
    normal, _ = anatomy(seed, "normal")
    catheter = comp.tissue == TISSUES["catheter"]
    inside = catheter & (comp.cavity >= 0.5)
    assert inside.sum() >= 10 and (catheter & (comp.cavity == 0)).sum() >= 10
    labels, _ = ndimage.label(catheter, structure=np.ones((3, 3, 3)))
    depth = depth_mm(comp)
    tip = np.unravel_index(np.argmax(np.where(inside, depth, -1)), depth.shape)
    path = labels == labels[tip]
    assert (path & (comp.cavity == 0)).any()  # one tube from the deep tip out through the burr hole
    assert depth[tip] > 20.0
    near = np.zeros_like(catheter)
    near[tuple(slice(max(i - 4, 0), i + 5) for i in tip)] = True  # within 8 mm of the tip
    assert (normal.hu[near & (normal.cavity >= 0.5)] < 18).sum() >= 3  # ventricular CSF
    valve = comp.tissue == TISSUES["metal"]
    assert valve.any() and np.all(comp.cavity[valve] == 0)
    assert ndimage.distance_transform_edt(comp.cavity < 0.5)[valve].min() * SPACING >= 4.0  # beyond the bone
    values = pure_values(comp, "catheter")
    lo, hi = TISSUE_HU_RANGES["catheter"]
    assert values.size == 0 or (lo <= values.min() and values.max() <= hi)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_clips_are_inside_the_cavity_at_the_skull_base(seed):
    comp, grid = anatomy(seed, "clips")
    point, normal = comp.foramen_magnum
    height = sum((world_axis(grid, d, comp.tissue.shape) - point[d]) * normal[d] for d in range(3))
    metal = (comp.tissue == TISSUES["metal"]) & (height > 0)  # not the dental work below the skull base
    cavity = comp.cavity >= 0.5
    assert metal.sum() >= 1 and np.all(comp.cavity[metal] >= 0.5)
    z = world_axis(grid, 2, comp.tissue.shape)
    x = world_axis(grid, 0, comp.tissue.shape)
    z_lo, z_hi = z[cavity].min(), z[cavity].max()
    assert np.all(z[metal] < z_lo + 0.45 * (z_hi - z_lo))  # the circle of Willis, above the sella
    assert np.all(np.abs(x[metal] - x[cavity].mean()) < 35.0)
    assert comp.hu[metal].max() >= TISSUE_HU_RANGES["metal"][0]


@pytest.mark.parametrize("seed", [0, 1])
def test_cranioplasty_keeps_the_intact_cavity(seed):
    comp, _ = anatomy(seed, "cranioplasty")
    normal, _ = anatomy(seed, "normal")
    assert comp.cavity.sum() == pytest.approx(normal.cavity.sum(), rel=0.01)
    np.testing.assert_array_equal(comp.cavity, normal.cavity)  # the label source is untouched
    metal = comp.tissue == TISSUES["metal"]
    assert metal.sum() >= 3 and np.all(comp.cavity[metal] == 0)
    values = pure_values(comp, "metal")
    assert values.size == 0 or values.min() >= TISSUE_HU_RANGES["metal"][0]
    changed = np.abs(comp.hu - normal.hu) > 0.01  # float rounding of the blend aside
    assert changed.sum() > 50 and not (changed & (comp.cavity == 1.0)).any()  # kerf, burr holes, plates: outside
    bone = {TISSUES[n] for n in ("cortical_bone", "diploe")}
    lost = np.isin(normal.tissue, list(bone)) & (comp.tissue == TISSUES["soft_tissue"])
    assert lost.sum() > 10  # kerf and burr holes through the bone
