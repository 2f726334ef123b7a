# SPDX-License-Identifier: Apache-2.0
"""Write a phantom datalist (``bundle.data.phantoms.make_phantom_dataset``) as an nnU-Net raw dataset."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Union

__all__ = ["datalist_to_nnunet"]


def datalist_to_nnunet(
    datalist_file: Union[str, Path], raw_root: Union[str, Path], dataset_id: int = 501, name: str = "Phantoms"
) -> Path:
    """Copy a datalist's cases into ``<raw_root>/DatasetXXX_<name>`` in nnU-Net's raw format.

    ``"training"`` and ``"validation"`` cases go to ``imagesTr``/``labelsTr`` (case ids ``train_NNN`` and ``val_NNN``),
    ``"test"`` cases to ``imagesTs``/``labelsTs`` (``test_NNN``). The datalist's own split is kept as nnU-Net's fold 0
    in ``splits_final.json`` beside ``dataset.json``: copy it into the preprocessed folder after planning
    (``nnUNetv2_plan_and_preprocess`` does not).

    Args:
        datalist_file: ``datalist.json`` with ``"image"``/``"label"`` paths relative to its folder.
        raw_root: ``$nnUNet_raw``.
        dataset_id: nnU-Net dataset id. Defaults to 501.
        name: dataset name. Defaults to ``Phantoms``.

    Returns:
        The dataset folder.
    """
    datalist_file = Path(datalist_file)
    datalist = json.loads(datalist_file.read_text())
    folder = Path(raw_root) / f"Dataset{dataset_id:03d}_{name}"
    splits = {"train": [], "val": []}
    for split, prefix, suffix in (("training", "train", "Tr"), ("validation", "val", "Tr"), ("test", "test", "Ts")):
        for i, item in enumerate(datalist.get(split, [])):
            case = f"{prefix}_{i:03d}"
            for key, sub, tail in (("image", "images", "_0000"), ("label", "labels", "")):
                target = folder / f"{sub}{suffix}" / f"{case}{tail}.nii.gz"
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(datalist_file.parent / item[key], target)
            if prefix in splits:
                splits[prefix].append(case)
    dataset = {
        "channel_names": {"0": "CT"},
        "labels": {"background": 0, "cranial_cavity": 1},
        "numTraining": len(splits["train"]) + len(splits["val"]),
        "file_ending": ".nii.gz",
        # nibabel, not SimpleITK (nnU-Net's default): SimpleITK refuses the sheared affine of a gantry-tilted series
        "overwrite_image_reader_writer": "NibabelIO",
    }
    (folder / "dataset.json").write_text(json.dumps(dataset, indent=4) + "\n")
    (folder / "splits_final.json").write_text(json.dumps([splits], indent=4) + "\n")
    return folder
