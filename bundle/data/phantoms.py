# SPDX-License-Identifier: Apache-2.0
"""Realistic non-contrast head-CT phantoms with exact cranial-cavity labels.

A phantom is built around the real average brain CT (:mod:`bundle.data.phantom_template`): a random pose, head size
and smooth deformation, a skull with tables and diploe, skull base, face, neck and a head holder
(:mod:`bundle.data.phantom_anatomy`), optional pathology (:mod:`bundle.data.phantom_pathology`), then one acquisition:
512x512 pixels of 0.43-0.5 mm, 0.5-5 mm slices from below the foramen magnum to above the vertex, optional gantry tilt
(:mod:`bundle.data.phantom_acquisition`) and CT noise with a realistic texture (:mod:`bundle.data.phantom_noise`).

Label definition (exact by construction). The anatomy is painted on a world-aligned grid (1 mm for full-size
phantoms) where the cranial cavity has a coverage ``F`` in [0, 1] (brain, CSF and intracranial blood inside the inner
table, cut by the foramen magnum plane; anti-aliased over one voxel). The image and ``F`` go through the *same* linear
resampling to the CT voxels (slice-profile average along the table axis, linear in-plane), so the label is
``label = resampled F >= 0.5``: a CT voxel is labelled when at least half of it is cranial cavity. Nothing below the
foramen magnum plane (``info["foramen_magnum"]``) is labelled. For craniectomies the cavity is bounded by where the
inner table would be (see :mod:`bundle.data.phantom_pathology`).

Timing (one core, measured with ``torch.set_num_threads(1)`` under ``taskset -c 0``): about 7 s for 512x512x300
(9 s with a 20 degree tilt); about 0.3 s for the small test size (64x64x24, same field of view), after a one-off
template build of a few seconds per process.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from bundle.data.datalist import DATALIST_SPLITS, write_datalist
from bundle.data.phantom_acquisition import (
    Acquisition,
    CoarseGrid,
    coarse_grid_for,
    make_acquisition,
    nearest_coarse_indices,
    resample_to_acquisition,
)
from bundle.data.phantom_anatomy import (
    TISSUE_HU_RANGES,
    TISSUES,
    Composition,
    HeadPose,
    compose_head,
    draw_anatomy_params,
    override_anatomy,
)
from bundle.data.phantom_noise import apply_slice_noise, noise_bank, slice_noise
from bundle.data.phantom_pathology import VARIANT_PROBABILITIES, VARIANTS, draw_pathology
from bundle.data.phantom_scan import (
    CLASSIC_SCAN,
    SCAN_PROTOCOLS,
    VARIED_SCAN,
    ScanDraw,
    ScanProtocol,
    apply_kernel,
    apply_motion,
    beam_hardening,
    metal_streaks,
    slices_for,
)
from bundle.data.phantom_template import LANDMARKS, get_template
from bundle.utils import atomic_write_text, sha256_file

__all__ = [
    "GENERATOR_VERSION",
    "OUTSIDE_FOV_HU",
    "CLASSIC_SCAN",
    "Phantom",
    "PhantomDatasetError",
    "SCAN_PROTOCOLS",
    "ScanProtocol",
    "VARIED_SCAN",
    "TISSUES",
    "TISSUE_HU_RANGES",
    "VARIANTS",
    "make_phantom",
    "make_phantom_dataset",
    "phantom_anatomy",
]

logger = logging.getLogger(__name__)

#: Bumped whenever the same seed would produce a different phantom.
GENERATOR_VERSION = "4"
#: HU written outside the circular reconstruction field of view.
OUTSIDE_FOV_HU = -1024
_HU_MAX = 3071
_TEMPLATE_SPACINGS = (1.0, 2.0, 3.0, 4.0)


class PhantomDatasetError(ValueError):
    """Raised when a phantom dataset folder holds a different dataset or files that are not ours."""


@dataclass
class Phantom:
    """One synthetic head CT.

    Attributes:
        image: int16 HU, shape (X, Y, Z), RAS axes, last axis inferior -> superior.
        label: uint8 {0, 1} cranial cavity, same shape.
        affine: 4x4 RAS voxel-to-world matrix (mm); sheared when the gantry is tilted.
        info: generation record: ``seed``, ``variant``, ``gantry_tilt_deg``, ``pixel_spacing_mm``,
            ``slice_spacing_mm``, ``slice_thickness_mm``, ``volume_ml`` (label volume), ``noise_sd_hu``,
            ``foramen_magnum`` (world point and normal), ``pathology``, ``lesion_centre_world`` (approximate), anatomy
            summary; with ``return_tissues`` also
            ``tissue_map`` (uint8 tissue code where a voxel is one tissue only, 255 where mixed).
    """

    image: np.ndarray
    label: np.ndarray
    affine: np.ndarray
    info: dict

    @property
    def voxel_volume_ml(self) -> float:
        """Volume of one voxel in mL."""
        return abs(float(np.linalg.det(self.affine[:3, :3]))) / 1000.0


def _check_positive(name: str, value, allow_none: bool = True) -> None:
    if value is None and allow_none:
        return
    if not (isinstance(value, (int, float, np.integer, np.floating)) and math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a positive number, got {value!r}.")


def make_phantom(
    seed: int,
    *,
    in_plane_size: int | None = 512,
    num_slices: int | None = None,
    slice_spacing_mm: float | None = None,
    variant: str | None = None,
    gantry_tilt_deg: float | None = None,
    pixel_spacing_mm: float | None = None,
    slice_thickness_mm: float | None = None,
    noise_sd_hu: float | None = None,
    head_scale: float | None = None,
    coarse_spacing_mm: float | None = None,
    anatomy: Mapping[str, object] | None = None,
    scan: ScanProtocol | None = None,
    return_tissues: bool = False,
) -> Phantom:
    """Generate one head-CT phantom; the same arguments always give the same phantom.

    Every argument left as None is drawn from ``seed``; giving one does not change the others (each group of draws
    has its own random stream).

    Args:
        seed: non-negative integer seed.
        in_plane_size: pixels per row and column (default 512). Smaller sizes keep the field of view (larger pixels).
            None: the field of view divided by ``pixel_spacing_mm`` (which is then required).
        num_slices: number of slices (default None: ``coverage / slice spacing``; 100-400 when the spacing is drawn
            too). With only ``num_slices`` given the slices span the head from below the foramen magnum to above the
            vertex.
        slice_spacing_mm: distance between slice planes (default None: a typical value in 0.5-5 mm giving 100-400
            slices, or ``coverage / num_slices``).
        variant: one of :data:`~bundle.data.phantom_pathology.VARIANTS` (``"normal"``, ``"haemorrhage"``,
            ``"infarct"``, ``"craniectomy"``, ``"subdural"``, ``"hygroma"``, ``"postop_air"``, ``"shunt"``,
            ``"clips"``, ``"cranioplasty"``; default None: drawn with
            :data:`~bundle.data.phantom_pathology.VARIANT_PROBABILITIES`).
        gantry_tilt_deg: gantry tilt (default None: drawn from the scan protocol).
        pixel_spacing_mm: in-plane pixel size (default None: the protocol's field of view / ``in_plane_size``).
        slice_thickness_mm: slice thickness (default None: the slice spacing).
        noise_sd_hu: noise standard deviation in brain (default None: drawn, higher for thinner slices, 4-8 HU times
            the protocol's noise scale, at most 25 HU; 0 gives a noise-free image).
        head_scale: isotropic head scale (default None: drawn in 0.94-1.08; cavity about 1347 mL x scale^3).
        coarse_spacing_mm: spacing of the anatomy grid (default None: ``max(1, pixel spacing)``).
        anatomy: fields of :class:`~bundle.data.phantom_anatomy.AnatomyParams` to set after they are drawn (default
            None), e.g. ``{"sulci": 1.0}``; how benchmarks force one factor without changing the other draws.
        scan: the scan protocol whose distributions the acquisition is drawn from (default None:
            :data:`~bundle.data.phantom_scan.CLASSIC_SCAN`, from below the foramen magnum to above the vertex;
            :data:`~bundle.data.phantom_scan.VARIED_SCAN` is the training protocol). Explicit arguments above override
            its draws.
        return_tissues: also return ``info["tissue_map"]`` (default False).

    Returns:
        The :class:`Phantom`.

    Raises:
        ValueError: on a negative seed, an unknown variant, non-positive sizes or spacings, a tilt of 45 degrees or
            more, or a volume over 2048 pixels in-plane, 2000 slices or 800 mm of coverage.

    Example:
        >>> ph = make_phantom(0, in_plane_size=64, num_slices=24)
        >>> ph.image.shape, ph.image.dtype.name, ph.label.dtype.name
        ((64, 64, 24), 'int16', 'uint8')
    """
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}.")
    if in_plane_size is not None and (
        not isinstance(in_plane_size, (int, np.integer)) or not 8 <= in_plane_size <= 2048
    ):
        raise ValueError(f"in_plane_size must be an integer in [8, 2048], got {in_plane_size!r}.")
    if num_slices is not None and (not isinstance(num_slices, (int, np.integer)) or not 1 <= num_slices <= 2000):
        raise ValueError(f"num_slices must be an integer in [1, 2000], got {num_slices!r}.")
    for name, value in (
        ("slice_spacing_mm", slice_spacing_mm),
        ("pixel_spacing_mm", pixel_spacing_mm),
        ("slice_thickness_mm", slice_thickness_mm),
        ("head_scale", head_scale),
        ("coarse_spacing_mm", coarse_spacing_mm),
    ):
        _check_positive(name, value)
    if head_scale is not None and not 0.8 <= head_scale <= 1.2:
        raise ValueError(f"head_scale must be within [0.8, 1.2], got {head_scale}.")
    if variant is not None and variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS} or None, got {variant!r}.")
    if gantry_tilt_deg is not None and not abs(gantry_tilt_deg) <= 30:
        raise ValueError(f"gantry_tilt_deg must be within [-30, 30], got {gantry_tilt_deg}.")
    if noise_sd_hu is not None and not (math.isfinite(noise_sd_hu) and 0 <= noise_sd_hu <= 100):
        raise ValueError(f"noise_sd_hu must be within [0, 100], got {noise_sd_hu}.")

    acq_rng, anat_rng, field_rng, path_rng, noise_rng, artefact_rng = (
        np.random.default_rng(s) for s in np.random.SeedSequence(int(seed)).spawn(6)
    )
    scan = CLASSIC_SCAN if scan is None else scan
    draw = scan.draw(acq_rng)
    sd_draw = float(noise_rng.uniform(3.8, 5.5))  # at 5 mm slices; thinner slices are noisier
    params = override_anatomy(draw_anatomy_params(anat_rng, head_scale), anatomy)
    variant_draw = VARIANTS[int(path_rng.choice(len(VARIANTS), p=VARIANT_PROBABILITIES))]
    variant = variant or variant_draw
    tilt = float(draw.gantry_tilt_deg if gantry_tilt_deg is None else gantry_tilt_deg)
    if in_plane_size is None:
        if pixel_spacing_mm is None:
            raise ValueError("in_plane_size=None needs pixel_spacing_mm: the matrix is the field of view / pixel.")
        in_plane_size = int(np.clip(math.ceil(draw.fov_mm / float(pixel_spacing_mm)), 8, 2048))
    pixel = float(pixel_spacing_mm) if pixel_spacing_mm is not None else draw.fov_mm / in_plane_size

    # slice planes along the tilted plane normal: from the drawn start (below the foramen magnum or inside the
    # cavity) to above the vertex or to a cut inside the cavity
    pose = HeadPose.from_params(params)
    template_surface = get_template(2.0).surface_points
    normal = np.array([0.0, -np.sin(np.deg2rad(tilt)), np.cos(np.deg2rad(tilt))])
    s_fm = float(pose.to_world(np.array([LANDMARKS["foramen_magnum"]]))[0] @ normal)
    s_cavity_top = float((pose.to_world(template_surface) @ normal).max())
    if draw.top_cut_mm is None:
        s_top = s_cavity_top + (params.skull_mm + params.scalp_mm + 3.0) * float(np.mean(params.scale))
        s_top += draw.above_vertex_mm
    else:
        s_top = s_cavity_top - draw.top_cut_mm
    s_bottom = min(s_fm + draw.start_mm, s_top - 30.0)
    nslices, spacing = slices_for(
        s_top - s_bottom, draw.spacing_u, num_slices, slice_spacing_mm or draw.slice_spacing_mm
    )
    if nslices * spacing > 800:
        raise ValueError(f"num_slices x slice_spacing_mm = {nslices * spacing:.0f} mm exceeds 800 mm.")
    thickness = float(slice_thickness_mm) if slice_thickness_mm is not None else spacing
    sd = min(float(np.clip(sd_draw * (5.0 / thickness) ** 0.25, 4.0, 8.0)) * draw.noise_scale, 25.0)
    sd = sd if noise_sd_hu is None else float(noise_sd_hu)
    acq = make_acquisition(
        in_plane_size, nslices, pixel, spacing, thickness, tilt, s_bottom + spacing / 2, draw.fov_offset_mm
    )

    coarse = float(coarse_spacing_mm) if coarse_spacing_mm is not None else max(1.0, pixel)
    template = get_template(max([s for s in _TEMPLATE_SPACINGS if s <= max(coarse, 1.0)]))
    grid = coarse_grid_for(acq, coarse)
    pathology = draw_pathology(path_rng, variant, template)
    comp = compose_head(grid, template, params, field_rng, pathology, track_mixed=return_tissues)

    image, label = _acquire(comp.hu, comp.cavity, grid, acq, sd, noise_rng, s_fm, s_bottom, draw, artefact_rng)
    motion = apply_motion(image, label, pixel, artefact_rng, OUTSIDE_FOV_HU) if draw.motion else None
    info = {
        "seed": int(seed),
        "generator_version": GENERATOR_VERSION,
        "variant": variant,
        "pathology": pathology.params,
        "gantry_tilt_deg": tilt,
        "in_plane_size": int(in_plane_size),
        "num_slices": int(nslices),
        "pixel_spacing_mm": pixel,
        "slice_spacing_mm": spacing,
        "table_step_mm": acq.table_step_mm,
        "slice_thickness_mm": thickness,
        "coarse_spacing_mm": coarse,
        "noise_sd_hu": sd,
        "scan": {
            "start_above_foramen_magnum_mm": round(s_bottom - s_fm, 2),
            "top_cut_mm": draw.top_cut_mm,
            "fov_mm": round(pixel * in_plane_size, 2),
            "fov_offset_mm": [round(float(v), 2) for v in draw.fov_offset_mm],
            "bone_kernel": draw.bone_kernel,
            "beam_hardening": draw.beam_hardening,
            "motion": motion,
        },
        "outside_fov_hu": OUTSIDE_FOV_HU,
        "foramen_magnum": {"point": comp.foramen_magnum[0].tolist(), "normal": comp.foramen_magnum[1].tolist()},
        "volume_ml": float(label.sum(dtype=np.int64)) * abs(float(np.linalg.det(acq.affine[:3, :3]))) / 1000.0,
        "lesion_centre_world": _lesion_centre(pathology.params, pose),
        **params.summary(),
    }
    if return_tissues:
        tissue_map = _pure_tissue_map(comp.tissue, comp.mixed, grid, acq)
        tissue_map[image == OUTSIDE_FOV_HU] = 255  # not reconstructed
        info["tissue_map"] = tissue_map
    return Phantom(image=image, label=label, affine=acq.affine.copy(), info=info)


def phantom_anatomy(
    seed: int, *, variant: str | None = None, head_scale: float | None = None, spacing_mm: float = 1.5
) -> tuple[Composition, CoarseGrid]:
    """The noise-free anatomy of ``make_phantom(seed, variant=..., head_scale=...)`` on a world grid around the head.

    A debugging and testing aid: the same head (pose, shape, tissues and pathology draw the same random streams as
    :func:`make_phantom`) painted on a regular grid of ``spacing_mm`` without acquisition, with tissue codes and the
    partial-volume mask (``Composition.mixed``).

    Args:
        seed: non-negative integer seed.
        variant: as in :func:`make_phantom` (default None: drawn).
        head_scale: as in :func:`make_phantom` (default None: drawn).
        spacing_mm: grid spacing in mm (default 1.5; >= 0.5).

    Returns:
        ``(composition, grid)``.

    Raises:
        ValueError: on a negative seed, an unknown variant or a spacing below 0.5 mm.

    Example:
        >>> comp, grid = phantom_anatomy(0, spacing_mm=4.0)
        >>> comp.tissue.shape == grid.shape
        True
    """
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}.")
    if variant is not None and variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS} or None, got {variant!r}.")
    if not spacing_mm >= 0.5:
        raise ValueError(f"spacing_mm must be >= 0.5, got {spacing_mm}.")
    _, anat_rng, field_rng, path_rng, _ = (np.random.default_rng(s) for s in np.random.SeedSequence(int(seed)).spawn(5))
    params = draw_anatomy_params(anat_rng, head_scale)
    variant_draw = VARIANTS[int(path_rng.choice(len(VARIANTS), p=VARIANT_PROBABILITIES))]
    template = get_template(max([s for s in _TEMPLATE_SPACINGS if s <= max(spacing_mm, 1.0)]))
    pathology = draw_pathology(path_rng, variant or variant_draw, template)
    centre = HeadPose.from_params(params).centre_world
    lo = centre + np.array([-115.0, -130.0, -120.0])
    shape = tuple(int(v) for v in np.ceil(np.array([230.0, 255.0, 230.0]) / spacing_mm) + 1)
    grid = CoarseGrid(origin=lo, spacing=spacing_mm, shape=shape)
    return compose_head(grid, template, params, field_rng, pathology, track_mixed=True), grid


def _lesion_centre(params: dict, pose: HeadPose) -> list[float] | None:
    """World position (mm, without the smooth displacement) of the lesion or defect centre, if any."""
    point = params.get("centre", params.get("apex"))
    if point is None:
        return None
    if "apex" in params:  # infarct wedge: halfway from its apex to the cortex
        point = 0.5 * (np.asarray(params["apex"]) + np.asarray(params["base"]))
    return [round(float(v), 3) for v in pose.to_world(np.asarray([point], dtype=np.float64))[0]]


def _acquire(
    hu,
    cavity,
    grid,
    acq: Acquisition,
    sd: float,
    rng: np.random.Generator,
    s_fm: float,
    s_bottom: float,
    draw: ScanDraw,
    artefact_rng: np.random.Generator,
):
    """Resample image and cavity coverage to the acquisition, add artefacts and noise, apply the kernel, mask the
    reconstruction circle. The label is the resampled cavity coverage only (artefacts do not move anatomy)."""
    n, k = acq.in_plane_size, acq.num_slices
    image = np.empty((k, n, n), dtype=np.int16)  # slice-major while filling, transposed to (X, Y, Z) at the end
    label = np.empty((k, n, n), dtype=np.uint8)
    bank = noise_bank(n, round(acq.pixel_spacing_mm, 2))
    draws = slice_noise(rng, bank, k)
    plane = s_bottom + acq.slice_spacing_mm * (np.arange(k) + 0.5)
    profile = sd * (1.0 + 0.25 * np.exp(-(((plane - s_fm - 15.0) / 25.0) ** 2)))  # more noise at the skull base
    c = (n - 1) / 2.0
    ii, jj = np.meshgrid(np.arange(n) - c, np.arange(n) - c, indexing="ij")
    outside = (ii**2 + jj**2) > (n / 2.0) ** 2
    kernel_strength = float(artefact_rng.random())
    streak_seed = int(artefact_rng.integers(2**31))
    for k0, k1, chunk in resample_to_acquisition(hu, grid, acq):
        for kk in range(k0, k1):
            plane_hu = chunk[kk - k0]
            pixel = acq.pixel_spacing_mm
            if draw.beam_hardening and -20.0 < plane[kk] - s_fm < 45.0:  # the dense bones of the skull base
                beam_hardening(plane_hu, pixel, artefact_rng)
            metal_streaks(plane_hu, pixel, np.random.default_rng(streak_seed))
            if sd > 0:
                plane_hu += np.float32(profile[kk]) * apply_slice_noise(bank, draws[kk])
            if draw.bone_kernel:
                plane_hu[:] = apply_kernel(plane_hu, True, pixel, kernel_strength)
            plane_hu[outside] = OUTSIDE_FOV_HU
        np.clip(chunk, OUTSIDE_FOV_HU, _HU_MAX, out=chunk)
        np.rint(chunk, out=chunk)
        image[k0:k1] = chunk
    for k0, k1, chunk in resample_to_acquisition(cavity, grid, acq):
        np.greater_equal(chunk, 0.5, out=label[k0:k1], casting="unsafe")
        label[k0:k1, outside] = 0  # not reconstructed: a small field of view cuts the cavity out of the image
    return np.ascontiguousarray(image.transpose(1, 2, 0)), np.ascontiguousarray(label.transpose(1, 2, 0))


def _pure_tissue_map(tissue: np.ndarray, mixed: np.ndarray, grid, acq: Acquisition) -> np.ndarray:
    """Tissue code per output voxel where every coarse voxel it depends on is unmixed and has that code; else 255."""
    from scipy import ndimage

    half_slab = 0.5 * acq.slice_thickness_mm / np.cos(np.deg2rad(acq.gantry_tilt_deg))
    nz = 2 * int(math.ceil(half_slab / grid.spacing[2])) + 3
    size = (3, 3, nz)
    pure = ndimage.minimum_filter(tissue, size=size) == ndimage.maximum_filter(tissue, size=size)
    pure &= ~ndimage.maximum_filter(mixed, size=size)
    coded = np.where(pure, tissue, np.uint8(255)).astype(np.uint8)
    ix, iy, iz = nearest_coarse_indices(grid, acq)
    return coded[ix, iy, iz]


def make_phantom_dataset(
    output_dir: str | os.PathLike,
    *,
    num_train: int = 4,
    num_val: int = 2,
    num_test: int = 2,
    seed: int = 0,
    in_plane_size: int | None = 64,
    num_slices: int | None = 24,
    formats: Sequence[str] | str = ("nifti",),
    variants: Sequence[str] | str | None = None,
    scan: str = "classic",
    pixel_spacing_mm: float | None = None,
    coarse_spacing_mm: float | None = None,
    progress: bool = False,
) -> Path:
    """Write a phantom dataset: images, labels, optional DICOM series and a ``datalist.json``.

    Layout under ``output_dir``: ``images/phantom_NNNN.nii.gz`` (int16 HU), ``labels/phantom_NNNN.nii.gz`` (uint8),
    ``dicom/phantom_NNNN/`` (one CT series per case, when ``"dicom"`` is in ``formats``), ``datalist.json``
    (``"training"``, ``"validation"``, ``"test"`` lists of ``{"image", "label"}`` paths relative to ``output_dir``;
    ``"image"`` is the NIfTI file, or the DICOM folder when only DICOM is written; entries also carry ``"dicom"``
    when DICOM is written) and ``phantom_dataset.json`` (the generation parameters and a checksum of every file).
    Case ``i`` (numbered across the splits in order) is ``make_phantom(seed * 100000 + i, ...)``. The paper's split is
    ``num_train=77, num_val=20, num_test=60`` at ``in_plane_size=512, num_slices=None``.

    Every file is written atomically. Rerunning with the same arguments skips files whose checksum matches (a cheap
    resume); a folder holding a different dataset or foreign files raises :class:`PhantomDatasetError`.

    Args:
        output_dir: dataset folder (created if missing).
        num_train: training cases (default 4).
        num_val: validation cases (default 2).
        num_test: test cases (default 2).
        seed: dataset seed (default 0).
        in_plane_size: pixels per row/column (default 64, a small test size; 512 is full size).
        num_slices: slices per case (default 24; None draws 100-400 with realistic spacings).
        formats: any of ``"nifti"`` and ``"dicom"`` (default ``("nifti",)``); a comma-separated string is accepted.
        variants: variant of every case, cycled (default None: drawn per case); a comma-separated string is accepted.
        scan: name of the scan protocol in :data:`SCAN_PROTOCOLS` (default ``"classic"``; ``"training"`` is what the
            shipped weights were trained on).
        pixel_spacing_mm: in-plane pixel size; with ``in_plane_size=None`` the matrix follows the drawn field of view
            (default None: the field of view over ``in_plane_size``).
        coarse_spacing_mm: spacing of the anatomy grid (default None: see :func:`make_phantom`).
        progress: show a tqdm progress bar (default False).

    Returns:
        The path of ``datalist.json``.

    Raises:
        ValueError: on negative counts, no cases, an unknown format or variant.
        PhantomDatasetError: if ``output_dir`` holds another dataset or files this function did not write.

    Example:
        >>> import tempfile
        >>> path = make_phantom_dataset(tempfile.mkdtemp(), num_train=1, num_val=0, num_test=1)
        >>> path.name
        'datalist.json'
    """
    from bundle.io.writers import write_ct_dicom_series, write_nifti

    if isinstance(formats, str):
        formats = [f.strip() for f in formats.split(",") if f.strip()]
    formats = tuple(sorted(set(formats)))
    if not formats or any(f not in ("nifti", "dicom") for f in formats):
        raise ValueError(f"formats must be a non-empty subset of ('nifti', 'dicom'), got {formats!r}.")
    counts = {"training": num_train, "validation": num_val, "test": num_test}
    for name, count in counts.items():
        if not isinstance(count, (int, np.integer)) or count < 0:
            raise ValueError(f"the number of {name} cases must be a non-negative integer, got {count!r}.")
    total = sum(counts.values())
    if total == 0:
        raise ValueError("num_train + num_val + num_test must be > 0.")
    if variants is not None:
        variants = (
            [v.strip() for v in variants.split(",") if v.strip()] if isinstance(variants, str) else list(variants)
        )
        bad = [v for v in variants if v not in VARIANTS]
        if bad or not variants:
            raise ValueError(f"variants must be a non-empty list of {VARIANTS}, got {variants!r}.")
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}.")
    if scan not in SCAN_PROTOCOLS:
        raise ValueError(f"scan must be one of {sorted(SCAN_PROTOCOLS)}, got {scan!r}.")

    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    manifest_path = out / "phantom_dataset.json"
    spec = {
        "generator_version": GENERATOR_VERSION,
        "seed": int(seed),
        "counts": counts,
        "in_plane_size": None if in_plane_size is None else int(in_plane_size),
        "num_slices": None if num_slices is None else int(num_slices),
        "formats": list(formats),
        "variants": variants,
    }
    if (scan, pixel_spacing_mm, coarse_spacing_mm) != ("classic", None, None):  # older manifests stay valid
        spec.update(scan=scan, pixel_spacing_mm=pixel_spacing_mm, coarse_spacing_mm=coarse_spacing_mm)
    files: dict[str, str] = {}
    if manifest_path.exists():
        try:
            manifest = json.loads(manifest_path.read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise PhantomDatasetError(f"{manifest_path} is not a readable phantom dataset manifest: {err}") from err
        if manifest.get("spec") != spec:
            raise PhantomDatasetError(
                f"{out} holds a different phantom dataset ({manifest_path} records {manifest.get('spec')}, "
                f"requested {spec}); choose another output_dir or delete it."
            )
        files = dict(manifest.get("files", {}))
    elif any(p.name != ".gitkeep" for p in out.iterdir()):
        raise PhantomDatasetError(f"{out} is not empty and holds no {manifest_path.name}; refusing to write into it.")

    cases = []
    index = 0
    for split in DATALIST_SPLITS:
        for _ in range(counts[split]):
            cases.append((split, index))
            index += 1
    iterator = cases
    if progress:
        from tqdm import tqdm

        iterator = tqdm(cases, desc="phantoms", unit="case")
    entries: dict[str, list[dict]] = {s: [] for s in DATALIST_SPLITS}
    for split, i in iterator:
        name = f"phantom_{i:04d}"
        rel = {"label": f"labels/{name}.nii.gz"}
        if "nifti" in formats:
            rel["image"] = f"images/{name}.nii.gz"
        if "dicom" in formats:
            rel["dicom"] = f"dicom/{name}"
        entry = {"image": rel.get("image", rel.get("dicom")), "label": rel["label"]}
        if "dicom" in rel:
            entry["dicom"] = rel["dicom"]
        entries[split].append(entry)
        if all(_is_recorded(out, r, files) for r in rel.values()):
            logger.debug("skipping %s: files present with matching checksums", name)
            continue
        phantom = make_phantom(
            seed * 100000 + i,
            in_plane_size=in_plane_size,
            num_slices=num_slices,
            variant=None if variants is None else variants[i % len(variants)],
            scan=SCAN_PROTOCOLS[scan],
            pixel_spacing_mm=pixel_spacing_mm,
            coarse_spacing_mm=coarse_spacing_mm,
        )
        for key, r in rel.items():
            target = out / r
            if key == "dicom":
                if target.exists():
                    import shutil

                    shutil.rmtree(target)
                written = write_ct_dicom_series(
                    phantom.image,
                    phantom.affine,
                    target,
                    gantry_tilt_deg=phantom.info["gantry_tilt_deg"],
                    series_description=f"phantom {name} ({phantom.info['variant']})",
                    patient_id=name.upper(),
                    seed=seed * 100000 + i,
                )
                files[r] = _dir_digest(target)
                logger.info("wrote %s (%d DICOM files)", target, len(written))
            else:
                array = phantom.image if key == "image" else phantom.label
                write_nifti(array, phantom.affine, target, dtype=np.int16 if key == "image" else np.uint8)
                files[r] = sha256_file(target)
                logger.info("wrote %s", target)
        atomic_write_text(manifest_path, json.dumps({"spec": spec, "files": files}, indent=2, sort_keys=True) + "\n")
    datalist = write_datalist(out / "datalist.json", entries)
    logger.info("wrote %s", datalist)
    return datalist


def _dir_digest(folder: Path) -> str:
    h = hashlib.sha256()
    for f in sorted(folder.iterdir()):
        h.update(f.name.encode())
        h.update(sha256_file(f).encode())
    return h.hexdigest()


def _is_recorded(out: Path, rel: str, files: dict[str, str]) -> bool:
    path = out / rel
    if rel not in files or not path.exists():
        return False
    digest = _dir_digest(path) if path.is_dir() else sha256_file(path)
    return digest == files[rel]
