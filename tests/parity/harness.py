"""One scenario, two frameworks: build the same tiny module, data and callbacks on real Lightning and on
savepoint, run them in-process, and read back what a user would observe.

Lightning is imported lazily (it takes several seconds) and only here: the package never imports it.
"""

from __future__ import annotations

import logging
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

FRAMEWORKS = ("lightning", "savepoint")


@dataclass(frozen=True)
class Framework:
    name: str
    pkg: ModuleType  # `lightning.pytorch` or `savepoint`
    Module: type
    DataModule: type
    Callback: type
    ModelCheckpoint: type

    def trainer(self, root: Path | str, **kwargs: Any) -> Any:
        """A quiet Trainer: no progress bar, no model summary, logger off unless asked, files under `root`."""
        kwargs.setdefault("enable_progress_bar", False)
        kwargs.setdefault("enable_model_summary", False)
        kwargs.setdefault("logger", False)
        kwargs.setdefault("default_root_dir", str(root))
        if self.name == "lightning":
            kwargs.setdefault("accelerator", "cpu")
            kwargs.setdefault("devices", 1)
        return self.pkg.Trainer(**kwargs)

    def csv_logger(self, root: Path | str) -> Any:
        if self.name == "lightning":
            from lightning.pytorch.loggers import CSVLogger
        else:
            from savepoint.loggers import CSVLogger
        return CSVLogger(str(root), name="runs")


_CACHE: dict[str, Framework] = {}


def _quiet_lightning() -> None:
    for name in ("lightning", "lightning.pytorch", "lightning.fabric", "lightning_utilities"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", message=r".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=r".*LeafSpec.*")


def framework(name: str) -> Framework:
    if name in _CACHE:
        return _CACHE[name]
    if name == "lightning":
        import lightning.pytorch as pkg

        _quiet_lightning()
        fw = Framework(
            name,
            pkg,
            pkg.LightningModule,
            pkg.LightningDataModule,
            pkg.Callback,
            pkg.callbacks.ModelCheckpoint,
        )
    else:
        import savepoint as pkg

        fw = Framework(name, pkg, pkg.TrainingModule, pkg.DataModule, pkg.Callback, pkg.ModelCheckpoint)
    _CACHE[name] = fw
    return fw


def dataset(n: int = 32, dim: int = 4, seed: int = 0) -> TensorDataset:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, dim, generator=g)
    return TensorDataset(x, (x[:, 0] > 0).long())


def loaders(n_train: int = 32, n_val: int = 8, batch_size: int = 8, shuffle: bool = False) -> tuple:
    return (
        DataLoader(dataset(n_train, seed=0), batch_size=batch_size, shuffle=shuffle),
        DataLoader(dataset(n_val, seed=1), batch_size=batch_size),
    )


def module_class(fw: Framework) -> type:
    """A tiny classifier on `fw`'s base class. ``val_values`` scripts the logged ``val_metric``, one value per
    validation run (the sanity check excluded); it also logs the real ``val_loss`` and ``train_loss``."""

    class Tiny(fw.Module):  # type: ignore[misc, valid-type]
        def __init__(
            self, lr: float = 0.1, val_values: tuple[float, ...] = (), scheduler: bool = False
        ) -> None:
            super().__init__()
            self.save_hyperparameters()
            self.net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
            self.val_runs = 0
            self.events: list[tuple] = []

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.net(x)

        def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            x, y = batch
            loss = F.cross_entropy(self(x), y)
            self.log("train_loss", loss)
            return loss

        def validation_step(self, batch: Any, batch_idx: int) -> None:
            x, y = batch
            self.log("val_loss", F.cross_entropy(self(x), y))
            values = self.hparams.val_values
            if values and not self.trainer.sanity_checking:
                self.log("val_metric", float(values[min(self.val_runs, len(values) - 1)]))

        def on_validation_epoch_end(self) -> None:
            if not self.trainer.sanity_checking:
                self.val_runs += 1

        def configure_optimizers(self) -> Any:
            opt = torch.optim.SGD(self.parameters(), lr=self.hparams.lr, momentum=0.9)
            if not self.hparams.scheduler:
                return opt
            return {
                "optimizer": opt,
                "lr_scheduler": torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5),
            }

    Tiny.__qualname__ = Tiny.__name__ = f"Tiny{fw.name.capitalize()}"
    return Tiny


def files(folder: Path | str) -> list[str]:
    """The checkpoint-ish files a user sees in `folder` (hidden files included: none may linger)."""
    folder = Path(folder)
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


def checkpoint_view(cb: Any, folder: Path | str) -> dict[str, Any]:
    """What a user reads off a ModelCheckpoint, with paths relative to `folder`."""

    def rel(path: str) -> str:
        return os.path.relpath(path, folder) if path else ""

    def num(value: Any) -> float | None:
        return None if value is None else float(value)

    return {
        "best_model_path": rel(cb.best_model_path),
        "best_model_score": num(cb.best_model_score),
        "best_k_models": {rel(k): float(v) for k, v in cb.best_k_models.items()},
        "kth_best_model_path": rel(cb.kth_best_model_path),
        "last_model_path": rel(cb.last_model_path),
    }


def on_both(scenario: Any, tmp_path: Path) -> dict[str, Any]:
    """Run ``scenario(fw, folder)`` on each framework, each in its own folder; returns ``{name: result}``."""
    out = {}
    for name in FRAMEWORKS:
        folder = tmp_path / name
        folder.mkdir()
        out[name] = scenario(framework(name), folder)
    return out


def fit_with_checkpoint(
    fw: Framework,
    root: Path,
    cb_kwargs: dict[str, Any],
    val_values: tuple[float, ...] = (),
    scheduler: bool = False,
    **trainer_kwargs: Any,
) -> tuple[list[str], dict[str, Any], Any]:
    """Fit the tiny module with one ModelCheckpoint writing into ``root/ckpt``; return (files, view, callback)."""
    folder = root / "ckpt"
    cb = fw.ModelCheckpoint(dirpath=str(folder), **cb_kwargs)
    trainer = fw.trainer(root, callbacks=[cb], **trainer_kwargs)
    train, val = loaders()
    trainer.fit(module_class(fw)(val_values=val_values, scheduler=scheduler), train, val)
    return files(folder), checkpoint_view(cb, folder), cb
