"""`ModelCheckpoint`: when to save, which files to keep, what to put in them, where they go.

A thin shell over `checkpoint_policy`: this class gathers the Trainer's state and asks the pure functions
what to do; the mixins carry the answer out. `CheckpointSaves` (``_checkpoint_saves.py``) plans the files
of a save into the save point of the current round of hooks (``_save_point.py``: several callbacks saving
at one moment share one write, the other names are links), commits the bookkeeping and removes evicted
files through the strategy; `CheckpointStops` saves on a signal or an exception; `CheckpointReconcile`
removes what a crash left on resume. The folder check at set-up, the free-name check and ``to_yaml`` ask
the strategy's CheckpointIO. It never touches storage itself, so a custom CheckpointIO sees every file. A
file joins ``best_k_models`` and becomes ``best_model_path``/``last_model_path`` only after its save
returned, and files leave the top-k only after the save that replaces them.
"""

from __future__ import annotations

import os
import typing
import warnings
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Literal

import torch

from savepoint.callbacks import checkpoint_policy as policy
from savepoint.callbacks._checkpoint_reconcile import CheckpointReconcile
from savepoint.callbacks._checkpoint_saves import CheckpointSaves
from savepoint.callbacks._checkpoint_stops import CheckpointStops
from savepoint.callbacks._legacy import accept_deprecated
from savepoint.callbacks._save_point import SavePoint, save_point
from savepoint.callbacks._write_journal import WriteJournal
from savepoint.callbacks.checkpoint import Checkpoint
from savepoint.plugins.io._fs import join
from savepoint.plugins.io.checkpoint_io import CheckpointIO
from savepoint.plugins.io.torch_io import TorchCheckpointIO

if TYPE_CHECKING:
    from savepoint.module import TrainingModule
    from savepoint.trainer.trainer import Trainer


class ModelCheckpoint(CheckpointSaves, CheckpointStops, CheckpointReconcile, Checkpoint):
    """Save checkpoints during training: every epoch by default, or every N steps/epochs/time interval,
    keeping the ``save_top_k`` best by ``monitor`` (the latest when no monitor), plus ``last.ckpt`` with
    ``save_last``.
    """

    CHECKPOINT_JOIN_CHAR = "-"
    CHECKPOINT_EQUALS_CHAR = "="
    CHECKPOINT_NAME_LAST = "last"
    FILE_EXTENSION = ".ckpt"
    STARTING_VERSION = 1

    def __init__(
        self,
        dirpath: str | os.PathLike | None = None,
        filename: str | None = None,
        monitor: str | None = None,
        verbose: bool = False,
        save_last: bool | Literal["link"] | None = None,
        save_top_k: int = 1,
        save_weights_only: bool = False,
        mode: str = "min",
        auto_insert_metric_name: bool = True,
        every_n_train_steps: int | None = None,
        train_time_interval: timedelta | None = None,
        every_n_epochs: int | None = None,
        save_on_train_epoch_end: bool | None = None,
        enable_version_counter: bool = True,
        save_on_exception: bool = False,
        **deprecated: Any,
    ) -> None:
        dirpath, filename, prefix, every_n_epochs, save_top_k = accept_deprecated(
            deprecated, dirpath, filename, every_n_epochs, save_top_k
        )
        policy.validate_config(
            save_top_k=save_top_k,
            mode=mode,
            monitor=monitor,
            every_n_train_steps=every_n_train_steps,
            every_n_epochs=every_n_epochs,
            train_time_interval=train_time_interval,
            save_last=save_last,
        )
        self.dirpath: str | None = os.fspath(dirpath) if dirpath is not None else None
        if self.dirpath is not None and "://" not in self.dirpath:
            self.dirpath = os.path.realpath(os.path.expanduser(self.dirpath))
        self.filename = filename
        self.prefix = prefix
        self.monitor = monitor
        self.verbose = verbose
        self.save_last = save_last
        self.save_top_k = save_top_k
        self.save_weights_only = save_weights_only
        self.mode = mode
        self.auto_insert_metric_name = auto_insert_metric_name
        self._save_on_train_epoch_end = save_on_train_epoch_end
        self._enable_version_counter = enable_version_counter
        self.save_on_exception = save_on_exception
        if every_n_train_steps is None and every_n_epochs is None and train_time_interval is None:
            every_n_epochs = 1
        self._every_n_train_steps = every_n_train_steps or 0
        self._every_n_epochs = every_n_epochs or 0
        self._train_time_interval = train_time_interval

        # The files this callback keeps, ranked by score (by step when there is no monitor). The public
        # `best_k_models` is this dict when a metric is monitored and `{}` otherwise, as users know it.
        self._ranked: dict[str, torch.Tensor] = {}
        self.best_model_path = ""
        self.best_model_score: torch.Tensor | None = None
        self.kth_best_model_path = ""
        self.kth_value: torch.Tensor | None = None
        self.last_model_path = ""
        self.current_score: torch.Tensor | None = None
        self._order: dict[str, int] = {}
        self._next_order = 0
        self._last_global_step_saved = 0  # no step-triggered save before the first optimizer step
        self._last_time_saved_s = 0.0
        self._last_checkpoint_saved = ""
        # While a save point is being planned: the bookkeeping once its files exist, what to do then, and
        # the paths planned (`_save_point.py`).
        self._pending: dict[str, Any] | None = None
        self._planned: list[str] = []
        self._defer_save_until_validation = False
        self._warned_nonfinite = False
        self._dirpath_from_ckpt: str | None = None
        self._restored_top_k = False  # a resumed top-k of this same folder: reconciled with it at train start
        self._io: CheckpointIO | None = None  # the trainer's, from setup on
        self._journal = WriteJournal()

    # -- identity and state ---------------------------------------------------------------------------------

    @property
    def state_key(self) -> str:
        return self._generate_state_key(
            monitor=self.monitor,
            mode=self.mode,
            every_n_train_steps=self._every_n_train_steps,
            every_n_epochs=self._every_n_epochs,
            train_time_interval=self._train_time_interval,
        )

    @property
    def best_k_models(self) -> dict[str, torch.Tensor]:
        return self._ranked if self.monitor is not None else {}

    @best_k_models.setter
    def best_k_models(self, value: dict[str, torch.Tensor]) -> None:
        self._ranked = dict(value)

    @property
    def every_n_epochs(self) -> int:
        return self._every_n_epochs

    @property
    def every_n_train_steps(self) -> int:
        return self._every_n_train_steps

    @property
    def train_time_interval(self) -> timedelta | None:
        return self._train_time_interval

    @property
    def save_on_train_epoch_end(self) -> bool | None:
        return self._save_on_train_epoch_end

    def _saves_on_train_epoch_end(self, trainer: Trainer) -> bool:
        """Epoch-triggered saves happen at the end of the training epoch (after its validation) unless
        validation runs several times per epoch or not every epoch: then at the end of each validation."""
        if self._save_on_train_epoch_end is not None:
            return self._save_on_train_epoch_end
        if trainer.check_val_every_n_epoch != 1:
            return False
        if not trainer.enable_validation:
            return True
        return trainer.val_check_interval == 1.0

    def state_dict(self) -> dict[str, Any]:
        state = {
            "monitor": self.monitor,
            "best_model_score": self.best_model_score,
            "best_model_path": self.best_model_path,
            "current_score": self.current_score,
            "dirpath": self.dirpath,
            "_ranked": self._ranked,
            "kth_best_model_path": self.kth_best_model_path,
            "kth_value": self.kth_value,
            "last_model_path": self.last_model_path,
        }
        if self._pending is not None:
            # The file being written records the state that holds once it is committed: whoever loads it
            # knows it exists, so top-k continues across a resume without forgetting it.
            state.update(self._pending)
        ranked = dict(state.pop("_ranked"))
        state["best_k_models"] = ranked if self.monitor is not None else {}
        if self.monitor is None:
            state["kept_models"] = ranked  # savepoint's own key: the newest files it keeps, by step
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        dirpath_from_ckpt = state_dict.get("dirpath", self.dirpath)
        self._dirpath_from_ckpt = dirpath_from_ckpt
        if self.dirpath is None or self.dirpath == dirpath_from_ckpt:
            self._restored_top_k = True
            self._ranked = dict(state_dict.get("best_k_models") or state_dict.get("kept_models") or {})
            self._order = {path: i for i, path in enumerate(self._ranked)}
            self._next_order = len(self._order)
            self.kth_best_model_path = state_dict.get("kth_best_model_path", "")
            self.kth_value = state_dict.get("kth_value")
            self.best_model_score = state_dict.get("best_model_score")
            self.last_model_path = state_dict.get("last_model_path", "")
            self.current_score = state_dict.get("current_score")
        else:
            warnings.warn(
                f"ModelCheckpoint: the checkpoint folder changed from {dirpath_from_ckpt!r} to {self.dirpath!r}; "
                f"the top-k of the earlier run is not continued and its files there are kept as they are.",
                UserWarning,
                stacklevel=2,
            )
        self.best_model_path = state_dict.get("best_model_path", "")

    # -- set-up ---------------------------------------------------------------------------------------------

    def setup(self, trainer: Trainer, pl_module: TrainingModule, stage: str) -> None:
        self._io = trainer.strategy.checkpoint_io
        if self.dirpath is None:
            self.dirpath = _default_dirpath(trainer)
        self.dirpath = trainer.strategy.broadcast(self.dirpath)
        if trainer.is_global_zero and stage == "fit":
            self._io.check_writable(self.dirpath)  # fail fast: before the first training step
        if self.save_last == "link" and "://" in self.dirpath and not self.dirpath.startswith("file://"):
            raise ValueError(
                f"ModelCheckpoint(save_last='link', dirpath={self.dirpath!r}): links are made on local folders "
                f"only. Use save_last=True: it writes the bytes of a save point once there too (a server-side "
                f"copy where the storage offers one)."
            )

    def on_train_start(self, trainer: Trainer, pl_module: TrainingModule) -> None:
        self._last_time_saved_s = trainer.train_elapsed_s
        if trainer.ckpt_path is not None:  # resumed: no step-triggered save before the next optimizer step
            self._last_global_step_saved = trainer.global_step
        if self._restored_top_k:
            self._restored_top_k = False
            self._reconcile(trainer)

    # -- when -----------------------------------------------------------------------------------------------

    def _skip(self, trainer: Trainer) -> bool:
        # Lightning's rule: saves happen only in fit, never in the sanity check or a fast_dev_run.
        return trainer.sanity_checking or trainer.state.fn != "fit" or bool(trainer.fast_dev_run)

    def on_train_batch_end(
        self, trainer: Trainer, pl_module: TrainingModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if self._skip(trainer):
            return
        elapsed = trainer.train_elapsed_s
        due = policy.due_after_batch(
            global_step=trainer.global_step,
            last_step_saved=self._last_global_step_saved,
            every_n_train_steps=self._every_n_train_steps,
            elapsed_s=elapsed,
            last_time_saved_s=self._last_time_saved_s,
            train_time_interval=self._train_time_interval,
        )
        if self._train_time_interval is not None:
            due = trainer.strategy.broadcast(due)  # wall clocks differ between ranks; rank 0 decides
        if not due:
            return
        if self._train_time_interval is not None:
            self._last_time_saved_s = elapsed
        candidates = self._monitor_candidates(trainer)
        if self._defer_to_validation(trainer, candidates):
            self._defer_save_until_validation = True
            return
        self._save_all(trainer, candidates)

    def _defer_to_validation(self, trainer: Trainer, candidates: dict[str, Any]) -> bool:
        """A step/time save ranks on the validation that follows it: the monitored value is missing (logged
        in validation, which has not run) or stale (a validation runs right after this batch)."""
        if self.monitor is None or not trainer.enable_validation:
            return False
        if self.monitor not in candidates:
            return True
        return trainer._validation_follows_batch()

    def on_train_epoch_end(self, trainer: Trainer, pl_module: TrainingModule) -> None:
        if self._skip(trainer) or not self._saves_on_train_epoch_end(trainer):
            return
        self._after_epoch(trainer)

    def on_validation_end(self, trainer: Trainer, pl_module: TrainingModule) -> None:
        if self._skip(trainer):
            return
        if self._defer_save_until_validation:
            self._defer_save_until_validation = False
            if trainer.global_step != self._last_global_step_saved:
                self._save_all(trainer, self._monitor_candidates(trainer))
            return
        if not self._saves_on_train_epoch_end(trainer):
            self._after_epoch(trainer)

    def on_train_end(self, trainer: Trainer, pl_module: TrainingModule) -> None:
        """The end of training is a save point when its state is not saved yet: ``max_steps`` reached inside an
        epoch ends that epoch (top-k and last), and ``save_last`` always leaves the final state in last."""
        self._defer_save_until_validation = False
        if self._skip(trainer) or trainer.global_step == self._last_global_step_saved:
            return
        candidates = self._monitor_candidates(trainer)
        stopped_by_steps = trainer.max_steps != -1 and trainer.global_step >= trainer.max_steps
        if (
            stopped_by_steps
            and self._every_n_epochs >= 1
            and (self.monitor is None or self.monitor in candidates)
        ):
            self._save_all(trainer, candidates)
        elif self.save_last:
            with save_point(trainer) as point:
                self._last_checkpoint_saved = ""
                self._plan_last(trainer, candidates, point)
                self._last_global_step_saved = trainer.global_step

    def _after_epoch(self, trainer: Trainer) -> None:
        due = policy.due_after_epoch(
            epoch=trainer.current_epoch,
            every_n_epochs=self._every_n_epochs,
            global_step=trainer.global_step,
            last_step_saved=self._last_global_step_saved,
        )
        if due:
            self._save_all(trainer, self._monitor_candidates(trainer))

    # -- which and where ------------------------------------------------------------------------------------

    def _monitor_candidates(self, trainer: Trainer) -> dict[str, Any]:
        candidates = {k: v.detach().cpu() for k, v in trainer.callback_metrics.items()}
        candidates["epoch"] = torch.tensor(trainer.current_epoch)
        candidates["step"] = torch.tensor(trainer.global_step)
        # Every rank decides from rank 0's values, so names, top-k and removals agree everywhere.
        return trainer.strategy.broadcast(candidates)

    def format_checkpoint_name(
        self, metrics: dict[str, Any], filename: str | None = None, ver: int | None = None
    ) -> str:
        """The file path for these metrics (``ver`` adds the ``-v<ver>`` suffix)."""
        name = policy.format_checkpoint_name(
            filename or self.filename,
            metrics,
            prefix=self.prefix,
            auto_insert_metric_name=self.auto_insert_metric_name,
            join_char=self.CHECKPOINT_JOIN_CHAR,
            extension=self.FILE_EXTENSION,
            version=ver,
        )
        return join(self.dirpath, name) if self.dirpath else name

    def file_exists(self, filepath: str, trainer: Trainer) -> bool:
        """Is the name taken? Rank 0 asks the CheckpointIO; every rank gets its answer."""
        exists = False
        if trainer.is_global_zero:
            # The IO's answer: an uncommitted sharded folder is no checkpoint, so its name is reused, never
            # shifted to -v1.
            exists = trainer.strategy.checkpoint_io.exists(filepath)
        return bool(trainer.strategy.broadcast(exists))

    def _free_name(
        self,
        trainer: Trainer,
        metrics: dict[str, Any],
        template: str | None,
        reusable: str | None,
        point: SavePoint,
    ) -> str:
        """The name for a new file: versioned (``-v1``, ...) past names that exist or that another callback
        planned in this save point."""
        make = lambda ver: self.format_checkpoint_name(metrics, template, ver)  # noqa: E731
        if not self._enable_version_counter:
            return make(None)
        taken = lambda p: point.taken(p) or self.file_exists(p, trainer)  # noqa: E731
        return policy.versioned_name(make, taken, self.STARTING_VERSION, reusable)

    def to_yaml(self, filepath: str | os.PathLike | None = None) -> None:
        """Write ``best_k_models`` as YAML (``best_k_models.yaml`` in ``dirpath`` by default)."""
        import yaml

        best = {k: float(v) for k, v in self.best_k_models.items()}
        target = (
            os.fspath(filepath) if filepath is not None else join(self.dirpath or ".", "best_k_models.yaml")
        )
        io = self._io if self._io is not None else TorchCheckpointIO()
        io.save_text(yaml.safe_dump(best), target)


def _default_dirpath(trainer: Trainer) -> str:
    """``<log_dir>/checkpoints`` when a logger has a folder, else ``<default_root_dir>/checkpoints``."""
    if trainer.logger is not None and trainer.logger.log_dir is not None:
        return join(trainer.log_dir, "checkpoints")  # type: ignore[arg-type]
    return join(trainer.default_root_dir, "checkpoints")


# Tools that read the constructor's signature (jsonargparse, CLI parsers) get real types, not strings.
ModelCheckpoint.__init__.__annotations__ = typing.get_type_hints(ModelCheckpoint.__init__)
