# SPDX-License-Identifier: Apache-2.0
"""Jaw, mouth and airway of the head-CT phantoms (painted by :mod:`bundle.data.phantom_anatomy`).

All shapes are in template mm (see :mod:`bundle.data.phantom_template`), painted as anti-aliased signed-distance
shapes into one chunk of the head (the ``_Chunk`` of :mod:`bundle.data.phantom_anatomy`, duck-typed here: ``box``,
``coords``, ``paint``, ``paint_shape``, ``width``). None of them reaches the cranial cavity, so none is labelled.

- mandible body: a U-shaped arch of cortical bone around cancellous bone from the chin to the angles, where it joins
  the rami; upper alveolar process under the hard palate,
- dental arches: 16 upper and 16 lower teeth (dentine root, enamel crown, tissue ``tooth``), some missing; optional
  dental metal (crowns, fillings, implants for missing teeth, tissue ``metal``),
- tongue (muscle), oral-cavity air between the tongue and the palate (none to a lot), optional open mouth (the lower
  jaw, teeth and tongue rotate down about the condyles, the lips part),
- pharynx: naso-, oro- and hypopharynx air of random calibre (nearly collapsed to wide), larynx and trachea,
- hyoid bone,
- soft-tissue envelope parts (around the mandible and under the chin) for the body surface.
"""

from __future__ import annotations

import numpy as np

from bundle.data.phantom_fields import capsule_sdf, coverage, ellipsoid_sdf

__all__ = ["NUM_TEETH", "oral_envelope", "paint_oral"]

#: Teeth per phantom: 16 upper (indices 0-15) then 16 lower (16-31), each arch right side first, incisor to molar.
NUM_TEETH = 32

_MID = 105.0
_AIR_HU = -1000.0
#: Occlusal plane (template z) of the closed mouth.
_OCCLUSAL_Z = -10.0
#: Upper dental arch, right half: (x offset from the midline, y) from the midline to behind the last molar.
_UPPER_ARCH = ((0.0, 183.0), (12.0, 179.0), (21.0, 170.0), (27.0, 157.0), (30.0, 144.0), (32.0, 132.0), (33.0, 124.0))
#: Mandible body, right half: (x offset, y, z of the alveolar crest, z of the lower border, half thickness).
_MANDIBLE = (
    (0.0, 181.0, -17.0, -47.0, 7.0),
    (13.0, 176.0, -17.0, -46.0, 6.0),
    (23.0, 165.0, -17.0, -44.0, 5.5),
    (30.0, 150.0, -17.0, -41.0, 5.5),
    (35.0, 135.0, -17.0, -38.0, 5.5),
    (41.0, 122.0, -17.0, -35.0, 5.0),
    (47.0, 110.0, -8.0, -32.0, 4.5),
)
#: Mesiodistal widths (mm) of the teeth of one quadrant, central incisor to third molar.
_UPPER_WIDTHS = (8.5, 6.5, 7.5, 7.0, 7.0, 10.0, 9.5, 9.0)
_LOWER_WIDTHS = (5.5, 6.0, 7.0, 7.0, 7.5, 11.0, 10.5, 10.0)
#: Air column of the pharynx, larynx and trachea: (point, radius at calibre 1, collapsible).
_AIRWAY = (
    ((105.0, 122.0, 14.0), 7.0, True),
    ((105.0, 117.0, -22.0), 7.5, True),
    ((105.0, 123.0, -50.0), 6.5, True),
    ((105.0, 132.0, -75.0), 6.0, False),
    ((105.0, 135.0, -200.0), 8.0, False),
)


def _jaw_drop(y: np.ndarray, open_mm: float) -> np.ndarray:
    """Downward shift (mm) of the lower jaw at ``y`` for a mouth opened by ``open_mm`` at the incisors.

    The mandible rotates about the condyles (y ~ 105), so the shift grows from the angle towards the chin.
    """
    return np.float32(open_mm) * np.clip((np.asarray(y, np.float32) - np.float32(110.0)) / np.float32(72.0), 0.0, 1.0)


def _arch_points(arch, widths) -> list[tuple[float, float, float, float]]:
    """Centres of the teeth of one quadrant on the polyline ``arch``: (x offset, y, tangent x, tangent y)."""
    pts = np.asarray([a[:2] for a in arch], dtype=np.float64)
    seg = np.diff(pts, axis=0)
    lengths = np.sqrt((seg**2).sum(1))
    cum = np.concatenate([[0.0], np.cumsum(lengths)])
    out = []
    pos = 0.0
    for width in widths:
        s = pos + width / 2.0
        pos += width
        i = int(min(np.searchsorted(cum, s, side="right") - 1, len(seg) - 1))
        t = (s - cum[i]) / lengths[i]
        p = pts[i] + t * seg[i]
        out.append((float(p[0]), float(p[1]), float(seg[i][0] / lengths[i]), float(seg[i][1] / lengths[i])))
    return out


def _teeth() -> list[tuple[tuple[float, float, float], tuple[float, float, float], float, bool]]:
    """All 32 teeth: (crown tip, root apex, crown radius, upper) in closed-mouth template mm."""
    teeth = []
    for upper, arch, widths in ((True, _UPPER_ARCH, _UPPER_WIDTHS), (False, _MANDIBLE, _LOWER_WIDTHS)):
        quadrant = _arch_points(arch, widths)
        for side in (1.0, -1.0):
            for k, (dx, y, _, _) in enumerate(quadrant):
                x = _MID + side * dx
                tip_z = _OCCLUSAL_Z + (0.5 if upper else -0.5)
                root = (10.0 if upper else -13.0) + (3.0 if k == 2 else 0.0) * (1 if upper else -1)
                crown_r = 0.46 * widths[k]
                inward = 0.0 if upper else -1.5  # lower teeth sit slightly lingual to the upper ones
                teeth.append(((x, y + inward, tip_z), (x, y + inward, tip_z + root), crown_r, upper))
    return teeth


_TEETH = _teeth()


def _lower(b, sl, open_mm: float):
    """Template coordinates of the box ``sl`` in the frame of the closed lower jaw."""
    x, y, z = b.coords(sl)
    return x, y, z + _jaw_drop(y, open_mm) if open_mm > 0 else z


def _mandible_segments():
    for side in (1.0, -1.0):
        for a, c in zip(_MANDIBLE[:-1], _MANDIBLE[1:], strict=True):
            yield side, a, c


def _mandible_sdf(x, y, z, side, a, c) -> np.ndarray:
    """SDF of one mandible segment: a slab around the in-plane segment a-c, its height interpolated along it."""
    ax, ay = _MID + side * a[0], a[1]
    dx, dy = side * (c[0] - a[0]), c[1] - a[1]
    px, py = x - np.float32(ax), y - np.float32(ay)
    t = np.clip((px * np.float32(dx) + py * np.float32(dy)) / np.float32(dx * dx + dy * dy), 0.0, 1.0)
    d2 = np.sqrt((px - t * np.float32(dx)) ** 2 + (py - t * np.float32(dy)) ** 2)
    top = np.float32(a[2]) + t * np.float32(c[2] - a[2])
    bottom = np.float32(a[3]) + t * np.float32(c[3] - a[3])
    half = np.float32(a[4]) + t * np.float32(c[4] - a[4])
    return np.maximum(d2 - half, np.abs(z - (top + bottom) * 0.5) - (top - bottom) * 0.5)


def _segment_box(side, a, c, pad: float, open_mm: float):
    xs = (_MID + side * a[0], _MID + side * c[0])
    lo = (min(xs) - a[4] - pad, min(a[1], c[1]) - a[4] - pad, min(a[3], c[3]) - pad - open_mm)
    hi = (max(xs) + a[4] + pad, max(a[1], c[1]) + a[4] + pad, max(a[2], c[2]) + pad)
    return lo, hi


def oral_envelope(b, p) -> list[tuple[tuple[slice, slice, slice], np.ndarray, float]]:
    """Soft-tissue envelope parts of the lower face: the mandible wrapped in soft tissue and the floor of the mouth.

    Args:
        b: the chunk being painted.
        p: the phantom's ``AnatomyParams``.

    Returns:
        ``(slices, sdf, blend mm)`` for each part that meets the chunk, to be smoothly united with the body SDF.
    """
    out = []
    soft = 9.0
    for side, a, c in _mandible_segments():
        sl = b.box(*_segment_box(side, a, c, soft + 6.0, p.mouth_open_mm))
        if sl is not None:
            out.append((sl, _mandible_sdf(*_lower(b, sl, p.mouth_open_mm), side, a, c) - np.float32(soft), 8.0))
    centre, radii = (105.0, 142.0, -38.0), (40.0, 40.0, 20.0)  # submental and submandibular region
    sl = b.box_around(centre, np.asarray(radii) + 12.0)
    if sl is not None:
        out.append((sl, ellipsoid_sdf(*b.coords(sl), centre, radii), 12.0))
    return out


def paint_oral(b, p, cortical: np.ndarray, cancellous: np.ndarray) -> None:
    """Paint the jaw, teeth, dental metal, tongue, oral air, pharynx and hyoid into the chunk ``b``.

    Args:
        b: the chunk being painted (after the skull-base bones and the sinuses).
        p: the phantom's ``AnatomyParams``.
        cortical: cortical-bone HU on the chunk.
        cancellous: cancellous-bone HU on the chunk.
    """
    w = b.width
    open_mm = float(p.mouth_open_mm)

    # oral cavity air first, then the tongue over it: the tongue's drop sets how much air remains
    if p.oral_air > 0.0 or open_mm > 0.0:
        centre = (105.0, 150.0, -6.0 - 0.5 * open_mm)
        radii = (20.0, 27.0, 6.0 + 0.5 * open_mm)
        sl = b.box_around(centre, np.asarray(radii) + 3.0)
        if sl is not None:
            x, y, z = b.coords(sl)
            b.paint_shape(sl, np.maximum(ellipsoid_sdf(x, y, z, centre, radii), z), _AIR_HU, "sinus_air")
    tongue_c = (105.0, 147.0, -12.0 - 9.0 * float(p.oral_air))
    sl = b.box((80.0, 108.0, -50.0 - open_mm), (130.0, 186.0, 3.0))
    if sl is not None:
        x, y, z = _lower(b, sl, open_mm)
        tongue = np.minimum(
            ellipsoid_sdf(x, y, z, tongue_c, (23.0, 34.0, 12.0)),
            capsule_sdf(x, y, z, (105.0, 132.0, tongue_c[2]), (105.0, 128.0, -32.0), 12.0),  # tongue base
        )
        b.paint_shape(sl, tongue, np.float32(p.soft_hu + 3.0), "soft_tissue")
    if open_mm > 0.0 and p.lips_apart:  # air from the mouth out between the lips
        a, c = (105.0, 176.0, _OCCLUSAL_Z - 0.4 * open_mm), (105.0, 215.0, _OCCLUSAL_Z - 0.4 * open_mm)
        r = 0.3 * open_mm
        sl = b.box((80.0, 170.0, a[2] - r - 2), (130.0, 220.0, a[2] + r + 2))
        if sl is not None:
            x, y, z = b.coords(sl)
            mouth = np.maximum(capsule_sdf(x, y, z, a, c, r), np.abs(x - np.float32(_MID)) - np.float32(20.0))
            b.paint_shape(sl, mouth, _AIR_HU, "air")

    # mandible body (lower jaw frame) and upper alveolar process: all cortex first, then all cores, so the segments
    # unite without cortical walls between them
    parts = []
    for side, a, c in _mandible_segments():
        sl = b.box(*_segment_box(side, a, c, 2.0, open_mm))
        if sl is not None:
            parts.append((sl, _mandible_sdf(*_lower(b, sl, open_mm), side, a, c)))
    upper = tuple((dx, y, 6.0, -3.0, 5.0) for dx, y in _UPPER_ARCH)
    for side in (1.0, -1.0):
        for a, c in zip(upper[:-1], upper[1:], strict=True):
            sl = b.box(*_segment_box(side, a, c, 2.0, 0.0))
            if sl is not None:
                parts.append((sl, _mandible_sdf(*b.coords(sl), side, a, c)))
    for sl, sdf in parts:
        b.paint(sl, coverage(sdf, w), cortical[sl], "cortical_bone")
    for sl, sdf in parts:
        b.paint(sl, coverage(sdf + np.float32(1.8), w), cancellous[sl], "cancellous_bone")

    # teeth: dentine root and crown, enamel cap; dental metal on some
    enamel_hu = float(np.clip(p.tooth_hu + 850.0, 1500.0, 2950.0))
    for i, (tip, apex, crown_r, is_upper) in enumerate(_TEETH):
        metal = bool(p.dental_metal and p.metal_teeth[i])
        present = bool(p.teeth_present[i])
        if not present and not metal:
            continue
        drop = 0.0 if is_upper else float(_jaw_drop(np.float32(tip[1]), open_mm))
        tip_w = (tip[0], tip[1], tip[2] - drop)
        apex_w = (apex[0], apex[1], apex[2] - drop)
        lo = np.minimum(tip_w, apex_w) - crown_r - 2.0
        hi = np.maximum(tip_w, apex_w) + crown_r + 2.0
        sl = b.box(lo, hi)
        if sl is None:
            continue
        x, y, z = b.coords(sl)
        sign = np.float32(1.0 if is_upper else -1.0)
        crown_len = 7.5
        crown = (tip_w[0], tip_w[1], tip_w[2] + float(sign) * crown_len)  # cemento-enamel junction
        below_cej = coverage(sign * (z - np.float32(crown[2])), w)  # 1 on the crown side of the junction
        if present:
            tooth = capsule_sdf(x, y, z, tip_w, apex_w, (crown_r, 1.2))
            b.paint_shape(sl, tooth, np.float32(p.tooth_hu), "tooth")
            b.paint(sl, coverage(tooth, w) * below_cej, np.float32(enamel_hu), "tooth")
        if metal:
            style = float(p.metal_style[i])
            metal_hu = np.float32(np.clip(2550.0 + 500.0 * style, 2500.0, 3071.0))
            if not present:  # implant: a screw in the bone with a metal crown
                shape = np.minimum(
                    capsule_sdf(x, y, z, crown, apex_w, 2.0), capsule_sdf(x, y, z, tip_w, crown, crown_r * 0.9)
                )
            elif style < 0.5:  # crown covering the whole clinical crown
                shape = capsule_sdf(x, y, z, tip_w, crown, crown_r + 0.3)
            else:  # filling in the occlusal part of the crown
                c = (tip_w[0], tip_w[1], tip_w[2] + float(sign) * 2.0)
                shape = ellipsoid_sdf(x, y, z, c, (crown_r * 0.6, crown_r * 0.6, 2.2))
            b.paint_shape(sl, shape, metal_hu, "metal")

    # pharynx, larynx and trachea: calibre scales the collapsible part; flattened front to back
    calibre = float(p.airway)
    for (a, ra, ca), (c, rc, cc) in zip(_AIRWAY[:-1], _AIRWAY[1:], strict=True):
        r0 = ra * (calibre if ca else 1.0)
        r1 = rc * (calibre if cc else 1.0)
        lo = np.minimum(a, c) - max(r0, r1) - 3.0
        hi = np.maximum(a, c) + max(r0, r1) + 3.0
        sl = b.box(lo, hi)
        if sl is None:
            continue
        x, y, z = b.coords(sl)
        axis_y = np.float32(a[1]) + (z - np.float32(a[2])) * np.float32((c[1] - a[1]) / (c[2] - a[2]))
        flat_y = axis_y + (y - axis_y) * np.float32(1.35)
        b.paint_shape(sl, capsule_sdf(x, flat_y, z, a, c, (r0, r1)), _AIR_HU, "sinus_air")

    # hyoid: body and greater horns
    body_l, body_r = (95.0, 141.0, -42.0), (115.0, 141.0, -42.0)
    pieces = [(body_l, body_r, 3.0), (body_r, (124.0, 125.0, -39.0), 2.2), (body_l, (86.0, 125.0, -39.0), 2.2)]
    sl = b.box((80.0, 118.0, -50.0), (130.0, 148.0, -32.0))
    if sl is not None:
        x, y, z = b.coords(sl)
        hyoid = np.minimum.reduce([capsule_sdf(x, y, z, a, c, r) for a, c, r in pieces])
        b.paint(sl, coverage(hyoid, w), cortical[sl], "cortical_bone")
        b.paint(sl, coverage(hyoid + np.float32(1.0), w), cancellous[sl], "cancellous_bone")
