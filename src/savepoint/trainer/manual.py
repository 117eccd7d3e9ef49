"""Optimization the module drives itself (``automatic_optimization = False``), and what both modes share.

In manual mode ``training_step`` calls ``self.manual_backward(loss)`` and ``opt.step()`` on the optimizers
``self.optimizers()`` returns. Those are `StepCountingOptimizer`s: each ``step()`` applies the precision's
grad scaler, runs ``on_before_optimizer_step`` and counts one ``global_step`` (two optimizers stepped in a
batch count two, as in Lightning). LR schedulers are not stepped for the user in manual mode.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch

from savepoint.trainer import preemption

if TYPE_CHECKING:
    from savepoint.module import TrainingModule
    from savepoint.trainer.trainer import Trainer


def clip_grads(optimizer: torch.optim.Optimizer, value: float, algorithm: str) -> None:
    """Clip the gradients of `optimizer`'s parameters by norm or by value."""
    params = [p for g in optimizer.param_groups for p in g["params"] if p.grad is not None]
    if algorithm == "norm":
        torch.nn.utils.clip_grad_norm_(params, value)
    else:
        torch.nn.utils.clip_grad_value_(params, value)


def takes_batch_idx(step: Callable[..., Any]) -> bool:
    """Whether a ``*_step`` accepts a second positional argument (``training_step(self, batch)`` does not)."""
    try:
        params = list(inspect.signature(step).parameters.values())
    except (TypeError, ValueError):
        return True
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    return len(positional) >= 2 or any(p.kind is p.VAR_POSITIONAL for p in params)


def check_optimization(trainer: Trainer, model: TrainingModule, optimizers: list[Any]) -> None:
    """Lightning 2.x's rules: several optimizers need manual optimization; manual mode has no automatic
    clipping or accumulation."""
    cfg = trainer._cfg
    if model.automatic_optimization:
        if len(optimizers) > 1:
            raise RuntimeError(
                f"{type(model).__name__}.configure_optimizers() returned {len(optimizers)} optimizers: training "
                f"with several optimizers is only supported with manual optimization. Set "
                f"`self.automatic_optimization = False` in __init__, then step them in training_step with "
                f"`opt1, opt2 = self.optimizers()`, `self.manual_backward(loss)` and `opt1.step()`."
            )
        return
    if cfg.gradient_clip_val:
        raise ValueError(
            f"Trainer(gradient_clip_val={cfg.gradient_clip_val}) clips automatically, which manual optimization "
            f"does not do: remove it and call `self.clip_gradients(opt, gradient_clip_val=...)` in training_step."
        )
    if cfg.accumulate_grad_batches != 1:
        raise ValueError(
            f"Trainer(accumulate_grad_batches={cfg.accumulate_grad_batches}) is not supported with manual "
            f"optimization: remove it and accumulate in training_step (step every N batches)."
        )


class StepCountingOptimizer:
    """An optimizer as ``self.optimizers()`` returns it; anything but ``step`` goes to the optimizer itself."""

    def __init__(self, optimizer: torch.optim.Optimizer, trainer: Trainer) -> None:
        self.optimizer = optimizer
        self._trainer = trainer

    def step(self, closure: Callable[[], Any] | None = None, **kwargs: Any) -> Any:
        t = self._trainer
        result = None
        if closure is not None:
            if not callable(closure):
                raise TypeError(f"optimizer.step(closure={closure!r}): the closure must be callable.")
            with torch.enable_grad():
                result = closure()
        # From here the parameters may change: an exception-time save can no longer roll this batch back.
        t._fit_loop.step_phase = preemption.OPTIMIZER
        t._precision.unscale(self.optimizer)
        t._call("on_before_optimizer_step", self.optimizer)
        t._precision.step(self.optimizer, **kwargs)
        t._precision.update()
        t._fit_loop.pos.global_step += 1
        return result

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.optimizer.zero_grad(set_to_none=set_to_none)

    def state_dict(self) -> dict[str, Any]:
        return self.optimizer.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(state)

    @property
    def param_groups(self) -> list[dict[str, Any]]:
        return self.optimizer.param_groups

    def __getattr__(self, name: str) -> Any:
        return getattr(self.__dict__["optimizer"], name)

    def __repr__(self) -> str:
        return f"StepCountingOptimizer({self.optimizer!r})"


class ManualOptimization:
    """Mixed into `Trainer`: what ``manual_backward``, ``clip_gradients`` and ``optimizers()`` call."""

    _optimizers: list[torch.optim.Optimizer]
    _cfg: Any
    _precision: Any

    @property
    def _step_optimizers(self) -> list[StepCountingOptimizer]:
        cached = getattr(self, "_step_optimizer_cache", None)
        if cached is None or [o.optimizer for o in cached] != self._optimizers:
            cached = [StepCountingOptimizer(opt, self) for opt in self._optimizers]  # type: ignore[arg-type]
            self._step_optimizer_cache = cached
        return cached

    def _manual_backward(self, loss: torch.Tensor, *args: Any, **kwargs: Any) -> None:
        self._call("on_before_backward", loss)  # type: ignore[attr-defined]
        loop = self._fit_loop  # type: ignore[attr-defined]
        if loop.step_phase == preemption.FORWARD:
            loop.step_phase = preemption.BACKWARD
        self._precision.backward(loss, *args, **kwargs)
        self._call("on_after_backward")  # type: ignore[attr-defined]

    def _clip_gradients(
        self, optimizer: torch.optim.Optimizer, value: float | None, algorithm: str | None
    ) -> None:
        cfg_value, cfg_algorithm = self._cfg.gradient_clip_val, self._cfg.gradient_clip_algorithm
        if value is not None and cfg_value and value != cfg_value:
            raise ValueError(
                f"Trainer(gradient_clip_val={cfg_value!r}) and clip_gradients(gradient_clip_val={value!r}) "
                f"disagree; set the value in one place."
            )
        value = value if value is not None else (cfg_value or 0.0)
        algorithm = (algorithm or cfg_algorithm or "norm").lower()
        if algorithm not in ("norm", "value"):
            raise ValueError(
                f"clip_gradients(gradient_clip_algorithm={algorithm!r}) must be 'norm' or 'value'."
            )
        if value <= 0:
            return
        self._precision.unscale(optimizer)
        clip_grads(optimizer, value, algorithm)
