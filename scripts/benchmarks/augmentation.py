# SPDX-License-Identifier: Apache-2.0
"""Seconds per volume of the paper's augmentation (random rotation +-10 degrees and translation +-20 voxels per axis,
image linear and label together) with :class:`~bundle.transforms.RandRotateTranslated` against MONAI's
``RandAffined`` with the same ranges, on one CPU thread, in the same run.

Usage: ``python scripts/benchmark.py augmentation [--size "(512,512,320)"] [--repeats 3] [--threads 1]``.
"""

from __future__ import annotations

import math
import statistics
import time
from typing import Any, Callable, Sequence

import torch

__all__ = ["benchmark_augmentation"]


def _sample(size: Sequence[int], spacing: Sequence[float]) -> dict[str, Any]:
    from monai.data import MetaTensor

    generator = torch.Generator().manual_seed(0)
    image = torch.randn((1, *size), generator=generator) * 300.0 - 500.0
    grid = torch.meshgrid(*[torch.linspace(-1, 1, n) for n in size], indexing="ij")
    label = (sum(g**2 for g in grid) < 0.5).to(torch.uint8)[None]
    affine = torch.diag(torch.tensor([*spacing, 1.0], dtype=torch.float64))
    return {"image": MetaTensor(image, affine=affine), "label": MetaTensor(label, affine=affine.clone())}


def _time(function: Callable[[], Any], repeats: int) -> tuple[float, float, float]:
    """Median wall, fastest wall and median CPU seconds of ``repeats`` calls."""
    walls, cpus = [], []
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        function()
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    return statistics.median(walls), min(walls), statistics.median(cpus)


def _format_table(rows: list[dict[str, Any]], columns: Sequence[str]) -> str:
    cells = [[f"{row[c]:.3f}" if isinstance(row[c], float) else str(row[c]) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)) for r in cells]
    return "\n".join(lines)


def benchmark_augmentation(
    size: Sequence[int] = (512, 512, 320),
    repeats: int = 3,
    threads: int = 1,
    baseline_repeats: int = 1,
    spacing: Sequence[float] = (0.45, 0.45, 0.5),
) -> list[dict]:
    """Time one augmentation call (image + label) of ours and of MONAI's ``RandAffined`` and print a table.

    Args:
        size: spatial size of the volume. Defaults to (512, 512, 320), the paper's full resolution.
        repeats: calls of our transform (median reported). Defaults to 3.
        threads: torch threads during the measurement (restored afterwards). Defaults to 1.
        baseline_repeats: calls of ``RandAffined`` (about a minute each at full size on one thread). Defaults to 1.
        spacing: voxel size in mm (our rotation is physical). Defaults to (0.45, 0.45, 0.5).

    Returns:
        One dict per row: ``method``, ``keys``, ``seconds`` (median wall), ``fastest`` (wall), ``cpu_seconds``
        (median process CPU time: on a shared machine closer to what an idle core would take), ``repeats``,
        ``ratio`` (seconds over ours for image + label). Ours is timed after one untimed call that allocates the
        scratch volumes it keeps, as in training.

    Raises:
        ValueError: if ``size`` is not 3 positive integers or ``repeats``/``threads``/``baseline_repeats`` < 1.

    Example:
        >>> rows = benchmark_augmentation(size=(64, 64, 32), repeats=1)  # doctest: +SKIP
    """
    from monai.transforms import RandAffined

    from bundle.transforms import RandRotateTranslated

    if len(size) != 3 or any(int(s) < 1 for s in size):
        raise ValueError(f"size must be 3 positive integers, got {size}.")
    for name, value in (("repeats", repeats), ("threads", threads), ("baseline_repeats", baseline_repeats)):
        if int(value) < 1:
            raise ValueError(f"{name} must be >= 1, got {value}.")
    size = tuple(int(s) for s in size)
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(int(threads))
    try:
        data = _sample(size, spacing)
        ours = RandRotateTranslated(["image", "label"], max_rotation_deg=10.0, max_translation_vox=20.0)
        ours.set_random_state(seed=0)
        ours_nearest = RandRotateTranslated(["image", "label"], mode=("bilinear", "nearest")).set_random_state(seed=0)
        ours_image = RandRotateTranslated("image").set_random_state(seed=0)
        ours_label = RandRotateTranslated("label", mode="nearest", padding_mode="zeros").set_random_state(seed=0)
        ours_binary = RandRotateTranslated("label", mode="binary", padding_mode="zeros").set_random_state(seed=0)
        monai = RandAffined(
            keys=["image", "label"],
            prob=1.0,
            rotate_range=[math.radians(10.0)] * 3,
            translate_range=[20.0] * 3,
            mode=("bilinear", "nearest"),
            padding_mode=("border", "zeros"),
        )
        monai.set_random_state(seed=0)
        rows = []
        for method, keys, function, n, warm_up in (
            ("RandRotateTranslated (ours)", "image+label (binary)", lambda: ours(data), repeats, True),
            ("RandRotateTranslated (ours)", "image+label (nearest)", lambda: ours_nearest(data), repeats, True),
            ("RandRotateTranslated (ours)", "image", lambda: ours_image({"image": data["image"]}), repeats, True),
            ("RandRotateTranslated (ours)", "label", lambda: ours_label({"label": data["label"]}), repeats, True),
            (
                "RandRotateTranslated (ours)",
                "label (binary)",
                lambda: ours_binary({"label": data["label"]}),
                repeats,
                True,
            ),
            ("MONAI RandAffined", "image+label", lambda: monai(data), baseline_repeats, False),
        ):
            if warm_up:  # the first call allocates the scratch volumes kept for the following calls (training)
                function()
            seconds, fastest, cpu = _time(function, int(n))
            rows.append(
                {
                    "method": method,
                    "keys": keys,
                    "seconds": seconds,
                    "fastest": fastest,
                    "cpu_seconds": cpu,
                    "repeats": int(n),
                }
            )
    finally:
        torch.set_num_threads(previous_threads)
    reference = rows[0]["seconds"]
    for row in rows:
        row["ratio"] = row["seconds"] / reference
    print(
        f"Augmentation of one {size[0]}x{size[1]}x{size[2]} float32 volume and its uint8 label, rotation +-10 deg "
        f"and translation +-20 voxels per axis, {threads} thread(s); "
        "ratio = seconds / ours (image+label, default binary label)"
    )
    print(_format_table(rows, ["method", "keys", "seconds", "fastest", "cpu_seconds", "repeats", "ratio"]))
    return rows
