"""`ModelCheckpoint`: when to save, which files to keep, what to put in them, where they go.

A thin shell over `checkpoint_policy`: this class gathers the Trainer's state, asks the pure functions
what to do, and carries the answer out through ``trainer.save_checkpoint`` and the strategy's
``remove_checkpoint``; the folder check at set-up, the free-name check and ``to_yaml`` ask the strategy's
CheckpointIO. It never touches storage itself, so a custom CheckpointIO sees every file. A file joins ``best_k_models`` and
becomes ``best_model_path``/``last_model_path`` only after its save returned, and files leave the top-k
only after the save that replaces them.
"""

from __future__ import annotations

import contextlib
import math
import os
import warnings
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import torch

from savepoint.callbacks import checkpoint_policy as policy
from savepoint.callbacks._legacy import accept_deprecated
from savepoint.callbacks.checkpoint import Checkpoint
from savepoint.plugins.io._fs import join
from savepoint.plugins.io.checkpoint_io import CheckpointIO
from savepoint.plugins.io.sharded import is_abandoned_candidate
from savepoint.plugins.io.torch_io import TorchCheckpointIO
from savepoint.trainer.preemption import Preempted

if TYPE_CHECKING:
    from savepoint.module import TrainingModule
    from savepoint.trainer.trainer import Trainer


class ModelCheckpoint(Checkpoint):
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

        self.best_k_models: dict[str, torch.Tensor] = {}
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
        self._pending: dict[str, Any] | None = None
        self._warned_nonfinite = False
        self._dirpath_from_ckpt: str | None = None
        self._validation_has_run = False
        self._io: CheckpointIO | None = None  # the trainer's, from setup on

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

    def state_dict(self) -> dict[str, Any]:
        state = {
            "monitor": self.monitor,
            "best_model_score": self.best_model_score,
            "best_model_path": self.best_model_path,
            "current_score": self.current_score,
            "dirpath": self.dirpath,
            "best_k_models": dict(self.best_k_models),
            "kth_best_model_path": self.kth_best_model_path,
            "kth_value": self.kth_value,
            "last_model_path": self.last_model_path,
        }
        if self._pending is not None:
            # The file being written records the state that holds once it is committed: whoever loads it
            # knows it exists, so top-k continues across a resume without forgetting it.
            state.update(self._pending)
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        dirpath_from_ckpt = state_dict.get("dirpath", self.dirpath)
        self._dirpath_from_ckpt = dirpath_from_ckpt
        if self.dirpath is None or self.dirpath == dirpath_from_ckpt:
            self.best_k_models = dict(state_dict.get("best_k_models", {}))
            self._order = {path: i for i, path in enumerate(self.best_k_models)}
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
        if self._save_on_train_epoch_end is None:
            self._save_on_train_epoch_end = not trainer.enable_validation

    def on_train_start(self, trainer: Trainer, pl_module: TrainingModule) -> None:
        self._last_time_saved_s = trainer.train_elapsed_s
        self._validation_has_run = False
        if trainer.ckpt_path is not None:  # resumed: no step-triggered save before the next optimizer step
            self._last_global_step_saved = trainer.global_step

    def on_validation_end(self, trainer: Trainer, pl_module: TrainingModule) -> None:
        if not trainer.sanity_checking:
            self._validation_has_run = True
        if self._skip(trainer) or self._save_on_train_epoch_end:
            return
        self._after_epoch(trainer)

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
        if self.monitor is not None and self.monitor not in candidates and not self._validation_has_run:
            return  # the monitored metric comes from validation, which has not run yet: wait for it
        self._save_all(trainer, candidates)

    def on_train_epoch_end(self, trainer: Trainer, pl_module: TrainingModule) -> None:
        if self._skip(trainer) or not self._save_on_train_epoch_end:
            return
        self._after_epoch(trainer)

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
            exists = trainer.strategy.checkpoint_io.exists(filepath)
            # An uncommitted sharded folder is no checkpoint: its name is reused, never shifted to -v1.
            exists = exists and not is_abandoned_candidate(filepath)
        return bool(trainer.strategy.broadcast(exists))

    def _free_name(
        self, trainer: Trainer, metrics: dict[str, Any], template: str | None, reusable: str | None
    ) -> str:
        make = lambda ver: self.format_checkpoint_name(metrics, template, ver)  # noqa: E731
        if not self._enable_version_counter:
            return make(None)
        return policy.versioned_name(
            make, lambda p: self.file_exists(p, trainer), self.STARTING_VERSION, reusable
        )

    def _score(self, trainer: Trainer, candidates: dict[str, Any]) -> torch.Tensor | None:
        if self.monitor is None:
            return None
        if self.monitor not in candidates:
            available = sorted(k for k in candidates if k not in ("epoch", "step"))
            raise KeyError(
                f"ModelCheckpoint(monitor={self.monitor!r}) found no metric {self.monitor!r} when a save was due. "
                f"Logged metrics: {available} (plus 'epoch' and 'step'). Log it with "
                f"`self.log({self.monitor!r}, value)` in the TrainingModule, or change `monitor`."
            )
        value = candidates[self.monitor]
        score = (
            value.detach().float().cpu() if isinstance(value, torch.Tensor) else torch.tensor(float(value))
        )
        if not math.isfinite(float(score)) and not self._warned_nonfinite:
            self._warned_nonfinite = True
            warnings.warn(
                f"ModelCheckpoint: monitored {self.monitor!r} is {float(score)}; a non-finite value never ranks "
                f"as best (its checkpoint is kept only while the top-k has room).",
                UserWarning,
                stacklevel=2,
            )
        return score

    def _save_all(self, trainer: Trainer, candidates: dict[str, Any]) -> None:
        self._last_checkpoint_saved = ""
        self._wrote = False
        self._save_topk(trainer, candidates)
        self._save_last(trainer, candidates)
        self._last_global_step_saved = trainer.global_step
        if self._wrote and trainer.is_global_zero:
            for logger in trainer.loggers:
                logger.after_save_checkpoint(self)

    def _candidates(self) -> list[policy.Candidate]:
        return [
            policy.Candidate(path, float(score), self._order.get(path, i))
            for i, (path, score) in enumerate(self.best_k_models.items())
        ]

    def _save_topk(self, trainer: Trainer, candidates: dict[str, Any]) -> None:
        if self.save_top_k == 0:
            return
        score = self._score(trainer, candidates)
        self.current_score = score
        if self.monitor is None:
            # No metric: the newest file ranks best (save_top_k=1 keeps the latest, -1 keeps all).
            score_tensor, mode = torch.tensor(float(trainer.global_step)), "max"
        else:
            score_tensor, mode = score, self.mode  # type: ignore[assignment]
        current = self._candidates()
        k = self.save_top_k
        probe = policy.Candidate("\0new", float(score_tensor), self._next_order)
        decision = policy.top_k_update(current, probe, k, mode)
        if not decision.keep_new:
            if self.verbose:
                _info(
                    trainer,
                    f"Epoch {trainer.current_epoch}, step {trainer.global_step}: {self.monitor!r} was not in top {k}",
                )
            return
        reusable = decision.evicted[0].path if decision.evicted else None
        path = self._free_name(trainer, candidates, None, reusable)
        new = policy.Candidate(path, float(score_tensor), self._next_order)
        # Ranked best first; an older entry of the same name (no version counter) is the file being replaced.
        kept = [new if c.path == probe.path else c for c in decision.kept if c.path != path]
        evicted = [c for c in decision.evicted if c.path != path]
        new_public = score if score is not None else score_tensor
        new_best_k = {
            c.path: new_public if c is new else self.best_k_models[c.path]
            for c in sorted(kept, key=lambda c: c.order)
        }
        best, worst = kept[0], kept[-1]
        after = {
            "best_k_models": new_best_k,
            "best_model_path": best.path,
            "best_model_score": new_best_k[best.path] if self.monitor else None,
            "kth_best_model_path": worst.path,
            "kth_value": new_best_k[worst.path] if self.monitor else None,
            "current_score": score,
        }
        self._write(trainer, path, after)
        self._order[path] = self._next_order
        self._next_order += 1
        self._apply(after)
        self._last_checkpoint_saved = path
        if self.verbose:
            shown = f"{self.monitor!r} reached {float(score):.5f}" if score is not None else "saved"
            _info(trainer, f"Epoch {trainer.current_epoch}, step {trainer.global_step}: {shown}, {path!r}")
        for old in evicted:
            self._remove(trainer, old.path)

    def _save_last(self, trainer: Trainer, candidates: dict[str, Any]) -> None:
        if not self.save_last:
            return
        template = self.CHECKPOINT_NAME_LAST
        path = self._free_name(trainer, candidates, template, self.last_model_path or None)
        previous = self.last_model_path
        linked = False
        if self.save_last == "link" and self._last_checkpoint_saved:
            linked = self._link(trainer, self._last_checkpoint_saved, path)
        if not linked:
            self._write(trainer, path, {"last_model_path": path})
        self.last_model_path = path
        if previous and previous != path and previous not in self.best_k_models:
            self._remove(trainer, previous)

    def _write(self, trainer: Trainer, path: str, after: dict[str, Any]) -> None:
        self._pending = after
        try:
            trainer.save_checkpoint(path, weights_only=self.save_weights_only)
            self._wrote = True
        finally:
            self._pending = None

    def _apply(self, after: dict[str, Any]) -> None:
        for key, value in after.items():
            setattr(self, key, value)

    def _remove(self, trainer: Trainer, path: str) -> None:
        if path == self.last_model_path or path in self.best_k_models:
            return
        if self.verbose:
            _info(trainer, f"Removing checkpoint {path!r}")
        trainer.strategy.remove_checkpoint(path)

    def _link(self, trainer: Trainer, target: str, link_path: str) -> bool:
        """Point `link_path` at `target` atomically (a symlink); False when only a copy can work here."""
        if not trainer._checkpoint_io_is_local_torch(link_path):
            return False
        ok = True
        if trainer.is_global_zero:
            tmp = Path(link_path).with_name(f".{Path(link_path).name}.sp-tmp-{os.getpid()}-link")
            try:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(tmp)
                os.symlink(os.path.basename(target), tmp)
                os.replace(tmp, link_path)
            except OSError:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
                ok = False
        ok = bool(trainer.strategy.broadcast(ok))
        trainer.strategy.barrier("ModelCheckpoint.link")
        return ok

    # -- stops: a signal, an exception ----------------------------------------------------------------------

    @property
    def saves_on_exception(self) -> bool:
        return bool(self.save_on_exception)

    def save_on_stop(self, trainer: Trainer) -> str | None:
        """Called on every rank when a signal stops training at a consistent point: save there and return
        the path to resume from. Without a monitor the file joins the top-k like a periodic save (newest
        ranks best, the one it replaces is removed); with a monitor a file ranked on a stale score would
        compete with real ones, so the stop writes ``last.ckpt`` (also when ``save_last`` is off, so that
        ``ckpt_path="last"`` finds it; it is replaced in place by later stops, never versioned)."""
        candidates = self._monitor_candidates(trainer)
        self._last_checkpoint_saved = ""
        if self.monitor is None and self.save_top_k != 0:
            self._save_topk(trainer, candidates)
        written = self._last_checkpoint_saved
        if self.save_last:
            self._save_last(trainer, candidates)
            written = self.last_model_path
        elif not written:
            path = self._free_name(
                trainer, candidates, self.CHECKPOINT_NAME_LAST, self.last_model_path or None
            )
            self._write(trainer, path, {"last_model_path": path})
            self.last_model_path = written = path
        self._last_global_step_saved = trainer.global_step
        return written

    def on_exception(self, trainer: Trainer, pl_module: TrainingModule, exception: BaseException) -> None:
        """With ``save_on_exception=True``: save the last consistent state under the usual file name (and
        ``last.ckpt`` with ``save_last``), as Lightning names it, then let the exception propagate."""
        if (
            not self.save_on_exception
            or isinstance(exception, Preempted)  # the stop already saved through this callback
            or not trainer.can_save_on_exception
            or self._last_global_step_saved == trainer.global_step  # already saved at this step
        ):
            return
        candidates = self._monitor_candidates(trainer)
        path = self.format_checkpoint_name(candidates)
        self._write(trainer, path, {})
        self._last_global_step_saved = trainer.global_step
        self._last_checkpoint_saved = path
        self._save_last(trainer, candidates)
        trainer._print(
            f"An {type(exception).__name__} was raised with message: {exception}, saved checkpoint to {path}"
        )

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


def _info(trainer: Trainer, message: str) -> None:
    if trainer.is_global_zero:
        print(message)
