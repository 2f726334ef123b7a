# SPDX-License-Identifier: Apache-2.0
"""Quality-control pictures of a cranial-cavity mask, like Figure 2 of the paper.

One PNG with three cross sections through the mask's centre of mass (or a given voxel), left to right sagittal,
coronal and axial, the CT in a brain window (level 40, width 80 HU) and the mask on top:

- without a reference, the mask as a translucent orange fill with a solid contour;
- with a reference, the agreement overlay: true positives green, false negatives (under-segmentation) red,
  false positives (over-segmentation) purple.

Title lines give the case name, the intracranial volume in mL (and Dice with a reference), the slices shown and the
voxel spacing. Panels are drawn at one common scale in millimetres per pixel, so thick-slice data keep their true
proportions. Input arrays are (X, Y, Z) in RAS order (see the team conventions); the views follow radiological
display: axial with anterior at the top and the patient's right on the image's left, coronal with superior at the
top and the patient's right on the left, sagittal with superior at the top and anterior on the left. Letters beside
each panel name the directions. Gantry-tilted (sheared) grids are shown on their voxel grid, not resliced.

With ``findings`` (the :class:`bundle.plausibility.MaskFinding` list of the mask) that name slices, one row per
such finding is added below: a caption with the finding's code and message, then the axial slices it names, so the
reader sees what triggered it (the air in a leak, the hollow inside a shell).

Rendering uses Pillow only (no matplotlib, no global state).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.config import NdarrayOrTensor
from monai.data import MetaTensor
from monai.utils.type_conversion import convert_to_numpy
from nibabel.affines import voxel_sizes
from PIL import Image, ImageDraw, ImageFont
from scipy import ndimage

from bundle.postprocessing import intracranial_volume_ml
from bundle.utils import atomic_output

__all__ = ["QC_COLOURS", "QCPanel", "QCPicture", "render_qc", "save_qc_png"]

logger = logging.getLogger(__name__)

#: RGB colours of the overlays.
QC_COLOURS: dict[str, tuple[int, int, int]] = {
    "mask": (255, 165, 0),  # orange
    "tp": (0, 220, 0),  # green: agreement
    "fn": (255, 0, 0),  # red: under-segmentation
    "fp": (160, 32, 240),  # purple: over-segmentation
}
_VIEWS = ("sagittal", "coronal", "axial")
# (horizontal, vertical) volume axes of each view and the direction letters (left, right, top, bottom)
_VIEW_AXES = {"sagittal": (1, 2), "coronal": (0, 2), "axial": (0, 1)}
_VIEW_LETTERS = {"sagittal": ("A", "P", "S", "I"), "coronal": ("R", "L", "S", "I"), "axial": ("R", "L", "A", "P")}
_MARGIN = 22  # around each panel, room for the direction letters
_FONT_SIZE = 15


@dataclass
class QCPanel:
    """Where one view landed in the picture.

    Attributes:
        view: "sagittal", "coronal" or "axial".
        slice_index: the voxel index of the slice along the view's normal axis (X, Y or Z).
        box: (left, top, width, height) of the panel in picture pixels.
        mm_per_pixel: the picture's scale, the same for all panels.
        finding: the code of the finding whose row the panel is in ("" for the three main views).
    """

    view: str
    slice_index: int
    box: tuple[int, int, int, int]
    mm_per_pixel: float
    finding: str = ""


@dataclass
class QCPicture:
    """A rendered QC picture.

    Attributes:
        rgb: the picture, (height, width, 3) uint8.
        panels: the three :class:`QCPanel` by view name.
        centre: the voxel (x, y, z) the slices go through.
        volume_ml: volume of the mask in mL.
        dice: Dice against the reference, or None without one.
        title_lines: the text lines at the top.
        finding_panels: the axial panels of the findings' rows, in order.
    """

    rgb: np.ndarray
    panels: dict[str, QCPanel]
    centre: tuple[int, int, int]
    volume_ml: float
    dice: float | None = None
    title_lines: list[str] = field(default_factory=list)
    finding_panels: list[QCPanel] = field(default_factory=list)


def _volume(array: NdarrayOrTensor, name: str) -> np.ndarray:
    if isinstance(array, torch.Tensor):
        array = array.detach().cpu()
    data = convert_to_numpy(array)
    if data.ndim == 4 and data.shape[0] == 1:
        data = data[0]
    if data.ndim != 3:
        raise ValueError(f"{name} must be (X, Y, Z) or (1, X, Y, Z), got shape {tuple(array.shape)}.")
    return data


def _centre_of_mass(mask: np.ndarray) -> tuple[float, ...]:
    """Centre of mass of a non-empty mask from its axis profiles (``ndimage.center_of_mass`` takes 20x longer)."""
    total = float(np.count_nonzero(mask))
    centre = []
    for axis in range(mask.ndim):
        profile = np.count_nonzero(mask, axis=tuple(a for a in range(mask.ndim) if a != axis))
        centre.append(float(np.dot(np.arange(mask.shape[axis]), profile)) / total)
    return tuple(centre)


def _geometry(
    image: NdarrayOrTensor, affine_or_spacing: NdarrayOrTensor | Sequence[float] | None
) -> tuple[np.ndarray, tuple[float, float, float]]:
    """The 4x4 affine (or spacing-only diagonal) and the voxel spacing."""
    if affine_or_spacing is None:
        if not isinstance(image, MetaTensor):
            raise ValueError("affine_or_spacing is required unless image is a MetaTensor carrying its affine.")
        affine_or_spacing = image.affine
    values = np.asarray(convert_to_numpy(affine_or_spacing, wrap_sequence=True), dtype=np.float64)
    if values.shape == (4, 4):
        affine = values
        spacing = voxel_sizes(values)
    elif values.shape == (3,):
        spacing = values
        affine = np.diag([*values.tolist(), 1.0])
    else:
        raise ValueError(f"affine_or_spacing must be a 4x4 affine or 3 spacings in mm, got shape {values.shape}.")
    if not np.all(np.isfinite(spacing)) or np.any(spacing <= 0):
        raise ValueError(f"affine_or_spacing gives voxel spacings {spacing.tolist()}; they must be positive.")
    return affine, (float(spacing[0]), float(spacing[1]), float(spacing[2]))


def _display(slice2d: np.ndarray) -> np.ndarray:
    """(horizontal axis, vertical axis) slice of an RAS volume -> radiological display (rows, cols)."""
    return slice2d.T[::-1, ::-1]


def _resample_nearest(array: np.ndarray, out_shape: tuple[int, int], row_mm: float, col_mm: float, scale: float):
    rows = np.minimum((np.arange(out_shape[0]) + 0.5) * scale / row_mm, array.shape[0] - 1).astype(np.intp)
    cols = np.minimum((np.arange(out_shape[1]) + 0.5) * scale / col_mm, array.shape[1] - 1).astype(np.intp)
    return array[np.ix_(rows, cols)]


def _blend(rgb: np.ndarray, where: np.ndarray, colour: tuple[int, int, int], alpha: float) -> None:
    rgb[where] = (1.0 - alpha) * rgb[where] + alpha * np.asarray(colour, dtype=np.float32)


def _font(size: int):
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError, ImportError):  # Pillow built without FreeType: fixed bitmap font
        return ImageFont.load_default()


def _wrap(text: str, width: int, draw: ImageDraw.ImageDraw, font, max_lines: int) -> list[str]:
    """``text`` broken at spaces into lines that fit ``width`` pixels; the last line ends in "..." if cut short."""
    lines: list[str] = []
    words = text.split()
    while words and len(lines) < max_lines:
        line = words.pop(0)
        while words and draw.textlength(f"{line} {words[0]}", font=font) <= width:
            line = f"{line} {words.pop(0)}"
        lines.append(line)
    if words:
        while lines[-1] and draw.textlength(lines[-1] + " ...", font=font) > width:
            lines[-1] = lines[-1].rsplit(" ", 1)[0] if " " in lines[-1] else lines[-1][:-1]
        lines[-1] += " ..."
    return lines


def render_qc(
    image: NdarrayOrTensor,
    mask: NdarrayOrTensor,
    affine_or_spacing: NdarrayOrTensor | Sequence[float] | None = None,
    reference: NdarrayOrTensor | None = None,
    point: Sequence[int] | None = None,
    case_name: str = "",
    window_level: float = 40.0,
    window_width: float = 80.0,
    panel_size: int = 320,
    alpha: float = 0.4,
    findings: Sequence[Any] = (),
) -> QCPicture:
    """Render the QC picture in memory.

    Args:
        image: CT in HU, (X, Y, Z) or (1, X, Y, Z), RAS; numpy, torch or MetaTensor.
        mask: the binary mask (non-zero = cranial cavity), same shape.
        affine_or_spacing: 4x4 voxel-to-world affine (mm) or the three spacings in mm; used for the proportions and
            the volume. Defaults to None: the affine of a MetaTensor ``image``.
        reference: optional reference mask, same shape; switches to the TP/FN/FP agreement overlay. Defaults to None.
        point: voxel (x, y, z) the three slices go through. Defaults to None: the centre of mass of the mask (of the
            reference if the mask is empty; of the volume if both are).
        case_name: first title line. Defaults to "".
        window_level: centre of the grey-value window in HU. Defaults to 40.
        window_width: width of the window in HU. Defaults to 80.
        panel_size: length in pixels of the largest physical extent of the volume. Defaults to 320.
        alpha: opacity of the overlay fills, in [0, 1]. Defaults to 0.4.
        findings: plausibility findings of the mask (:class:`bundle.plausibility.MaskFinding`, or anything with
            ``code``, ``message`` and ``slices``: Z indices of this volume). Each one naming slices adds a row with
            its caption and those axial slices. Defaults to () (no rows).

    Returns:
        A :class:`QCPicture`.

    Raises:
        ValueError: on mismatched shapes, a point or finding slice outside the volume, bad window, size or alpha, or
            a missing affine.

    Example:
        >>> pic = render_qc(ct, mask, affine, case_name="case_001")  # doctest: +SKIP
        >>> pic.rgb.shape  # doctest: +SKIP
        (436, 1118, 3)
    """
    ct = _volume(image, "image").astype(np.float32, copy=False)
    pred = _volume(mask, "mask") != 0
    if pred.shape != ct.shape:
        raise ValueError(f"mask shape {pred.shape} differs from image shape {ct.shape}.")
    ref = None
    if reference is not None:
        ref = _volume(reference, "reference") != 0
        if ref.shape != ct.shape:
            raise ValueError(f"reference shape {ref.shape} differs from image shape {ct.shape}.")
    if not window_width > 0:
        raise ValueError(f"window_width must be > 0, got {window_width!r}.")
    if not isinstance(panel_size, (int, np.integer)) or panel_size < 16:
        raise ValueError(f"panel_size must be an integer >= 16, got {panel_size!r}.")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha!r}.")
    affine, spacing = _geometry(image, affine_or_spacing)
    rows = [(str(f.code), str(f.message), [int(z) for z in f.slices]) for f in findings if len(f.slices)]
    for code, _, slices in rows:
        if any(not 0 <= z < ct.shape[2] for z in slices):
            raise ValueError(f"finding {code!r} names axial slices {slices} outside the volume of shape {ct.shape}.")

    if point is None:
        source = pred if pred.any() else ref if ref is not None and ref.any() else None
        if source is None:
            centre = tuple(int(n // 2) for n in ct.shape)
        else:
            centre = tuple(int(round(c)) for c in _centre_of_mass(source))
    else:
        centre = tuple(int(v) for v in point)
        if len(centre) != 3 or any(not 0 <= c < n for c, n in zip(centre, ct.shape, strict=True)):
            raise ValueError(f"point {tuple(point)} is outside the volume of shape {ct.shape}.")

    volume_ml = intracranial_volume_ml(pred, affine)
    dice = None
    if ref is not None:
        total = int(pred.sum()) + int(ref.sum())
        dice = 2.0 * int((pred & ref).sum()) / total if total else float("nan")

    extents = [n * s for n, s in zip(ct.shape, spacing, strict=True)]
    scale = max(extents) / panel_size  # mm per pixel
    font = _font(_FONT_SIZE)
    low = window_level - window_width / 2.0

    def render(view: str, index_value: int) -> np.ndarray:
        axis = _VIEWS.index(view)
        index = [slice(None)] * 3
        index[axis] = index_value
        h_axis, v_axis = _VIEW_AXES[view]
        out_shape = (max(1, round(extents[v_axis] / scale)), max(1, round(extents[h_axis] / scale)))

        def show(volume: np.ndarray) -> np.ndarray:
            return _resample_nearest(_display(volume[tuple(index)]), out_shape, spacing[v_axis], spacing[h_axis], scale)

        grey = np.clip((show(ct) - low) / window_width, 0.0, 1.0) * 255.0
        rgb = np.repeat(grey[..., None], 3, axis=2).astype(np.float32)
        p = show(pred)
        if ref is None:
            _blend(rgb, p, QC_COLOURS["mask"], alpha)
            rgb[p & ~ndimage.binary_erosion(p, border_value=0)] = QC_COLOURS["mask"]
        else:
            r = show(ref)
            _blend(rgb, p & r, QC_COLOURS["tp"], alpha)
            _blend(rgb, r & ~p, QC_COLOURS["fn"], alpha)
            _blend(rgb, p & ~r, QC_COLOURS["fp"], alpha)
        return np.clip(np.rint(rgb), 0, 255).astype(np.uint8)

    panels_rgb = {view: render(view, centre[axis]) for axis, view in enumerate(_VIEWS)}

    title = [case_name or "(unnamed case)"]
    volume_line = f"Intracranial volume: {volume_ml:.1f} mL"
    if dice is not None:
        volume_line += f"   Dice vs reference: {dice:.4f}"
    title.append(volume_line)
    title.append(
        f"sagittal x={centre[0]}, coronal y={centre[1]}, axial z={centre[2]}   shape {ct.shape}   spacing "
        f"{spacing[0]:.2f} x {spacing[1]:.2f} x {spacing[2]:.2f} mm   window L{window_level:g} W{window_width:g}"
    )
    if findings:
        title.append("findings: " + ", ".join(str(f.code) for f in findings))
    line_height = _FONT_SIZE + 5
    header = 8 + line_height * (len(title) + (1 if ref is not None else 0))
    width = sum(rgb.shape[1] + 2 * _MARGIN for rgb in panels_rgb.values())
    main_height = max(rgb.shape[0] for rgb in panels_rgb.values()) + 2 * _MARGIN
    axial_h, axial_w = panels_rgb["axial"].shape[:2]
    caption_height = 2 * line_height + 4  # two lines of the finding's message
    row_height = caption_height + axial_h + 2 * _MARGIN
    width = max([width] + [len(slices) * (axial_w + 2 * _MARGIN) for _, _, slices in rows])
    height = header + main_height + row_height * len(rows)
    canvas = Image.new("RGB", (width, height), (0, 0, 0))
    draw = ImageDraw.Draw(canvas)
    for i, line in enumerate(title):
        draw.text((8, 6 + i * line_height), line, fill=(255, 255, 255), font=font)
    if ref is not None:
        x = 8
        y = 6 + len(title) * line_height
        for key, text in (("tp", "agreement (TP)"), ("fn", "under-segmented (FN)"), ("fp", "over-segmented (FP)")):
            draw.rectangle((x, y + 2, x + 12, y + 14), fill=QC_COLOURS[key])
            draw.text((x + 18, y), text, fill=(255, 255, 255), font=font)
            x += 30 + int(draw.textlength(text, font=font))

    panels: dict[str, QCPanel] = {}
    left = 0
    for view, axis in zip(_VIEWS, (0, 1, 2), strict=True):
        rgb = panels_rgb[view]
        h, w = rgb.shape[:2]
        x0, y0 = left + _MARGIN, header + _MARGIN
        canvas.paste(Image.fromarray(rgb, mode="RGB"), (x0, y0))
        west, east, north, south = _VIEW_LETTERS[view]
        colour = (255, 255, 0)
        draw.text((x0 - _MARGIN // 2, y0 + h // 2), west, fill=colour, font=font, anchor="mm")
        draw.text((x0 + w + _MARGIN // 2, y0 + h // 2), east, fill=colour, font=font, anchor="mm")
        draw.text((x0 + w // 2, y0 - _MARGIN // 2), north, fill=colour, font=font, anchor="mm")
        draw.text((x0 + w // 2, y0 + h + _MARGIN // 2), south, fill=colour, font=font, anchor="mm")
        panels[view] = QCPanel(view=view, slice_index=int(centre[axis]), box=(x0, y0, w, h), mm_per_pixel=scale)
        left += w + 2 * _MARGIN

    finding_panels: list[QCPanel] = []
    for number, (code, message, slices) in enumerate(rows):
        top = header + main_height + number * row_height
        draw.line((0, top + 1, width, top + 1), fill=(90, 90, 90))
        for i, line in enumerate(_wrap(f"{code}: {message}", width - 16, draw, font, 2)):
            draw.text((8, top + 4 + i * line_height), line, fill=(255, 200, 80), font=font)
        left = 0
        for z in slices:
            x0, y0 = left + _MARGIN, top + caption_height + _MARGIN
            canvas.paste(Image.fromarray(render("axial", z), mode="RGB"), (x0, y0))
            draw.text(
                (x0 + axial_w // 2, y0 - _MARGIN // 2), f"axial z={z}", fill=(255, 255, 0), font=font, anchor="mm"
            )
            finding_panels.append(QCPanel("axial", z, (x0, y0, axial_w, axial_h), scale, finding=code))
            left += axial_w + 2 * _MARGIN

    return QCPicture(
        rgb=np.asarray(canvas),
        panels=panels,
        centre=centre,
        volume_ml=volume_ml,
        dice=dice,
        title_lines=title,
        finding_panels=finding_panels,
    )


def save_qc_png(
    path: str | os.PathLike,
    image: NdarrayOrTensor,
    mask: NdarrayOrTensor,
    affine_or_spacing: NdarrayOrTensor | Sequence[float] | None = None,
    **kwargs,
) -> QCPicture:
    """Render the QC picture and write it as a PNG, atomically (temporary file in the same folder, then rename).

    Args:
        path: output ``.png`` file; its folder is created if needed. An existing file is replaced.
        image: CT in HU (see :func:`render_qc`).
        mask: binary mask, same shape.
        affine_or_spacing: 4x4 affine or three spacings in mm. Defaults to None (a MetaTensor's affine).
        kwargs: the other arguments of :func:`render_qc` (``reference``, ``point``, ``case_name``, ...).

    Returns:
        The :class:`QCPicture` that was written.

    Raises:
        ValueError: if ``path`` does not end in ``.png``, and as :func:`render_qc`.

    Example:
        >>> save_qc_png("out/case_001_qc.png", ct, mask, affine, case_name="case_001")  # doctest: +SKIP
    """
    path = Path(path)
    if path.suffix.lower() != ".png":
        raise ValueError(f"QC picture path must end in .png, got {str(path)!r}.")
    picture = render_qc(image, mask, affine_or_spacing, **kwargs)
    with atomic_output(path) as tmp:
        Image.fromarray(picture.rgb, mode="RGB").save(tmp, format="PNG")
    logger.info("QC picture written: %s", path)
    return picture
