"""`TQDMProgressBar`: tqdm bars (the ``tqdm`` package is an extra: ``pip install 'savepoint[tqdm]'``).

Same stages as `RichProgressBar`; without a terminal it prints the same plain lines instead of bars.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

from savepoint.callbacks.progress.progress_bar import PlainLines, ProgressBar, epoch_description, in_fit

if TYPE_CHECKING:
    from tqdm import tqdm

    from savepoint.module import TrainingModule
    from savepoint.trainer.trainer import Trainer


def _tqdm_class() -> type[tqdm]:
    try:
        from tqdm import tqdm
    except ImportError as err:
        raise ImportError(
            "TQDMProgressBar needs the 'tqdm' package: install it with pip install 'savepoint[tqdm]' "
            "(or use RichProgressBar, the default)."
        ) from err
    return tqdm


class TQDMProgressBar(ProgressBar):
    """Lightning's arguments: ``refresh_rate`` (update every N batches; 0 hides the bars),
    ``process_position`` (offset the bars by this many lines), ``leave`` (keep every epoch's bar);
    plus ``plain_interval_s`` for plain lines without a terminal."""

    BAR_FORMAT = "{l_bar}{bar}| {n_fmt}/{total_fmt} [{elapsed}<{remaining}, {rate_noinv_fmt}{postfix}]"

    def __init__(
        self,
        refresh_rate: int = 1,
        process_position: int = 0,
        leave: bool = False,
        plain_interval_s: float = 30.0,
    ) -> None:
        super().__init__()
        if not isinstance(refresh_rate, int) or refresh_rate < 0:
            raise ValueError(f"TQDMProgressBar(refresh_rate={refresh_rate!r}) must be an int >= 0.")
        self._tqdm = _tqdm_class()
        self._refresh_rate = refresh_rate
        self._process_position = process_position
        self._leave = leave
        self._plain_interval_s = plain_interval_s
        self._plain: PlainLines | None = None
        self._terminal: bool | None = None
        self.train_progress_bar: tqdm | None = None
        self._eval_bar: tqdm | None = None
        self._eval_done = 0

    @property
    def refresh_rate(self) -> int:
        return self._refresh_rate

    @property
    def process_position(self) -> int:
        return self._process_position

    @property
    def is_enabled(self) -> bool:
        return self._enabled and self._refresh_rate > 0

    def _begin(self, trainer: Trainer) -> bool:
        """True when bars are drawn; sets up plain lines when there is no terminal."""
        self._trainer = trainer
        if not trainer.is_global_zero:
            self.disable()
        if not self.is_enabled:
            return False
        if self._terminal is None:
            self._terminal = sys.stderr.isatty()
        if not self._terminal and self._plain is None:
            self._plain = PlainLines(sys.stderr, self._plain_interval_s)
        return self._terminal

    def _bar(self, description: str, total: int | float, leave: bool, offset: int = 0) -> tqdm:
        return self._tqdm(
            desc=description,
            total=None if total == float("inf") else total,
            position=2 * self._process_position + offset,
            leave=leave,
            dynamic_ncols=True,
            file=sys.stderr,
            smoothing=0,
            bar_format=self.BAR_FORMAT,
        )

    def _postfix(self, trainer: Trainer) -> dict[str, Any]:
        return {
            k: f"{v:.3f}" if isinstance(v, float) else v
            for k, v in self.get_metrics(trainer, trainer.training_module).items()
        }

    # -- training ----------------------------------------------------------------------------------------------

    def on_train_epoch_start(self, trainer: Trainer, pl_module: TrainingModule) -> None:
        total = self.total_train_batches
        if not self._begin(trainer):
            if self._plain is not None:
                self._plain.start(total)
            return
        if self.train_progress_bar is None or self._leave:
            if self.train_progress_bar is not None:
                self.train_progress_bar.close()
            self.train_progress_bar = self._bar(epoch_description(trainer), total, leave=True)
        else:
            self.train_progress_bar.reset(total=None if total == float("inf") else total)
            self.train_progress_bar.set_description(epoch_description(trainer))

    def on_train_batch_end(
        self, trainer: Trainer, pl_module: TrainingModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        n = batch_idx + 1
        if self._plain is not None and self._plain.due(n):
            self._plain.line(epoch_description(trainer), n, self.get_metrics(trainer, pl_module))
        bar = self.train_progress_bar
        if bar is not None and (n % self._refresh_rate == 0 or n == bar.total):
            bar.n = n
            bar.set_postfix(self._postfix(trainer), refresh=True)

    def on_train_epoch_end(self, trainer: Trainer, pl_module: TrainingModule) -> None:
        if self._plain is not None:
            total = self.total_train_batches
            self._plain.line(
                epoch_description(trainer),
                0 if total == float("inf") else int(total),
                self.get_metrics(trainer, pl_module),
            )
        elif self.train_progress_bar is not None:
            self.train_progress_bar.set_postfix(self._postfix(trainer))

    def on_train_end(self, trainer: Trainer, pl_module: TrainingModule) -> None:
        if self.train_progress_bar is not None:
            self.train_progress_bar.close()  # leave=True: the last epoch's bar stays on screen
        self.train_progress_bar = None

    # -- sanity check, validation, test, predict ---------------------------------------------------------------

    def _eval_start(self, trainer: Trainer, description: str, total: int | float) -> None:
        self._eval_done = 0
        standalone = not in_fit(trainer)
        if self._begin(trainer):
            self._eval_bar = self._bar(description, total, leave=standalone, offset=0 if standalone else 1)
        elif self._plain is not None and standalone:
            self._plain.start(total)

    def _eval_batch(self) -> None:
        self._eval_done += 1
        if self._eval_bar is not None and self._eval_done % max(self._refresh_rate, 1) == 0:
            self._eval_bar.n = self._eval_done
            self._eval_bar.refresh()

    def _eval_end(self, trainer: Trainer, description: str) -> None:
        standalone = not in_fit(trainer)
        if self._eval_bar is not None:
            self._eval_bar.n = self._eval_done
            self._eval_bar.close()
            self._eval_bar = None
        elif self._plain is not None and standalone:
            self._plain.line(description, self._eval_done, self.get_metrics(trainer, trainer.training_module))
        if self.train_progress_bar is not None:
            self.train_progress_bar.set_postfix(self._postfix(trainer))

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
        for bar in (self._eval_bar, self.train_progress_bar):
            if bar is not None:
                bar.close()
        self._eval_bar = self.train_progress_bar = None
