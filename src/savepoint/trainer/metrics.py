"""What ``self.log`` records: per-step values, epoch aggregates, ``callback_metrics``.

Defaults users know: logged from ``training_step`` (and the train batch hooks) a value is per step;
from validation/test hooks and epoch-end hooks it is aggregated over the epoch (weighted by batch size).
With ``on_step=True, on_epoch=True`` the keys are ``<name>_step`` and ``<name>_epoch`` (and ``<name>``,
the latest of the two, in ``callback_metrics``). The epoch accumulators are part of the loop state so a
resumed run aggregates exactly as an uninterrupted one.

A torchmetrics ``Metric`` may be logged instead of a value (recognised by its ``update``/``compute``/
``reset`` methods; torchmetrics is never imported here): per step its last batch value is logged, at the
epoch end ``compute()`` gives the epoch value and the metric is ``reset()``, as in Lightning. Its state is
the module's business, not the checkpoint's (as in Lightning, metric states are not persistent).

In validation and test with ``sync_dist=True`` the sums are reduced across ranks once, at the epoch end:
ranks may have run different numbers of batches (test data is not padded), so a per-step collective
could wait forever, and the weighted mean over all samples is the exact one.
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


def is_metric_object(value: Any) -> bool:
    """A torchmetrics ``Metric`` (or anything with its update/compute/reset protocol)."""
    return all(
        callable(getattr(value, name, None)) for name in ("update", "compute", "reset")
    ) and not isinstance(value, torch.Tensor)


@dataclass
class _Accumulator:
    reduce: str
    value: torch.Tensor
    weight: float
    prog_bar: bool
    logger: bool
    on_step: bool
    sync: bool = False  # reduce across ranks at the epoch end (evaluation stages)
    metric: Any = None  # a torchmetrics Metric: computed and reset at the epoch end

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

    def compute(self, reduce: Callable[[torch.Tensor, str], torch.Tensor] | None = None) -> torch.Tensor:
        if self.metric is not None:
            value = self.metric.compute()
            self.metric.reset()
            return value.detach().float() if isinstance(value, torch.Tensor) else torch.tensor(float(value))
        if self.sync and reduce is not None:
            if self.reduce == "mean":
                total = reduce(
                    torch.stack([self.value, torch.tensor(self.weight, dtype=self.value.dtype)]), "sum"
                )
                return total[0] / total[1]
            return reduce(self.value, self.reduce)
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
        self._epoch: dict[str, dict[str, _Accumulator]] = {"train": {}, "validate": {}, "test": {}}
        self._step_pending: dict[str, torch.Tensor] = {}
        self.batch_size: int = 1
        self.stage: str = "train"
        self.discard = False  # sanity checking: nothing reaches callback_metrics
        self.dataloader_idx: int | None = None  # evaluation with several dataloaders: names get a suffix
        self.num_dataloaders = 1

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
        rank_zero_only: bool = False,
        add_dataloader_idx: bool = True,
        enable_graph: bool = False,
    ) -> None:
        if not isinstance(name, str) or not name:
            raise ValueError(f"self.log(name={name!r}): the name must be a non-empty string.")
        if self.discard:
            return
        if add_dataloader_idx and self.dataloader_idx is not None and self.num_dataloaders > 1:
            name = f"{name}/dataloader_idx_{self.dataloader_idx}"
        in_train = self.stage == "train"
        step_default = in_train and _step_fx(fx)
        on_step = step_default if on_step is None else on_step
        on_epoch = (not step_default) if on_epoch is None else on_epoch
        if not in_train and not on_epoch:
            on_epoch = True  # evaluation values are always aggregated over the evaluation epoch
        metric = value if is_metric_object(value) else None
        if metric is not None:
            # Only the step value needs the metric's last batch value; the epoch value is its compute().
            tensor = self._as_tensor(name, _metric_step_value(metric)) if on_step else torch.zeros(())
        else:
            tensor = self._as_tensor(name, value, enable_graph)
        sync = sync_dist and not rank_zero_only and metric is None and self._trainer.world_size > 1
        if sync and in_train:
            tensor = self._trainer.strategy.reduce(tensor, _reduce_name(reduce_fx))
        if on_step:
            self._log_step(name, tensor, on_epoch, prog_bar, logger)
        if on_epoch:
            weight = float(batch_size if batch_size is not None else self.batch_size)
            reduce = _reduce_name(reduce_fx)
            flags = (prog_bar, logger, on_step, sync and not in_train)
            self._log_epoch(name, tensor.detach(), weight, reduce, flags, metric)

    def _log_step(
        self, name: str, tensor: torch.Tensor, on_epoch: bool, prog_bar: bool, logger: bool
    ) -> None:
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
        if self.stage != "train" and logger:
            self.flush_step(self._trainer.global_step, self._trainer.current_epoch)

    def _log_epoch(
        self,
        name: str,
        tensor: torch.Tensor,
        weight: float,
        reduce: str,
        flags: tuple[bool, bool, bool, bool],
        metric: Any,
    ) -> None:
        accs = self._epoch[self.stage]
        acc = accs.get(name)
        if acc is None:
            start = tensor * weight if reduce == "mean" else tensor
            accs[name] = _Accumulator(reduce, start, weight, *flags, metric=metric)
        elif acc.metric is None:
            acc.add(tensor, weight)

    @staticmethod
    def _as_tensor(name: str, value: Any, enable_graph: bool = False) -> torch.Tensor:
        if isinstance(value, torch.Tensor):
            if value.numel() != 1:
                raise ValueError(
                    f"self.log({name!r}, ...) got a tensor of shape {tuple(value.shape)}; log scalars only."
                )
            # A copy of its own: the value a loss function returns may be one element of a large storage
            # (mse_loss's is its whole temporary), and a checkpoint holding it (a monitored score) would
            # otherwise save, and the metrics keep alive, that whole storage.
            value = value if enable_graph else value.detach()
            return value.reshape(()).to(torch.float32, copy=True)  # one copy, graph kept where asked
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
        reduce = self._trainer.strategy.reduce if self._trainer.world_size > 1 else None
        for name, acc in accs.items():
            value = acc.compute(reduce)  # training values logged with sync_dist=True were reduced per call
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
            # A Metric object is computed without its reset (end_epoch resets it); synced values are previewed
            # as this rank's, before the cross-rank reduction of end_epoch.
            value = acc.metric.compute() if acc.metric is not None else acc.compute()
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
                if a.metric is None  # a Metric's state belongs to the module (not persistent, as Lightning)
            },
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.callback_metrics = dict(state.get("callback_metrics", {}))
        self._epoch["train"] = {name: _Accumulator(**a) for name, a in state.get("train_epoch", {}).items()}


def _metric_step_value(metric: Any) -> Any:
    """The value a Metric gave for the last batch (``metric(preds, target)`` caches it), else its compute()."""
    cached = getattr(metric, "_forward_cache", None)
    if cached is not None:
        return cached
    return metric.compute()
