"""A rich progress bar: epoch, batch, loss and the metrics logged with ``prog_bar=True``."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from savepoint.callbacks.callback import Callback

if TYPE_CHECKING:
    from rich.progress import Progress

    from savepoint.module import TrainingModule
    from savepoint.trainer.trainer import Trainer


def print_metrics(title: str, metrics: dict[str, float]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    table.add_column("metric")
    table.add_column("value", justify="right")
    for k, v in sorted(metrics.items()):
        table.add_row(k, f"{v:.6g}")
    Console().print(table)


class RichProgressBar(Callback):
    """Shown on global rank 0; refreshed at most ``refresh_per_second`` times a second."""

    def __init__(self, refresh_per_second: float = 4.0, leave: bool = False) -> None:
        self.refresh_per_second = refresh_per_second
        self.leave = leave
        self._progress: Progress | None = None
        self._task: Any = None
        self._last = 0.0

    @property
    def state_key(self) -> str:
        return "RichProgressBar"

    def on_train_start(self, trainer: Trainer, pl_module: TrainingModule) -> None:
        if not trainer.is_global_zero:
            return
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self._progress = Progress(
            TextColumn("[bold]Epoch {task.fields[epoch]}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("{task.fields[metrics]}"),
            console=Console(stderr=True),
            transient=not self.leave,
            auto_refresh=False,
        )
        self._progress.start()

    def on_train_epoch_start(self, trainer: Trainer, pl_module: TrainingModule) -> None:
        if self._progress is None:
            return
        total = trainer.num_training_batches
        total = None if total == float("inf") else int(total)
        if self._task is not None:
            self._progress.remove_task(self._task)
        self._task = self._progress.add_task("train", total=total, epoch=trainer.current_epoch, metrics="")

    def on_train_batch_end(
        self, trainer: Trainer, pl_module: TrainingModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if self._progress is None or self._task is None:
            return
        now = time.monotonic()
        last = batch_idx + 1 == trainer.num_training_batches
        if now - self._last < 1.0 / self.refresh_per_second and not last:
            return
        self._last = now
        shown = dict(trainer.progress_bar_metrics)
        loss = trainer.callback_metrics.get("loss")
        if loss is not None and "loss" not in shown:
            shown["loss"] = float(loss)
        text = "  ".join(f"{k}={v:.4g}" for k, v in shown.items())
        self._progress.update(self._task, completed=batch_idx + 1, metrics=text)
        self._progress.refresh()

    def _stop(self) -> None:
        if self._progress is not None:
            self._progress.stop()
        self._progress = None
        self._task = None

    def on_train_end(self, trainer: Trainer, pl_module: TrainingModule) -> None:
        self._stop()

    def on_exception(self, trainer: Trainer, pl_module: TrainingModule, exception: BaseException) -> None:
        self._stop()


ProgressBar = RichProgressBar
