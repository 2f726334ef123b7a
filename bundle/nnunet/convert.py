# SPDX-License-Identifier: Apache-2.0
"""Convert a fold that nnU-Net trained with the C-LSTM plans into this bundle's ``models/model.pt``.

``monai.apps.nnunet.convert_nnunet_to_monai_bundle`` keeps nnU-Net's checkpoint format (``{"network_weights": ...}``
for ``ModelnnUNetWrapper``, which runs nnU-Net's own predictor inside a bundle); this bundle's ``configs/*.json``
load a plain ``UNetConvLSTM`` state dict with ``CheckpointLoader``. ``NNUNetConvLSTM`` is a ``UNetConvLSTM``, so the
conversion only takes ``network_weights`` out of the checkpoint, checks that they load into ``UNetConvLSTM`` with the
plans' sizes, and saves them, with a JSON sidecar naming those sizes and nnU-Net's preprocessing (target spacing and
intensity normalization), which the bundle's configs must be given to match (see ``docs/nnunet.md``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Union

import torch

from bundle.networks import UNetConvLSTM

__all__ = ["convert_to_bundle"]

_NNUNET_ONLY_KWARGS = ("slice_axis", "slice_statistics")


def convert_to_bundle(
    model_folder: Union[str, Path],
    output: Union[str, Path] = "models/model.pt",
    fold: Union[int, str] = 0,
    checkpoint: str = "checkpoint_final.pth",
    configuration: str = "3d_clstm",
) -> dict[str, Any]:
    """Write the bundle's weights file from ``<model_folder>/fold_<fold>/<checkpoint>``.

    Args:
        model_folder: the trained model's folder, ``$nnUNet_results/DatasetXXX/<trainer>__<plans>__<configuration>``
            (holds ``plans.json`` and ``dataset.json``).
        output: the ``model.pt`` to write; a ``.json`` sidecar is written beside it. Defaults to ``models/model.pt``.
        fold: the fold. Defaults to 0.
        checkpoint: checkpoint file name in the fold folder. Defaults to ``checkpoint_final.pth``.
        configuration: the plans configuration that was trained. Defaults to ``3d_clstm``.

    Returns:
        The sidecar's content: ``network`` (``UNetConvLSTM`` arguments), ``spacing_mm`` (nnU-Net's target spacing,
        in the bundle's x, y, z order for SimpleITK-read NIfTI), ``normalization`` and ``source``.

    Raises:
        ValueError: if the configuration's network is not the C-LSTM.
    """
    folder = Path(model_folder)
    plans = json.loads((folder / "plans.json").read_text())
    config = dict(plans["configurations"][configuration])
    while "inherits_from" in config:
        parent = dict(plans["configurations"][config.pop("inherits_from")])
        parent.update(config)
        config = parent
    arch = config["architecture"]
    if not arch["network_class_name"].endswith("NNUNetConvLSTM"):
        raise ValueError(f"configuration {configuration!r} trains {arch['network_class_name']}, not the C-LSTM.")
    kwargs = {k: v for k, v in arch["arch_kwargs"].items() if k not in _NNUNET_ONLY_KWARGS}
    source = folder / f"fold_{fold}" / checkpoint
    saved = torch.load(source, map_location="cpu", weights_only=False)
    weights = {k.removeprefix("_orig_mod.").removeprefix("module."): v for k, v in saved["network_weights"].items()}
    dataset = json.loads((folder / "dataset.json").read_text())
    network = UNetConvLSTM(in_channels=len(dataset["channel_names"]), out_channels=len(dataset["labels"]), **kwargs)
    network.load_state_dict(weights)  # strict: the keys and shapes must be UNetConvLSTM's
    out = Path(output)
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(network.state_dict(), out)
    spacing = [float(s) for s in config["spacing"]]
    transposed = [spacing[plans["transpose_backward"][i]] for i in range(3)]  # back to the reader's (z, y, x)
    info = {
        "network": {"in_channels": network.in_channels, "out_channels": network.out_channels, **kwargs},
        "spacing_mm": transposed[::-1],
        "normalization": {
            "schemes": config["normalization_schemes"],
            "foreground_intensity_properties_per_channel": plans["foreground_intensity_properties_per_channel"],
        },
        "source": str(source),
    }
    out.with_suffix(".json").write_text(json.dumps(info, indent=2) + "\n")
    return info
