# SPDX-License-Identifier: Apache-2.0
"""Render ``docs/images/phantoms_vs_real.png``: synthetic head-CT phantoms beside a real head CT, same windows.

The top row shows axial slices of a real non-contrast head CT (a DICOM series folder, read simply with pydicom) in a
soft-tissue window (W80 L40) and a bone window (W2000 L500). Each further row is one full-size phantom: axial
slices at the posterior fossa and at the lateral ventricles and a mid-sagittal slice, in both windows, with the
cranial-cavity label outlined in red on the soft-tissue tiles (for a phantom with a lesion the second axial slice
goes through the lesion). Images are shown as stored (a tilted phantom's
sagittal slice is sheared, as a viewer shows it) in the radiological convention (patient's right on the left,
anterior up; sagittal: anterior left).

Usage (from the repository root)::

    python scripts/render_phantom_figure.py REAL_SERIES_DIR [--output docs/images/phantoms_vs_real.png]
        [--seeds 0,3,5] [--in_plane_size 512]
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

SOFT = (80.0, 40.0)  # window width, level
BONE = (2000.0, 500.0)
TILE = 240
TITLE_H = 26


def _window(image, window):
    import numpy as np

    width, level = window
    return np.clip((image - (level - width / 2.0)) / width * 255.0, 0, 255).astype(np.uint8)


def _tile(image, window, label=None, aspect: float = 1.0):
    """A TILE x TILE RGB tile of a 2D display-oriented slice (rows down, columns right), label outlined in red."""
    import numpy as np
    from PIL import Image
    from scipy import ndimage

    grey = _window(np.asarray(image, dtype=np.float32), window)
    rgb = np.stack([grey] * 3, axis=-1)
    img = Image.fromarray(rgb)
    height = max(1, int(round(img.height * aspect)))
    scale = TILE / max(img.width, height)
    size = (max(1, int(round(img.width * scale))), max(1, int(round(height * scale))))
    img = img.resize(size, Image.BILINEAR)
    if label is not None:
        mask = Image.fromarray(np.asarray(label, dtype=np.uint8) * 255).resize(size, Image.NEAREST)
        mask = np.asarray(mask) > 127
        edge = mask & ~ndimage.binary_erosion(mask)
        arr = np.asarray(img).copy()
        arr[edge] = (255, 40, 40)
        img = Image.fromarray(arr)
    canvas = Image.new("RGB", (TILE, TILE))
    canvas.paste(img, ((TILE - size[0]) // 2, (TILE - size[1]) // 2))
    return canvas


def _real_tiles(series_dir):
    """Tiles of the real series: axial slices at three levels, soft and bone windows."""
    import numpy as np
    import pydicom

    datasets = []
    for name in sorted(os.listdir(series_dir)):
        try:
            datasets.append(pydicom.dcmread(os.path.join(series_dir, name)))
        except (pydicom.errors.InvalidDicomError, IsADirectoryError):
            continue  # licence files and the like
    if not datasets:
        raise ValueError(f"no DICOM files in {series_dir}.")
    datasets.sort(key=lambda d: float(d.ImagePositionPatient[2]))
    slices = [d.pixel_array.astype(np.float32) * float(d.RescaleSlope) + float(d.RescaleIntercept) for d in datasets]
    n = len(slices)
    tiles = []
    for frac in (0.3, 0.45, 0.6):
        k = min(n - 1, int(round(frac * (n - 1))))
        tiles += [_tile(slices[k], SOFT), _tile(slices[k], BONE)]
    tilt = float(datasets[0].get("GantryDetectorTilt", 0.0))
    return tiles, f"real head CT ({datasets[0].get('Manufacturer', '')} {n} slices, tilt {tilt:g} deg)"


def _phantom_tiles(seed: int, in_plane_size: int):
    import numpy as np

    from bundle.data import make_phantom

    ph = make_phantom(seed, in_plane_size=in_plane_size)
    spacing = ph.info["slice_spacing_mm"]
    fm_voxel = np.linalg.solve(ph.affine, np.r_[ph.info["foramen_magnum"]["point"], 1.0])[:3]
    levels = [fm_voxel[2] + 22.0 / spacing, fm_voxel[2] + 65.0 / spacing]
    if ph.info.get("lesion_centre_world") is not None:  # show the lesion instead of the ventricles
        lesion = np.linalg.solve(ph.affine, np.r_[ph.info["lesion_centre_world"], 1.0])[:3]
        levels[1] = lesion[2]
    tiles = []
    for level in levels:
        k = int(np.clip(round(level), 0, ph.image.shape[2] - 1))
        axial = ph.image[::-1, ::-1, k].T  # rows anterior -> posterior, columns patient right -> left
        label = ph.label[::-1, ::-1, k].T
        tiles += [_tile(axial, SOFT, label), _tile(axial, BONE)]
    x = int(np.clip(round(fm_voxel[0]), 0, ph.image.shape[0] - 1))
    sagittal = ph.image[x, ::-1, ::-1].T  # rows superior -> inferior, columns anterior -> posterior
    label = ph.label[x, ::-1, ::-1].T
    aspect = ph.info["table_step_mm"] / ph.info["pixel_spacing_mm"]
    tiles += [_tile(sagittal, SOFT, label, aspect), _tile(sagittal, BONE, aspect=aspect)]
    info = ph.info
    title = (
        f"phantom seed {seed}: {info['variant']}, {info['num_slices']} x {info['slice_spacing_mm']:g} mm, "
        f"tilt {info['gantry_tilt_deg']:.1f} deg, cavity {info['volume_ml']:.0f} mL"
    )
    return tiles, title


def render(
    real_series: str,
    output: str = "docs/images/phantoms_vs_real.png",
    seeds: str | tuple[int, ...] = "0,3,5",
    in_plane_size: int = 512,
) -> str:
    """Render the comparison figure.

    Args:
        real_series: folder holding one real head-CT DICOM series.
        output: PNG to write (atomically). Defaults to "docs/images/phantoms_vs_real.png".
        seeds: phantom seeds, comma separated. Defaults to "0,3,5".
        in_plane_size: phantom in-plane size. Defaults to 512 (full size).

    Returns:
        The path written.
    """
    import logging

    from PIL import Image, ImageDraw, ImageFont

    from bundle.cli import setup_logging
    from bundle.utils import atomic_output

    setup_logging(show_level=False)
    if isinstance(seeds, str):
        seeds = tuple(int(s) for s in seeds.split(",") if s.strip())
    elif isinstance(seeds, int):
        seeds = (seeds,)
    if not os.path.isdir(real_series):
        raise ValueError(f"real_series must be a folder holding a DICOM series, got {real_series!r}.")
    rows = [_real_tiles(real_series)] + [_phantom_tiles(int(s), in_plane_size) for s in seeds]
    columns = [
        "axial, soft tissue W80 L40",
        "axial, bone W2000 L500",
        "axial, soft tissue",
        "axial, bone",
        "sagittal / axial, soft tissue",
        "sagittal / axial, bone",
    ]
    header = TITLE_H
    width = TILE * len(columns)
    height = header + len(rows) * (TILE + TITLE_H)
    figure = Image.new("RGB", (width, height), (20, 20, 20))
    draw = ImageDraw.Draw(figure)
    font = ImageFont.load_default(size=15)
    for c, text in enumerate(columns):
        draw.text((c * TILE + 6, 5), text, fill=(230, 230, 230), font=font)
    for r, (tiles, title) in enumerate(rows):
        top = header + r * (TILE + TITLE_H)
        draw.text((6, top + 5), title, fill=(255, 210, 120) if r == 0 else (150, 210, 255), font=font)
        for c, tile in enumerate(tiles):
            figure.paste(tile, (c * TILE, top + TITLE_H))
    with atomic_output(output) as tmp:
        figure.save(tmp, optimize=True)
    logging.getLogger(__name__).info("wrote %s", output)
    return output


if __name__ == "__main__":
    import fire

    fire.Fire(render)
