# SPDX-License-Identifier: Apache-2.0
"""bundle.workflows.ProgressHandler: a bar on a terminal, log lines with loss and ETA elsewhere, in every config."""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path

import pytest
import torch
from ignite.engine import Engine, Events

from bundle.workflows import ProgressHandler
from bundle.workflows.progress import format_seconds

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def _engine(losses: list[float]) -> Engine:
    def step(engine, batch):
        return [{"loss": torch.tensor(losses[engine.state.iteration - 1])}]

    return Engine(step)


def _loss(output):
    return output[0]["loss"]


def _records(caplog) -> list[logging.LogRecord]:
    """The progress handler's records only: other tests may leave ignite's loggers propagating to the root."""
    return [r for r in caplog.records if r.name == "bundle.workflows.progress"]


def test_log_lines_with_loss_and_eta(caplog):
    engine = _engine([0.5, 0.4, 0.3, 0.2, 0.1, 0.05])
    ProgressHandler("train", output_transform=_loss, interval=1e-9, terminal=False).attach(engine)
    with caplog.at_level(logging.INFO, logger="bundle.workflows.progress"):
        engine.run(range(3), max_epochs=2)
    lines = [r.getMessage() for r in _records(caplog)]
    assert len(lines) == 6  # all epochs in one count, one line per iteration at this interval
    assert lines[0].startswith("train: 1/6 iterations (17%), loss 0.5000, 0:00 elapsed, ETA 0:0")
    assert lines[-1].startswith("train: 6/6 iterations (100%), loss 0.0500,") and "ETA" not in lines[-1]


def test_log_lines_are_rate_limited_and_each_run_counts_from_zero(caplog):
    engine = Engine(lambda engine, batch: None)
    ProgressHandler("validation", unit="cases", interval=3600, terminal=False).attach(engine)
    with caplog.at_level(logging.INFO, logger="bundle.workflows.progress"):
        engine.run(range(4))
        engine.run(range(4))  # a second validation round
    assert [r.getMessage().split(",")[0] for r in _records(caplog)] == ["validation: 4/4 cases (100%)"] * 2


def test_resumed_run_counts_what_is_left(caplog):
    engine = Engine(lambda engine, batch: None)
    ProgressHandler("train", interval=3600, terminal=False).attach(engine)

    @engine.on(Events.STARTED)  # after the progress handler's, as in train.json
    def resume(engine):  # as ResumeHandler does: the state of an interrupted run
        engine.state.iteration, engine.state.epoch = 4, 2

    with caplog.at_level(logging.INFO, logger="bundle.workflows.progress"):
        engine.run(range(2), max_epochs=5)
    assert _records(caplog)[-1].getMessage().startswith("train: 6/6 iterations (100%)")


def test_terminal_bar_shows_loss(monkeypatch):
    stream = io.StringIO()
    monkeypatch.setattr("sys.stderr", stream)  # tqdm writes to sys.stderr
    engine = _engine([0.25, 0.125])
    ProgressHandler("train", output_transform=_loss, terminal=True).attach(engine)
    engine.run(range(2))
    text = stream.getvalue()
    assert "train" in text and "2/2" in text and "loss=0.1250" in text


def test_a_missing_loss_does_not_stop_the_run(caplog):
    engine = Engine(lambda engine, batch: None)
    ProgressHandler("train", output_transform=_loss, interval=1e-9, terminal=False).attach(engine)
    with caplog.at_level(logging.INFO, logger="bundle.workflows.progress"):
        engine.run(range(2))
    assert "loss" not in _records(caplog)[-1].getMessage()


def test_disabled_and_bad_interval():
    engine = Engine(lambda engine, batch: None)
    ProgressHandler(enabled=False).attach(engine)
    assert not engine.has_event_handler(ProgressHandler._started)  # nothing attached
    with pytest.raises(ValueError, match="interval"):
        ProgressHandler(interval=0)


def test_format_seconds():
    assert [format_seconds(s) for s in (0, 59.6, 75.4, 3725)] == ["0:00", "1:00", "1:15", "1:02:05"]


def _targets(handlers: list) -> list[str]:
    return [h["_target_"] for h in handlers if isinstance(h, dict)]


def test_every_workflow_config_shows_progress():
    train = json.loads((CONFIGS / "train.json").read_text())
    # in train#handlers, which every rank attaches (multi_gpu_train.json adds train#logging_handlers on rank 0 only)
    assert _targets(train["train"]["handlers"])[0] == "bundle.workflows.ProgressHandler"
    assert "loss" in train["train"]["handlers"][0]["output_transform"]
    assert "bundle.workflows.ProgressHandler" in _targets(train["validate"]["handlers"])
    evaluate = json.loads((CONFIGS / "evaluate.json").read_text())
    assert "bundle.workflows.ProgressHandler" in _targets(evaluate["validate#handlers"])
    inference = json.loads((CONFIGS / "inference.json").read_text())
    assert "bundle.workflows.ProgressHandler" in _targets(inference["handlers"])
