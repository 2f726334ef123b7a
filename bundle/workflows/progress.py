# SPDX-License-Identifier: Apache-2.0
"""Console progress of a training or evaluation run: iterations, loss and ETA.

A stage of training runs for minutes with nothing on the console but MONAI's per-iteration log lines (which
``scripts/run_default.sh`` filters out), and a validation round over whole volumes for tens of seconds.
:class:`ProgressHandler` shows how far a run is and when it will end: a tqdm bar on a terminal, and where the output
is a pipe or a file a plain log line every ``interval`` seconds, since a bar's carriage returns would pile up in a
log file and a line filter holds them back until the bar closes.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable
from typing import Any

from ignite.engine import Engine, Events

__all__ = ["ProgressHandler", "format_seconds"]

logger = logging.getLogger(__name__)


def format_seconds(seconds: float) -> str:
    """``H:MM:SS`` or ``M:SS``, as tqdm writes times.

    Example:
        >>> format_seconds(75.4), format_seconds(3725)
        ('1:15', '1:02:05')
    """
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def _is_main_process() -> bool:
    import torch.distributed as dist

    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


class ProgressHandler:
    """Progress of each ``engine.run()``: iterations done of the run's total, the loss, elapsed time and ETA.

    Attach it to a trainer (one bar over all epochs of the stage) or an evaluator (one bar per validation round).
    Only the main process of a distributed run shows progress, so the handler may stand anywhere in a handler list.

    Args:
        desc: label of the bar or log line, e.g. "train" or "validation".
        unit: what an iteration is, e.g. "iterations" or "cases". Defaults to "iterations".
        output_transform: maps ``engine.state.output`` to the loss shown (a number or a one-element tensor), e.g.
            ``monai.handlers.from_engine(['loss'], first=True)``. Default None: no loss shown (evaluators).
        interval: seconds between log lines when the output is not a terminal. Defaults to 10.
        terminal: draw a tqdm bar (True) or write log lines (False). Default None: a bar when stderr is a terminal.
        enabled: False attaches nothing (e.g. to silence it from a config override). Defaults to True.
    """

    def __init__(
        self,
        desc: str = "train",
        unit: str = "iterations",
        output_transform: Callable[[Any], Any] | None = None,
        interval: float = 10.0,
        terminal: bool | None = None,
        enabled: bool = True,
    ) -> None:
        if interval <= 0:
            raise ValueError(f"interval must be positive, got {interval}.")
        self.desc = desc
        self.unit = unit
        self.output_transform = output_transform
        self.interval = float(interval)
        self.terminal = terminal
        self.enabled = enabled
        self._bar = None
        self._start_iteration: int | None = None
        self._total = 0
        self._t0 = 0.0
        self._last_log = 0.0

    def attach(self, engine: Engine) -> None:
        if not self.enabled or not _is_main_process():
            return
        engine.add_event_handler(Events.STARTED, self._started)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._iteration_completed)
        engine.add_event_handler(Events.COMPLETED, self._completed)
        # not EXCEPTION_RAISED: ignite re-raises an exception only while no handler is registered for that event
        engine.add_event_handler(Events.TERMINATE, self._close)

    def _started(self, engine: Engine) -> None:
        self._close()
        self._start_iteration = None
        self._t0 = self._last_log = time.monotonic()

    def _begin(self, engine: Engine) -> None:
        """Counts and bar at the first iteration, not at STARTED: a resumed trainer gets its state from another
        STARTED handler (``ResumeHandler``), which may run after this one; what is left of the run is counted."""
        self._start_iteration = int(engine.state.iteration) - 1
        epoch_length = int(engine.state.epoch_length or 0)
        self._total = max(0, int(engine.state.max_epochs or 0) * epoch_length - self._start_iteration)
        terminal = self.terminal if self.terminal is not None else sys.stderr.isatty()
        if terminal:
            from tqdm.auto import tqdm

            # leave=None keeps a bar only at position 0: a stage's training bar stays, the validation bars that
            # open beneath it during training are cleared, an evaluation's or inference's own bar stays
            self._bar = tqdm(total=self._total or None, desc=self.desc, unit=self.unit, dynamic_ncols=True, leave=None)

    def _loss(self, engine: Engine) -> float | None:
        if self.output_transform is None:
            return None
        try:
            value = self.output_transform(engine.state.output)
            return float(value.item() if hasattr(value, "item") else value)
        except (TypeError, ValueError, KeyError, IndexError, RuntimeError):
            return None  # an output without a loss (e.g. a skipped batch) must not stop training

    def _iteration_completed(self, engine: Engine) -> None:
        if self._start_iteration is None:
            self._begin(engine)
        done = int(engine.state.iteration) - self._start_iteration
        loss = self._loss(engine)
        if self._bar is not None:
            if loss is not None:
                self._bar.set_postfix(loss=f"{loss:.4f}", refresh=False)
            self._bar.update(done - self._bar.n)
            return
        now = time.monotonic()
        if now - self._last_log >= self.interval or done == self._total:
            self._last_log = now
            logger.info(self.line(done, now - self._t0, loss))

    def line(self, done: int, elapsed: float, loss: float | None = None) -> str:
        """The log line for ``done`` iterations after ``elapsed`` seconds, e.g.
        ``train: 120/300 iterations (40%), loss 0.1234, 1:02 elapsed, ETA 1:33``."""
        parts = [f"{self.desc}: {done}/{self._total} {self.unit} ({100.0 * done / max(self._total, 1):.0f}%)"]
        if loss is not None:
            parts.append(f"loss {loss:.4f}")
        parts.append(f"{format_seconds(elapsed)} elapsed")
        if 0 < done < self._total:
            parts.append(f"ETA {format_seconds(elapsed / done * (self._total - done))}")
        return ", ".join(parts)

    def _completed(self, engine: Engine) -> None:
        self._close(engine)

    def _close(self, *_: Any) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
