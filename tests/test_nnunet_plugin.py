# SPDX-License-Identifier: Apache-2.0
"""The nnU-Net v2 plugin, run for real: plan and preprocess a tiny phantom dataset with nnU-Net's own commands, add
the C-LSTM configuration, train a few iterations with ``nnUNetv2_train -tr``, predict with ``nnUNetv2_predict`` and
convert the fold to the bundle's weights.

nnU-Net is not in the project's environment: this module runs in the nnU-Net lane (``scripts/run_nnunet_lane.sh``,
``NNUNET_LANE=1``, where a missing nnunetv2 is an error) and is skipped elsewhere.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

if os.environ.get("NNUNET_LANE") != "1":
    pytest.importorskip("nnunetv2", reason="nnunetv2 is not installed (it runs in scripts/run_nnunet_lane.sh)")

pytestmark = pytest.mark.slow

#: A trainer for the test only: nnUNetTrainerCLSTM cut to one epoch of 20 iterations (nnU-Net reads the
#: constructor's named arguments, so they are spelled out). It is written into its own
#: folder and appended to ``nnUNet_extTrainer``, the way a user adds a trainer variant.
TINY_TRAINER = """
import numpy as np
import torch

from bundle.nnunet.trainers.nnunet_trainer_clstm import nnUNetTrainerCLSTM


class nnUNetTrainerCLSTMTiny(nnUNetTrainerCLSTM):
    def __init__(self, plans, configuration, fold, dataset_json, device=torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        np.random.seed(0)  # nnU-Net's augmentation draws from numpy's global generator
        torch.manual_seed(0)
        self.num_epochs = 1
        self.num_iterations_per_epoch = 20
        self.num_val_iterations_per_epoch = 1
"""


#: Runs one of nnU-Net's console commands (argv[1]) through its own entry point, with ``multiprocessing.cpu_count``
#: answering 1: with ``-device cpu`` nnU-Net's commands set torch to one thread per core of the machine, which on a
#: shared CI machine makes the run many times slower (the threads spin against other work).
ONE_THREAD_LAUNCHER = """
import multiprocessing, sys
from importlib.metadata import entry_points

multiprocessing.cpu_count = lambda: 1
(command,) = entry_points(group="console_scripts", name=sys.argv[1])
sys.argv = sys.argv[1:]
sys.exit(command.load()())
"""


def _run(args: list[str], env: dict[str, str], timeout: int) -> str:
    args = [sys.executable, "-c", ONE_THREAD_LAUNCHER, *args]
    done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise AssertionError(
            f"{' '.join(args)} failed ({done.returncode}):\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}"
        )
    return done.stdout


def test_plan_train_predict_convert(tmp_path: Path, repo_root: Path) -> None:
    import nibabel as nib
    import torch

    from bundle.data.phantoms import make_phantom_dataset
    from bundle.metrics import dice_score
    from bundle.networks import UNetConvLSTM
    from bundle.nnunet.convert import convert_to_bundle
    from bundle.nnunet.dataset import datalist_to_nnunet
    from bundle.nnunet.plans import add_clstm_configuration

    datalist = make_phantom_dataset(
        tmp_path / "phantoms", num_train=3, num_val=1, num_test=1, in_plane_size=64, num_slices=16, seed=3
    )
    raw, pre, res = (tmp_path / d for d in ("raw", "preprocessed", "results"))
    raw_dataset = datalist_to_nnunet(datalist, raw, dataset_id=999, name="Tiny")
    tiny = tmp_path / "tiny_trainer"
    tiny.mkdir()
    (tiny / "nnunet_trainer_clstm_tiny.py").write_text(TINY_TRAINER)
    env = {
        **os.environ,
        "nnUNet_raw": str(raw),
        "nnUNet_preprocessed": str(pre),
        "nnUNet_results": str(res),
        "nnUNet_extTrainer": os.pathsep.join([str(repo_root / "bundle" / "nnunet" / "trainers"), str(tiny)]),
        "PYTHONPATH": str(repo_root),
        "nnUNet_n_proc_DA": "0",
        "nnUNet_def_n_proc": "1",
        "OMP_NUM_THREADS": "1",
        "MPLBACKEND": "Agg",
    }
    # nnUNet_n_proc_DA=0 (augmentation in the main process) breaks planning, which calls torch.set_num_threads with it
    plan_env = {**env, "nnUNet_n_proc_DA": "1"}
    _run(["nnUNetv2_plan_and_preprocess", "-d", "999", "-c", "3d_fullres", "-np", "1", "-npfp", "1"],
         plan_env, 300)  # fmt: skip
    pre_dataset = pre / "Dataset999_Tiny"
    (pre_dataset / "splits_final.json").write_text((raw_dataset / "splits_final.json").read_text())
    plans_file = add_clstm_configuration(pre_dataset, features=4, hidden_channels=4)
    plans = json.loads(plans_file.read_text())
    patch = plans["configurations"]["3d_clstm"]["patch_size"]
    assert patch == [16, 64, 64], patch  # whole 64 x 64 slices; the 16 slices are the recurrence length

    trainer = "nnUNetTrainerCLSTMTiny"
    _run(["nnUNetv2_train", "999", "3d_clstm", "0", "-tr", trainer, "-p", "nnUNetPlansCLSTM",
          "-device", "cpu"], env, 600)  # fmt: skip
    model_folder = res / "Dataset999_Tiny" / f"{trainer}__nnUNetPlansCLSTM__3d_clstm"
    assert (model_folder / "fold_0" / "checkpoint_final.pth").is_file()

    out = tmp_path / "pred"
    _run(["nnUNetv2_predict", "-i", str(raw_dataset / "imagesTs"), "-o", str(out), "-d", "999",
          "-c", "3d_clstm", "-f", "0", "-tr", trainer, "-p", "nnUNetPlansCLSTM", "-device", "cpu", "-npp", "1",
          "-nps", "1", "--disable_tta", "--save_probabilities"], env, 300)  # fmt: skip
    image = nib.load(raw_dataset / "imagesTs" / "test_000_0000.nii.gz")
    label = nib.load(raw_dataset / "labelsTs" / "test_000.nii.gz")
    pred = nib.load(out / "test_000.nii.gz")
    assert pred.shape == image.shape
    np.testing.assert_allclose(pred.affine, image.affine, atol=1e-4)
    # 20 iterations of a 4-feature network do not segment yet (its argmax may still be all background), so the
    # overlap is measured on the foreground probability, which nnU-Net saves in its (z, y, x) array order: it must be
    # higher inside the cavity than outside. A transposed or flipped map, or one that ignores the image, fails that.
    ref = np.asarray(label.dataobj) > 0
    prob = np.load(out / "test_000.npz")["probabilities"][1].transpose(2, 1, 0)
    assert prob.shape == ref.shape
    inside, outside = float(prob[ref].mean()), float(prob[~ref].mean())
    dice = dice_score(np.asarray(pred.dataobj) > 0, ref)
    print(
        f"nnU-Net C-LSTM test case: Dice {dice:.3f}, foreground probability {inside:.3f} inside, {outside:.3f} outside"
    )
    assert inside > outside + PROBABILITY_MARGIN

    info = convert_to_bundle(model_folder, tmp_path / "models" / "model.pt")
    network = UNetConvLSTM(**info["network"])
    network.load_state_dict(torch.load(tmp_path / "models" / "model.pt", weights_only=True))
    assert info["network"]["features"] == 4 and info["network"]["checkpoint"] is True


PROBABILITY_MARGIN = 0.05
