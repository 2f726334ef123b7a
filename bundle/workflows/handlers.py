# SPDX-License-Identifier: Apache-2.0
"""Ignite handlers of the bundle's training and evaluation workflows.

- :class:`PretrainedUNetHandler`: stage 2 starts from stage 1's best 2D U-Net (every U-Net weight except its final
  1x1 convolution, whose output channels differ) and keeps those weights fixed for the first N iterations (the
  paper: 1000 of 1500).
- :class:`ResumeHandler`: saves model, optimizer, trainer and best-metric state every N epochs (atomically) and
  resumes from it after an interruption.
- :class:`CaseMetricsHandler`: per-case Dice and HD95 (mm) of an evaluation, written as CSV with the mean +- std.
- :class:`AtomicCheckpointSaver`: MONAI's ``CheckpointSaver`` (the best ``model.pt``) writing atomically.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from ignite.engine import Engine, Events
from ignite.handlers import Checkpoint, DiskSaver
from monai.data import MetaTensor
from monai.handlers import CheckpointLoader, CheckpointSaver

from bundle.metrics import case_metrics, format_summary, summarize
from bundle.networks.gate_init import init_gates_from_slice_logits
from bundle.utils import atomic_output, atomic_write_text
from bundle.weights import load_state_dict_file

__all__ = ["AtomicCheckpointSaver", "CaseMetricsHandler", "PretrainedUNetHandler", "ResumeHandler", "unwrap"]

logger = logging.getLogger(__name__)


def unwrap(network: torch.nn.Module) -> torch.nn.Module:
    """The module inside a ``DistributedDataParallel`` / ``DataParallel`` wrapper (or the module itself)."""
    return (
        network.module
        if isinstance(network, (torch.nn.DataParallel, torch.nn.parallel.DistributedDataParallel))
        else network
    )


def _is_main_process() -> bool:
    import torch.distributed as dist

    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


def _atomic_torch_save(obj: Any, path: Path) -> None:
    with atomic_output(path) as tmp:
        torch.save(obj, tmp)


def _loads_network(engine: Engine, network: torch.nn.Module) -> bool:
    """Whether a MONAI ``CheckpointLoader`` attached to ``engine`` loads weights into ``network`` when it starts."""
    target = unwrap(network)
    # ignite has no public list of an event's handlers; CheckpointLoader.attach adds itself to Events.STARTED
    for handler, *_ in engine._event_handlers.get(Events.STARTED, []):
        if isinstance(handler, CheckpointLoader):
            modules = [m for m in handler.load_dict.values() if isinstance(m, torch.nn.Module)]
            if any(unwrap(m) is target for m in modules):
                return True
    return False


class PretrainedUNetHandler:
    """Initialise ``network.unet`` from a stage-1 :class:`~bundle.networks.UNet2D` and freeze it for a while.

    The weights are loaded when the handler is attached, i.e. when the trainer is built, before any ``STARTED``
    handler runs: a ``CheckpointLoader`` of the whole network (MONAI Label's fine-tuning) or a resumed checkpoint
    therefore overrides them. The U-Net's final 1x1 convolution (``output``) is not transferred: in stage 1 it maps
    to the class logits, in stage 2 to the LSTM gates. The transferred weights have ``requires_grad`` off for
    iterations ``1..freeze_iterations`` (the paper's "pre-initialized weights were fixed for the first 1000
    iterations"); normalisation running statistics keep updating. Freezing follows ``engine.state.iteration``, so a
    resumed run is frozen exactly when the original would have been. Without a checkpoint file nothing is loaded or
    frozen (a warning says so) and the whole network trains from its initialisation. With ``pass_through`` the gate
    layer, the cells and the heads are derived from stage 1's output layer
    (:func:`~bundle.networks.gate_init.init_gates_from_slice_logits`), so that stage 2 starts from stage 1's
    segmentation instead of from noise.

    Args:
        network: the stage-2 network (a :class:`~bundle.networks.UNetConvLSTM`, possibly DDP-wrapped).
        checkpoint: stage-1 weights (plain state_dict of a ``UNet2D``, or ``{"model": ...}``); None disables the
            handler. Defaults to None.
        freeze_iterations: number of first iterations during which the transferred weights are fixed. Defaults to 0.
        exclude_prefixes: U-Net parameter-name prefixes that are not transferred. Defaults to ``("output.",)``.
        pass_through: start every LSTM cell as a pass-through of stage 1's class logits. Defaults to False (the
            paper's random gate layer).

    Raises:
        ValueError: on a negative ``freeze_iterations``, a network without ``unet``, or (when attached) a checkpoint
            whose weights do not fit the U-Net (the message names the file and the first mismatches).

    Example:
        >>> handler = PretrainedUNetHandler(net, "runs/stage1/model.pt", freeze_iterations=1000)  # doctest: +SKIP
        >>> handler.attach(trainer)  # doctest: +SKIP
    """

    def __init__(
        self,
        network: torch.nn.Module,
        checkpoint: str | os.PathLike | None = None,
        freeze_iterations: int = 0,
        exclude_prefixes: tuple[str, ...] | list[str] = ("output.",),
        pass_through: bool = False,
    ) -> None:
        if isinstance(freeze_iterations, bool) or not isinstance(freeze_iterations, int) or freeze_iterations < 0:
            raise ValueError(f"freeze_iterations must be a non-negative integer, got {freeze_iterations!r}.")
        self.network = network
        self.checkpoint = None if checkpoint in (None, "") else Path(checkpoint)
        self.freeze_iterations = freeze_iterations
        self.exclude_prefixes = tuple(exclude_prefixes)
        self.pass_through = pass_through
        self.loaded = False
        self._frozen: bool | None = None
        self._transferred: list[torch.nn.Parameter] = []

    def _unet(self) -> torch.nn.Module:
        unet = getattr(unwrap(self.network), "unet", None)
        if not isinstance(unet, torch.nn.Module):
            raise ValueError(
                f"PretrainedUNetHandler needs a network with a `unet` sub-module, got {type(unwrap(self.network))}."
            )
        return unet

    def load(self, warn_missing: bool = True) -> bool:
        """Load the stage-1 weights into ``network.unet``; return whether a file was loaded.

        Args:
            warn_missing: warn when the checkpoint file does not exist (stage 2 then starts from the network's
                random initialisation); False logs it at INFO level. Defaults to True.
        """
        if self.checkpoint is None:
            return False
        if not self.checkpoint.is_file():
            if warn_missing:
                logger.warning(
                    "stage-1 U-Net weights %s not found: stage 2 trains the whole network from its random "
                    "initialisation, without freezing (run stage 1 first to follow the paper).",
                    self.checkpoint,
                )
            else:
                logger.info(
                    "stage-1 U-Net weights %s not found; the network is loaded from other weights.", self.checkpoint
                )
            return False
        unet = self._unet()
        state = load_state_dict_file(self.checkpoint)
        own = unet.state_dict()
        keep = {k: v for k, v in state.items() if not k.startswith(self.exclude_prefixes)}
        expected = {k for k in own if not k.startswith(self.exclude_prefixes)}
        missing, unexpected = sorted(expected - set(keep)), sorted(set(keep) - expected)
        wrong = sorted(k for k in expected & set(keep) if keep[k].shape != own[k].shape)
        if missing or unexpected or wrong:
            raise ValueError(
                f"stage-1 weights {self.checkpoint} do not fit the stage-2 U-Net (different `features`?): "
                f"missing {missing[:3]}, unexpected {unexpected[:3]}, wrong shape {wrong[:3]}."
            )
        unet.load_state_dict(keep, strict=False)
        names = set(keep)
        self._transferred = [p for n, p in unet.named_parameters() if n in names]
        if self.pass_through:
            init_gates_from_slice_logits(unwrap(self.network), state["output.weight"], state["output.bias"])
            logger.info(
                "stage 2: loaded %d U-Net tensors from %s; gates, cells and heads start as a pass-through of its "
                "segmentation",
                len(keep),
                self.checkpoint,
            )
        else:
            logger.info(
                "stage 2: loaded %d U-Net tensors from %s (final conv not transferred)", len(keep), self.checkpoint
            )
        return True

    def attach(self, engine: Engine) -> None:
        """Load the weights now and, if loaded and ``freeze_iterations > 0``, freeze them at each iteration start.

        A missing stage-1 file is only worth a warning when nothing else initialises the network: when a
        ``CheckpointLoader`` of the whole network is attached before this handler (MONAI Label's fine-tuning from
        ``models/model.pt``, ``configs/train_finetune.json``) it is logged at INFO level.
        """
        self.loaded = self.load(warn_missing=not _loads_network(engine, self.network))
        if self.loaded and self.freeze_iterations > 0:
            engine.add_event_handler(Events.ITERATION_STARTED, self.update_freezing)
            engine.add_event_handler(Events.COMPLETED, self.release)

    def set_frozen(self, frozen: bool) -> None:
        """Turn ``requires_grad`` of the transferred weights off (frozen) or on."""
        for parameter in self._transferred:
            parameter.requires_grad_(not frozen)
            if frozen:
                parameter.grad = None
        self._frozen = frozen

    def update_freezing(self, engine: Engine) -> None:
        """Freeze during iterations ``1..freeze_iterations``, release afterwards (logged when it changes)."""
        frozen = engine.state.iteration <= self.freeze_iterations
        if frozen != self._frozen:
            self.set_frozen(frozen)
            if frozen:
                logger.info("stage 2: U-Net weights fixed up to iteration %d", self.freeze_iterations)
            else:
                logger.info("stage 2: U-Net weights released at iteration %d", engine.state.iteration)

    def release(self, engine: Engine) -> None:
        """Give every transferred weight its gradient back when training ends."""
        if self._frozen:
            self.set_frozen(False)


class _BestMetricState:
    """state_dict adapter for the best metric an evaluator has seen."""

    def __init__(self, evaluator: Engine) -> None:
        self.evaluator = evaluator

    def state_dict(self) -> dict[str, Any]:
        state = self.evaluator.state
        return {"best_metric": float(state.best_metric), "best_metric_epoch": int(state.best_metric_epoch)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.evaluator.state.best_metric = float(state["best_metric"])
        self.evaluator.state.best_metric_epoch = int(state["best_metric_epoch"])


class _SaverState:
    """state_dict adapter for the key-metric tracking list of a MONAI ``CheckpointSaver``."""

    def __init__(self, saver: Any) -> None:
        self.saver = saver

    def state_dict(self) -> dict[str, Any]:
        checkpoint = getattr(self.saver, "_key_metric_checkpoint", None)
        return dict(checkpoint.state_dict()) if checkpoint is not None else {"_saved": []}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if getattr(self.saver, "_key_metric_checkpoint", None) is not None:
            self.saver.load_state_dict(state)


class ResumeHandler:
    """Save everything needed to resume a training run, and resume from it after an interruption.

    Every ``save_interval`` epochs (with the bundle's ``epoch_length`` of 25 iterations: every validation round)
    ``save_dir/filename`` is replaced atomically by ``{"model", "optimizer", ..., "trainer"}`` state dicts plus the
    best validation metric and the best-model saver's record, so that a resumed run saves ``model.pt`` only when it
    beats the best model of the interrupted run. At ``STARTED``, if the file exists, all of it is loaded and the
    trainer continues from the saved iteration (with the configured ``max_epochs``, so a run can also be extended).
    When the run completes the file is deleted: the next training starts afresh (and fine-tuning does not resume an
    old, finished run). In a distributed run every rank loads and only rank 0 saves.

    Args:
        save_dir: folder of the resume file (created when needed).
        save_dict: objects with ``state_dict``/``load_state_dict`` to save besides the trainer, e.g.
            ``{"model": network, "optimizer": optimizer}``.
        filename: name of the resume file. Defaults to ``"last.pt"``.
        save_interval: save every N epochs. Defaults to 1.
        enabled: False makes the handler do nothing (no saving, no resuming). Defaults to True.
        validator: the validation evaluator whose ``best_metric`` is saved and restored. Defaults to None.
        best_saver: the ``CheckpointSaver`` writing the best model, whose key-metric record is saved and restored.
            Defaults to None.

    Raises:
        ValueError: on an empty ``save_dict`` or a bad ``save_interval``; when resuming, if the resume file does not
            fit the objects (the message names the file and says how to start afresh).

    Example:
        >>> ResumeHandler("runs/stage2", {"model": net, "optimizer": opt}).attach(trainer)  # doctest: +SKIP
    """

    def __init__(
        self,
        save_dir: str | os.PathLike,
        save_dict: Mapping[str, Any],
        filename: str = "last.pt",
        save_interval: int = 1,
        enabled: bool = True,
        validator: Engine | None = None,
        best_saver: Any | None = None,
    ) -> None:
        if not save_dict:
            raise ValueError("save_dict must name at least one object to save, got an empty mapping.")
        if isinstance(save_interval, bool) or not isinstance(save_interval, int) or save_interval < 1:
            raise ValueError(f"save_interval must be a positive integer, got {save_interval!r}.")
        self.path = Path(save_dir) / filename
        self.save_dict = dict(save_dict)
        self.save_interval = save_interval
        self.enabled = bool(enabled)
        if validator is not None:
            self.save_dict["best_metric"] = _BestMetricState(validator)
        if best_saver is not None:
            self.save_dict["best_saver"] = _SaverState(best_saver)

    def attach(self, engine: Engine) -> None:
        """Resume at ``STARTED``, save every ``save_interval`` epochs, delete the file at ``COMPLETED``."""
        if not self.enabled:
            return
        self.save_dict["trainer"] = engine
        engine.add_event_handler(Events.STARTED, self.resume)
        engine.add_event_handler(Events.EPOCH_COMPLETED(every=self.save_interval), self.save)
        engine.add_event_handler(Events.COMPLETED, self.completed)

    def _objects(self) -> dict[str, Any]:
        return {k: unwrap(v) if isinstance(v, torch.nn.Module) else v for k, v in self.save_dict.items()}

    def save(self, engine: Engine) -> None:
        """Write the resume file (rank 0 only)."""
        if not _is_main_process():
            return
        _atomic_torch_save({k: v.state_dict() for k, v in self._objects().items()}, self.path)
        logger.info("saved resume state at iteration %d to %s", engine.state.iteration, self.path)

    def resume(self, engine: Engine) -> None:
        """Load the resume file if there is one and continue from its iteration."""
        if not self.path.is_file():
            return
        max_epochs = engine.state.max_epochs
        try:
            state = torch.load(self.path, map_location="cpu", weights_only=True)
            Checkpoint.load_objects(to_load=self._objects(), checkpoint=state)
        except Exception as err:  # noqa: BLE001 - reported with the file and the way out
            raise ValueError(
                f"cannot resume from {self.path} ({err}); it was written by a different configuration. "
                "Delete it (or set resume=false) to start a new training run."
            ) from err
        engine.state.max_epochs = max_epochs
        logger.info(
            "resumed training from %s at iteration %d (epoch %d of %d)",
            self.path,
            engine.state.iteration,
            engine.state.epoch,
            max_epochs,
        )

    def completed(self, engine: Engine) -> None:
        """The run is finished: remove the resume file (rank 0 only)."""
        if _is_main_process() and self.path.is_file():
            self.path.unlink()
            logger.info("training completed: removed the resume file %s", self.path)


class _AtomicDiskSaver(DiskSaver):
    """ignite's ``DiskSaver`` writing through :func:`bundle.utils.atomic_output`, with an optional fixed file name.

    A fixed name (``key_metric_filename="model.pt"``) is never deleted before a save: ignite's ``Checkpoint`` removes
    the file it is about to replace, which would leave no model at all if the save then failed; here the complete new
    file replaces the old one in one ``os.replace``.
    """

    def __init__(self, dirname: str | os.PathLike, filename: str | None = None) -> None:
        super().__init__(dirname=dirname, atomic=True, require_empty=False)
        self.filename = filename

    def __call__(self, checkpoint: Mapping, filename: str, metadata: Mapping | None = None) -> None:
        super().__call__(checkpoint, self.filename or filename, metadata)

    def _save_func(self, checkpoint: Mapping, path: Path, func: Any) -> None:
        # DiskSaver.__call__ picks the saving rank, then calls this with torch.save (ignite 0.4-0.5)
        with atomic_output(path) as tmp:
            func(checkpoint, tmp, **self.kwargs)

    def remove(self, filename: str) -> None:
        if self.filename is None:  # a fixed name is replaced by the save that follows
            super().remove(filename)


class AtomicCheckpointSaver(CheckpointSaver):
    """MONAI's ``CheckpointSaver`` whose checkpoint files are written atomically.

    MONAI's saver writes straight into the final file, and with a fixed ``key_metric_filename`` it first deletes the
    previous best model: an interruption or error while saving (disk full, a killed job) leaves a truncated
    ``model.pt`` or none. This subclass writes every checkpoint to a temporary file beside it and moves it into place
    only when complete (:func:`bundle.utils.atomic_output`), and replaces a fixed-name file instead of deleting it
    first, so the previous ``model.pt`` stays intact until the new one is whole. Everything else, including
    ``load_state_dict`` and the key-metric record :class:`ResumeHandler` saves, is MONAI's.

    Args:
        args: positional arguments of ``monai.handlers.CheckpointSaver`` (``save_dir``, ``save_dict``, ...).
        kwargs: its keyword arguments (``save_key_metric``, ``key_metric_filename``, ``save_final``, ...).

    Example:
        >>> saver = AtomicCheckpointSaver(  # doctest: +SKIP
        ...     "models", {"model": net}, save_key_metric=True, key_metric_filename="model.pt"
        ... )
        >>> saver.attach(evaluator)  # doctest: +SKIP
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for checkpoint in (self._final_checkpoint, self._key_metric_checkpoint, self._interval_checkpoint):
            if checkpoint is not None:
                fixed = getattr(checkpoint.save_handler, "filename", None)
                checkpoint.save_handler = _AtomicDiskSaver(self.save_dir, filename=fixed)


def _foreground(mask: torch.Tensor | np.ndarray) -> np.ndarray:
    array = mask.detach().cpu().numpy() if isinstance(mask, torch.Tensor) else np.asarray(mask)
    if array.ndim == 4:
        array = array[1] if array.shape[0] == 2 else array[0]
    return array > 0.5


class CaseMetricsHandler:
    """Per-case Dice and 95% Hausdorff distance (mm) of an evaluation run, saved as CSV with the mean +- std.

    At every iteration each case's ``pred`` and ``label`` (binary ``(1, X, Y, Z)``, or two-channel one-hot whose
    channel 1 is the foreground) are compared with :func:`bundle.metrics.case_metrics`, with the voxel spacing taken
    from the prediction's affine (so metrics are in mm in whatever grid the masks are in, e.g. the input's native
    grid after ``Invertd``). At ``COMPLETED`` ``output_dir/metrics.csv`` (one row per case, then ``mean`` and
    ``std`` rows) and ``output_dir/metrics_summary.json`` are written atomically and the summary is logged.

    Args:
        output_dir: folder of the result files.
        pred_key: prediction key in ``engine.state.output``. Defaults to ``"pred"``.
        label_key: reference key in ``engine.state.output``. Defaults to ``"label"``.
        filename: CSV file name. Defaults to ``"metrics.csv"``.

    Example:
        >>> CaseMetricsHandler(output_dir="eval").attach(evaluator)  # doctest: +SKIP
    """

    def __init__(
        self,
        output_dir: str | os.PathLike,
        pred_key: str = "pred",
        label_key: str = "label",
        filename: str = "metrics.csv",
    ) -> None:
        self.output_dir = Path(output_dir)
        self.pred_key = pred_key
        self.label_key = label_key
        self.filename = filename
        self.rows: list[dict[str, Any]] = []
        self.summary: dict[str, dict] = {}

    def attach(self, engine: Engine) -> None:
        """Reset at ``STARTED``, measure at ``ITERATION_COMPLETED``, save at ``COMPLETED``."""
        engine.add_event_handler(Events.STARTED, self.reset)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self.iteration_completed)
        engine.add_event_handler(Events.COMPLETED, self.completed)

    def reset(self, engine: Engine) -> None:
        self.rows = []

    def iteration_completed(self, engine: Engine) -> None:
        outputs = engine.state.output
        for item in outputs if isinstance(outputs, list) else [outputs]:
            pred, label = item[self.pred_key], item[self.label_key]
            affine = pred.affine if isinstance(pred, MetaTensor) else None
            name = pred.meta.get("filename_or_obj", "") if isinstance(pred, MetaTensor) else ""
            values = case_metrics(_foreground(pred), _foreground(label), affine)
            self.rows.append({"case": str(name) or f"case_{len(self.rows):04d}", **values})

    def completed(self, engine: Engine) -> None:
        """Write the CSV and the JSON summary, and log ``Dice mean +- std`` and ``HD95 mean +- std``."""
        self.summary = {key: summarize(row[key] for row in self.rows) for key in ("dice", "hd95_mm")}
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(["case", "dice", "hd95_mm"])
        for row in self.rows:
            writer.writerow([row["case"], f"{row['dice']:.6f}", f"{row['hd95_mm']:.4f}"])
        for stat in ("mean", "std"):
            writer.writerow([stat] + [f"{self.summary[key][stat]:.6f}" for key in ("dice", "hd95_mm")])
        atomic_write_text(self.output_dir / self.filename, buffer.getvalue())
        summary = {"cases": self.rows, "summary": self.summary}
        atomic_write_text(self.output_dir / "metrics_summary.json", json.dumps(summary, indent=2) + "\n")
        logger.info(
            "evaluation of %d cases: Dice %s, HD95 %s mm (per case: %s)",
            len(self.rows),
            format_summary(self.summary["dice"], precision=4),
            format_summary(self.summary["hd95_mm"], precision=2),
            self.output_dir / self.filename,
        )
