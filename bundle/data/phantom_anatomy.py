# SPDX-License-Identifier: Apache-2.0
"""Head anatomy of the phantoms: tissues painted around the real average brain CT on a world-aligned grid.

Every grid voxel is mapped into the template frame (:mod:`bundle.data.phantom_template`) through the head pose
(rotation, per-axis head scaling, position) and a smooth random displacement. The cranial cavity and the brain HU come
from the template; everything else is built from the cavity's signed distance ``D`` and from simple shapes placed
at template landmarks:

- skull vault: inner table ``0 <= D < t_i``, diploe, outer table up to a spatially varying thickness ``T`` (thin over
  the temporal squama and the floors of the cranial fossae, thick at the occiput and the frontal sinus),
- skull base: sphenoid body and clivus, dense petrous ridges, mastoid processes with air cells, occipital condyles,
  a foramen magnum opening into the spinal canal (cerebrospinal fluid and cord),
- face: orbits (fat cone, bony walls, extraocular muscles, optic nerve, globe with vitreous and lens), frontal,
  ethmoid, sphenoid and maxillary sinuses, nasal cavity with septum and turbinates, nasopharynx, zygomatic arches,
  mandible, hard palate, nose and ears,
- neck with the cervical spine (C1 ring, dens, C2-T1 bodies, discs),
- scalp and face soft tissue with a subcutaneous fat layer, temporalis muscles,
- a head holder (plastic shell and foam pad) under the occiput, in world coordinates,
- air (-1000 HU) elsewhere.

- jaw and mouth (:mod:`bundle.data.phantom_oral`): mandible body, dental arches with teeth and optional dental
  metal, tongue, oral-cavity air, open mouth, pharynx and trachea air of random calibre, hyoid,
- sinus fluid or mucosa in the paranasal sinuses and mastoid cells, shoulders and upper chest low in the neck,
- brain atrophy (CSF under the inner table, wider sulci, larger ventricles; all inside the cavity, label unchanged).

Patient factors of :class:`AnatomyParams` (drawn by :func:`draw_anatomy_params`; force any of them with
``make_phantom(seed, anatomy={name: value})``):

- ``scale``: per-axis head scale; isotropic part 10% children U(0.82, 0.90), 10% large U(1.09, 1.13) (a cavity
  up to about 1950 mL, the top of the adult range), else U(0.92, 1.09) (``make_phantom(head_scale=...)`` sets it),
- ``atrophy`` in [0, 1] (0 for 30%, else Beta(1.2, 3.5)),
- ``teeth_present`` (32 booleans, upper then lower; sometimes edentulous), ``tooth_hu`` (dentine HU),
- ``dental_metal`` (True with probability 0.4), ``metal_teeth`` (32 booleans, 1-8 True), ``metal_style`` (32 values
  in [0, 1): crown below 0.5, filling above; an implant where the tooth is missing),
- ``oral_air`` in [0, 1] (0: tongue against the palate), ``mouth_open_mm`` (0 for 85%, else U(5, 25) at the
  incisors), ``lips_apart``, ``airway`` (pharynx calibre, 0.15-0.4 nearly collapsed for 15%, else 0.5-1.3),
- ``sinus_fluid`` in [0, 1] (0 for 55%): each sinus of :data:`SINUS_NAMES` fills from its ``sinus_thresholds``
  value up to full at 1; ``sinus_level`` picks a fluid level (supine: posterior) or mucosal thickening per sinus,
- ``mastoid`` (pneumatisation: 0.15 sclerotic for 10%, else U(0.4, 1.35)), ``temporalis_mm`` U(3, 18),
- ``shoulder_width_mm`` (midline to humeral head, U(150, 190)), ``shoulder_drop_mm`` (foramen magnum to humeral
  heads, U(120, 160)).

Shapes are painted back to front with anti-aliased coverage (partial volume at every edge). The cranial cavity is
painted last, with coverage ``F = coverage(D) * above(foramen magnum plane)``; ``F`` is also the label's source
(see :mod:`bundle.data.phantoms`). Pathology and post-operative variants are applied by
:mod:`bundle.data.phantom_pathology` through the hooks of :func:`compose_head`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace

import numpy as np

from bundle.data.phantom_acquisition import CoarseGrid
from bundle.data.phantom_fields import (
    SmoothField,
    band,
    capsule_sdf,
    cone_sdf,
    coverage,
    ellipsoid_sdf,
    gaussian_bump,
    mirror_x,
    septa_distance,
    smooth_min,
)
from bundle.data.phantom_oral import NUM_TEETH, oral_envelope, paint_oral
from bundle.data.phantom_template import CSF_HU, LANDMARKS, Template

__all__ = [
    "AIR_HU",
    "TISSUES",
    "TISSUE_HU_RANGES",
    "AnatomyParams",
    "Composition",
    "HeadPose",
    "SINUS_NAMES",
    "compose_head",
    "draw_anatomy_params",
    "override_anatomy",
]

#: HU of air.
AIR_HU = -1000.0

#: Tissue codes of the composition's ``tissue`` map (the code painted with coverage >= 0.5 last wins).
TISSUES: dict[str, int] = {
    "air": 0,
    "cavity": 1,  # brain and cerebrospinal fluid inside the cranial cavity (label 1)
    "haemorrhage": 2,  # intracranial blood (label 1)
    "infarct": 3,  # hypodense ischaemic brain (label 1)
    "cortical_bone": 4,
    "diploe": 5,
    "cancellous_bone": 6,
    "soft_tissue": 7,
    "fat": 8,
    "vitreous": 9,
    "lens": 10,
    "sinus_air": 11,
    "spinal_csf": 12,
    "spinal_cord": 13,
    "disc": 14,
    "headrest_shell": 15,
    "headrest_foam": 16,
    "herniated_brain": 17,  # brain bulging through a craniectomy, outside the cavity (label 0)
    "metal": 18,  # dental work, shunt valves, plates (label 0); aneurysm clips inside the cavity (label 1)
    "tooth": 19,  # enamel and dentine (label 0)
    "intracranial_air": 20,  # post-operative air inside the cavity (label 1)
    "catheter": 21,  # shunt catheter; its intracranial part is label 1 (it lies inside the cavity)
    "hygroma": 22,  # subdural CSF-like collection inside the inner table (label 1)
    "sinus_fluid": 23,  # mucosa or fluid in a paranasal sinus or mastoid (label 0)
}

#: HU range of each tissue where it is not mixed with a neighbour by partial volume (before noise).
TISSUE_HU_RANGES: dict[str, tuple[float, float]] = {
    "air": (-1000.0, -1000.0),
    "cavity": (0.0, 90.0),
    "haemorrhage": (50.0, 90.0),
    "infarct": (15.0, 25.0),
    "cortical_bone": (1000.0, 1900.0),
    "diploe": (300.0, 700.0),
    "cancellous_bone": (150.0, 450.0),
    "soft_tissue": (20.0, 70.0),
    "fat": (-120.0, -80.0),
    "vitreous": (0.0, 20.0),
    "lens": (80.0, 130.0),
    "sinus_air": (-1000.0, -1000.0),
    "spinal_csf": (0.0, 15.0),
    "spinal_cord": (25.0, 40.0),
    "disc": (60.0, 110.0),
    "headrest_shell": (100.0, 450.0),
    "headrest_foam": (-950.0, -750.0),
    "herniated_brain": (20.0, 40.0),
    "metal": (2500.0, 3071.0),
    "tooth": (1500.0, 3000.0),
    "intracranial_air": (-1000.0, -900.0),
    "catheter": (60.0, 400.0),
    "hygroma": (0.0, 15.0),
    "sinus_fluid": (10.0, 60.0),
}

_MID = LANDMARKS["midline_x"][0]

#: Air spaces that may hold fluid or mucosa (the order of ``sinus_thresholds`` and ``sinus_level``).
SINUS_NAMES = ("frontal", "sphenoid", "maxillary_right", "maxillary_left", "ethmoid", "mastoid_right", "mastoid_left")


def _u(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(rng.uniform(lo, hi))


@dataclass
class AnatomyParams:
    """Random anatomy and intensity parameters of one phantom (see :func:`draw_anatomy_params`)."""

    scale: np.ndarray
    rotation_deg: np.ndarray
    centre_world: np.ndarray
    deformation_mm: float
    skull_mm: float
    skull_variation: float
    inner_table_mm: float
    outer_table_mm: float
    scalp_mm: float
    skin_mm: float
    fat_mm: float
    temporalis_mm: float
    cortical_hu: float
    petrous_hu: float
    diploe_hu: float
    cancellous_hu: float
    soft_hu: float
    fat_hu: float
    vitreous_hu: float
    lens_hu: float
    spinal_csf_hu: float
    cord_hu: float
    disc_hu: float
    globe_mm: float
    frontal_sinus: float
    sphenoid_sinus: float
    maxillary_sinus: float
    mastoid: float
    cell_mm: float
    cell_phase: np.ndarray
    sulci: float
    headrest: bool
    headrest_radius_mm: float
    headrest_pad_mm: float
    headrest_shell_mm: float
    headrest_shell_hu: float
    headrest_foam_hu: float
    atrophy: float
    tooth_hu: float
    teeth_present: np.ndarray
    dental_metal: bool
    metal_teeth: np.ndarray
    metal_style: np.ndarray
    oral_air: float
    mouth_open_mm: float
    lips_apart: bool
    airway: float
    sinus_fluid: float
    sinus_thresholds: np.ndarray
    sinus_level: np.ndarray
    shoulder_width_mm: float
    shoulder_drop_mm: float
    extra: dict = field(default_factory=dict)

    def summary(self) -> dict:
        """JSON-friendly summary of the main parameters."""
        return {
            "head_scale": [round(float(v), 4) for v in self.scale],
            "head_rotation_deg": [round(float(v), 2) for v in self.rotation_deg],
            "skull_thickness_mm": round(self.skull_mm, 2),
            "headrest": self.headrest,
            "frontal_sinus": round(self.frontal_sinus, 3),
            "atrophy": round(float(self.atrophy), 3),
            "dental_metal": bool(self.dental_metal),
            "oral_air": round(float(self.oral_air), 3),
            "mouth_open_mm": round(float(self.mouth_open_mm), 2),
            "airway": round(float(self.airway), 3),
            "sinus_fluid": round(float(self.sinus_fluid), 3),
        }


def draw_anatomy_params(rng: np.random.Generator, head_scale: float | None = None) -> AnatomyParams:
    """Draw the anatomy parameters of one phantom.

    Args:
        rng: random generator (consumed in a fixed order).
        head_scale: isotropic head scale (default None: drawn; 10% children in U(0.82, 0.90), 10% large heads in
            U(1.09, 1.13), else U(0.92, 1.09); the template cavity is about 1347 mL at scale 1).

    Returns:
        The :class:`AnatomyParams`.

    Example:
        >>> p = draw_anatomy_params(np.random.default_rng(0))
        >>> bool(0.78 < p.scale.mean() < 1.22)
        True
    """
    kind, u = rng.random(), rng.random()
    iso = 0.82 + 0.08 * u if kind < 0.1 else (1.09 + 0.04 * u if kind < 0.2 else 0.92 + 0.17 * u)
    if head_scale is not None:
        iso = float(head_scale)
    scale = iso * rng.uniform(0.97, 1.03, size=3)
    rotation = np.array([_u(rng, -12, 12), _u(rng, -4, 4), _u(rng, -5, 5)])
    centre = np.array([_u(rng, -6, 6), _u(rng, -12, 0), _u(rng, 40, 120)])
    return AnatomyParams(
        scale=scale,
        rotation_deg=rotation,
        centre_world=centre,
        deformation_mm=_u(rng, 1.5, 3.5),
        skull_mm=_u(rng, 5.5, 7.5),
        skull_variation=_u(rng, 0.1, 0.25),
        inner_table_mm=_u(rng, 1.2, 2.0),
        outer_table_mm=_u(rng, 1.5, 2.5),
        scalp_mm=_u(rng, 5.0, 8.0),
        skin_mm=_u(rng, 1.5, 2.5),
        fat_mm=_u(rng, 2.5, 5.0),
        temporalis_mm=_u(rng, 3.0, 18.0),
        cortical_hu=_u(rng, 1350, 1700),
        petrous_hu=_u(rng, 1600, 1850),
        diploe_hu=_u(rng, 400, 600),
        cancellous_hu=_u(rng, 230, 370),
        soft_hu=_u(rng, 38, 52),
        fat_hu=_u(rng, -110, -90),
        vitreous_hu=_u(rng, 5, 15),
        lens_hu=_u(rng, 90, 120),
        spinal_csf_hu=_u(rng, 4, 11),
        cord_hu=_u(rng, 29, 37),
        disc_hu=_u(rng, 70, 100),
        globe_mm=_u(rng, 11.5, 12.5),
        frontal_sinus=0.0 if rng.random() < 0.12 else _u(rng, 0.6, 1.3),
        sphenoid_sinus=_u(rng, 0.8, 1.2),
        maxillary_sinus=_u(rng, 0.85, 1.15),
        mastoid=0.15 if rng.random() < 0.1 else _u(rng, 0.4, 1.35),  # 0.15: sclerotic
        cell_mm=_u(rng, 3.5, 6.0),
        cell_phase=rng.uniform(0, 6, size=3),
        sulci=_u(rng, 0.6, 1.0),
        headrest=bool(rng.random() < 0.9),
        headrest_radius_mm=_u(rng, 95, 115),
        headrest_pad_mm=_u(rng, 5, 18),
        headrest_shell_mm=_u(rng, 2.0, 4.0),
        headrest_shell_hu=_u(rng, 150, 400),
        headrest_foam_hu=_u(rng, -920, -780),
        atrophy=0.0 if rng.random() < 0.3 else float(rng.beta(1.2, 3.5)),
        tooth_hu=_u(rng, 1600, 2050),
        teeth_present=rng.random(NUM_TEETH) >= (1.0 if rng.random() < 0.05 else _u(rng, 0.0, 0.25)),
        dental_metal=bool(rng.random() < 0.4),
        metal_teeth=_metal_teeth(rng),
        metal_style=rng.random(NUM_TEETH),
        oral_air=0.0 if rng.random() < 0.25 else float(rng.random() ** 1.5),
        mouth_open_mm=0.0 if rng.random() < 0.85 else _u(rng, 5.0, 25.0),
        lips_apart=bool(rng.random() < 0.7),
        airway=_u(rng, 0.15, 0.4) if rng.random() < 0.15 else _u(rng, 0.5, 1.3),
        sinus_fluid=0.0 if rng.random() < 0.55 else _u(rng, 0.1, 1.0),
        sinus_thresholds=rng.uniform(0.0, 0.9, size=len(SINUS_NAMES)),
        sinus_level=rng.random(len(SINUS_NAMES)) < 0.5,
        shoulder_width_mm=_u(rng, 150.0, 190.0),
        shoulder_drop_mm=_u(rng, 120.0, 160.0),
    )


def _metal_teeth(rng: np.random.Generator) -> np.ndarray:
    """A random set of 1-8 teeth carrying metal (used when ``dental_metal`` is on)."""
    out = np.zeros(NUM_TEETH, dtype=bool)
    out[rng.choice(NUM_TEETH, size=int(rng.integers(1, 9)), replace=False)] = True
    return out


def override_anatomy(params: AnatomyParams, overrides: Mapping[str, object] | None) -> AnatomyParams:
    """``params`` with the named fields replaced (a forced factor), the other draws unchanged.

    Args:
        params: drawn parameters.
        overrides: field name -> value (None or empty: ``params`` unchanged).

    Returns:
        A new :class:`AnatomyParams` (or ``params`` itself when there is nothing to override).

    Raises:
        ValueError: if a name is not a field of :class:`AnatomyParams`.

    Example:
        >>> p = draw_anatomy_params(np.random.default_rng(0))
        >>> override_anatomy(p, {"sulci": 1.0}).sulci
        1.0
    """
    if not overrides:
        return params
    names = {f.name for f in fields(AnatomyParams)}
    unknown = sorted(set(overrides) - names)
    if unknown:
        raise ValueError(f"unknown anatomy parameters {unknown}; known: {sorted(names)}.")
    return replace(params, **overrides)


def _rotation(deg: np.ndarray) -> np.ndarray:
    ax, ay, az = np.deg2rad(deg)
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx


@dataclass(frozen=True)
class HeadPose:
    """World <-> template mapping without the smooth displacement: ``world = centre + R S (t - t_centre)``."""

    rotation: np.ndarray
    scale: np.ndarray
    centre_world: np.ndarray
    centre_template: np.ndarray

    @classmethod
    def from_params(cls, params: AnatomyParams) -> HeadPose:
        """The pose of ``params``."""
        return cls(
            rotation=_rotation(params.rotation_deg),
            scale=np.asarray(params.scale, dtype=np.float64),
            centre_world=np.asarray(params.centre_world, dtype=np.float64),
            centre_template=np.asarray(LANDMARKS["head_centre"], dtype=np.float64),
        )

    @property
    def forward(self) -> np.ndarray:
        """3x3 linear part template -> world."""
        return self.rotation @ np.diag(self.scale)

    @property
    def inverse(self) -> np.ndarray:
        """3x3 linear part world -> template."""
        return np.diag(1.0 / self.scale) @ self.rotation.T

    def to_world(self, points: np.ndarray) -> np.ndarray:
        """Map (N, 3) template points to world (displacement ignored)."""
        return (np.asarray(points, dtype=np.float64) - self.centre_template) @ self.forward.T + self.centre_world

    def normal_to_world(self, normal_template: np.ndarray) -> np.ndarray:
        """Map a plane normal from template to world (unit length)."""
        n = self.inverse.T @ np.asarray(normal_template, dtype=np.float64)
        return n / np.linalg.norm(n)


@dataclass
class Composition:
    """Result of :func:`compose_head` on the coarse grid.

    Attributes:
        hu: float32 noise-free HU.
        cavity: float32 cranial-cavity coverage in [0, 1] (the label's source).
        tissue: uint8 tissue codes (:data:`TISSUES`).
        mixed: with ``track_mixed``, True where any painted coverage was strictly between 0 and 1 (partial volume).
        foramen_magnum: world point and unit normal (oriented superior) of the foramen magnum plane.
        template_coords: the (3, X, Y, Z) template coordinates of each voxel (kept for pathology hooks).
    """

    hu: np.ndarray
    cavity: np.ndarray
    tissue: np.ndarray
    mixed: np.ndarray | None
    foramen_magnum: tuple[np.ndarray, np.ndarray]


#: Template box (mm) holding every painted structure of the head, neck included; outside it there is only air.
_HEAD_BOX = ((5.0, -30.0, -160.0), (205.0, 222.0, 205.0))
#: Coverage strictly between this and 1 - this marks a voxel as a partial-volume mix of tissues.
_MIXED = 0.004
#: Voxels per chunk: composition runs slab by slab so that its many elementwise passes stay in cache.
_CHUNK_VOXELS = 600_000


class _Head:
    """Per-phantom state shared by all chunks: the pose, the head-box grid, smooth fields and the template samples.

    The template coordinates and the cavity distance are sampled on a grid of twice the spacing and interpolated
    trilinearly per chunk (both are smooth); the atlas HU is sampled at full resolution near the cavity.
    """

    def __init__(self, grid: CoarseGrid, template: Template, params: AnatomyParams, rng: np.random.Generator):
        import torch

        self.params = params
        self.template = template
        self.track_mixed = False
        self.pose = HeadPose.from_params(params)
        self.width = grid.mean_spacing / float(np.mean(params.scale))  # one voxel in template mm
        self.max_disp = 4.0 * params.deformation_mm
        self.full_grid = grid
        self.grid = grid
        region = self.box(*_HEAD_BOX) or tuple(slice(0, 1) for _ in range(3))
        self.region = region
        origin = grid.origin + grid.spacing * np.array([r.start for r in region], dtype=np.float64)
        shape = tuple(r.stop - r.start for r in region)
        self.grid = CoarseGrid(origin=origin, spacing=grid.spacing, shape=shape)

        half_shape = tuple((n + 2) // 2 for n in shape)  # fine index 2 i, up to 2 (h - 1) >= n - 1
        half = CoarseGrid(origin=origin, spacing=2.0 * grid.spacing, shape=half_shape)
        # random fields anchored in world space around the head, so the head does not depend on the acquisition
        corners = np.array(np.meshgrid(*zip(*_HEAD_BOX, strict=True), indexing="ij")).reshape(3, -1).T
        world = self.pose.to_world(corners)
        lo_w, hi_w = world.min(0) - 10.0, world.max(0) + 10.0
        self.displacement = SmoothField(rng, lo_w, hi_w, 45.0, channels=3)
        self.inverse = self.pose.inverse.astype(np.float32)
        coarse = torch.empty((4,) + half_shape, dtype=torch.float32)
        coords = self._template_coords(half, self.displacement(*(half.axis(d) for d in range(3))))
        for d in range(3):
            coarse[d] = torch.from_numpy(coords[d])
        coarse[3] = _sample_template(template, coords, 1)
        self.half = coarse[3:4]  # cavity distance on the half grid
        near = np.argwhere((coarse[3] < 2.0 * half.spacing.max()).numpy())
        if near.size:
            lo = np.maximum(2 * near.min(0) - 2, 0)
            hi = np.minimum(2 * near.max(0) + 3, shape)
            self.atlas_box = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi, strict=True))
        else:
            self.atlas_box = None
        fine = 1.5 * grid.mean_spacing
        self.noise = SmoothField(rng, lo_w, hi_w, 35.0, channels=2)
        self.texture = SmoothField(rng, lo_w, hi_w, max(5.0, fine))
        self.cells = SmoothField(rng, lo_w, hi_w, max(params.cell_mm, fine), channels=3)
        self.wobble = SmoothField(rng, lo_w, hi_w, max(8.0, fine))
        self.sulci = SmoothField(rng, lo_w, hi_w, max(7.0, fine))

    def _template_coords(self, grid: CoarseGrid, disp: np.ndarray) -> list[np.ndarray]:
        """Template coordinates of the voxels of ``grid``: the inverse pose plus the displacement ``disp``."""
        inv = self.inverse
        ax = [grid.axis(d).astype(np.float32) - np.float32(self.pose.centre_world[d]) for d in range(3)]
        out = []
        for d in range(3):
            c = disp[d] * np.float32(self.params.deformation_mm)
            c += (inv[d, 0] * ax[0])[:, None, None]
            c += (inv[d, 1] * ax[1])[None, :, None]
            c += (inv[d, 2] * ax[2] + np.float32(self.pose.centre_template[d]))[None, None, :]
            out.append(c)
        return out

    def box(self, lo, hi) -> tuple[slice, slice, slice] | None:
        """Grid slices covering the template box [lo, hi] (with the displacement and two voxels of margin)."""
        lo = np.asarray(lo, dtype=np.float64)
        hi = np.asarray(hi, dtype=np.float64)
        corners = np.array(
            [[(lo, hi)[a][0], (lo, hi)[b][1], (lo, hi)[c][2]] for a in (0, 1) for b in (0, 1) for c in (0, 1)]
        )
        world = self.pose.to_world(corners)
        margin = self.max_disp * float(np.max(self.params.scale)) + 2 * float(self.grid.spacing.max())
        wlo = world.min(0) - margin
        whi = world.max(0) + margin
        sl = []
        for d in range(3):
            i0 = int(np.floor((wlo[d] - self.grid.origin[d]) / self.grid.spacing[d]))
            i1 = int(np.ceil((whi[d] - self.grid.origin[d]) / self.grid.spacing[d])) + 1
            i0, i1 = max(i0, 0), min(i1, self.grid.shape[d])
            if i1 <= i0:
                return None
            sl.append(slice(i0, i1))
        return tuple(sl)

    def chunks(self):
        """Yield the :class:`_Chunk` slabs of the head box, inferior to superior."""
        nx, ny, nz = self.grid.shape
        step = max(2, 2 * (_CHUNK_VOXELS // max(1, nx * ny) // 2))
        for z0 in range(0, nz, step):
            yield _Chunk(self, z0, min(nz, z0 + step))


def _sample_template(template: Template, coords, channel: int):
    """Trilinear samples of one template channel at template coordinates (3 arrays; clamped at the border)."""
    import torch

    norm = []
    for d in (2, 1, 0):  # input (C, X, Y, Z) is (C, D, H, W): the grid lists normalised (z, y, x)
        scale = np.float32(2.0 / (template.spacing * (template.shape[d] - 1)))
        offset = np.float32(template.origin[d] * scale + 1.0)
        norm.append(np.asarray(coords[d], dtype=np.float32) * scale - offset)
    grid_t = torch.from_numpy(np.stack(norm, axis=-1))[None]
    fields = torch.from_numpy(template.fields[channel : channel + 1])[None]
    return torch.nn.functional.grid_sample(fields, grid_t, mode="bilinear", padding_mode="border", align_corners=True)[
        0, 0
    ]


class _Chunk:
    """A slab ``[z0, z1)`` of the head box: template coordinates, cavity distance, atlas HU and the canvas."""

    def __init__(self, head: _Head, z0: int, z1: int):
        import torch.nn.functional as F

        self.head = head
        self.params = head.params
        self.pose = head.pose
        self.width = head.width
        self.z0, self.z1 = z0, z1
        nx, ny, _ = head.grid.shape
        self.shape = (nx, ny, z1 - z0)
        origin = head.grid.origin + np.array([0.0, 0.0, z0 * head.grid.spacing[2]])
        self.grid = CoarseGrid(origin=origin, spacing=head.grid.spacing, shape=self.shape)
        h0, h1 = z0 // 2, (z1 - 1) // 2 + 1  # half-grid planes covering fine planes [2 h0, 2 h1]
        slab = head.half[:, :, :, h0 : h1 + 1]
        size = (2 * head.half.shape[1] - 1, 2 * head.half.shape[2] - 1, 2 * (h1 - h0) + 1)
        fine = F.interpolate(slab[None], size=size, mode="trilinear", align_corners=True)[0, 0]
        self.dist = np.ascontiguousarray(fine[:nx, :ny, z0 - 2 * h0 : z1 - 2 * h0].numpy())
        del fine
        disp = head.displacement(*(self.grid.axis(d) for d in range(3)))
        self.tx, self.ty, self.tz = head._template_coords(self.grid, disp)
        self.atlas = np.zeros(self.shape, dtype=np.float32)
        box = head.atlas_box
        if box is not None and box[2].start < z1 and box[2].stop > z0:
            zb = slice(max(box[2].start, z0) - z0, min(box[2].stop, z1) - z0)
            local = (box[0], box[1], zb)
            self.atlas[local] = _sample_template(
                head.template, [c[local] for c in (self.tx, self.ty, self.tz)], 0
            ).numpy()
        self.hu = np.full(self.shape, AIR_HU, dtype=np.float32)
        self.tissue = np.zeros(self.shape, dtype=np.uint8)
        self.inside: np.ndarray | None = None  # skin coverage, set once the body is painted
        self.mixed = np.zeros(self.shape, dtype=bool) if head.track_mixed else None
        self.noise = self.field(head.noise)
        self.texture = self.field(head.texture)[0]

    def field(self, field: SmoothField, sl=None) -> np.ndarray:
        """A head-wide smooth field on the chunk (or on the chunk-local box ``sl``)."""
        sl = sl or (slice(None), slice(None), slice(None))
        return field(*(self.grid.axis(d)[sl[d]] for d in range(3)))

    # -- regions -------------------------------------------------------------------------------------------------
    def box(self, lo, hi) -> tuple[slice, slice, slice] | None:
        """Chunk-local slices covering the template box [lo, hi], or None when it misses the chunk."""
        sl = self.head.box(lo, hi)
        if sl is None:
            return None
        z0, z1 = max(sl[2].start, self.z0), min(sl[2].stop, self.z1)
        if z1 <= z0:
            return None
        return sl[0], sl[1], slice(z0 - self.z0, z1 - self.z0)

    def box_around(self, centre, radius) -> tuple[slice, slice, slice] | None:
        r = np.broadcast_to(np.asarray(radius, dtype=np.float64), (3,))
        return self.box(np.asarray(centre) - r, np.asarray(centre) + r)

    def coords(self, sl):
        return self.tx[sl], self.ty[sl], self.tz[sl]

    # -- painting ------------------------------------------------------------------------------------------------
    def paint(self, sl, alpha: np.ndarray, value, tissue: str) -> None:
        """Blend ``value`` over the canvas with coverage ``alpha`` and set the tissue code where ``alpha >= 0.5``."""
        hu = self.hu[sl]
        hu += alpha * (np.asarray(value, dtype=np.float32) - hu)
        mask = alpha >= 0.5
        if mask.shape != hu.shape:
            mask = np.broadcast_to(mask, hu.shape)
        self.tissue[sl][mask] = TISSUES[tissue]
        if self.mixed is not None:
            part = (alpha > _MIXED) & (alpha < 1.0 - _MIXED)
            self.mixed[sl] |= np.broadcast_to(part, hu.shape)

    def paint_shape(self, sl, sdf: np.ndarray, value, tissue: str, keep_cavity_wall: float | None = None) -> None:
        alpha = coverage(sdf, self.width)
        if keep_cavity_wall is not None:
            alpha *= coverage(np.float32(keep_cavity_wall) - self.dist[sl], self.width)
        self.paint(sl, alpha, value, tissue)

    def paint_bone(self, sl, sdf: np.ndarray, cortex_mm: float, cortex_hu, inner_hu, inner: str) -> None:
        """A bone with a cortical shell ``cortex_mm`` thick around a cancellous/diploic core."""
        self.paint(sl, coverage(sdf, self.width), cortex_hu, "cortical_bone")
        self.paint(sl, coverage(sdf + np.float32(cortex_mm), self.width), inner_hu, inner)


def _both_sides(point) -> list[tuple[float, float, float]]:
    return [tuple(float(v) for v in point), mirror_x(point, _MID)]


def compose_head(
    grid: CoarseGrid,
    template: Template,
    params: AnatomyParams,
    rng: np.random.Generator,
    pathology=None,
    track_mixed: bool = False,
) -> Composition:
    """Paint one head on ``grid``.

    Args:
        grid: the world-aligned coarse grid.
        template: template fields at a resolution close to ``grid.spacing``.
        params: anatomy parameters from :func:`draw_anatomy_params`.
        rng: random generator for the smooth fields (consumed deterministically).
        pathology: optional object with ``skull_defect(builder)``, ``after_vault(builder, thick)``,
            ``before_cavity(builder)`` and ``cavity_content(builder, content)`` hooks
            (see :mod:`bundle.data.phantom_pathology`).

    Returns:
        The :class:`Composition`.

    Example:
        >>> from bundle.data.phantom_acquisition import CoarseGrid
        >>> from bundle.data.phantom_template import get_template
        >>> g = CoarseGrid(origin=np.array([-110.0, -110.0, 0.0]), spacing=4.0, shape=(56, 56, 50))
        >>> c = compose_head(g, get_template(4.0), draw_anatomy_params(np.random.default_rng(0)),
        ...                  np.random.default_rng(1))
        >>> bool(c.cavity.max() == 1.0)
        True
    """
    head = _Head(grid, template, params, rng)
    head.track_mixed = track_mixed
    mixed = np.zeros(grid.shape, dtype=bool) if track_mixed else None
    hu = np.full(grid.shape, AIR_HU, dtype=np.float32)
    tissue = np.zeros(grid.shape, dtype=np.uint8)
    cav = np.zeros(grid.shape, dtype=np.float32)
    rx, ry, rz = head.region
    for chunk in head.chunks():
        cavity = _paint_chunk(chunk, params, pathology)
        zs = slice(rz.start + chunk.z0, rz.start + chunk.z1)
        hu[rx, ry, zs] = chunk.hu
        tissue[rx, ry, zs] = chunk.tissue
        if mixed is not None:
            mixed[rx, ry, zs] = chunk.mixed
        cav[rx, ry, zs] = cavity
    _paint_shoulders(hu, tissue, mixed, grid, head.pose, params)
    if params.headrest:
        _paint_headrest(hu, tissue, mixed, grid, head.pose, params, template)
    fm_point, fm_normal = _foramen_magnum_plane(head.pose)
    return Composition(hu=hu, cavity=cav, tissue=tissue, mixed=mixed, foramen_magnum=(fm_point, fm_normal))


def _foramen_magnum_plane(pose: HeadPose) -> tuple[np.ndarray, np.ndarray]:
    """World point and superior unit normal of the foramen magnum plane (the label's lower bound)."""
    fm = LANDMARKS["foramen_magnum"]
    return pose.to_world(np.array([fm]))[0], pose.normal_to_world(np.array([0.0, 0.0, 1.0]))


def _paint_chunk(b: _Chunk, p: AnatomyParams, pathology) -> np.ndarray:
    """Paint every structure into one chunk; return its cranial-cavity coverage."""
    grid = b.grid
    w = b.width
    full = (slice(None),) * 3
    noise = b.noise
    texture = b.texture

    # ---- skull thickness and scalp fields ----------------------------------------------------------------------
    thick = noise[0] * np.float32(p.skull_variation * p.skull_mm)
    thick += np.float32(p.skull_mm)
    scalp = np.full(grid.shape, p.scalp_mm, dtype=np.float32)
    bumps = [
        ((105.0, 18.0, 80.0), (30.0, 14.0, 25.0), 2.5, 2.0),  # occiput: thicker bone and scalp
        ((105.0, 182.0, 80.0), (18.0, 8.0, 14.0), 7.0 * min(p.frontal_sinus, 1.0), 0.0),  # frontal sinus
    ]
    for centre, sigma, dt, ds in bumps:
        sl = b.box_around(centre, 3 * np.asarray(sigma))
        if sl is None or (dt == 0 and ds == 0):
            continue
        g = gaussian_bump(*b.coords(sl), centre, sigma)
        thick[sl] += np.float32(dt) * g
        if ds:
            scalp[sl] += np.float32(ds) * g
    for centre in _both_sides((167.0, 100.0, 70.0)):
        sigma = (12.0, 30.0, 20.0)
        sl = b.box_around(centre, 3 * np.asarray(sigma))
        if sl is None:
            continue
        g = gaussian_bump(*b.coords(sl), centre, sigma)
        thick[sl] *= 1.0 - np.float32(0.5) * g  # thin temporal squama
        scalp[sl] += np.float32(p.temporalis_mm) * g  # temporalis muscle
    sl = b.box((0.0, -40.0, -200.0), (210.0, 230.0, 75.0))
    if sl is not None:  # the floors of the cranial fossae are thin; the petrous bones and the clivus are added below
        thick[sl] *= 1.0 - np.float32(0.55) * coverage(b.tz[sl] - np.float32(58.0), 10.0)

    defect = pathology.skull_defect(b) if pathology is not None else None  # (weight, bulge) or None
    envelope_t = thick if defect is None else thick * (1.0 - defect[0]) + defect[1] * defect[0]

    # ---- body envelope: scalp over the vault, face, nose, jaw, neck, ears -------------------------------------------
    body = b.dist - (envelope_t + scalp)
    parts = [
        ("ellipsoid", (105.0, 148.0, 30.0), (64.0, 48.0, 44.0), 14.0),  # face
        ("ellipsoid", (105.0, 118.0, 22.0), (68.0, 52.0, 40.0), 14.0),  # cheeks and masseters
        ("ellipsoid", (105.0, 138.0, -6.0), (56.0, 50.0, 36.0), 14.0),  # jaw
        ("neck", (105.0, 82.0, 40.0), (60.0, 60.0), 18.0),
    ]
    for kind, centre, radii, k in parts:
        if kind == "ellipsoid":
            sl = b.box_around(centre, np.asarray(radii) + k)
            if sl is None:
                continue
            shape = ellipsoid_sdf(*b.coords(sl), centre, radii)
        else:
            sl = b.box(
                (centre[0] - radii[0] - k, centre[1] - radii[1] - k, -400.0),
                (centre[0] + radii[0] + k, centre[1] + radii[1] + k, centre[2] + k),
            )
            if sl is None:
                continue
            x, y, z = b.coords(sl)
            shape = np.maximum(
                ellipsoid_sdf(x, y, np.float32(0.0), (centre[0], centre[1], 0.0), radii + (1.0,)),
                z - np.float32(centre[2]),
            )
        body[sl] = smooth_min(body[sl], shape, k)
    nose = ((105.0, 186.0, 60.0), (105.0, 202.0, 24.0))
    sl = b.box(np.minimum(*nose) - 14, np.maximum(*nose) + 14)
    if sl is not None:
        body[sl] = smooth_min(body[sl], capsule_sdf(*b.coords(sl), nose[0], nose[1], (5.0, 10.0)), 5.0)
    for centre in _both_sides((173.0, 80.0, 46.0)):  # ears
        radii = (8.0, 13.0, 24.0)
        sl = b.box_around(centre, np.asarray(radii) + 8)
        if sl is not None:
            body[sl] = smooth_min(body[sl], ellipsoid_sdf(*b.coords(sl), centre, radii), 4.0)
    for sl, shape, k in oral_envelope(b, p):
        body[sl] = smooth_min(body[sl], shape, k)
    sl = b.box((-200.0, -60.0, -800.0), (410.0, 260.0, _shoulder_level(p) + _SHOULDER_TOP))
    if sl is not None:  # the shoulders join the neck here; _paint_shoulders paints them beyond the head box
        body[sl] = smooth_min(body[sl], _shoulder_body(*b.coords(sl), p), 10.0)
    b.inside = coverage(body + np.float32(1.5), w)  # inside the skin, for structures that must not poke out
    b.paint(full, coverage(body, w), np.clip(p.soft_hu + 4.0 * texture, 22.0, 68.0), "soft_tissue")
    depth = -body
    del body
    fat_depth = np.full(grid.shape, p.fat_mm, dtype=np.float32)
    sl = b.box((0, 0, -400), (210, 210, 40))
    if sl is not None:
        fat_depth[sl] += np.float32(4.0) * coverage(b.tz[sl] - 30.0, 20.0)  # thicker subcutaneous fat in the neck
    b.paint(
        full, band(depth, p.skin_mm, p.skin_mm + fat_depth, w), np.clip(p.fat_hu + 4.0 * texture, -118.0, -82.0), "fat"
    )
    del depth, fat_depth
    for centre in _both_sides((145.0, 148.0, 18.0)):  # buccal fat pads
        sl = b.box_around(centre, 16)
        if sl is not None:
            b.paint_shape(sl, ellipsoid_sdf(*b.coords(sl), centre, (9.0, 11.0, 10.0)), p.fat_hu, "fat")
    for centre in _both_sides((128.0, 114.0, 14.0)):  # parapharyngeal fat
        sl = b.box_around(centre, 16)
        if sl is not None:
            b.paint_shape(sl, ellipsoid_sdf(*b.coords(sl), centre, (5.0, 8.0, 13.0)), p.fat_hu, "fat")

    # ---- skull vault ---------------------------------------------------------------------------------------------
    cortical = np.clip(np.float32(p.cortical_hu) + np.float32(110.0) * noise[1], 1050.0, 1850.0)
    diploe = np.clip(p.diploe_hu + 70.0 * texture, 310.0, 690.0)
    keep = None if defect is None else 1.0 - defect[0]
    alpha = band(b.dist, 0.0, thick, w)
    if keep is not None:
        alpha *= keep
    b.paint(full, alpha, cortical, "cortical_bone")
    alpha = band(b.dist, p.inner_table_mm, thick - np.float32(p.outer_table_mm), w)
    if keep is not None:
        alpha *= keep
    b.paint(full, alpha, diploe, "diploe")
    if pathology is not None:
        pathology.after_vault(b, thick)  # burr holes, kerfs, plates, shunt hardware
    del alpha, thick, scalp, envelope_t

    # ---- skull base, face and spine bones --------------------------------------------------------------------------
    cancellous = np.clip(p.cancellous_hu + 45.0 * texture, 160.0, 440.0)

    def bone(sdf_fn, lo, hi, cortex=1.5, inner="diploe"):
        sl = b.box(lo, hi)
        if sl is None:
            return
        if inner == "diploe":
            b.paint_bone(sl, sdf_fn(*b.coords(sl)), cortex, cortical[sl], diploe[sl], "diploe")
        else:
            b.paint_bone(sl, sdf_fn(*b.coords(sl)), cortex, cortical[sl], cancellous[sl], "cancellous_bone")

    def ell(centre, radii):
        return lambda x, y, z: ellipsoid_sdf(x, y, z, centre, radii)

    def cap(a, c, r):
        return lambda x, y, z: capsule_sdf(x, y, z, a, c, r)

    def lohi(centre, radii, pad=2.0):
        c, r = np.asarray(centre), np.asarray(radii) + pad
        return c - r, c + r

    bone(ell((105.0, 112.0, 40.0), (20.0, 22.0, 14.0)), *lohi((105.0, 112.0, 40.0), (20.0, 22.0, 14.0)))  # sphenoid
    bone(cap((105.0, 100.0, 52.0), (105.0, 80.0, 35.0), 6.5), (95, 70, 25), (115, 110, 62))  # clivus
    bone(ell((105.0, 160.0, 4.0), (18.0, 26.0, 4.0)), *lohi((105.0, 160.0, 4.0), (18.0, 26.0, 4.0)), 1.2, "cancellous")
    for side in (1.0, -1.0):

        def s(pt, side=side):
            return (float(_MID + side * (pt[0] - _MID)), float(pt[1]), float(pt[2]))

        mastoid = s(LANDMARKS["mastoid"])
        mastoid_r = tuple(r * _mastoid_bone_scale(p) for r in (11.0, 13.0, 16.0))
        bone(ell(mastoid, mastoid_r), *lohi(mastoid, mastoid_r))
        cond = s(LANDMARKS["occipital_condyle"])
        bone(ell(cond, (6.0, 10.0, 5.0)), *lohi(cond, (6.0, 10.0, 5.0)), 1.5, "cancellous")
        zyg_body = s((160.0, 160.0, 38.0))
        bone(ell(zyg_body, (4.5, 9.0, 9.0)), *lohi(zyg_body, (4.5, 9.0, 9.0)), 1.5, "cancellous")
        # mandible: condyle and ramus
        mc = s(LANDMARKS["mandible_condyle"])
        bone(ell(mc, (8.0, 5.0, 5.0)), *lohi(mc, (8.0, 5.0, 5.0)), 1.5, "cancellous")
        ramus, ramus_r = s((152.0, 114.0, 2.0)), (4.5, 13.0, 32.0)
        bone(ell(ramus, ramus_r), *lohi(ramus, ramus_r), 1.5, "cancellous")
        # C1 lateral mass
        lm = s(LANDMARKS["c1_lateral_mass"])
        bone(ell(lm, (7.0, 9.0, 7.0)), *lohi(lm, (7.0, 9.0, 7.0)), 1.5, "cancellous")
        # C1 posterior arch, C2 laminae
        a1, a2 = s((118.0, 52.0, 21.0)), (105.0, 43.0, 21.0)
        bone(cap(a1, a2, 3.5), np.minimum(a1, a2) - 6, np.maximum(a1, a2) + 6, 1.2, "cancellous")
        l1, l2 = s((116.0, 62.0, -6.0)), (105.0, 46.0, -6.0)
        bone(cap(l1, l2, 4.0), np.minimum(l1, l2) - 6, np.maximum(l1, l2) + 6, 1.2, "cancellous")
    bone(cap((92.0, 88.0, 21.0), (118.0, 88.0, 21.0), 4.5), (85, 80, 14), (125, 96, 28), 1.2, "cancellous")  # C1 arch
    bone(cap((105.0, 80.0, 0.0), (105.0, 80.0, 25.0), 5.5), (97, 72, -8), (113, 88, 33), 1.5, "cancellous")  # dens
    bone(ell((105.0, 82.0, -10.0), (9.5, 9.0, 12.0)), (93, 71, -24), (117, 93, 4), 1.5, "cancellous")  # C2 body
    bone(cap((105.0, 46.0, -6.0), (105.0, 30.0, -12.0), 4.0), (98, 22, -20), (112, 52, 0), 1.2, "cancellous")
    for zc in (-33.0, -52.0, -71.0, -90.0, -109.0, -128.0):  # C3-T1 bodies and the discs above them
        bone(ell((105.0, 84.0, zc), (10.0, 9.0, 7.5)), (93, 73, zc - 10), (117, 95, zc + 10), 1.2, "cancellous")
        sl = b.box((93, 73, zc + 6), (117, 95, zc + 14))
        if sl is not None:
            b.paint_shape(
                sl, ellipsoid_sdf(*b.coords(sl), (105.0, 84.0, zc + 10.0), (10.0, 9.0, 2.5)), p.disc_hu, "disc"
            )
    sl = b.box((93, 73, -26), (117, 95, -16))
    if sl is not None:
        b.paint_shape(sl, ellipsoid_sdf(*b.coords(sl), (105.0, 84.0, -23.0), (10.0, 9.0, 2.2)), p.disc_hu, "disc")
    for side in (1.0, -1.0):  # dense petrous ridges and zygomatic arches (all cortical)
        pl = (_MID + side * (LANDMARKS["petrous_lateral"][0] - _MID),) + LANDMARKS["petrous_lateral"][1:]
        pa = (_MID + side * (LANDMARKS["petrous_apex"][0] - _MID),) + LANDMARKS["petrous_apex"][1:]
        sl = b.box(np.minimum(pl, pa) - 11, np.maximum(pl, pa) + 11)
        if sl is not None:
            b.paint_shape(
                sl,
                capsule_sdf(*b.coords(sl), pl, pa, (6.5, 4.5)),
                np.clip(p.petrous_hu + 60.0 * noise[1][sl], 1500.0, 1890.0),
                "cortical_bone",
            )
        zf = (_MID + side * (LANDMARKS["zygoma_front"][0] - _MID),) + LANDMARKS["zygoma_front"][1:]
        zb = (_MID + side * (LANDMARKS["zygoma_back"][0] - _MID),) + LANDMARKS["zygoma_back"][1:]
        sl = b.box(np.minimum(zf, zb) - 6, np.maximum(zf, zb) + 6)
        if sl is not None:
            b.paint_shape(sl, capsule_sdf(*b.coords(sl), zf, zb, 3.2), cortical[sl], "cortical_bone")
    nb = ((105.0, 185.0, 62.0), (105.0, 193.0, 46.0))
    sl = b.box(np.minimum(*nb) - 5, np.maximum(*nb) + 5)
    if sl is not None:
        b.paint_shape(sl, capsule_sdf(*b.coords(sl), nb[0], nb[1], 2.5), cortical[sl], "cortical_bone")
    for centre in _both_sides(LANDMARKS["maxillary_sinus"]):  # maxillary walls
        radii = np.array((12.0, 16.0, 16.0)) * p.maxillary_sinus + 1.2
        sl = b.box_around(centre, radii + 2)
        if sl is not None:
            b.paint_shape(sl, ellipsoid_sdf(*b.coords(sl), centre, radii), cortical[sl], "cortical_bone")

    # ---- orbits --------------------------------------------------------------------------------------------------
    for side in (1.0, -1.0):

        def s(pt, side=side):
            return (float(_MID + side * (pt[0] - _MID)), float(pt[1]), float(pt[2]))

        apex, rim, globe = s(LANDMARKS["orbit_apex"]), s(LANDMARKS["orbit_rim"]), s(LANDMARKS["globe"])
        sl = b.box(np.minimum(apex, rim) - 24, np.maximum(apex, rim) + 24)
        if sl is None:
            continue
        x, y, z = b.coords(sl)
        orbit = cone_sdf(x, y, z, apex, rim, 4.0, 17.0) + 2.0 * np.float32(w) * (1.0 - b.inside[sl])
        wall = band(orbit, 0.0, 0.9, w) * coverage(-b.dist[sl], w)
        b.paint(sl, wall, cortical[sl], "cortical_bone")
        b.paint(sl, coverage(orbit, w) * coverage(1.4 - b.dist[sl], w), p.fat_hu, "fat")
        gx = globe[0]
        rg = p.globe_mm
        muscles = [
            (gx + side * (rg - 1.0), globe[1] - 4.0, globe[2]),
            (gx - side * (rg - 1.5), globe[1] - 4.0, globe[2]),
            (gx, globe[1] - 4.0, globe[2] + rg - 1.0),
            (gx, globe[1] - 4.0, globe[2] - rg + 1.0),
        ]
        for m in muscles:
            b.paint(
                sl,
                coverage(capsule_sdf(x, y, z, apex, m, (1.5, 2.6)), w) * coverage(1.4 - b.dist[sl], w),
                p.soft_hu,
                "soft_tissue",
            )
        nerve_end = (gx, globe[1] - rg + 1.0, globe[2])
        b.paint(
            sl,
            coverage(capsule_sdf(x, y, z, apex, nerve_end, 2.2), w) * coverage(1.4 - b.dist[sl], w),
            p.soft_hu - 5.0,
            "soft_tissue",
        )
        b.paint_shape(sl, ellipsoid_sdf(x, y, z, globe, (rg, rg, rg)), p.soft_hu + 5.0, "soft_tissue")
        b.paint_shape(sl, ellipsoid_sdf(x, y, z, globe, (rg - 1.1,) * 3), p.vitreous_hu, "vitreous")
        lens = (gx, globe[1] + rg - 3.6, globe[2])
        b.paint_shape(sl, ellipsoid_sdf(x, y, z, lens, (4.5, 1.9, 4.5)), p.lens_hu, "lens")

    # ---- air spaces --------------------------------------------------------------------------------------------------
    wall_mm = 1.2
    sinuses = [
        (LANDMARKS["sphenoid_sinus"], np.array((14.0, 11.0, 10.0)) * p.sphenoid_sinus, False, "sphenoid"),
        (LANDMARKS["nasal_cavity"], np.array((12.0, 27.0, 20.0)), False, None),
        (LANDMARKS["nasopharynx"], np.array((12.0, 9.0, 9.0)), False, None),
    ]
    if p.frontal_sinus > 0:
        sinuses.append((LANDMARKS["frontal_sinus"], np.array((16.0, 4.0, 11.0)) * p.frontal_sinus, True, "frontal"))
    for c, name in zip(_both_sides(LANDMARKS["maxillary_sinus"]), ("maxillary_right", "maxillary_left"), strict=True):
        sinuses.append((c, np.array((12.0, 16.0, 16.0)) * p.maxillary_sinus, False, name))
    fluid_hu = np.float32(np.clip(p.soft_hu - 10.0, 12.0, 58.0))
    for centre, radii, septum, name in sinuses:
        sl = b.box_around(centre, radii + 2)
        if sl is None:
            continue
        x, y, z = b.coords(sl)
        b.paint_shape(sl, ellipsoid_sdf(x, y, z, centre, radii), AIR_HU, "sinus_air", keep_cavity_wall=wall_mm)
        if name is not None:
            _paint_sinus_fluid(
                b, sl, centre, radii, _sinus_fill(p, name), p.sinus_level[SINUS_NAMES.index(name)], fluid_hu, wall_mm
            )
        if septum:
            alpha = coverage(np.abs(x - np.float32(_MID)) - 0.8, w) * coverage(ellipsoid_sdf(x, y, z, centre, radii), w)
            b.paint(sl, alpha, cortical[sl], "cortical_bone")
    # nasal septum and turbinates
    nc = LANDMARKS["nasal_cavity"]
    sl = b.box_around(nc, (14.0, 29.0, 22.0))
    if sl is not None:
        x, y, z = b.coords(sl)
        inside = coverage(ellipsoid_sdf(x, y, z, nc, (12.0, 27.0, 20.0)), w)
        b.paint(sl, coverage(np.abs(x - np.float32(_MID)) - 1.0, w) * inside, cancellous[sl], "cancellous_bone")
        for side in (1.0, -1.0):
            for centre, radii in (((9.0, 165.0, 13.0), (4.0, 21.0, 4.5)), ((9.0, 168.0, 25.0), (3.5, 17.0, 3.5))):
                c = (_MID + side * centre[0], centre[1], centre[2])
                b.paint(sl, coverage(ellipsoid_sdf(x, y, z, c, radii), w) * inside, p.soft_hu, "soft_tissue")
    # septated air cells: ethmoid and mastoid
    cells = [(LANDMARKS["ethmoid"], np.array((10.0, 19.0, 12.0)), "ethmoid")]
    for c, name in zip(_both_sides(LANDMARKS["mastoid"]), ("mastoid_right", "mastoid_left"), strict=True):
        cells.append((c, np.array((10.0, 13.0, 13.0)) * p.mastoid, name))
    for centre, radii, name in cells:
        sl = b.box_around(centre, radii + 2)
        if sl is None:
            continue
        x, y, z = b.coords(sl)
        shape = ellipsoid_sdf(x, y, z, centre, radii)
        if name != "ethmoid":  # mastoid cells stay inside the mastoid process (under its cortex)
            bone_r = np.array((11.0, 13.0, 16.0)) * _mastoid_bone_scale(p)
            shape = np.maximum(shape, ellipsoid_sdf(x, y, z, centre, bone_r) + np.float32(1.5))
        b.paint_shape(sl, shape, AIR_HU, "sinus_air", keep_cavity_wall=wall_mm)
        _paint_sinus_fluid(
            b, sl, centre, radii, _sinus_fill(p, name), p.sinus_level[SINUS_NAMES.index(name)], fluid_hu, wall_mm, shape
        )
        warp = b.field(b.head.cells, sl) * np.float32(0.3 * p.cell_mm)
        septa = septa_distance(x + warp[0], y + warp[1], z + warp[2], p.cell_mm, p.cell_phase) - np.float32(0.3)
        alpha = coverage(septa, w) * coverage(shape, w) * coverage(wall_mm - b.dist[sl], w)
        b.paint(sl, alpha, cortical[sl], "cortical_bone")
    for c in _both_sides(LANDMARKS["ear_canal"]):  # external auditory canal
        a2 = (c[0] - np.sign(c[0] - _MID) * 25.0, c[1], c[2])
        a1 = (c[0] + np.sign(c[0] - _MID) * 7.0, c[1], c[2])
        sl = b.box(np.minimum(a1, a2) - 6, np.maximum(a1, a2) + 6)
        if sl is not None:
            b.paint_shape(sl, capsule_sdf(*b.coords(sl), a1, a2, 3.5), AIR_HU, "sinus_air")

    # ---- jaw, teeth, tongue, mouth, pharynx, hyoid (bundle.data.phantom_oral) ---------------------------------------
    paint_oral(b, p, cortical, cancellous)

    # ---- spinal canal through the foramen magnum -------------------------------------------------------------------
    fm = LANDMARKS["foramen_magnum"]
    top = (fm[0], fm[1], fm[2] + 6.0)
    mid = (fm[0], fm[1] + 2.0, fm[2] - 14.0)
    bottom = (fm[0], fm[1] + 9.0, -160.0)
    sl = b.box((fm[0] - 18, fm[1] - 18, -170.0), (fm[0] + 18, fm[1] + 26, fm[2] + 24))
    if sl is not None:
        x, y, z = b.coords(sl)
        canal = smooth_min(capsule_sdf(x, y, z, top, mid, (15.5, 11.5)), capsule_sdf(x, y, z, mid, bottom, 11.0), 3.0)
        b.paint_shape(sl, canal, p.spinal_csf_hu, "spinal_csf")
        b.paint_shape(sl, capsule_sdf(x, y, z, top, bottom, 5.5), p.cord_hu, "spinal_cord")

    if pathology is not None:
        pathology.before_cavity(b)

    # ---- cranial cavity --------------------------------------------------------------------------------------------
    fm_point, fm_normal = _foramen_magnum_plane(b.pose)
    height = None
    for d in range(3):
        term = (grid.axis(d) - fm_point[d]).astype(np.float32) * np.float32(fm_normal[d])
        term = term.reshape([-1 if e == d else 1 for e in range(3)])
        height = term if height is None else height + term
    cavity = coverage(b.dist, w)
    cavity *= coverage(-height, grid.mean_spacing)
    content = _add_atrophy(b, _add_sulci(b, b.atlas))
    codes = None
    if pathology is not None:
        content, codes = pathology.cavity_content(b, content)
    b.paint(full, cavity, content, "cavity")
    if codes is not None:
        for name, alpha in codes:
            b.tissue[(alpha >= 0.5) & (cavity >= 0.5)] = TISSUES[name]
            if b.mixed is not None:
                b.mixed |= (alpha > _MIXED) & (alpha < 1.0 - _MIXED)
    return cavity


def _add_sulci(b: _Chunk, content: np.ndarray) -> np.ndarray:
    """Thin CSF-filled sulci in the outer 15 mm of the brain (the average atlas has smoothed them away), wider with
    atrophy.

    The sulci are the zero level set of a smooth random field (random sheets about 1 mm thick), faded out with depth
    below the cavity surface and applied to brain tissue only (not to the CSF already there).
    """
    box = b.head.atlas_box
    if box is None or b.grid.mean_spacing > 2.5:
        return content
    z0, z1 = max(box[2].start, b.z0) - b.z0, min(box[2].stop, b.z1) - b.z0
    if z1 <= z0:
        return content
    sl = (box[0], box[1], slice(z0, z1))
    field = b.field(b.head.sulci, sl)[0]
    alpha = coverage(np.abs(field) - np.float32(0.15 + 0.3 * b.params.atrophy), np.float32(0.1))
    alpha *= coverage(np.float32(-16.0) - b.dist[sl], 8.0)  # 1 near the surface, 0 deeper than 20 mm
    alpha *= np.clip((content[sl] - np.float32(15.0)) / np.float32(10.0), 0.0, 1.0)
    alpha *= np.float32(b.params.sulci)
    part = content[sl]
    part += alpha * (np.float32(CSF_HU) - part)
    return content


def _paint_headrest(hu, tissue, mixed, grid: CoarseGrid, pose: HeadPose, p: AnatomyParams, template: Template) -> None:
    """A cradle (plastic shell and foam pad) under the occiput along the table (world z), painted over air only."""
    back = pose.to_world(template.surface_points)
    back_y = float(back[:, 1].min()) - (p.skull_mm + 2.5 + p.scalp_mm + 2.0) * float(np.mean(p.scale))
    radius = p.headrest_radius_mm
    axis_x = float(pose.centre_world[0])
    axis_y = back_y - p.headrest_pad_mm + radius
    x = grid.axis(0).astype(np.float32)[:, None]
    y = grid.axis(1).astype(np.float32)[None, :]
    dist = np.sqrt((x - axis_x) ** 2 + (y - axis_y) ** 2)
    lower = coverage(y - np.float32(axis_y + 10.0), grid.mean_spacing)
    shell = band(dist, radius, radius + p.headrest_shell_mm, grid.mean_spacing) * lower
    foam = band(dist, radius - p.headrest_pad_mm, radius, grid.mean_spacing) * coverage(
        y - np.float32(back_y + 25.0), 6.0
    )
    for alpha, value, name in (
        (foam, p.headrest_foam_hu, "headrest_foam"),
        (shell, p.headrest_shell_hu, "headrest_shell"),
    ):
        cols = np.nonzero(alpha.max(axis=1) > 0)[0]
        rows = np.nonzero(alpha.max(axis=0) > 0)[0]
        if rows.size == 0:
            continue
        sl = (slice(cols[0], cols[-1] + 1), slice(rows[0], rows[-1] + 1), slice(None))
        a = alpha[sl[0], sl[1]][:, :, None] * (tissue[sl] == TISSUES["air"])
        h = hu[sl]
        h += a * (np.float32(value) - h)
        tissue[sl][a >= 0.5] = TISSUES[name]
        if mixed is not None:
            mixed[sl] |= (a > _MIXED) & (a < 1.0 - _MIXED)


#: Zones of the ventricles in template mm (lateral, third, fourth), found from the atlas' deep CSF.
_VENTRICLES = (
    ((97.0, 104.0, 101.0), (12.0, 34.0, 16.0)),
    ((114.0, 104.0, 101.0), (12.0, 34.0, 16.0)),
    ((105.0, 106.0, 84.0), (4.0, 10.0, 8.0)),
    ((103.0, 67.0, 67.0), (7.0, 7.0, 9.0)),
)


def _add_atrophy(b: _Chunk, content: np.ndarray) -> np.ndarray:
    """Brain atrophy: a wider CSF layer under the inner table and enlarged ventricles (the cavity is unchanged).

    The ventricles of the average atlas have blurred edges (CSF rising to brain HU over a few mm); raising the HU
    below which a voxel near a ventricle becomes CSF widens them smoothly.
    """
    a = float(b.params.atrophy)
    box = b.head.atlas_box
    if a <= 0.0 or box is None:
        return content
    z0, z1 = max(box[2].start, b.z0) - b.z0, min(box[2].stop, b.z1) - b.z0
    if z1 <= z0:
        return content
    sl = (box[0], box[1], slice(z0, z1))
    part = content[sl]
    alpha = coverage(-b.dist[sl] - np.float32(0.3 + 4.5 * a), 1.5)
    part += alpha * (np.float32(CSF_HU) - part)
    threshold = np.float32(12.0 + 14.0 * a)
    for centre, radii in _VENTRICLES:
        vs = b.box_around(centre, np.asarray(radii) + 4.0)
        if vs is None:
            continue
        zone = coverage(ellipsoid_sdf(*b.coords(vs), centre, radii), 6.0)
        v = content[vs]
        v += zone * np.clip((threshold - v) / np.float32(4.0), 0.0, 1.0) * (np.float32(CSF_HU) - v)
    return content


def _mastoid_bone_scale(p: AnatomyParams) -> float:
    """Size of the mastoid process: larger when well pneumatised."""
    return float(np.clip(0.85 + 0.25 * p.mastoid, 0.9, 1.2))


def _sinus_fill(p: AnatomyParams, name: str) -> float:
    """Filled fraction of one sinus: 0 while ``sinus_fluid`` is under the sinus' threshold, 1 at ``sinus_fluid = 1``."""
    t = float(p.sinus_thresholds[SINUS_NAMES.index(name)])
    return float(np.clip((p.sinus_fluid - t) / max(1e-6, 1.0 - t), 0.0, 1.0))


_CAP_H = np.linspace(0.0, 1.0, 65)
_CAP_FRACTION = _CAP_H**2 * (3.0 - 2.0 * _CAP_H)  # volume fraction of a sphere below a plane at height 2 r h


def _paint_sinus_fluid(
    b: _Chunk, sl, centre, radii, fill: float, level: bool, hu: np.float32, wall_mm: float, shape=None
) -> None:
    """Fill a fraction of an air space with fluid: a fluid level (gravity: world -y, patient supine) or mucosa."""
    if fill <= 0.0:
        return
    w = b.width
    x, y, z = b.coords(sl)
    if shape is None:
        shape = ellipsoid_sdf(x, y, z, centre, radii)
    inside = coverage(shape, w) * coverage(np.float32(wall_mm) - b.dist[sl], w)
    if level:
        fw = b.pose.forward
        y_centre = float(b.pose.to_world(np.array([centre]))[0][1])
        y_radius = float(np.sqrt(((fw[1] * np.asarray(radii)) ** 2).sum()))
        height = float(np.interp(fill, _CAP_FRACTION, _CAP_H))
        surface = np.float32(y_centre - y_radius + 2.0 * y_radius * height)
        world_y = b.grid.axis(1)[sl[1]].astype(np.float32)[None, :, None]
        inside *= coverage(world_y - surface, b.grid.mean_spacing)
        b.paint(sl, inside, hu, "sinus_fluid")
        return
    b.paint(sl, inside, hu, "sinus_fluid")
    if fill < 1.0:  # mucosal thickening: air left in the middle, the same shape shrunk
        core = ellipsoid_sdf(x, y, z, centre, np.asarray(radii) * (1.0 - fill) ** (1.0 / 3.0))
        b.paint(sl, coverage(np.maximum(core, shape), w), AIR_HU, "sinus_air")


#: Template y of the humeral heads and height (mm) of the trapezius slope's top above them.
_SHOULDER_Y = 80.0
_SHOULDER_TOP = 75.0


def _shoulder_level(p: AnatomyParams) -> float:
    """Template z of the humeral head centres."""
    return float(LANDMARKS["foramen_magnum"][2] - p.shoulder_drop_mm)


def _shoulder_body(x, y, z, p: AnatomyParams) -> np.ndarray:
    """SDF of the shoulders and upper chest: a capsule between the humeral heads, the trunk below them and the
    trapezius slopes up to the neck."""
    zs, sw = _shoulder_level(p), p.shoulder_width_mm
    heads = [(_MID + side * sw, _SHOULDER_Y, zs) for side in (1.0, -1.0)]
    trunk = ellipsoid_sdf(x, y, np.float32(0.0), (_MID, _SHOULDER_Y + 10.0, 0.0), (sw + 20.0, 105.0, 1.0))
    body = smooth_min(capsule_sdf(x, y, z, heads[0], heads[1], 42.0), np.maximum(trunk, z - np.float32(zs)), 30.0)
    for head in heads:
        neck = (_MID + np.sign(head[0] - _MID) * 40.0, 60.0, zs + 55.0)
        body = smooth_min(body, capsule_sdf(x, y, z, neck, head, 30.0), 20.0)
    return body


def _paint_shoulders(hu, tissue, mixed, grid: CoarseGrid, pose: HeadPose, p: AnatomyParams) -> None:
    """Shoulders and upper chest low in the neck: soft tissue, fat, clavicles, humeral heads and scapulae.

    Painted on the whole grid (only the slabs below the shoulders' top; nothing when the scan stops above them) in
    template coordinates of the pose without the smooth displacement, over air only for the soft tissue so that the
    neck painted with the head stays as it is.
    """
    top = _shoulder_level(p) + _SHOULDER_TOP
    sw = p.shoulder_width_mm
    lo_t, hi_t = (_MID - sw - 60.0, -60.0, -800.0), (_MID + sw + 60.0, 260.0, top)
    corners = np.array(
        [[(lo_t, hi_t)[i][0], (lo_t, hi_t)[j][1], (lo_t, hi_t)[k][2]] for i in (0, 1) for j in (0, 1) for k in (0, 1)]
    )
    world = pose.to_world(corners)
    idx = []
    for d in range(3):
        i0 = max(0, int(np.floor((world[:, d].min() - grid.origin[d]) / grid.spacing[d])))
        i1 = min(grid.shape[d], int(np.ceil((world[:, d].max() - grid.origin[d]) / grid.spacing[d])) + 1)
        if i1 <= i0:
            return
        idx.append((i0, i1))
    w = float(grid.mean_spacing / np.mean(p.scale))
    inv = pose.inverse.astype(np.float32)
    c_w, c_t = pose.centre_world.astype(np.float32), pose.centre_template.astype(np.float32)
    ax = [(grid.axis(d)[idx[d][0] : idx[d][1]].astype(np.float32) - c_w[d]) for d in range(3)]
    zs, yb = _shoulder_level(p), _SHOULDER_Y
    step = max(1, 2_000_000 // max(1, len(ax[0]) * len(ax[1])))
    for k0 in range(0, len(ax[2]), step):
        kz = ax[2][k0 : k0 + step]
        x, y, z = (
            (inv[d, 0] * ax[0])[:, None, None]
            + (inv[d, 1] * ax[1])[None, :, None]
            + (inv[d, 2] * kz + c_t[d])[None, None]
            for d in range(3)
        )
        if float(z.min()) > top:
            continue
        body = _shoulder_body(x, y, z, p)
        sl = (slice(*idx[0]), slice(*idx[1]), slice(idx[2][0] + k0, idx[2][0] + k0 + len(kz)))
        h, t = hu[sl], tissue[sl]
        air = t == TISSUES["air"]
        layers = [
            (coverage(body, w) * air, p.soft_hu, "soft_tissue"),
            (band(-body, p.skin_mm, p.skin_mm + p.fat_mm + 6.0, w) * air, p.fat_hu, "fat"),
        ]
        bones = []
        for side in (1.0, -1.0):
            hx = _MID + side * sw
            sternal, acromion = (_MID + side * 22.0, 150.0, zs - 30.0), (hx - side * 8.0, yb + 6.0, zs + 30.0)
            bones.append((capsule_sdf(x, y, z, sternal, acromion, 7.0), 1.5))  # clavicle
            bones.append((ellipsoid_sdf(x, y, z, (hx, yb, zs), (24.0, 24.0, 25.0)), 2.0))  # humeral head
            bones.append((capsule_sdf(x, y, z, (hx, yb, zs - 20.0), (hx + side * 10.0, yb, zs - 300.0), 13.0), 3.0))
            blade = (hx - side * 75.0, yb - 55.0, zs - 70.0)
            bones.append((ellipsoid_sdf(x, y, z, blade, (48.0, 5.0, 75.0)), 1.2))  # scapular blade
            bones.append((capsule_sdf(x, y, z, (hx - side * 110.0, yb - 58.0, zs - 10.0), acromion, 5.0), 1.2))
        for sdf, cortex in bones:
            layers.append((coverage(sdf, w), np.float32(p.cortical_hu), "cortical_bone"))
            layers.append((coverage(sdf + np.float32(cortex), w), np.float32(p.cancellous_hu), "cancellous_bone"))
        for alpha, value, name in layers:
            if not alpha.any():
                continue
            h += alpha * (np.float32(value) - h)
            t[alpha >= 0.5] = TISSUES[name]
            if mixed is not None:
                mixed[sl] |= (alpha > _MIXED) & (alpha < 1.0 - _MIXED)
