# SPDX-License-Identifier: Apache-2.0
"""Pathology and post-operative variants of the head-CT phantoms.

Label rules (the label is the cranial cavity coverage ``F`` of :mod:`bundle.data.phantom_anatomy`, see
:mod:`bundle.data.phantoms`). Every variant but ``craniectomy`` leaves ``F`` untouched: it only changes the HU and the
tissue codes inside the cavity (label 1 whatever they show) or paints outside it (label 0).

- ``haemorrhage``: a hyperdense (50-90 HU) intraparenchymal blob (semi-axes 5-45 mm; about a third are large, 25-45
  mm, and those extend into the ventricles in half the cases: hyperdense ventricular cerebrospinal fluid, layering
  posteriorly or as a cast) or a thin subdural crescent along the inner table; label 1.
- ``subdural``: a large acute subdural haematoma, a crescent 10-25 mm thick along the inner table of one hemisphere
  (it stops at the falx), 50-90 HU, sometimes mixed density (a swirl of hypodense 25-45 HU unclotted blood, tissue
  code ``cavity``); label 1.
- ``hygroma``: a chronic subdural hygroma, a frontal crescent (uni- or bilateral) 3-12 mm thick of cerebrospinal
  fluid density (2-13 HU); label 1.
- ``infarct``: a hypodense (15-25 HU) cortical wedge (a vascular territory) replacing brain tissue (cerebrospinal fluid
  in sulci and ventricles is kept); label 1.
- ``postop_air``: pneumocephalus: intracranial air (-1000 HU, tissue ``intracranial_air``) above an air-fluid level at
  the uppermost (world +y, anterior for a supine head) part of the cavity plus a few small bubbles under the frontal
  inner table, usually with a burr hole or a small craniotomy (kerf and plates) nearby. **Air inside the cavity is
  label 1** (it lies inside the inner table); the bone, kerf and plates outside are label 0.
- ``shunt``: a ventricular catheter (tissue ``catheter``, 3 mm, a 200-400 HU wall around a 70-110 HU lumen) from a
  frontal (Kocher) or parietal burr hole to the frontal horn of a lateral ventricle; a reservoir over the burr hole, a
  valve with a ``metal`` core and tubing lying on the outer table under the scalp. The intracranial catheter is label 1
  (it is inside the cavity); the burr hole, reservoir, valve and extracranial tubing are label 0.
- ``clips``: 1-3 aneurysm clips (``metal``, 2500-3071 HU, a blade 1-1.3 mm thick and 5-9 mm long with a 2 mm head)
  at the circle of Willis above the sella. **The metal voxels keep label 1**: the cavity is geometry, not density,
  and a segmentation must not punch holes around clips (tissue code ``metal`` with ``F >= 0.5``).
- ``craniectomy``: a bone flap (all skull layers) is missing over a lateral convexity; the scalp lies on the dura or
  over brain that bulges through the defect. **The label is the cavity bounded by where the inner table would be**
  (the smooth cavity surface of the template, continued across the defect): herniated brain beyond that surface is
  not labelled (tissue ``herniated_brain``), so the labelled volume equals the intracranial volume of the intact
  skull. This is the only variant that changes the skull envelope; ``F`` itself still comes from the template.
- ``cranioplasty``: the bone flap is back: a kerf 1.5-3 mm wide (soft tissue) around a 30-50 mm flap, 2-4 burr holes
  on the kerf and 3-5 titanium plates (``metal``, with screws into the bone) on the outer table. The label is the
  intact cavity (the same ``F`` as the same head's ``normal`` variant).

Burr holes and kerfs are filled with soft tissue (scar) up to the outer table; the scalp over them is intact.

Example:
    >>> from bundle.data.phantom_template import get_template
    >>> p = draw_pathology(np.random.default_rng(0), "hygroma", get_template(4.0))
    >>> p.params["hu"] < 15
    True
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from bundle.data.phantom_fields import band, capsule_sdf, cone_sdf, coverage, ellipsoid_sdf
from bundle.data.phantom_template import LANDMARKS, Template

__all__ = ["VARIANTS", "VARIANT_PROBABILITIES", "Pathology", "draw_pathology"]

#: Phantom variants (``"normal"`` has no pathology).
VARIANTS: tuple[str, ...] = (
    "normal",
    "haemorrhage",
    "infarct",
    "craniectomy",
    "subdural",
    "hygroma",
    "postop_air",
    "shunt",
    "clips",
    "cranioplasty",
)
#: Probability of each variant when it is drawn at random (same order as :data:`VARIANTS`).
VARIANT_PROBABILITIES: tuple[float, ...] = (0.3, 0.12, 0.1, 0.08, 0.08, 0.06, 0.07, 0.06, 0.06, 0.07)

_MID = LANDMARKS["midline_x"][0]
_CENTRE = np.asarray(LANDMARKS["head_centre"], dtype=np.float64)
#: Frontal horn of the right lateral ventricle in the atlas (the left one mirrors about the midline).
_FRONTAL_HORN = (111.5, 126.0, 97.0)
#: Aneurysm sites at the circle of Willis (right side; anterior communicating and basilar tip are midline).
_WILLIS = ((105.0, 124.0, 63.0), (127.0, 116.0, 61.0), (117.0, 106.0, 59.0), (105.0, 100.0, 62.0))


def _pick(rng: np.random.Generator, points: np.ndarray, mask: np.ndarray) -> np.ndarray:
    candidates = points[mask]
    return candidates[int(rng.integers(len(candidates)))].astype(np.float64)


def _unit(v) -> np.ndarray:
    v = np.asarray(v, dtype=np.float64)
    return v / np.linalg.norm(v)


def _tangents(normal: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Two unit vectors orthogonal to ``normal`` and to each other."""
    helper = np.array([0.0, 0.0, 1.0]) if abs(normal[2]) < 0.9 else np.array([0.0, 1.0, 0.0])
    e1 = _unit(np.cross(normal, helper))
    return e1, np.cross(normal, e1)


def _template_sdf(template: Template, point: np.ndarray) -> float:
    """Cavity signed distance (mm) of the template at ``point`` (nearest grid sample)."""
    idx = np.rint((np.asarray(point) - template.origin) / template.spacing).astype(int)
    idx = np.clip(idx, 0, np.array(template.shape) - 1)
    return float(template.fields[1][tuple(idx)])


def _dot(x, y, z, origin, axis) -> np.ndarray:
    """``(p - origin) . axis`` for the coordinate arrays ``x, y, z``."""
    a = np.asarray(axis, dtype=np.float32)
    o = np.asarray(origin, dtype=np.float32)
    return (x - o[0]) * a[0] + (y - o[1]) * a[1] + (z - o[2]) * a[2]


def _axis_distance(x, y, z, point, axis) -> np.ndarray:
    """Distance of each point from the line through ``point`` along the unit vector ``axis``."""
    o = np.asarray(point, dtype=np.float32)
    h = _dot(x, y, z, o, axis)
    sq = (x - o[0]) ** 2 + (y - o[1]) ** 2 + (z - o[2]) ** 2 - h * h
    return np.sqrt(np.maximum(sq, 0.0))


@dataclass
class Pathology:
    """One drawn pathology with hooks called by :func:`bundle.data.phantom_anatomy.compose_head`.

    The hooks run per chunk (a slab of the grid) in this order: :meth:`skull_defect` (before the skull),
    :meth:`after_vault` (after the skull vault), :meth:`before_cavity` (before the cavity), :meth:`cavity_content`
    (the HU painted with the cavity coverage). Shapes are in template mm (the builder's ``tx, ty, tz``).

    Attributes:
        variant: one of :data:`VARIANTS`.
        params: JSON-friendly parameters (template mm, HU), also reported in the phantom's ``info``.

    Example:
        >>> Pathology("normal").skull_defect(None) is None
        True
    """

    variant: str
    params: dict = field(default_factory=dict)
    _defect: tuple | None = None
    _air_top: float | None = None

    def skull_defect(self, builder) -> tuple[np.ndarray, np.ndarray] | None:
        """Craniectomy only: ``(weight, bulge_mm)`` full-grid arrays (1 inside the missing bone flap)."""
        if self.variant != "craniectomy":
            return None
        c = self.params["centre"]
        r = np.sqrt(
            (builder.tx - np.float32(c[0])) ** 2
            + (builder.ty - np.float32(c[1])) ** 2
            + (builder.tz - np.float32(c[2])) ** 2
        )
        radius = np.float32(self.params["radius_mm"])
        weight = coverage(r - radius, 4.0)
        bulge = np.clip(1.0 - (r / radius) ** 2, 0.0, 1.0) * np.float32(self.params["bulge_mm"])
        self._defect = (weight, bulge)
        return weight, bulge

    def after_vault(self, builder, thick: np.ndarray) -> None:
        """Post-operative skull and scalp: burr holes, kerfs, fixation plates, the shunt's extracranial parts.

        Args:
            builder: the chunk being painted.
            thick: the local skull thickness (mm), so that holes go through the bone and hardware lies on it.
        """
        p = self.params
        if self.variant == "cranioplasty":
            self._paint_flap(builder, thick, p["centre"], p["radius_mm"], p["kerf_mm"], p["burr_holes"], p["plates"])
        elif self.variant == "postop_air" and p["access"] == "burr_hole":
            self._paint_burr_hole(builder, thick, p["access_centre"], p["access_radius_mm"])
        elif self.variant == "postop_air" and p["access"] == "craniotomy":
            self._paint_flap(builder, thick, p["access_centre"], p["access_radius_mm"], p["kerf_mm"], [], p["plates"])
        elif self.variant == "shunt":
            self._paint_shunt_outside(builder, thick)

    def before_cavity(self, builder) -> None:
        """Craniectomy only: paint brain herniating through the defect (outside the labelled cavity)."""
        if self.variant != "craniectomy" or self._defect is None:
            return
        weight, bulge = self._defect
        alpha = band(builder.dist, 0.0, bulge, builder.width) * weight
        builder.paint((slice(None),) * 3, alpha, self.params["herniation_hu"], "herniated_brain")

    def cavity_content(self, builder, content: np.ndarray) -> tuple[np.ndarray, list[tuple[str, np.ndarray]]]:
        """Modify the cavity HU; return it and the per-tissue coverage for the tissue map (later entries win)."""
        handler = {
            "haemorrhage": self._haemorrhage,
            "subdural": self._subdural,
            "hygroma": self._hygroma,
            "infarct": self._infarct,
            "postop_air": self._air,
            "shunt": self._catheter,
            "clips": self._clips,
        }.get(self.variant)
        if handler is None:
            return content, []
        return handler(builder, content)

    # -- cavity content -----------------------------------------------------------------------------------------
    def _haemorrhage(self, b, content):
        w = b.width
        if self.params["type"] != "intraparenchymal":
            alpha = self._crescent(b, self.params["centre"], self.params["radius_mm"], self.params["thickness_mm"])
            return self._blend(content, alpha, self.params["hu"]), [("haemorrhage", alpha)]
        c, radii = self.params["centre"], np.asarray(self.params["radii_mm"])
        sl = b.box_around(c, radii + 8)
        alpha = np.zeros_like(content)
        if sl is not None:
            x, y, z = b.coords(sl)
            wobble = b.field(b.head.wobble, sl)[0] * np.float32(0.15 * radii.min())
            alpha[sl] = coverage(ellipsoid_sdf(x, y, z, c, radii) + wobble, w)
        codes = [("haemorrhage", alpha)]
        content = self._blend(content, alpha, self.params["hu"])
        if self.params.get("intraventricular"):
            # ventricular CSF: low HU deeper than the sulci (which fade out 20 mm below the surface), above the
            # basal cisterns; blood layers in the dependent (posterior) horns below the level
            ivh = np.clip((np.float32(20.0) - content) / np.float32(6.0), 0.0, 1.0)
            ivh *= coverage(b.dist + np.float32(22.0), 3.0)
            ivh *= coverage(np.float32(80.0) - b.tz, 3.0)
            ivh *= coverage(np.abs(b.tx - np.float32(_MID)) - np.float32(28.0), 3.0)
            ivh *= coverage(b.ty - np.float32(self.params["ivh_level_y"]), 3.0)
            content = self._blend(content, ivh, self.params["ivh_hu"])
            codes.append(("haemorrhage", ivh))
        return content, codes

    def _crescent(self, b, centre, radius_mm: float, thickness_mm: float, side: float | None = None) -> np.ndarray:
        """A subdural crescent along the inner table, thickest at ``centre``; with ``side``, stopped by the falx."""
        c = np.asarray(centre, dtype=np.float32)
        r = np.sqrt((b.tx - c[0]) ** 2 + (b.ty - c[1]) ** 2 + (b.tz - c[2]) ** 2)
        thickness = np.clip(1.0 - (r / np.float32(radius_mm)) ** 2, 0.0, 1.0) * np.float32(thickness_mm)
        alpha = band(-b.dist, 0.0, thickness, b.width)
        if side is not None:
            alpha *= coverage(np.float32(1.5) - np.float32(side) * (b.tx - np.float32(_MID)), b.width)
        return alpha

    def _subdural(self, b, content):
        p = self.params
        alpha = self._crescent(b, p["centre"], p["radius_mm"], p["thickness_mm"], p["side"])
        content = self._blend(content, alpha, p["hu"])
        if not p["mixed"]:
            return content, [("haemorrhage", alpha)]
        swirl = b.field(b.head.wobble)[0]
        hypo = alpha * coverage(swirl - np.float32(p["swirl_threshold"]), 0.4)
        content = self._blend(content, hypo, p["hypodense_hu"])
        # the hypodense swirl keeps the code ``cavity`` (its HU is below the haemorrhage range)
        return content, [("haemorrhage", alpha * (1.0 - hypo))]

    def _hygroma(self, b, content):
        p = self.params
        alpha = np.zeros_like(content)
        for centre, side in zip(p["centres"], p["sides"], strict=True):
            alpha = np.maximum(alpha, self._crescent(b, centre, p["radius_mm"], p["thickness_mm"], side))
        return self._blend(content, alpha, p["hu"]), [("hygroma", alpha)]

    def _infarct(self, b, content):
        apex, base = self.params["apex"], self.params["base"]
        sl = b.box(np.minimum(apex, base) - 40, np.maximum(apex, base) + 40)
        alpha = np.zeros_like(content)
        if sl is not None:
            x, y, z = b.coords(sl)
            a = coverage(cone_sdf(x, y, z, apex, base, 3.0, self.params["radius_mm"]), b.width)
            a *= np.clip((content[sl] - 12.0) / 4.0, 0.0, 1.0)  # brain, not the CSF of sulci and ventricles
            alpha[sl] = a
        return self._blend(content, alpha, self.params["hu"]), [("infarct", alpha)]

    def _air(self, b, content):
        p = self.params
        if self._air_top is None:  # uppermost cavity point in world y (the displacement moves it a few mm at most)
            self._air_top = float(b.pose.to_world(b.head.template.surface_points)[:, 1].max())
        level = self._air_top - p["level_depth_mm"] * float(np.mean(b.params.scale))
        world_y = b.grid.axis(1).astype(np.float32)[None, :, None]
        alpha = np.broadcast_to(coverage(np.float32(level) - world_y, float(b.grid.spacing[1])), content.shape).copy()
        for centre, radius in zip(p["bubbles"], p["bubble_radii_mm"], strict=True):
            sl = b.box_around(centre, radius + 4)
            if sl is not None:
                sdf = ellipsoid_sdf(*b.coords(sl), centre, (radius,) * 3)
                alpha[sl] = np.maximum(alpha[sl], coverage(sdf, b.width))
        return self._blend(content, alpha, p["hu"]), [("intracranial_air", alpha)]

    def _catheter(self, b, content):
        p = self.params
        entry, tip = np.asarray(p["entry"]), np.asarray(p["tip"])
        sl = b.box(np.minimum(entry, tip) - 6, np.maximum(entry, tip) + 6)
        alpha = np.zeros_like(content)
        if sl is None:
            return content, []
        start = entry + 2.0 * _unit(entry - _CENTRE)  # into the burr hole, so the catheter is continuous
        x, y, z = b.coords(sl)
        wall = coverage(capsule_sdf(x, y, z, start, tip, p["catheter_radius_mm"]), b.width)
        lumen = coverage(capsule_sdf(x, y, z, start, tip, 0.4 * p["catheter_radius_mm"]), b.width)
        alpha[sl] = wall
        part = content[sl]
        part += wall * (np.float32(p["wall_hu"]) - part)
        part += lumen * (np.float32(p["lumen_hu"]) - part)
        return content, [("catheter", alpha)]

    def _clips(self, b, content):
        p = self.params
        alpha = np.zeros_like(content)
        for centre, axis, length in zip(p["clip_centres"], p["clip_axes"], p["clip_lengths_mm"], strict=True):
            c, u = np.asarray(centre), np.asarray(axis)
            sl = b.box_around(c, 0.5 * length + 4)
            if sl is None:
                continue
            x, y, z = b.coords(sl)
            head = c - 0.5 * length * u
            sdf = np.minimum(
                capsule_sdf(x, y, z, head, c + 0.5 * length * u, p["blade_radius_mm"]),
                ellipsoid_sdf(x, y, z, head, (p["head_radius_mm"],) * 3),
            )
            alpha[sl] = np.maximum(alpha[sl], coverage(sdf, b.width))
        return self._blend(content, alpha, p["hu"]), [("metal", alpha)]

    # -- skull and scalp ----------------------------------------------------------------------------------------
    @staticmethod
    def _near(b, sl, point, normal) -> np.ndarray:
        """1 on the near side of the head (within 40 mm below ``point`` along ``normal``), so that a line through the
        head does not also cut the opposite skull."""
        return coverage(np.float32(-40.0) - _dot(*b.coords(sl), point, normal), b.width)

    def _paint_burr_hole(self, b, thick, centre, radius_mm: float, normal=None) -> None:
        """Replace the bone of a cylinder along the (radial) normal at ``centre`` by scar tissue."""
        c = np.asarray(centre, dtype=np.float64)
        n = _unit(c - _CENTRE) if normal is None else np.asarray(normal)
        sl = b.box_around(c + 8.0 * n, radius_mm + 12.0)
        if sl is None:
            return
        x, y, z = b.coords(sl)
        alpha = coverage(_axis_distance(x, y, z, c, n) - np.float32(radius_mm), b.width)
        alpha *= band(b.dist[sl], -b.width, thick[sl] + np.float32(0.5 * b.width), b.width) * self._near(b, sl, c, n)
        b.paint(sl, alpha, b.params.soft_hu, "soft_tissue")

    def _paint_flap(self, b, thick, centre, radius_mm, kerf_mm, burr_angles, plates) -> None:
        """A bone flap put back: a kerf around it, burr holes on the kerf, plates with screws across the kerf."""
        c = np.asarray(centre, dtype=np.float64)
        n0 = _unit(c - _CENTRE)
        e1, e2 = _tangents(n0)
        sl = b.box_around(c + 6.0 * n0, radius_mm + 20.0)
        if sl is not None:
            x, y, z = b.coords(sl)
            r = np.sqrt((x - np.float32(c[0])) ** 2 + (y - np.float32(c[1])) ** 2 + (z - np.float32(c[2])) ** 2)
            alpha = band(r, radius_mm - 0.5 * kerf_mm, radius_mm + 0.5 * kerf_mm, b.width)
            alpha *= band(b.dist[sl], -b.width, thick[sl] + np.float32(0.5 * b.width), b.width)
            alpha *= self._near(b, sl, c, n0)
            b.paint(sl, alpha, b.params.soft_hu - 8.0, "soft_tissue")

        def on_kerf(angle: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
            radial = np.cos(angle) * e1 + np.sin(angle) * e2
            point = c + radius_mm * radial
            n = _unit(point - _CENTRE)
            across = _unit(radial - (radial @ n) * n)
            return point, n, across

        for angle in burr_angles:
            point, n, _ = on_kerf(angle)
            self._paint_burr_hole(b, thick, point, self.params.get("burr_radius_mm", 5.0), n)
        for angle, length, width, depth in plates:
            point, n, across = on_kerf(angle)
            sl = b.box_around(point + 8.0 * n, 0.5 * length + 14.0)
            if sl is None:
                continue
            x, y, z = b.coords(sl)
            along = np.cross(n, across)
            rect = np.maximum(
                np.abs(_dot(x, y, z, point, across)) - np.float32(0.5 * length),
                np.abs(_dot(x, y, z, point, along)) - np.float32(0.5 * width),
            )
            near = self._near(b, sl, point, n)
            outer = thick[sl]
            alpha = coverage(rect, b.width) * band(b.dist[sl], outer, outer + np.float32(depth), b.width) * near
            for s in (-0.3, 0.3):  # a screw each side of the kerf, into the outer table
                screw = coverage(_axis_distance(x, y, z, point + s * length * across, n) - np.float32(1.0), b.width)
                screw *= band(b.dist[sl], outer - np.float32(3.5), outer + np.float32(depth), b.width) * near
                alpha = np.maximum(alpha, screw)
            b.paint(sl, alpha, self.params["metal_hu"], "metal")

    def _paint_shunt_outside(self, b, thick) -> None:
        """Burr hole with the catheter through it, reservoir over it, then tubing and valve on the outer table."""
        p = self.params
        entry = np.asarray(p["entry"], dtype=np.float64)
        n = _unit(entry - _CENTRE)
        self._paint_burr_hole(b, thick, entry, p["burr_radius_mm"], n)
        sl = b.box_around(entry + 8.0 * n, p["reservoir_radius_mm"] + 12.0)
        if sl is not None:
            x, y, z = b.coords(sl)
            near = self._near(b, sl, entry, n) * b.inside[sl]
            lateral = _axis_distance(x, y, z, entry, n)
            outer = thick[sl]
            dome = coverage(lateral - np.float32(p["reservoir_radius_mm"]), b.width)
            dome *= band(b.dist[sl], outer - np.float32(0.5), outer + np.float32(p["reservoir_height_mm"]), b.width)
            tube = coverage(lateral - np.float32(p["catheter_radius_mm"]), b.width)
            tube *= band(b.dist[sl], -b.width, outer, b.width)
            b.paint(sl, np.maximum(dome, tube) * near, p["wall_hu"], "catheter")
        # tubing and valve follow the skull: a slab through the head centre, a shell on the outer table, an arc range
        d = np.asarray(p["valve_direction"], dtype=np.float64)
        d = _unit(d - (d @ n) * n)
        m = np.cross(n, d)
        radius = float(np.linalg.norm(entry - _CENTRE))
        end = _CENTRE + radius * (np.cos(1.2) * n + np.sin(1.2) * d)
        sl = b.box(np.minimum(entry, end) - 25.0, np.maximum(entry, end) + 25.0)
        if sl is None:
            return
        x, y, z = b.coords(sl)
        arc = np.arctan2(_dot(x, y, z, _CENTRE, d), _dot(x, y, z, _CENTRE, n)) * np.float32(radius)
        across = np.abs(_dot(x, y, z, _CENTRE, m))
        outer = thick[sl] + np.float32(0.3)
        inside = b.inside[sl]
        v0, v1 = p["valve_arc_mm"]
        tubing = (p["catheter_radius_mm"], 2.0 * p["catheter_radius_mm"], (p["reservoir_radius_mm"], 80.0))
        parts = [
            (*tubing, p["wall_hu"], "catheter"),
            (p["valve_width_mm"] / 2, p["valve_height_mm"], (v0, v1), p["valve_hu"], "catheter"),
            (1.5, p["valve_height_mm"] - 1.0, (v0 + 3.0, v0 + 9.0), p["metal_hu"], "metal"),
        ]
        for half_width, height, (a0, a1), value, tissue in parts:
            alpha = coverage(across - np.float32(half_width), b.width)
            alpha *= band(b.dist[sl], outer, outer + np.float32(height), b.width)
            alpha *= band(arc, a0, a1, b.width) * inside
            b.paint(sl, alpha, value, tissue)

    @staticmethod
    def _blend(content: np.ndarray, alpha: np.ndarray, value: float) -> np.ndarray:
        content += alpha * (np.float32(value) - content)
        return content


def _plates(rng: np.random.Generator, count: int) -> list[list[float]]:
    """``count`` fixation plates spread around a kerf: ``[angle, length, width, thickness]``."""
    start = rng.uniform(0, 2 * np.pi)
    angles = start + 2 * np.pi * (np.arange(count) + rng.uniform(-0.15, 0.15, size=count)) / count
    return [
        [float(a), float(rng.uniform(9, 14)), float(rng.uniform(3.5, 5.0)), float(rng.uniform(0.8, 1.2))]
        for a in angles
    ]


def draw_pathology(rng: np.random.Generator, variant: str, template: Template) -> Pathology:
    """Draw the parameters of ``variant``.

    Args:
        rng: random generator (consumed deterministically).
        variant: one of :data:`VARIANTS`.
        template: the template (its cavity surface points anchor lesions).

    Returns:
        The :class:`Pathology`.

    Raises:
        ValueError: for an unknown ``variant``.

    Example:
        >>> from bundle.data.phantom_template import get_template
        >>> draw_pathology(np.random.default_rng(0), "infarct", get_template(4.0)).params["hu"] < 25
        True
    """
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}.")
    pts = template.surface_points
    lateral = np.abs(pts[:, 0] - _MID)
    params: dict = {}
    if variant == "haemorrhage":
        kind = "intraparenchymal" if rng.random() < 0.5 else "subdural"
        params["type"] = kind
        if kind == "intraparenchymal":
            large = bool(rng.random() < 0.35)
            anchor = _pick(rng, pts, (pts[:, 2] > 75) & (pts[:, 2] < 140) & (lateral > 25))
            # large haematomas sit deeper (basal ganglia, lobar), small ones anywhere between cortex and centre
            centre = anchor + (_CENTRE - anchor) * (rng.uniform(0.45, 0.6) if large else rng.uniform(0.3, 0.5))
            size = rng.uniform(25.0, 36.0) if large else rng.uniform(6.0, 20.0)
            radii = np.clip(size * rng.uniform(0.8, 1.25, size=3), 5.0, 45.0)
            params.update(centre=centre.tolist(), radii_mm=radii.tolist(), hu=float(rng.uniform(55, 85)))
            params["intraventricular"] = bool(large and rng.random() < 0.5)
            if params["intraventricular"]:
                # level (template y) below which the ventricles hold blood; above 140 they are a full cast
                params.update(ivh_level_y=float(rng.uniform(95, 145)), ivh_hu=float(rng.uniform(55, 80)))
        else:
            anchor = _pick(rng, pts, (pts[:, 2] > 85) & (lateral > 35))
            params.update(
                centre=anchor.tolist(),
                radius_mm=float(rng.uniform(45, 75)),
                thickness_mm=float(rng.uniform(5, 14)),
                hu=float(rng.uniform(52, 80)),
            )
    elif variant == "subdural":
        anchor = _pick(rng, pts, (pts[:, 2] > 80) & (lateral > 40))
        mixed = bool(rng.random() < 0.4)
        params.update(
            centre=anchor.tolist(),
            side=float(np.sign(anchor[0] - _MID)),
            radius_mm=float(rng.uniform(60, 95)),
            thickness_mm=float(rng.uniform(10, 25)),
            hu=float(rng.uniform(55, 85)),
            mixed=mixed,
            swirl_threshold=float(rng.uniform(0.3, 1.0)),  # of a unit-variance field: 15-40% hypodense
            hypodense_hu=float(rng.uniform(25, 45)),
        )
    elif variant == "hygroma":
        anchor = _pick(rng, pts, (pts[:, 1] > 140) & (pts[:, 2] > 85) & (lateral > 15) & (lateral < 50))
        bilateral = bool(rng.random() < 0.6)
        centres = [anchor.tolist()]
        if bilateral:
            centres.append([2 * _MID - anchor[0], anchor[1], anchor[2]])
        params.update(
            centre=anchor.tolist(),
            centres=centres,
            sides=[float(np.sign(c[0] - _MID)) for c in centres],
            bilateral=bilateral,
            radius_mm=float(rng.uniform(50, 75)),
            thickness_mm=float(rng.uniform(3, 12)),
            hu=float(rng.uniform(2, 13)),
        )
    elif variant == "infarct":
        anchor = _pick(rng, pts, (pts[:, 2] > 75) & (pts[:, 2] < 135) & (lateral > 40))
        apex = anchor + (_CENTRE - anchor) * 0.6
        base = anchor + (anchor - apex) * 0.05
        params.update(
            apex=apex.tolist(), base=base.tolist(), radius_mm=float(rng.uniform(18, 32)), hu=float(rng.uniform(16, 24))
        )
    elif variant == "craniectomy":
        anchor = _pick(rng, pts, (pts[:, 2] > 95) & (lateral > 35))
        params.update(
            centre=anchor.tolist(),
            radius_mm=float(rng.uniform(35, 55)),
            bulge_mm=float(rng.uniform(0, 12)),
            herniation_hu=float(rng.uniform(24, 34)),
        )
    elif variant == "cranioplasty":
        anchor = _pick(rng, pts, (pts[:, 2] > 95) & (lateral > 35))
        n_burr = int(rng.integers(2, 5))
        params.update(
            centre=anchor.tolist(),
            radius_mm=float(rng.uniform(30, 50)),
            kerf_mm=float(rng.uniform(1.5, 3.0)),
            burr_holes=(rng.uniform(0, 2 * np.pi) + 2 * np.pi * np.arange(n_burr) / n_burr).tolist(),
            burr_radius_mm=float(rng.uniform(5, 7)),
            plates=_plates(rng, int(rng.integers(3, 6))),
            metal_hu=float(rng.uniform(2800, 3071)),
        )
    elif variant == "postop_air":
        front = pts[(pts[:, 1] > 140) & (pts[:, 2] > 75)]
        bubbles, radii = [], []
        for _ in range(int(rng.integers(2, 7))):
            anchor = front[int(rng.integers(len(front)))].astype(np.float64)
            r = float(rng.uniform(1.5, 4.0))
            bubbles.append((anchor + _unit(_CENTRE - anchor) * (r + 1.0)).tolist())
            radii.append(r)
        access = ("burr_hole", "craniotomy", "none")[int(rng.choice(3, p=(0.5, 0.3, 0.2)))]
        site = _pick(rng, pts, (pts[:, 1] > 120) & (pts[:, 2] > 110) & (lateral > 15) & (lateral < 45))
        params.update(
            centre=site.tolist(),
            level_depth_mm=float(rng.uniform(4, 14)),
            bubbles=bubbles,
            bubble_radii_mm=radii,
            hu=-1000.0,
            access=access,
            access_centre=site.tolist(),
            access_radius_mm=float(rng.uniform(5, 7) if access == "burr_hole" else rng.uniform(15, 25)),
            kerf_mm=float(rng.uniform(1.5, 2.5)),
            plates=_plates(rng, 2),
            metal_hu=float(rng.uniform(2800, 3071)),
        )
    elif variant == "shunt":
        side = 1.0 if rng.random() < 0.5 else -1.0
        sided = np.sign(pts[:, 0] - _MID) == side
        frontal = bool(rng.random() < 0.6)
        if frontal:  # Kocher's point: at the coronal suture, in the mid-pupillary line
            entry = _pick(rng, pts, sided & (pts[:, 1] > 128) & (pts[:, 1] < 150) & (pts[:, 2] > 125) & (lateral > 18))
            direction = [side * 0.4, -1.0, -0.5]  # tubing runs back over the parietal bone
        else:  # parieto-occipital (Frazier's point)
            entry = _pick(rng, pts, sided & (pts[:, 1] < 50) & (pts[:, 2] > 105) & (pts[:, 2] < 140) & (lateral > 22))
            direction = [side * 0.5, -0.3, -1.0]  # tubing runs down behind the ear
        horn = np.array([_MID + side * (_FRONTAL_HORN[0] - _MID), _FRONTAL_HORN[1], _FRONTAL_HORN[2]])
        tip = horn + rng.uniform(-2.5, 2.5, size=3)
        params.update(
            centre=tip.tolist(),
            entry=entry.tolist(),
            tip=tip.tolist(),
            approach="frontal" if frontal else "parietal",
            catheter_radius_mm=float(rng.uniform(1.4, 1.7)),
            wall_hu=float(rng.uniform(200, 400)),
            lumen_hu=float(rng.uniform(70, 110)),
            burr_radius_mm=float(rng.uniform(5, 7)),
            reservoir_radius_mm=float(rng.uniform(5, 7)),
            reservoir_height_mm=float(rng.uniform(2.5, 4.0)),
            valve_direction=direction,
            valve_arc_mm=[float(v) for v in np.cumsum([rng.uniform(14, 22), rng.uniform(15, 22)])],
            valve_width_mm=float(rng.uniform(8, 11)),
            valve_height_mm=float(rng.uniform(4, 5.5)),
            valve_hu=float(rng.uniform(100, 250)),
            metal_hu=float(rng.uniform(2800, 3071)),
        )
    elif variant == "clips":
        count = int(rng.integers(1, 4))
        sites = [np.array(s) for s in _WILLIS] + [np.array([2 * _MID - s[0], s[1], s[2]]) for s in _WILLIS[1:3]]
        centres, axes, lengths = [], [], []
        for i in rng.choice(len(sites), size=count, replace=False):
            c = sites[int(i)] + rng.uniform(-2.5, 2.5, size=3)
            while _template_sdf(template, c) > -5.0:  # keep the clip clear of the skull base
                c = c + _unit(_CENTRE - c)
            centres.append(c.tolist())
            axes.append(_unit(rng.standard_normal(3)).tolist())
            lengths.append(float(rng.uniform(5, 9)))
        params.update(
            centre=centres[0],
            clip_centres=centres,
            clip_axes=axes,
            clip_lengths_mm=lengths,
            blade_radius_mm=float(rng.uniform(1.0, 1.3)),
            head_radius_mm=float(rng.uniform(1.8, 2.3)),
            hu=float(rng.uniform(2800, 3071)),
        )
    return Pathology(variant=variant, params=params)
