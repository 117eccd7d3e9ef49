"""`ModelCheckpoint`: when to save, which files to keep, what to put in them, where they go.

A thin shell over `checkpoint_policy`: this class gathers the Trainer's state, asks the pure functions
what to do, and carries the answer out through ``trainer.save_checkpoint`` and the strategy's
``remove_checkpoint``; the folder check at set-up, the free-name check and ``to_yaml`` ask the strategy's
CheckpointIO. It never touches storage itself, so a custom CheckpointIO sees every file. A file joins ``best_k_models`` and
becomes ``best_model_path``/``last_model_path`` only after its save returned, and files leave the top-k
only after the save that replaces them.
"""

from __future__ import annotations

import math
import os
import typing
import warnings
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Literal

import torch

from savepoint.callbacks import checkpoint_policy as policy
from savepoint.callbacks._legacy import accept_deprecated
from savepoint.callbacks._write_journal import WriteJournal
from savepoint.callbacks.checkpoint import Checkpoint
from savepoint.plugins.io._fs import join
from savepoint.plugins.io.checkpoint_io import CheckpointIO
from savepoint.plugins.io.torch_io import TorchCheckpointIO
from savepoint.trainer.preemption import Preempted

if TYPE_CHECKING:
    from savepoint.module import TrainingModule
    from savepoint.trainer.trainer import Trainer


# What ModelCheckpoint reports about its files; restored after a background save that failed.
_BOOKKEEPING = (
    "best_k_models",
    "best_model_path",
    "best_model_score",
    "kth_best_model_path",
    "kth_value",
    "last_model_path",
    "current_score",
)


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
        self._pending: dict[str, Any] | None = None
        self._defer_save_until_validation = False
        self._warned_nonfinite = False
        self._dirpath_from_ckpt: str | None = None
        self._restored_top_k = False  # a resumed top-k of this same folder: reconciled with it at train start
        self._io: CheckpointIO | None = None  # the trainer's, from setup on
        self._planned_last = ""
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

    def _reconcile(self, trainer: Trainer) -> None:
        """Remove the files a crash left between committing a top-k file and removing the one it evicted:
        only files whose own saved state shows this callback (same configuration, same folder) wrote and
        ranked them, and that rank below the restored top-k. Anything else in the folder is left alone."""
        doomed: list[str] = []
        if trainer.is_global_zero:
            mode = self.mode if self.monitor is not None else "max"
            doomed = policy.strays_to_remove(self._strays(trainer), self._candidates(), self.save_top_k, mode)
        for path in trainer.strategy.broadcast(doomed):
            if self.verbose:
                _info(trainer, f"Removing {path!r}: evicted from the top-k before the run was interrupted")
            self._remove(trainer, path)

    def _strays(self, trainer: Trainer) -> list[policy.Candidate]:
        known = {*self._ranked, self.last_model_path, trainer.ckpt_path or ""}
        io = trainer.strategy.checkpoint_io
        strays = []
        for path in _list_checkpoints(io, self.dirpath or ""):
            if path in known or (trainer.ckpt_path and _same_file(path, trainer.ckpt_path)):
                continue
            try:
                state = (io.load_checkpoint(path, map_location="cpu").get("callbacks") or {}).get(
                    self.state_key
                )
            except Exception:  # unreadable: cannot rank it, so it stays
                continue
            if not isinstance(state, dict) or state.get("dirpath") != self.dirpath:
                continue
            ranked = state.get("best_k_models") or state.get("kept_models") or {}
            if path in ranked:
                strays.append(policy.Candidate(path, float(ranked[path]), -1))
        return strays

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
            self._last_checkpoint_saved = ""
            self._save_last(trainer, candidates)
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
        if math.isnan(float(score)):
            # Stored as the worst value of the mode, as users know it: best_model_score is never NaN.
            score = torch.tensor(math.inf if self.mode == "min" else -math.inf)
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
            for i, (path, score) in enumerate(self._ranked.items())
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
            c.path: new_public if c is new else self._ranked[c.path]
            for c in sorted(kept, key=lambda c: c.order)
        }
        best, worst = kept[0], kept[-1]
        after = {
            "_ranked": new_best_k,
            "best_model_path": best.path,
            "best_model_score": new_best_k[best.path] if self.monitor else None,
            "kth_best_model_path": worst.path if self.monitor else "",
            "kth_value": new_best_k[worst.path] if self.monitor else None,
            "current_score": score,
        }
        # last.ckpt of this save point will be a second name of this file (`_save_last`): record it here
        # so both names hold the same bytes, and the state that holds once both exist.
        self._planned_last = self._last_name(trainer, candidates) if self._links_last(trainer) else ""
        recorded = {**after, "last_model_path": self._planned_last} if self._planned_last else after
        self._write(trainer, path, recorded)
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
        path = self._planned_last or self._last_name(trainer, candidates)
        self._planned_last = ""
        previous = self.last_model_path
        if self._last_checkpoint_saved and self._links_last(trainer):
            self._link(trainer, self._last_checkpoint_saved, path)
        else:
            self._write(trainer, path, {"last_model_path": path})
        self.last_model_path = path
        if previous and previous != path and previous not in self._ranked:
            self._remove(trainer, previous)

    def _last_name(self, trainer: Trainer, candidates: dict[str, Any]) -> str:
        return self._free_name(trainer, candidates, self.CHECKPOINT_NAME_LAST, self.last_model_path or None)

    def _links_last(self, trainer: Trainer) -> bool:
        """One write per save point: last.ckpt becomes a second name of the top-k file just saved (same
        state) where the storage makes that cheaper than writing the bytes again."""
        return bool(self.save_last) and bool(trainer.strategy.supports_link)

    def _write(self, trainer: Trainer, path: str, after: dict[str, Any]) -> None:
        self._remember(trainer, path)
        self._pending = after
        try:
            trainer.save_checkpoint(path, weights_only=self.save_weights_only)
            self._wrote = True
        except BaseException:
            # Raised before anything was queued (an earlier failure surfacing): nothing to undo here.
            self._journal.forget(path)
            raise
        finally:
            self._pending = None

    def _link(self, trainer: Trainer, target: str, link_path: str) -> None:
        """`link_path` becomes a second name of `target` (a hard link or a copy, made only after `target`
        committed: an async IO queues it behind the write)."""
        self._remember(trainer, link_path)
        if self.verbose:
            trainer._print(f"Linking {link_path!r} to {target!r}")
        try:
            trainer.strategy.link_checkpoint(target, link_path)
        except BaseException:
            self._journal.forget(link_path)
            raise

    def _apply(self, after: dict[str, Any]) -> None:
        for key, value in after.items():
            setattr(self, key, value)

    def _remove(self, trainer: Trainer, path: str) -> None:
        if path == self.last_model_path or path in self._ranked:
            return
        if trainer.ckpt_path and _same_file(path, trainer.ckpt_path):
            return  # the checkpoint this run resumed from is the user's to delete, even in this folder
        if self.verbose:
            _info(trainer, f"Removing checkpoint {path!r}")
        trainer.strategy.remove_checkpoint(path)

    # -- bookkeeping of background saves --------------------------------------------------------------------

    def _remember(self, trainer: Trainer, path: str) -> None:
        before = {key: getattr(self, key) for key in _BOOKKEEPING}
        before["best_k_models"] = dict(self.best_k_models)
        self._journal.remember(trainer.strategy.checkpoint_io, path, before)

    def teardown(self, trainer: Trainer, pl_module: TrainingModule, stage: str) -> None:
        """After a failed background save, the best/last paths and the top-k name only files that exist."""
        before = self._journal.state_before_failure(trainer.strategy.checkpoint_io)
        if before is not None:
            self._apply(before)

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
        _info(
            trainer,
            f"An {type(exception).__name__} was raised with message: {exception}, saved checkpoint to {path}",
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


def _list_checkpoints(io: CheckpointIO, dirpath: str) -> list[str]:
    """The checkpoints directly under `dirpath`, as the CheckpointIO lists them (no hidden temporary names)."""
    return [entry.path for entry in io.list_checkpoints(dirpath)]


def _same_file(a: str, b: str) -> bool:
    if "://" in a or "://" in b:
        return a == b
    return os.path.abspath(a) == os.path.abspath(b)


def _default_dirpath(trainer: Trainer) -> str:
    """``<log_dir>/checkpoints`` when a logger has a folder, else ``<default_root_dir>/checkpoints``."""
    if trainer.logger is not None and trainer.logger.log_dir is not None:
        return join(trainer.log_dir, "checkpoints")  # type: ignore[arg-type]
    return join(trainer.default_root_dir, "checkpoints")


def _info(trainer: Trainer, message: str) -> None:
    if trainer.is_global_zero:
        print(message)


# Tools that read the constructor's signature (jsonargparse, CLI parsers) get real types, not strings.
ModelCheckpoint.__init__.__annotations__ = typing.get_type_hints(ModelCheckpoint.__init__)
