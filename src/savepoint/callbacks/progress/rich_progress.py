"""`RichProgressBar` (the default bar): rich bars in a terminal, plain lines otherwise.

In a terminal, while fitting::

    Epoch 3/9  ━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━  16/16 0:00:02 • 0:00:00 7.51it/s train_loss=0.412 v_num=0
    Validation ━━━━━━━━━━━━━━━━━━                  2/4  0:00:00 • 0:00:01 9.10it/s

The training bar is reused epoch after epoch and the last one stays on screen when fit ends; sanity
check, validation, test and predict get bars of their own, removed when they finish.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from savepoint.callbacks.progress.progress_bar import PlainLines, ProgressBar, epoch_description, in_fit

if TYPE_CHECKING:
    from rich.console import Console
    from rich.progress import Progress, Task, TaskID

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


def _speed_column() -> Any:
    from rich.progress import ProgressColumn
    from rich.text import Text

    class ProcessingSpeedColumn(ProgressColumn):
        def render(self, task: Task) -> Text:
            speed = task.finished_speed or task.speed
            return Text(f"{speed:.2f}it/s" if speed is not None else "?it/s", style="dim underline")

    return ProcessingSpeedColumn()


class RichProgressBar(ProgressBar):
    """``RichProgressBar(refresh_rate=10, leave=False, console_kwargs=None, plain_interval_s=30.0)``.

    ``refresh_rate``: redraws per second (Lightning's default is 100; 10 keeps the bar's cost per step
    negligible; 0 hides the bar). ``leave=True`` keeps every epoch's bar instead of reusing one.
    ``console_kwargs`` go to ``rich.console.Console`` (which writes to stderr). Without a terminal the
    bar prints plain lines (see `ProgressBar`), a line every ``plain_interval_s`` seconds at most in a
    long epoch.
    """

    def __init__(
        self,
        refresh_rate: int = 10,
        leave: bool = False,
        theme: Any = None,
        console_kwargs: dict[str, Any] | None = None,
        plain_interval_s: float = 30.0,
    ) -> None:
        super().__init__()
        self._refresh_rate = refresh_rate
        self._leave = leave
        self.theme = theme
        self._console_kwargs = console_kwargs or {}
        self.progress: Progress | None = None
        self._plain: PlainLines | None = None
        self._plain_interval_s = plain_interval_s
        self.train_progress_bar_id: TaskID | None = None
        self._eval_id: TaskID | None = None
        self._eval_done = 0
        self._last_refresh = 0.0

    @property
    def refresh_rate(self) -> float:
        return self._refresh_rate

    @property
    def is_enabled(self) -> bool:
        return self._enabled and self._refresh_rate > 0

    # -- drawing -------------------------------------------------------------------------------------------

    def _console(self) -> Console:
        from rich.console import Console

        return Console(stderr=True, **self._console_kwargs)

    def _start(self, trainer: Trainer) -> None:
        self._trainer = trainer
        if not trainer.is_global_zero:
            self.disable()
        if not self.is_enabled or self.progress is not None or self._plain is not None:
            return
        console = self._console()
        if not console.is_terminal:
            self._plain = PlainLines(console.file, self._plain_interval_s)
            return
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self.progress = Progress(
            TextColumn("[progress.description]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("•"),
            TimeRemainingColumn(),
            _speed_column(),
            TextColumn("{task.fields[metrics]}", style="italic"),
            console=console,
            auto_refresh=False,
            transient=False,
        )
        self.progress.start()

    def _stop(self) -> None:
        if self.progress is not None:
            self.progress.refresh()
            self.progress.stop()  # the last drawing stays on screen
        self.progress = None
        self._plain = None
        self.train_progress_bar_id = None
        self._eval_id = None

    def _due(self, force: bool) -> bool:
        now = time.monotonic()
        if force or now - self._last_refresh >= 1.0 / max(self._refresh_rate, 1e-9):
            self._last_refresh = now
            return True
        return False

    def _metrics_text(self, trainer: Trainer) -> str:
        from savepoint.callbacks.progress.progress_bar import format_metrics

        return format_metrics(self.get_metrics(trainer, trainer.training_module), ".3f")

    @staticmethod
    def _total(total: int | float) -> int | None:
        return None if total == float("inf") else int(total)

    # -- training ----------------------------------------------------------------------------------------------

    def on_train_start(self, trainer: Trainer, pl_module: TrainingModule) -> None:
        self._start(trainer)

    def on_train_epoch_start(self, trainer: Trainer, pl_module: TrainingModule) -> None:
        total = self.total_train_batches
        if self._plain is not None:
            self._plain.start(total)
        if self.progress is None:
            return
        description = epoch_description(trainer)
        if self.train_progress_bar_id is None or self._leave:
            self.train_progress_bar_id = self.progress.add_task(
                description, total=self._total(total), metrics=""
            )
        else:
            self.progress.reset(
                self.train_progress_bar_id, total=self._total(total), description=description, metrics=""
            )
        self.progress.refresh()

    def on_train_batch_end(
        self, trainer: Trainer, pl_module: TrainingModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if self._plain is not None:
            if self._plain.due(batch_idx + 1):
                self._plain.line(
                    epoch_description(trainer), batch_idx + 1, self.get_metrics(trainer, pl_module)
                )
            return
        if self.progress is None or self.train_progress_bar_id is None:
            return
        if self._due(batch_idx + 1 == self.total_train_batches):
            self.progress.update(
                self.train_progress_bar_id, completed=batch_idx + 1, metrics=self._metrics_text(trainer)
            )
            self.progress.refresh()

    def on_train_epoch_end(self, trainer: Trainer, pl_module: TrainingModule) -> None:
        if self._plain is not None:
            done = trainer.num_training_batches
            done = done if done != float("inf") else 0
            self._plain.line(epoch_description(trainer), int(done), self.get_metrics(trainer, pl_module))
            return
        if self.progress is None or self.train_progress_bar_id is None:
            return
        self.progress.update(self.train_progress_bar_id, metrics=self._metrics_text(trainer))
        self.progress.refresh()

    def on_train_end(self, trainer: Trainer, pl_module: TrainingModule) -> None:
        self._stop()

    # -- sanity check, validation, test, predict ---------------------------------------------------------------

    def _eval_start(self, trainer: Trainer, description: str, total: int | float) -> None:
        self._start(trainer)
        self._eval_done = 0
        if self._plain is not None and not in_fit(trainer):
            self._plain.start(total)
        if self.progress is not None:
            self._eval_id = self.progress.add_task(description, total=self._total(total), metrics="")
            self.progress.refresh()

    def _eval_batch(self) -> None:
        self._eval_done += 1
        if self.progress is not None and self._eval_id is not None and self._due(False):
            self.progress.update(self._eval_id, completed=self._eval_done)
            self.progress.refresh()

    def _eval_end(self, trainer: Trainer, description: str) -> None:
        if self.progress is not None and self._eval_id is not None:
            if in_fit(trainer):  # the training bar stays; this one goes
                self.progress.remove_task(self._eval_id)
                if self.train_progress_bar_id is not None:
                    self.progress.update(self.train_progress_bar_id, metrics=self._metrics_text(trainer))
            else:
                self.progress.update(
                    self._eval_id, completed=self._eval_done, metrics=self._metrics_text(trainer)
                )
            self._eval_id = None
            self.progress.refresh()
        elif self._plain is not None and not in_fit(trainer):
            self._plain.line(description, self._eval_done, self.get_metrics(trainer, trainer.training_module))
        if not in_fit(trainer):
            self._stop()  # validate / test / predict on their own: the bar ends (and stays) with the run

    def on_sanity_check_start(self, trainer: Trainer, pl_module: TrainingModule) -> None:
        self._start(trainer)

    def on_validation_start(self, trainer: Trainer, pl_module: TrainingModule) -> None:
        self._trainer = trainer
        desc = self.sanity_check_description if trainer.sanity_checking else self.validation_description
        self._eval_start(trainer, desc, self.total_val_batches)

    def on_validation_batch_end(self, trainer: Trainer, *args: Any, **kwargs: Any) -> None:
        self._eval_batch()

    def on_validation_end(self, trainer: Trainer, pl_module: TrainingModule) -> None:
        self._eval_end(trainer, self.validation_description)

    def on_test_start(self, trainer: Trainer, pl_module: TrainingModule) -> None:
        self._trainer = trainer
        self._eval_start(trainer, self.test_description, self.total_batches("test"))

    def on_test_batch_end(self, trainer: Trainer, *args: Any, **kwargs: Any) -> None:
        self._eval_batch()

    def on_test_end(self, trainer: Trainer, pl_module: TrainingModule) -> None:
        self._eval_end(trainer, self.test_description)

    def on_predict_start(self, trainer: Trainer, pl_module: TrainingModule) -> None:
        self._trainer = trainer
        self._eval_start(trainer, self.predict_description, self.total_batches("predict"))

    def on_predict_batch_end(self, trainer: Trainer, *args: Any, **kwargs: Any) -> None:
        self._eval_batch()

    def on_predict_end(self, trainer: Trainer, pl_module: TrainingModule) -> None:
        self._eval_end(trainer, self.predict_description)

    def on_exception(self, trainer: Trainer, pl_module: TrainingModule, exception: BaseException) -> None:
        self._stop()

    def teardown(self, trainer: Trainer, pl_module: TrainingModule, stage: str) -> None:
        self._stop()
