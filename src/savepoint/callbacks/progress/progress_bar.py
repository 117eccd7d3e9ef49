"""`ProgressBar`: the base of the progress bars, and the plain lines they print without a terminal.

In a terminal a bar redraws itself in place. Without one (output to a file or a pipe: SLURM, nohup, CI)
redrawing would fill the file with carriage returns, so every bar prints plain lines instead: one per
training epoch (with the metrics, after its validation) and, for a long epoch, one at each further 10%
once ``plain_interval_s`` seconds have passed since the last line; one per validation/test/predict run
outside fit.
"""

from __future__ import annotations

import sys
import time
from typing import TYPE_CHECKING, Any, TextIO

from savepoint.callbacks.callback import Callback

if TYPE_CHECKING:
    from savepoint.module import TrainingModule
    from savepoint.trainer.trainer import Trainer


def format_time(seconds: float) -> str:
    seconds = int(seconds)
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m:02d}:{s:02d}"


def format_metrics(metrics: dict[str, Any], fmt: str = ".4g") -> str:
    return " ".join(f"{k}={v:{fmt}}" if isinstance(v, float) else f"{k}={v}" for k, v in metrics.items())


def epoch_description(trainer: Trainer) -> str:
    max_epochs = trainer.max_epochs
    return (
        f"Epoch {trainer.current_epoch}/{max_epochs - 1}"
        if max_epochs > 0
        else f"Epoch {trainer.current_epoch}"
    )


def in_fit(trainer: Trainer) -> bool:
    """Whether an evaluation runs inside ``fit`` (sanity check, validation), not on its own."""
    return trainer.state.fn == "fit"


class PlainLines:
    """Progress as whole lines: ``Epoch 1/4: 100% 16/16 [00:02, 7.51it/s] train_loss=0.41 v_num=0``."""

    def __init__(self, stream: TextIO | None = None, interval_s: float = 30.0) -> None:
        self.stream = stream
        self.interval_s = interval_s
        self._start = 0.0
        self._last_line = 0.0
        self._next_tenth = 1
        self._total: int | float = 0

    def start(self, total: int | float) -> None:
        self._start = self._last_line = time.monotonic()
        self._next_tenth = 1
        self._total = total

    def line(self, description: str, done: int, metrics: dict[str, Any]) -> None:
        elapsed = time.monotonic() - self._start
        rate = f"{done / elapsed:.2f}it/s" if elapsed > 0 else "?it/s"
        total = self._total
        if total and total != float("inf"):
            pct = f"{100 * done / total:3.0f}% {done}/{int(total)}"
            remaining = (total - done) * elapsed / done if done else 0.0
            when = format_time(elapsed) + (f"<{format_time(remaining)}" if done < total else "")
        else:
            pct, when = f"{done}", format_time(elapsed)
        text = f"{description}: {pct} [{when}, {rate}]"
        if metrics:
            text += " " + format_metrics(metrics)
        print(text, file=self.stream or sys.stderr, flush=True)
        self._last_line = time.monotonic()

    def due(self, done: int) -> bool:
        """Whether a line is due at `done` batches: at the next 10% boundary, when the last line is
        ``interval_s`` old (long epochs only). Cheap: called at every batch."""
        total = self._total
        if not total or total == float("inf") or done >= total or done * 10 < self._next_tenth * total:
            return False
        self._next_tenth = int(done * 10 // total) + 1
        return time.monotonic() - self._last_line >= self.interval_s


class ProgressBar(Callback):
    """Base class of progress bars (`RichProgressBar`, `TQDMProgressBar`); shown on global rank 0 only.

    Subclasses draw; this class knows the totals, the descriptions and what to show (``get_metrics``).
    """

    def __init__(self) -> None:
        self._trainer: Trainer | None = None
        self._enabled = True

    @property
    def trainer(self) -> Trainer:
        if self._trainer is None:
            raise TypeError(f"The `{type(self).__name__}._trainer` reference has not been set yet.")
        return self._trainer

    @property
    def sanity_check_description(self) -> str:
        return "Sanity Checking"

    @property
    def train_description(self) -> str:
        return "Training"

    @property
    def validation_description(self) -> str:
        return "Validation"

    @property
    def test_description(self) -> str:
        return "Testing"

    @property
    def predict_description(self) -> str:
        return "Predicting"

    @property
    def total_train_batches(self) -> int | float:
        return self.trainer.num_training_batches

    @property
    def total_val_batches(self) -> int | float:
        trainer = self.trainer
        counts = trainer.num_sanity_val_batches if trainer.sanity_checking else trainer.num_val_batches
        return sum(counts)

    def total_batches(self, stage: str) -> int | float:
        """Batches of a test/predict run when the Trainer knows them (``inf`` otherwise)."""
        counts = getattr(self.trainer, f"num_{stage}_batches", None)
        return sum(counts) if counts else float("inf")

    @property
    def is_enabled(self) -> bool:
        return self._enabled

    @property
    def is_disabled(self) -> bool:
        return not self._enabled

    def disable(self) -> None:
        self._enabled = False

    def enable(self) -> None:
        self._enabled = True

    def print(self, *args: Any, **kwargs: Any) -> None:
        print(*args, **kwargs)

    def setup(self, trainer: Trainer, pl_module: TrainingModule, stage: str) -> None:
        self._trainer = trainer
        if not trainer.is_global_zero:
            self.disable()

    def get_metrics(self, trainer: Trainer, pl_module: TrainingModule) -> dict[str, Any]:
        """What the bar shows: the metrics logged with ``prog_bar=True``, then ``v_num`` (the logger's
        version). Override it to change the items."""
        items: dict[str, Any] = dict(trainer.progress_bar_metrics)
        logger = trainer.logger
        if logger is not None:
            version = logger.version
            if version not in ("", None):
                items["v_num"] = version[-4:] if isinstance(version, str) else version
        return items
