"""The fit loop, with a position a checkpoint can record and a resumed run can re-enter exactly.

The position is (epoch, batches done in the epoch, phase). Phases, in the order a training epoch
passes through them::

    epoch_start ──► batches ──► after_batch ──► batches ──► ... ──► epoch_end ──► epoch_start (epoch + 1)
                     (post-batch work done)   (on_train_batch_end ran; the validation check for that
                                               batch has not)

A checkpoint written inside a hook records the phase of that hook, so resuming re-runs exactly the work
that had not happened yet: the validation check after ``on_train_batch_end``, the epoch-end hooks after
a validation at the last batch, the epoch-interval schedulers after ``on_train_epoch_end``.
"""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import asdict, dataclass, field, replace
from typing import TYPE_CHECKING, Any

import torch

from savepoint.checkpoint.resume import capture_rng, restore_rng
from savepoint.trainer import logger_connector, preemption
from savepoint.trainer.data import TrainData, first_tensor_len
from savepoint.trainer.manual import clip_grads

if TYPE_CHECKING:
    from savepoint.trainer.trainer import Trainer


@dataclass
class LoopPosition:
    epoch: int = 0
    batches_done: int = 0  # training batches finished in the current epoch
    phase: str = "epoch_start"  # epoch_start | batches | after_batch | epoch_end
    global_step: int = 0  # optimizer steps taken
    total_batches: int = 0  # training batches over the whole run
    accumulated: int = 0  # batches accumulated since the last optimizer step
    val_runs: int = 0
    exact: bool = True
    data: dict[str, Any] = field(default_factory=dict)  # what the position depends on (epoch length...)


def _loss_of(output: Any) -> torch.Tensor | None:
    if output is None:
        return None
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, dict):
        if "loss" not in output:
            raise ValueError("training_step returned a dict without a 'loss' key.")
        return output["loss"]
    raise TypeError(
        f"training_step must return a loss tensor, a dict with 'loss', or None; got {type(output).__name__}."
    )


class FitLoop:
    """Runs epochs and batches; owns the position, the epoch-start RNG and the accumulation phase."""

    def __init__(self, trainer: Trainer) -> None:
        self.trainer = trainer
        self.pos = LoopPosition()
        self.data: TrainData | None = None
        self._epoch_rng: dict[str, Any] | None = None
        self._epoch_gen_states: list[torch.Tensor] = []
        self._resume_rng: dict[str, Any] | None = None
        self._resume_gen_states: list[torch.Tensor] = []
        self._resume_grads: dict[str, torch.Tensor] | None = None
        self._pending_data_state: dict[str, Any] = {}
        self._iterator: Any = None
        self._window_has_grad = False  # a backward ran since the last optimizer step
        self._t_start = 0.0
        self._elapsed_before = 0.0
        self.automatic = True  # the module's automatic_optimization, read once per fit
        self.step_takes_batch_idx = True
        # The step in flight, for exception-time saves (see `preemption.exception_save_plan`).
        self.step_phase = preemption.IDLE
        self.track_rollback = (
            False  # keep the state from before each batch (an exception-save callback wants it)
        )
        self._before_batch: tuple[Any, ...] | None = None
        self.stop_check: Any = None  # called after each batch; raises `Preempted` after a signal
        self.started = False  # run() began: the state is a training state from here on

    # -- state -----------------------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        trainer = self.trainer
        state = asdict(self.pos)
        state["metrics"] = trainer._metrics.state_dict()
        state["data_state"] = self.data.state_dict() if self.data is not None else {}
        state["elapsed_s"] = self.elapsed_s()
        state["lr_scheduler_configs"] = self._scheduler_configs()
        state["loggers"] = logger_connector.states(trainer)  # where each log stood at this save point
        if self.pos.accumulated > 0:
            module = trainer.training_module
            state["accumulated_grads"] = {
                name: p.grad.detach().cpu().clone()
                for name, p in module.named_parameters()
                if p.grad is not None
            }
        return state

    def _scheduler_configs(self) -> list[dict[str, Any]]:
        """How each LR scheduler steps: lets `savepoint convert --to lightning` apply a step savepoint takes
        later in the epoch than Lightning does (see `checkpoint/lightning_format.py`)."""
        optimizers = self.trainer.optimizers
        out = []
        for config in self.trainer.lr_scheduler_configs:
            cls = type(config.scheduler)
            optimizer = getattr(config.scheduler, "optimizer", None)
            out.append(
                {
                    "class": f"{cls.__module__}.{cls.__qualname__}",
                    "interval": config.interval,
                    "frequency": config.frequency,
                    "monitor": config.monitor if config.reduce_on_plateau else None,
                    "optimizer_index": next((i for i, o in enumerate(optimizers) if o is optimizer), 0),
                }
            )
        return out

    def rank_state(self) -> dict[str, Any]:
        """This rank's RNG states: now, and at the start of the epoch (from which the data order is drawn);
        the data loader's own generators likewise (now: what the next epoch's order is drawn from)."""
        return {
            "now": capture_rng(),
            "epoch_start": self._epoch_rng,
            "data_generators": list(self._epoch_gen_states),
            "data_generators_now": self.data.generator_states() if self.data is not None else [],
        }

    def load_state_dict(self, state: dict[str, Any], rank_state: dict[str, Any] | None) -> None:
        known = {k: state[k] for k in LoopPosition.__dataclass_fields__ if k in state}
        self.pos = LoopPosition(**known)
        if state.get("phase") == "epoch_done":  # an upgraded checkpoint: resume at the next epoch
            self.pos.phase, self.pos.epoch, self.pos.batches_done = "epoch_start", self.pos.epoch + 1, 0
        self.trainer._metrics.load_state_dict(state.get("metrics", {}))
        self._pending_data_state = state.get("data_state", {})
        self._elapsed_before = float(state.get("elapsed_s", 0.0))
        self._resume_grads = state.get("accumulated_grads")
        if rank_state is not None:
            self._resume_rng = rank_state.get("now")
            self._epoch_rng = rank_state.get("epoch_start")
            self._epoch_gen_states = list(rank_state.get("data_generators") or [])
            self._resume_gen_states = list(rank_state.get("data_generators_now") or [])
        elif self.pos.exact and self.pos.phase != "epoch_start":
            self.pos.exact = False

    def close_restored_epoch(self) -> None:
        """Restored from a save in ``on_train_epoch_end``: only the epoch-interval schedulers of that epoch were
        left, so step them now and start at the next epoch, which is what ``on_train_start`` then sees."""
        if self.pos.phase != "epoch_end":
            return
        with warnings.catch_warnings():
            # torch warns that no optimizer step ran in this process yet; the epoch's steps ran before the save.
            warnings.filterwarnings("ignore", message=r"Detected call of `lr_scheduler.step\(\)`")
            self.step_schedulers("epoch")
        self.pos.epoch += 1
        self.pos.batches_done = 0
        self.pos.phase = "epoch_start"

    # -- time ------------------------------------------------------------------------------------------------

    def elapsed_s(self) -> float:
        if self._t_start == 0.0:
            return self._elapsed_before
        return self._elapsed_before + time.monotonic() - self._t_start

    # -- the loop --------------------------------------------------------------------------------------------

    def done(self) -> bool:
        t = self.trainer
        cfg = t._cfg
        if cfg.max_steps != -1 and t.global_step >= cfg.max_steps:
            return True
        if cfg.max_epochs != -1 and self.pos.epoch >= cfg.max_epochs and self.pos.phase == "epoch_start":
            return True
        return bool(t.should_stop and self.pos.epoch >= cfg.min_epochs and self.pos.phase == "epoch_start")

    def stop_reason(self) -> str:
        """Why the loop ended, when nobody said (``trainer.stop_reason`` is set by whoever stops it)."""
        t = self.trainer
        cfg = t._cfg
        if cfg.max_steps != -1 and t.global_step >= cfg.max_steps:
            return f"`max_steps={cfg.max_steps}` reached"
        if cfg.max_epochs != -1 and self.pos.epoch >= cfg.max_epochs:
            return f"`max_epochs={cfg.max_epochs}` reached"
        return "`trainer.should_stop` was set"

    def run(self, resuming: bool) -> None:
        t = self.trainer
        self._t_start = time.monotonic()
        self.started = True
        if resuming:
            self._check_data_unchanged()
            if self._pending_data_state:
                self.data.load_state_dict(self._pending_data_state)  # type: ignore[union-attr]
            if self.pos.phase == "epoch_start" and self._resume_rng is not None:
                # Saved between epochs (a manual save after fit, at an epoch's end): the next epoch draws
                # from this state, its data order from the loader's generators as they were.
                restore_rng(self._resume_rng)
                self.data.set_generator_states(self._resume_gen_states)  # type: ignore[union-attr]
        while not self.done():
            if self.pos.phase == "epoch_start":
                self._start_epoch()
            elif resuming:
                self._reenter_epoch()
            resuming = False
            self._run_batches()
            if self.pos.phase != "epoch_end":  # resumed inside on_train_epoch_end: only schedulers remain
                self.pos.phase = "epoch_end"
                self._epoch_end()
            self.step_schedulers("epoch")
            self.pos.epoch += 1
            self.pos.batches_done = 0
            self.pos.phase = "epoch_start"
            t._log_flush()
        self._elapsed_before = self.elapsed_s()
        self._t_start = 0.0

    def _start_epoch(self) -> None:
        t = self.trainer
        n = t._cfg.reload_dataloaders_every_n_epochs
        if n and self.pos.epoch > 0 and self.pos.epoch % n == 0:
            t._load_fit_data()
        assert self.data is not None
        self.data.set_epoch(self.pos.epoch)
        self.pos.batches_done = 0
        self.pos.accumulated = 0
        self.pos.data = self._data_signature()
        t._metrics.reset_stage("train")
        t._call("on_train_epoch_start")
        # The data order of this epoch is drawn from this state; a resume re-creates it from here.
        self._epoch_rng = capture_rng()
        self._epoch_gen_states = self.data.generator_states()
        self._iterator = self.data.iterator()
        self.pos.phase = "batches"

    def _reenter_epoch(self) -> None:
        """Rebuild the interrupted epoch's iterator from its start state, skip what was consumed, then
        restore the RNG as it was at the save point."""
        assert self.data is not None
        self.data.set_epoch(self.pos.epoch)
        if self._epoch_rng is not None:
            restore_rng(self._epoch_rng)
            self.data.set_generator_states(self._epoch_gen_states)
        if self.pos.batches_done < self.data.num_batches:
            self._iterator = self.data.iterator(skip=self.pos.batches_done)
        else:  # saved on the epoch's last batch: no iterator, the generators as the epoch left them
            self._iterator = iter(())
            self.data.set_generator_states(self._resume_gen_states)
        if self._resume_rng is not None:
            restore_rng(self._resume_rng)
        if self._resume_grads:
            module = self.trainer.training_module
            for name, p in module.named_parameters():
                if name in self._resume_grads:
                    p.grad = self._resume_grads[name].to(p.device, p.dtype)
                    self._window_has_grad = True
        self._resume_grads = None
        if self.pos.phase == "after_batch":
            self._post_batch(self.pos.batches_done - 1)
            self.pos.phase = "batches"

    def _run_batches(self) -> None:
        t = self.trainer
        assert self.data is not None
        num_batches = self.data.num_batches
        while self.pos.phase == "batches" and self.pos.batches_done < num_batches:
            if t.should_stop or (t._cfg.max_steps != -1 and t.global_step >= t._cfg.max_steps):
                break
            if self.track_rollback:
                self._keep_before_batch()
            self.step_phase = preemption.FORWARD
            try:
                batch = next(self._iterator)
            except StopIteration:
                self.step_phase = preemption.IDLE
                break
            batch_idx = self.pos.batches_done
            is_last = batch_idx + 1 >= num_batches
            self._train_batch(batch, batch_idx, is_last)
            self.pos.batches_done += 1
            self.pos.total_batches += 1
            self.pos.phase = "after_batch"
            self.step_phase = preemption.IDLE
            if self.pos.accumulated == 0 and t.global_step % t._cfg.log_every_n_steps == 0:
                t._metrics.flush_step(t.global_step, self.pos.epoch)
            t._call("on_train_batch_end", self._last_output, batch, batch_idx)
            self._last_output = None  # frees the graph; a Trainer can be deep-copied between batches
            self._post_batch(batch_idx)
            self.pos.phase = "batches"
            if self.stop_check is not None:
                self.stop_check()
        self._iterator = None

    def _train_batch(self, batch: Any, batch_idx: int, is_last: bool) -> None:
        t = self.trainer
        cfg = t._cfg
        strategy = t.strategy
        batch = t._precision.convert_input(strategy.batch_to_device(batch))
        t._metrics.batch_size = first_tensor_len(batch)
        t._metrics.stage = "train"
        response = t._call("on_train_batch_start", batch, batch_idx)
        if response == -1:
            self.trainer.should_stop = True
            self._last_output = None
            return
        args = (batch, batch_idx) if self.step_takes_batch_idx else (batch,)
        with t._precision.autocast():
            output = t._run_module("training_step", strategy.training_step, *args)
        self._last_output = output
        if not self.automatic:  # training_step stepped its optimizers itself
            return
        loss = _loss_of(output)
        self.pos.accumulated += 1
        if loss is not None:
            if cfg.accumulate_grad_batches > 1:
                loss = loss / cfg.accumulate_grad_batches
            t._call("on_before_backward", loss)
            self.step_phase = preemption.BACKWARD
            t._precision.backward(loss)
            self._window_has_grad = True
            t._call("on_after_backward")
        window_closed = self.pos.accumulated >= cfg.accumulate_grad_batches or is_last
        if window_closed:
            self._optimizer_step()
            self.pos.accumulated = 0

    def _optimizer_step(self) -> None:
        t = self.trainer
        cfg = t._cfg
        if not self._window_has_grad:  # every training_step of the window returned None: nothing to apply
            for opt in t.optimizers:
                opt.zero_grad(set_to_none=True)
            return
        self._window_has_grad = False
        for opt in t.optimizers:
            t._precision.unscale(opt)
            t._call("on_before_optimizer_step", opt)
            if cfg.gradient_clip_val:
                clip_grads(opt, cfg.gradient_clip_val, cfg.gradient_clip_algorithm)
            self.step_phase = preemption.OPTIMIZER
            t._precision.step(opt)
        t._precision.update()
        for opt in t.optimizers:
            t._call("on_before_zero_grad", opt)
            opt.zero_grad(set_to_none=True)
        self.pos.global_step += 1
        self.step_schedulers("step")

    def step_schedulers(self, interval: str) -> None:
        """Step the LR schedulers of `interval` ("step" after an optimizer step, "epoch" at the epoch end)."""
        t = self.trainer
        if not self.automatic:  # in manual optimization training_step steps its schedulers (as Lightning)
            return
        for config in t.lr_scheduler_configs:
            if config.interval != interval:
                continue
            count = t.global_step if interval == "step" else t.current_epoch + 1
            if count % config.frequency != 0:
                continue
            if config.reduce_on_plateau:
                value = t.callback_metrics.get(config.monitor)  # type: ignore[arg-type]
                if value is None:
                    if config.strict:
                        available = sorted(t.callback_metrics)
                        raise KeyError(
                            f"ReduceLROnPlateau monitors {config.monitor!r}, which is not logged (logged: "
                            f"{available}). Log it with self.log, or set 'strict': False in the scheduler config."
                        )
                    continue
                config.scheduler.step(float(value))
            else:
                config.scheduler.step()

    # -- the state from before the batch in flight (exception-time saves) ------------------------------------

    def _keep_before_batch(self) -> None:
        """What a batch changes before its optimizer step: position, RNG, epoch metrics, the window's gradients.
        Taken before the batch is fetched (the sampler may draw from the RNG at the first fetch)."""
        t = self.trainer
        metrics = t._metrics
        grads = None
        if self.pos.accumulated > 0:
            grads = {
                name: p.grad.detach().clone()
                for name, p in t.training_module.named_parameters()
                if p.grad is not None
            }
        self._before_batch = (
            replace(self.pos, data=dict(self.pos.data)),
            capture_rng(),
            dict(metrics.callback_metrics),
            {k: replace(a) for k, a in metrics._epoch["train"].items()},
            grads,
            self._window_has_grad,
        )

    def rollback_batch_in_flight(self) -> None:
        """Put back the state from before the batch in flight (parameters and optimizers are unchanged
        before the optimizer step). Used only when fit is failing, before an exception-time save."""
        if self._before_batch is None or self.step_phase == preemption.IDLE:
            return
        pos, rng, callback_metrics, epoch_metrics, grads, window_has_grad = self._before_batch
        t = self.trainer
        self.pos = pos
        restore_rng(rng)
        t._metrics.callback_metrics = callback_metrics
        t._metrics._epoch["train"] = epoch_metrics
        for name, p in t.training_module.named_parameters():
            p.grad = None if grads is None else grads.get(name)
        self._window_has_grad = window_has_grad
        self.step_phase = preemption.IDLE

    # -- validation inside the epoch ----------------------------------------------------------------------------

    def val_due(self, batch_idx: int) -> bool:
        t = self.trainer
        cfg = t._cfg
        if not t._validation_will_run():
            return False
        if (
            cfg.check_val_every_n_epoch is not None
            and (self.pos.epoch + 1) % cfg.check_val_every_n_epoch != 0
        ):
            return False
        if t.should_stop and self.pos.epoch + 1 >= cfg.min_epochs:
            return (
                True  # stopping mid-epoch (Timer, a callback): validate first, as Lightning, so saves follow
            )
        assert self.data is not None
        interval = cfg.val_check_interval
        if isinstance(interval, int):
            count = batch_idx + 1 if cfg.check_val_every_n_epoch is not None else self.pos.total_batches
            return count % interval == 0
        num_batches = self.data.num_batches
        if num_batches == math.inf:
            return False
        every = max(1, int(num_batches * interval))
        return (batch_idx + 1) % every == 0

    def _post_batch(self, batch_idx: int) -> None:
        if self.val_due(batch_idx):
            self.pos.val_runs += 1
            self.trainer._run_validation(sanity=False, on_end=self._mark_val_done)

    def _mark_val_done(self) -> None:
        # Saves made in on_validation_end record that this batch's post-batch work is done.
        self.pos.phase = "batches"

    def _epoch_end(self) -> None:
        t = self.trainer
        t._metrics.preview_epoch("train")  # the module's epoch-end hook sees this epoch's aggregates
        t._call_module("on_train_epoch_end")
        t._metrics.end_epoch("train", t.global_step, self.pos.epoch)
        t._call_callbacks("on_train_epoch_end")

    # -- resume checks ---------------------------------------------------------------------------------------

    def _data_signature(self) -> dict[str, Any]:
        """What the position refers to; compared on resume."""
        assert self.data is not None
        return {**self.data.describe(), "world_size": self.trainer.world_size}

    def _check_data_unchanged(self) -> None:
        """Warn when the data the position refers to changed; remap the position to the new epoch length."""
        now = self._data_signature()
        saved = self.pos.data
        if self.pos.phase == "epoch_start" or not saved:
            return
        changed = {k: (saved.get(k), v) for k, v in now.items() if k in saved and saved.get(k) != v}
        if not changed:
            return
        old_len, new_len = saved.get("num_batches", -1), now["num_batches"]
        done = self.pos.batches_done
        if old_len > 0 and new_len > 0 and (done >= old_len or "world_size" in changed):
            # A finished epoch stays finished; under another world size the same share of the data is done.
            self.pos.batches_done = new_len if done >= old_len else int(done * new_len / old_len)
        what = ", ".join(f"{k} {old} -> {new}" for k, (old, new) in changed.items())
        warnings.warn(
            f"resuming mid-epoch with different training data ({what}): exact resume is no longer possible; "
            f"training continues from batch {self.pos.batches_done} of {new_len} of the new epoch order.",
            UserWarning,
            stacklevel=3,
        )
        self.pos.exact = False
