"""What ``self.log`` records: per-step values, epoch aggregates, ``callback_metrics``.

Defaults users know: logged from ``training_step`` (and the train batch hooks) a value is per step;
from validation hooks and epoch-end hooks it is aggregated over the epoch (weighted by batch size).
The epoch accumulators are part of the loop state so a resumed run aggregates exactly as an
uninterrupted one.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from savepoint.trainer.trainer import Trainer

_REDUCE_ALIASES: dict[Any, str] = {
    "mean": "mean",
    "avg": "mean",
    torch.mean: "mean",
    "sum": "sum",
    torch.sum: "sum",
    sum: "sum",
    "max": "max",
    torch.max: "max",
    max: "max",
    "min": "min",
    torch.min: "min",
    min: "min",
}


def _reduce_name(reduce_fx: str | Callable[..., Any]) -> str:
    try:
        return _REDUCE_ALIASES[reduce_fx]
    except (KeyError, TypeError):
        raise ValueError(
            f"self.log(reduce_fx={reduce_fx!r}) is not supported; use 'mean', 'sum', 'max' or 'min'."
        ) from None


@dataclass
class _Accumulator:
    reduce: str
    value: torch.Tensor
    weight: float
    prog_bar: bool
    logger: bool
    on_step: bool

    def add(self, value: torch.Tensor, weight: float) -> None:
        if self.reduce == "mean":
            self.value = self.value + value * weight
            self.weight += weight
        elif self.reduce == "sum":
            self.value = self.value + value
        elif self.reduce == "max":
            self.value = torch.maximum(self.value, value)
        else:
            self.value = torch.minimum(self.value, value)

    def compute(self) -> torch.Tensor:
        return self.value / self.weight if self.reduce == "mean" else self.value


def _step_fx(fx: str) -> bool:
    return fx in (
        "training_step",
        "on_train_batch_start",
        "on_train_batch_end",
        "on_before_backward",
        "on_after_backward",
        "on_before_optimizer_step",
        "on_before_zero_grad",
    )


class MetricStore:
    """Owned by the Trainer; `TrainingModule.log` writes here."""

    def __init__(self, trainer: Trainer) -> None:
        self._trainer = trainer
        self.callback_metrics: dict[str, torch.Tensor] = {}
        self.logged_metrics: dict[str, torch.Tensor] = {}
        self.progress_bar_metrics: dict[str, torch.Tensor] = {}
        self._epoch: dict[str, dict[str, _Accumulator]] = {"train": {}, "validate": {}}
        self._step_pending: dict[str, torch.Tensor] = {}
        self.batch_size: int = 1
        self.stage: str = "train"
        self.discard = False  # sanity checking: nothing reaches callback_metrics

    def log(
        self,
        fx: str,
        name: str,
        value: Any,
        *,
        prog_bar: bool,
        logger: bool,
        on_step: bool | None,
        on_epoch: bool | None,
        reduce_fx: Any,
        sync_dist: bool,
        batch_size: int | None,
    ) -> None:
        if not isinstance(name, str) or not name:
            raise ValueError(f"self.log(name={name!r}): the name must be a non-empty string.")
        if self.discard:
            return
        tensor = self._as_tensor(name, value)
        if sync_dist and self._trainer.world_size > 1:
            tensor = self._trainer.strategy.reduce(tensor, _reduce_name(reduce_fx))
        in_train = self.stage == "train"
        step_default = in_train and _step_fx(fx)
        on_step = step_default if on_step is None else on_step
        on_epoch = (not step_default) if on_epoch is None else on_epoch
        if not in_train:
            on_step = False  # validation values are aggregated over the validation epoch
            on_epoch = True
        if on_step:
            key = f"{name}_step" if on_epoch else name
            self.callback_metrics[key] = tensor
            if on_epoch:
                self.callback_metrics[name] = tensor
            if logger:
                self._step_pending[key] = tensor
                self.logged_metrics[key] = (
                    tensor  # visible at once, as users know it; the logger gets it at flush
                )
            if prog_bar:
                self.progress_bar_metrics[key] = tensor
        if on_epoch:
            accs = self._epoch[self.stage]
            weight = float(batch_size if batch_size is not None else self.batch_size)
            acc = accs.get(name)
            if acc is None:
                start = tensor * weight if _reduce_name(reduce_fx) == "mean" else tensor
                accs[name] = _Accumulator(_reduce_name(reduce_fx), start, weight, prog_bar, logger, on_step)
            else:
                acc.add(tensor, weight)

    @staticmethod
    def _as_tensor(name: str, value: Any) -> torch.Tensor:
        if isinstance(value, torch.Tensor):
            if value.numel() != 1:
                raise ValueError(
                    f"self.log({name!r}, ...) got a tensor of shape {tuple(value.shape)}; log scalars only."
                )
            return value.detach().reshape(()).float()
        if isinstance(value, numbers.Number) and not isinstance(value, complex):
            return torch.tensor(float(value))
        raise ValueError(f"self.log({name!r}, {value!r}): the value must be a number or a scalar tensor.")

    def flush_step(self, step: int, epoch: int) -> None:
        """Send this step's values to the logger."""
        if self._step_pending:
            metrics = {k: v for k, v in self._step_pending.items()}
            self.logged_metrics.update(metrics)
            self._trainer._log_metrics(metrics, step=step, epoch=epoch)
            self._step_pending = {}

    def end_epoch(self, stage: str, step: int, epoch: int) -> dict[str, torch.Tensor]:
        """Aggregate the epoch's values into ``callback_metrics`` and the logger; return them."""
        accs = self._epoch[stage]
        out: dict[str, torch.Tensor] = {}
        for name, acc in accs.items():
            value = acc.compute()  # values logged with sync_dist=True were reduced per call
            key = f"{name}_epoch" if acc.on_step else name
            out[key] = value
            self.callback_metrics[name] = value
            if acc.on_step:
                self.callback_metrics[key] = value
            if acc.prog_bar:
                self.progress_bar_metrics[key] = value
        logged = {
            (f"{n}_epoch" if a.on_step else n): out[f"{n}_epoch" if a.on_step else n]
            for n, a in accs.items()
            if a.logger
        }
        if logged:
            self.logged_metrics.update(logged)
            self._trainer._log_metrics(logged, step=step, epoch=epoch)
        self._epoch[stage] = {}
        return out

    def preview_epoch(self, stage: str) -> None:
        """Put the epoch aggregates so far into ``callback_metrics``/``logged_metrics`` without ending the epoch
        (for the module's epoch-end hook, which may still log: ``end_epoch`` then sets the final values)."""
        for name, acc in self._epoch[stage].items():
            value = acc.compute()
            key = f"{name}_epoch" if acc.on_step else name
            self.callback_metrics[name] = value
            self.callback_metrics[key] = value
            if acc.logger:
                self.logged_metrics[key] = value

    def reset_stage(self, stage: str) -> None:
        self._epoch[stage] = {}

    def state_dict(self) -> dict[str, Any]:
        return {
            "callback_metrics": {k: v.detach().cpu() for k, v in self.callback_metrics.items()},
            "train_epoch": {
                name: {
                    "reduce": a.reduce,
                    "value": a.value.detach().cpu(),
                    "weight": a.weight,
                    "prog_bar": a.prog_bar,
                    "logger": a.logger,
                    "on_step": a.on_step,
                }
                for name, a in self._epoch["train"].items()
            },
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.callback_metrics = dict(state.get("callback_metrics", {}))
        self._epoch["train"] = {name: _Accumulator(**a) for name, a in state.get("train_epoch", {}).items()}
