"""`BaseFinetuning` and `BackboneFinetuning`: freeze parts of a module, unfreeze them later with their
own parameter group.

Resuming: the checkpoint records the optimizers' parameter groups (by parameter name). On resume, at
``on_fit_start`` (before optimizer states are restored) the groups are rebuilt and the parameters of the
groups fine-tuning added are made trainable again. Lightning rebuilds the groups but leaves those
parameters frozen (``requires_grad=False`` from ``freeze_before_training``), so a backbone unfrozen
before the checkpoint stops learning after a resume; savepoint resumes it exactly.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Generator, Iterable
from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from savepoint.callbacks.callback import Callback

if TYPE_CHECKING:
    from savepoint.module import TrainingModule
    from savepoint.trainer.trainer import Trainer

Modules = nn.Module | Iterable[Any]


def multiplicative(epoch: int) -> float:
    return 2.0


class BaseFinetuning(Callback):
    """Subclass it: ``freeze_before_training(pl_module)`` freezes (at setup), ``finetune_function(pl_module,
    epoch, optimizer)`` runs at each epoch start and may call ``unfreeze_and_add_param_group``."""

    def __init__(self) -> None:
        self._internal_optimizer_metadata: dict[int, list[dict[str, Any]]] = {}
        self._restarting = False

    def state_dict(self) -> dict[str, Any]:
        return {"internal_optimizer_metadata": self._internal_optimizer_metadata}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._restarting = True
        self._internal_optimizer_metadata = state_dict.get("internal_optimizer_metadata", state_dict)

    def on_fit_start(self, trainer: Trainer, pl_module: TrainingModule) -> None:
        if not self._restarting:
            return
        named = dict(pl_module.named_parameters())
        for index, optimizer in enumerate(trainer.optimizers):
            saved = self._internal_optimizer_metadata.get(index)
            if not saved:
                continue
            configured = len(optimizer.param_groups)
            optimizer.param_groups = self._apply_mapping_to_param_groups(saved, named)
            for group in optimizer.param_groups[configured:]:  # the groups fine-tuning added: trainable
                for param in group["params"]:
                    param.requires_grad = True
        self._restarting = False

    # -- helpers (static, as in Lightning) ---------------------------------------------------------------------

    @staticmethod
    def flatten_modules(modules: Modules) -> list[nn.Module]:
        if isinstance(modules, nn.ModuleDict):
            modules = modules.values()
        if isinstance(modules, Iterable) and not isinstance(modules, nn.Module):
            found = [m for item in modules for m in BaseFinetuning.flatten_modules(item)]
        else:
            found = list(modules.modules())
        return [m for m in found if not list(m.children()) or m._parameters]

    @staticmethod
    def filter_params(modules: Modules, train_bn: bool = True, requires_grad: bool = True) -> Generator:
        for module in BaseFinetuning.flatten_modules(modules):
            if isinstance(module, _BatchNorm) and not train_bn:
                continue
            for param in module.parameters(recurse=False):
                if param.requires_grad == requires_grad:
                    yield param

    @staticmethod
    def make_trainable(modules: Modules) -> None:
        for module in BaseFinetuning.flatten_modules(modules):
            if isinstance(module, _BatchNorm):
                module.track_running_stats = True
            for param in module.parameters(recurse=False):
                param.requires_grad = True

    @staticmethod
    def freeze_module(module: nn.Module) -> None:
        if isinstance(module, _BatchNorm):
            module.track_running_stats = False
        for param in module.parameters(recurse=False):
            param.requires_grad = False

    @staticmethod
    def freeze(modules: Modules, train_bn: bool = True) -> None:
        for module in BaseFinetuning.flatten_modules(modules):
            if isinstance(module, _BatchNorm) and train_bn:
                BaseFinetuning.make_trainable(module)
            else:
                BaseFinetuning.freeze_module(module)

    @staticmethod
    def filter_on_optimizer(
        optimizer: torch.optim.Optimizer, params: Iterable[nn.Parameter]
    ) -> list[nn.Parameter]:
        params = list(params)
        present = {id(p) for group in optimizer.param_groups for p in group["params"]}
        out = [p for p in params if id(p) not in present]
        if len(out) != len(params):
            warnings.warn(
                "Some parameters to unfreeze are already in an optimizer group and are skipped; build the "
                "optimizer from the trainable parameters only: filter(lambda p: p.requires_grad, self.parameters()).",
                UserWarning,
                stacklevel=2,
            )
        return out

    @staticmethod
    def unfreeze_and_add_param_group(
        modules: Modules,
        optimizer: torch.optim.Optimizer,
        lr: float | None = None,
        initial_denom_lr: float = 10.0,
        train_bn: bool = True,
    ) -> None:
        BaseFinetuning.make_trainable(modules)
        params_lr = optimizer.param_groups[0]["lr"] if lr is None else float(lr)
        denom_lr = initial_denom_lr if lr is None else 1.0
        params = BaseFinetuning.filter_on_optimizer(
            optimizer, list(BaseFinetuning.filter_params(modules, train_bn=train_bn, requires_grad=True))
        )
        if params:
            optimizer.add_param_group({"params": params, "lr": params_lr / denom_lr})

    @staticmethod
    def _apply_mapping_to_param_groups(
        groups: list[dict[str, Any]], mapping: dict[Any, Any]
    ) -> list[dict[str, Any]]:
        return [
            {**{k: v for k, v in g.items() if k != "params"}, "params": [mapping[p] for p in g["params"]]}
            for g in groups
        ]

    def _store(
        self, pl_module: TrainingModule, index: int, before: int, groups: list[dict[str, Any]]
    ) -> None:
        names = {p: n for n, p in pl_module.named_parameters()}
        if index not in self._internal_optimizer_metadata:
            self._internal_optimizer_metadata[index] = self._apply_mapping_to_param_groups(groups, names)
        elif before != len(groups):
            self._internal_optimizer_metadata[index].extend(
                self._apply_mapping_to_param_groups(groups[before:], names)
            )

    # -- hooks -----------------------------------------------------------------------------------------------

    def setup(self, trainer: Trainer, pl_module: TrainingModule, stage: str) -> None:
        self.freeze_before_training(pl_module)

    def on_train_epoch_start(self, trainer: Trainer, pl_module: TrainingModule) -> None:
        for index, optimizer in enumerate(trainer.optimizers):
            before = len(optimizer.param_groups)
            self.finetune_function(pl_module, trainer.current_epoch, optimizer)
            self._store(pl_module, index, before, optimizer.param_groups)

    def finetune_function(
        self, pl_module: TrainingModule, epoch: int, optimizer: torch.optim.Optimizer
    ) -> None:
        raise NotImplementedError

    def freeze_before_training(self, pl_module: TrainingModule) -> None:
        raise NotImplementedError


class BackboneFinetuning(BaseFinetuning):
    """Freeze ``pl_module.backbone``; at ``unfreeze_backbone_at_epoch`` add it to the optimizer with a
    learning rate of ``backbone_initial_lr`` (or the current one x ``backbone_initial_ratio_lr``), then
    multiply it by ``lambda_func(epoch + 1)`` each epoch, capped at the model's (``should_align``)."""

    def __init__(
        self,
        unfreeze_backbone_at_epoch: int = 10,
        lambda_func: Callable[[int], float] = multiplicative,
        backbone_initial_ratio_lr: float = 10e-2,
        backbone_initial_lr: float | None = None,
        should_align: bool = True,
        initial_denom_lr: float = 10.0,
        train_bn: bool = True,
        verbose: bool = False,
        rounding: int = 12,
    ) -> None:
        super().__init__()
        self.unfreeze_backbone_at_epoch = unfreeze_backbone_at_epoch
        self.lambda_func = lambda_func
        self.backbone_initial_ratio_lr = backbone_initial_ratio_lr
        self.backbone_initial_lr = backbone_initial_lr
        self.should_align = should_align
        self.initial_denom_lr = initial_denom_lr
        self.train_bn = train_bn
        self.verbose = verbose
        self.rounding = rounding
        self.previous_backbone_lr: float | None = None

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "previous_backbone_lr": self.previous_backbone_lr}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.previous_backbone_lr = state_dict.get("previous_backbone_lr")
        super().load_state_dict(state_dict)

    def on_fit_start(self, trainer: Trainer, pl_module: TrainingModule) -> None:
        if not isinstance(getattr(pl_module, "backbone", None), nn.Module):
            raise ValueError(
                f"BackboneFinetuning needs {type(pl_module).__name__}.backbone to be an nn.Module; "
                f"name the part to fine-tune `self.backbone`."
            )
        super().on_fit_start(trainer, pl_module)

    def freeze_before_training(self, pl_module: TrainingModule) -> None:
        self.freeze(pl_module.backbone)

    def finetune_function(
        self, pl_module: TrainingModule, epoch: int, optimizer: torch.optim.Optimizer
    ) -> None:
        current_lr = optimizer.param_groups[0]["lr"]
        if epoch == self.unfreeze_backbone_at_epoch:
            initial = (
                self.backbone_initial_lr
                if self.backbone_initial_lr is not None
                else current_lr * self.backbone_initial_ratio_lr
            )
            self.previous_backbone_lr = initial
            self.unfreeze_and_add_param_group(
                pl_module.backbone,
                optimizer,
                initial,
                train_bn=self.train_bn,
                initial_denom_lr=self.initial_denom_lr,
            )
            shown = initial
        elif epoch > self.unfreeze_backbone_at_epoch and self.previous_backbone_lr is not None:
            nxt = self.lambda_func(epoch + 1) * self.previous_backbone_lr
            nxt = current_lr if (self.should_align and nxt > current_lr) else nxt
            optimizer.param_groups[-1]["lr"] = nxt
            self.previous_backbone_lr = shown = nxt
        else:
            return
        if self.verbose:
            print(
                f"Current lr: {round(current_lr, self.rounding)}, Backbone lr: {round(shown, self.rounding)}"
            )
