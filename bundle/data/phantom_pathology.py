# SPDX-License-Identifier: Apache-2.0
"""Pathology variants of the head-CT phantoms: intracranial haemorrhage, infarct and craniectomy.

Label rules (the label is the cranial cavity, see :mod:`bundle.data.phantoms`):

- ``haemorrhage``: a hyperdense (50-90 HU) intraparenchymal blob or a subdural crescent along the inner table. It
  replaces cavity content, so the label stays 1 inside the cavity.
- ``infarct``: a hypodense (15-25 HU) cortical wedge (a vascular territory) replacing brain tissue (cerebrospinal fluid
  in sulci and ventricles is kept); label 1.
- ``craniectomy``: a bone flap (all skull layers) is missing over a lateral convexity; the scalp lies on the dura or
  over brain that bulges through the defect. **The label is the cavity bounded by where the inner table would be**
  (the smooth cavity surface of the template, continued across the defect): herniated brain beyond that surface is
  not labelled (tissue ``herniated_brain``), so the labelled volume equals the intracranial volume of the intact
  skull.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from bundle.data.phantom_fields import band, cone_sdf, coverage, ellipsoid_sdf
from bundle.data.phantom_template import LANDMARKS, Template

__all__ = ["VARIANTS", "VARIANT_PROBABILITIES", "Pathology", "draw_pathology"]

#: Phantom variants (``"normal"`` has no pathology).
VARIANTS: tuple[str, ...] = ("normal", "haemorrhage", "infarct", "craniectomy")
#: Probability of each variant when it is drawn at random.
VARIANT_PROBABILITIES: tuple[float, ...] = (0.4, 0.25, 0.2, 0.15)

_MID = LANDMARKS["midline_x"][0]
_CENTRE = np.asarray(LANDMARKS["head_centre"], dtype=np.float64)


def _pick(rng: np.random.Generator, points: np.ndarray, mask: np.ndarray) -> np.ndarray:
    candidates = points[mask]
    return candidates[int(rng.integers(len(candidates)))].astype(np.float64)


@dataclass
class Pathology:
    """One drawn pathology with hooks called by :func:`bundle.data.phantom_anatomy.compose_head`.

    Attributes:
        variant: one of :data:`VARIANTS`.
        params: JSON-friendly parameters (template mm, HU), also reported in the phantom's ``info``.
    """

    variant: str
    params: dict = field(default_factory=dict)
    _defect: tuple | None = None

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

    def before_cavity(self, builder) -> None:
        """Craniectomy only: paint brain herniating through the defect (outside the labelled cavity)."""
        if self.variant != "craniectomy" or self._defect is None:
            return
        weight, bulge = self._defect
        alpha = band(builder.dist, 0.0, bulge, builder.width) * weight
        builder.paint((slice(None),) * 3, alpha, self.params["herniation_hu"], "herniated_brain")

    def cavity_content(self, builder, content: np.ndarray) -> tuple[np.ndarray, list[tuple[str, np.ndarray]]]:
        """Modify the cavity HU (haemorrhage, infarct); return it and the per-tissue coverage for the tissue map."""
        w = builder.width
        if self.variant == "haemorrhage" and self.params["type"] == "intraparenchymal":
            c, radii = self.params["centre"], np.asarray(self.params["radii_mm"])
            sl = builder.box_around(c, radii + 8)
            alpha = np.zeros_like(content)
            if sl is not None:
                x, y, z = builder.coords(sl)
                wobble = builder.field(builder.head.wobble, sl)[0] * np.float32(0.15 * radii.min())
                alpha[sl] = coverage(ellipsoid_sdf(x, y, z, c, radii) + wobble, w)
            return self._blend(content, alpha, self.params["hu"]), [("haemorrhage", alpha)]
        if self.variant == "haemorrhage":
            c = self.params["centre"]
            r = np.sqrt(
                (builder.tx - np.float32(c[0])) ** 2
                + (builder.ty - np.float32(c[1])) ** 2
                + (builder.tz - np.float32(c[2])) ** 2
            )
            thickness = np.clip(1.0 - (r / np.float32(self.params["radius_mm"])) ** 2, 0.0, 1.0)
            thickness *= np.float32(self.params["thickness_mm"])
            alpha = band(-builder.dist, 0.0, thickness, w)
            return self._blend(content, alpha, self.params["hu"]), [("haemorrhage", alpha)]
        if self.variant == "infarct":
            apex, base = self.params["apex"], self.params["base"]
            sl = builder.box(np.minimum(apex, base) - 40, np.maximum(apex, base) + 40)
            alpha = np.zeros_like(content)
            if sl is not None:
                x, y, z = builder.coords(sl)
                a = coverage(cone_sdf(x, y, z, apex, base, 3.0, self.params["radius_mm"]), w)
                a *= np.clip((content[sl] - 12.0) / 4.0, 0.0, 1.0)  # brain, not the CSF of sulci and ventricles
                alpha[sl] = a
            return self._blend(content, alpha, self.params["hu"]), [("infarct", alpha)]
        return content, []

    @staticmethod
    def _blend(content: np.ndarray, alpha: np.ndarray, value: float) -> np.ndarray:
        content += alpha * (np.float32(value) - content)
        return content


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
            anchor = _pick(rng, pts, (pts[:, 2] > 75) & (pts[:, 2] < 140) & (lateral > 25))
            centre = anchor + (_CENTRE - anchor) * rng.uniform(0.3, 0.5)
            radii = rng.uniform(6.0, 20.0) * rng.uniform(0.75, 1.25, size=3)
            params.update(centre=centre.tolist(), radii_mm=radii.tolist(), hu=float(rng.uniform(55, 85)))
        else:
            anchor = _pick(rng, pts, (pts[:, 2] > 85) & (lateral > 35))
            params.update(
                centre=anchor.tolist(),
                radius_mm=float(rng.uniform(45, 75)),
                thickness_mm=float(rng.uniform(5, 14)),
                hu=float(rng.uniform(52, 80)),
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
    return Pathology(variant=variant, params=params)
