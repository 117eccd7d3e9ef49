"""Trainer arguments: validated at construction, errors naming the argument as the user wrote it."""

from __future__ import annotations

import difflib
import os
import warnings
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import torch

from savepoint.callbacks.callback import Callback
from savepoint.plugins.io.checkpoint_io import CheckpointIO
from savepoint.strategies.strategy import SingleDeviceStrategy, Strategy
from savepoint.trainer.precision import normalize_precision
from savepoint.utilities.durations import parse_max_time

TRAINER_ARGS = (
    "accelerator",
    "strategy",
    "devices",
    "num_nodes",
    "precision",
    "logger",
    "callbacks",
    "max_epochs",
    "min_epochs",
    "max_steps",
    "limit_train_batches",
    "limit_val_batches",
    "val_check_interval",
    "check_val_every_n_epoch",
    "num_sanity_val_steps",
    "accumulate_grad_batches",
    "gradient_clip_val",
    "gradient_clip_algorithm",
    "default_root_dir",
    "enable_checkpointing",
    "enable_progress_bar",
    "enable_model_summary",
    "deterministic",
    "plugins",
    "log_every_n_steps",
    "fast_dev_run",
    "max_time",
    "limit_test_batches",
    "limit_predict_batches",
    "overfit_batches",
    "benchmark",
    "inference_mode",
    "use_distributed_sampler",
    "detect_anomaly",
    "barebones",
    "sync_batchnorm",
    "reload_dataloaders_every_n_epochs",
)
DEPRECATED_ARGS = {
    "default_save_path": "default_root_dir",
    "checkpoint_callback": "enable_checkpointing (or callbacks=[ModelCheckpoint(...)])",
    "resume_from_checkpoint": "trainer.fit(model, ckpt_path=...)",
}


@dataclass
class TrainerConfig:
    max_epochs: int = 1000
    min_epochs: int = 0
    max_steps: int = -1
    limit_train_batches: int | float = 1.0
    limit_val_batches: int | float = 1.0
    val_check_interval: int | float = 1.0
    check_val_every_n_epoch: int | None = 1
    num_sanity_val_steps: int = 2
    accumulate_grad_batches: int = 1
    gradient_clip_val: float | None = None
    gradient_clip_algorithm: str = "norm"
    default_root_dir: str = field(default_factory=os.getcwd)
    enable_checkpointing: bool = True
    enable_progress_bar: bool = True
    enable_model_summary: bool = True
    deterministic: bool | str = False
    precision: str = "32-true"
    log_every_n_steps: int = 50
    callbacks: list[Callback] = field(default_factory=list)
    resume_from_checkpoint: str | None = None
    fast_dev_run: int | bool = False
    max_time: timedelta | None = None
    limit_test_batches: int | float = 1.0
    limit_predict_batches: int | float = 1.0
    overfit_batches: int | float = 0.0
    benchmark: bool | None = None
    inference_mode: bool = True
    use_distributed_sampler: bool = True
    detect_anomaly: bool = False
    barebones: bool = False
    sync_batchnorm: bool = False
    reload_dataloaders_every_n_epochs: int = 0


def _unknown_argument(name: str) -> TypeError:
    close = difflib.get_close_matches(name, TRAINER_ARGS, n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    return TypeError(f"Trainer() got an unexpected argument {name!r}.{hint}")


def _check_int(name: str, value: Any, minimum: int, allow: tuple[Any, ...] = ()) -> None:
    if value in allow and not isinstance(value, bool):
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"Trainer({name}={value!r}) must be an int >= {minimum}.")


def _check_limit(name: str, value: Any) -> int | float:
    if isinstance(value, bool):
        raise ValueError(f"Trainer({name}={value!r}) must be an int (batches) or a float in [0.0, 1.0].")
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"Trainer({name}={value!r}) must be >= 0.")
        return value
    if isinstance(value, float):
        if not 0.0 <= value <= 1.0:
            raise ValueError(
                f"Trainer({name}={value!r}) as a float is a fraction of the epoch in [0.0, 1.0]."
            )
        return value
    raise ValueError(f"Trainer({name}={value!r}) must be an int (batches) or a float in [0.0, 1.0].")


def build_config(kwargs: dict[str, Any]) -> tuple[TrainerConfig, dict[str, Any]]:
    """Validate plain arguments; return the config and the rest (strategy, devices, logger, plugins...)."""
    for name in kwargs:
        if name not in TRAINER_ARGS and name not in DEPRECATED_ARGS:
            raise _unknown_argument(name)
    _check_barebones(kwargs)
    kw = dict(kwargs)
    cfg = TrainerConfig()
    callbacks = kw.pop("callbacks", None)
    if callbacks is None:
        callbacks = []
    elif isinstance(callbacks, Callback):
        callbacks = [callbacks]
    else:
        callbacks = list(callbacks)
    for cb in callbacks:
        if not isinstance(cb, Callback):
            raise TypeError(f"Trainer(callbacks=...) holds {cb!r}, which is not a savepoint Callback.")

    # Document 004's arguments, each with a warning naming its replacement.
    if "default_save_path" in kw:
        warnings.warn(
            "Trainer(default_save_path=...) is deprecated; use Trainer(default_root_dir=...).",
            DeprecationWarning,
            stacklevel=3,
        )
        value = kw.pop("default_save_path")
        if kw.get("default_root_dir") is None:
            kw["default_root_dir"] = value
    if "checkpoint_callback" in kw:
        value = kw.pop("checkpoint_callback")
        warnings.warn(
            "Trainer(checkpoint_callback=...) is deprecated; use Trainer(enable_checkpointing=...) and pass a "
            "ModelCheckpoint in Trainer(callbacks=[...]).",
            DeprecationWarning,
            stacklevel=3,
        )
        if isinstance(value, Callback):
            callbacks.append(value)
        elif value is False:
            kw["enable_checkpointing"] = False
        elif value is not True and value is not None:
            raise TypeError(f"Trainer(checkpoint_callback={value!r}) must be a bool or a ModelCheckpoint.")
    if "resume_from_checkpoint" in kw:
        value = kw.pop("resume_from_checkpoint")
        warnings.warn(
            "Trainer(resume_from_checkpoint=...) is deprecated; use trainer.fit(model, ckpt_path=...).",
            DeprecationWarning,
            stacklevel=3,
        )
        cfg.resume_from_checkpoint = None if value is None else os.fspath(value)
    cfg.callbacks = callbacks

    max_epochs = kw.pop("max_epochs", None)
    max_steps = kw.pop("max_steps", -1)
    _check_int("max_steps", max_steps, -1)
    if max_epochs is None:
        max_epochs = 1000 if max_steps == -1 else -1
    _check_int("max_epochs", max_epochs, -1)
    cfg.max_epochs, cfg.max_steps = max_epochs, max_steps
    cfg.min_epochs = kw.pop("min_epochs", None) or 0
    _check_int("min_epochs", cfg.min_epochs, 0)
    cfg.limit_train_batches = _check_limit("limit_train_batches", kw.pop("limit_train_batches", 1.0) or 0)
    cfg.limit_val_batches = _check_limit("limit_val_batches", kw.pop("limit_val_batches", 1.0))
    vci = kw.pop("val_check_interval", None)
    vci = 1.0 if vci is None else vci
    if isinstance(vci, float) and not 0.0 < vci <= 1.0:
        raise ValueError(
            f"Trainer(val_check_interval={vci!r}) as a float is a fraction of the epoch in (0.0, 1.0]."
        )
    if isinstance(vci, bool) or not isinstance(vci, int | float) or vci <= 0:
        raise ValueError(
            f"Trainer(val_check_interval={vci!r}) must be a float in (0.0, 1.0] or an int >= 1 (batches)."
        )
    cfg.val_check_interval = vci
    cven = kw.pop("check_val_every_n_epoch", 1)
    if cven is not None:
        _check_int("check_val_every_n_epoch", cven, 1)
    cfg.check_val_every_n_epoch = cven
    cfg.num_sanity_val_steps = kw.pop("num_sanity_val_steps", 2)
    _check_int("num_sanity_val_steps", cfg.num_sanity_val_steps, -1)
    cfg.accumulate_grad_batches = kw.pop("accumulate_grad_batches", 1)
    _check_int("accumulate_grad_batches", cfg.accumulate_grad_batches, 1)
    clip = kw.pop("gradient_clip_val", None)
    if clip is not None and (isinstance(clip, bool) or not isinstance(clip, int | float) or clip < 0):
        raise ValueError(f"Trainer(gradient_clip_val={clip!r}) must be a number >= 0 or None.")
    cfg.gradient_clip_val = None if not clip else float(clip)
    algo = kw.pop("gradient_clip_algorithm", None) or "norm"
    if algo not in ("norm", "value"):
        raise ValueError(f"Trainer(gradient_clip_algorithm={algo!r}) must be 'norm' or 'value'.")
    cfg.gradient_clip_algorithm = algo
    root = kw.pop("default_root_dir", None)
    if root is not None and not isinstance(root, str | os.PathLike):
        raise TypeError(f"Trainer(default_root_dir={root!r}) must be a path.")
    cfg.default_root_dir = os.fspath(root) if root is not None else os.getcwd()
    if "://" not in cfg.default_root_dir:
        cfg.default_root_dir = os.path.abspath(os.path.expanduser(cfg.default_root_dir))
    for flag in ("enable_checkpointing", "enable_progress_bar", "enable_model_summary"):
        value = kw.pop(flag, True)
        if not isinstance(value, bool):
            raise TypeError(f"Trainer({flag}={value!r}) must be True or False.")
        setattr(cfg, flag, value)
    det = kw.pop("deterministic", False)
    if det not in (True, False, None, "warn"):
        raise ValueError(f"Trainer(deterministic={det!r}) must be True, False or 'warn'.")
    cfg.deterministic = bool(det) if det != "warn" else "warn"
    cfg.precision = normalize_precision(kw.pop("precision", "32-true"))
    cfg.log_every_n_steps = kw.pop("log_every_n_steps", 50)
    _check_int("log_every_n_steps", cfg.log_every_n_steps, 1)
    _surface_args(cfg, kw)
    return cfg, kw


def _check_bool(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"Trainer({name}={value!r}) must be True or False.")
    return value


def _surface_args(cfg: TrainerConfig, kw: dict[str, Any]) -> None:
    """Arguments a Lightning script passes besides the checkpointing ones (debugging, data, speed flags)."""
    cfg.limit_test_batches = _check_limit("limit_test_batches", kw.pop("limit_test_batches", 1.0))
    cfg.limit_predict_batches = _check_limit("limit_predict_batches", kw.pop("limit_predict_batches", 1.0))
    cfg.max_time = parse_max_time(kw.pop("max_time", None))
    cfg.benchmark = kw.pop("benchmark", None)
    if cfg.benchmark is not None:
        _check_bool("benchmark", cfg.benchmark)
    for flag in (
        "inference_mode",
        "use_distributed_sampler",
        "detect_anomaly",
        "barebones",
        "sync_batchnorm",
    ):
        if flag in kw:
            setattr(cfg, flag, _check_bool(flag, kw.pop(flag)))
    cfg.reload_dataloaders_every_n_epochs = kw.pop("reload_dataloaders_every_n_epochs", 0)
    _check_int("reload_dataloaders_every_n_epochs", cfg.reload_dataloaders_every_n_epochs, 0)
    overfit = kw.pop("overfit_batches", 0.0)
    cfg.overfit_batches = _check_limit("overfit_batches", overfit)
    if overfit:  # the same few training batches, in order, each epoch; validation on as many (Lightning)
        cfg.limit_train_batches = cfg.limit_val_batches = cfg.overfit_batches
    fast = kw.pop("fast_dev_run", False)
    if isinstance(fast, bool):
        fast = 1 if fast else 0
    _check_int("fast_dev_run", fast, 0)
    cfg.fast_dev_run = fast
    if fast:
        # N batches of every loop, one epoch, no sanity check; checkpoints and logs are not written.
        cfg.limit_train_batches = cfg.limit_val_batches = fast
        cfg.limit_test_batches = cfg.limit_predict_batches = fast
        cfg.max_steps, cfg.max_epochs, cfg.num_sanity_val_steps = fast, 1, 0
        cfg.val_check_interval, cfg.check_val_every_n_epoch = 1.0, 1
        cfg.max_time = None
        kw["logger"] = False
    if cfg.barebones:
        cfg.enable_checkpointing = cfg.enable_progress_bar = False
        kw["logger"] = False


def _check_barebones(kwargs: dict[str, Any]) -> None:
    if kwargs.get("barebones") is not True:
        return
    on = [
        f"{f}=True"
        for f in ("enable_checkpointing", "enable_progress_bar", "enable_model_summary")
        if kwargs.get(f)
    ]
    if kwargs.get("logger") not in (None, False):
        on.append(f"logger={kwargs['logger']!r}")
    if on:
        raise ValueError(
            f"Trainer(barebones=True) turns off checkpointing, logging, the progress bar and the model summary, "
            f"but {', '.join(on)} was also given: drop barebones=True or those arguments."
        )


def _parse_devices(devices: Any, accelerator: str) -> int:
    if devices in (None, "auto"):
        return 1
    if isinstance(devices, bool):
        raise ValueError(f"Trainer(devices={devices!r}) must be an int >= 1, -1 or 'auto'.")
    if isinstance(devices, str) and devices.lstrip("-").isdigit():
        devices = int(devices)
    if isinstance(devices, int):
        if devices == -1:
            return torch.cuda.device_count() if accelerator == "cuda" else 1
        if devices < 1:
            raise ValueError(f"Trainer(devices={devices!r}) must be an int >= 1, -1 or 'auto'.")
        return devices
    if isinstance(devices, list | tuple):
        return len(devices)
    raise ValueError(f"Trainer(devices={devices!r}) must be an int >= 1, -1 or 'auto'.")


def select_strategy(rest: dict[str, Any]) -> Strategy:
    """Build the strategy from ``accelerator``, ``devices``, ``strategy``, ``num_nodes`` and ``plugins``."""
    from savepoint.strategies.ddp import DDPStrategy
    from savepoint.strategies.fsdp import FSDPStrategy

    accelerator = rest.pop("accelerator", "auto") or "auto"
    if accelerator not in ("auto", "cpu", "cuda", "gpu"):
        raise ValueError(f"Trainer(accelerator={accelerator!r}) must be 'auto', 'cpu', 'cuda' or 'gpu'.")
    if accelerator == "auto":
        accelerator = "cuda" if torch.cuda.is_available() else "cpu"
    if accelerator == "gpu":
        accelerator = "cuda"
    if accelerator == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            "Trainer(accelerator='cuda') but no CUDA device is available; use accelerator='cpu'."
        )
    requested = rest.pop("devices", "auto")
    devices = _parse_devices(requested, accelerator)
    num_nodes = rest.pop("num_nodes", 1) or 1
    _check_int("num_nodes", num_nodes, 1)
    plugins = rest.pop("plugins", None)
    plugins = [] if plugins is None else plugins if isinstance(plugins, list | tuple) else [plugins]
    ios = [p for p in plugins if isinstance(p, CheckpointIO)]
    others = [p for p in plugins if not isinstance(p, CheckpointIO)]
    if others:
        raise TypeError(f"Trainer(plugins=...) got {others!r}; supported plugins are CheckpointIO instances.")
    if len(ios) > 1:
        raise ValueError(f"Trainer(plugins=...) got {len(ios)} CheckpointIO plugins; pass at most one.")
    io = ios[0] if ios else None

    strategy = rest.pop("strategy", "auto") or "auto"
    if isinstance(strategy, str):
        name = strategy.lower()
        if name == "auto":
            name = "ddp" if devices > 1 or num_nodes > 1 or _under_torchrun() else "single_device"
        if name in ("single_device", "single"):
            if devices > 1:
                raise ValueError(
                    f"Trainer(strategy={strategy!r}, devices={devices}): one device only; use 'ddp'."
                )
            # devices=[k] names the GPU (as Lightning); a count of 1 means the first.
            index = int(requested[0]) if isinstance(requested, list | tuple) and len(requested) == 1 else 0
            device = torch.device("cuda", index) if accelerator == "cuda" else torch.device("cpu")
            strategy_obj: Strategy = SingleDeviceStrategy(device)
        elif name == "ddp":
            strategy_obj = DDPStrategy(accelerator=accelerator)
        elif name == "fsdp":
            strategy_obj = FSDPStrategy(accelerator=accelerator)
        else:
            raise ValueError(
                f"Trainer(strategy={strategy!r}) must be 'auto', 'single_device', 'ddp', 'fsdp' or a Strategy."
            )
    elif isinstance(strategy, Strategy):
        strategy_obj = strategy
    else:
        raise TypeError(f"Trainer(strategy={strategy!r}) must be a name or a Strategy instance.")
    if hasattr(strategy_obj, "_configure_devices"):
        strategy_obj._configure_devices(devices=devices, num_nodes=num_nodes, accelerator=accelerator)
    if io is not None:
        existing = strategy_obj._checkpoint_io
        if existing is not None and existing is not io:
            raise ValueError(
                f"a CheckpointIO was given twice: Trainer(plugins=[{type(io).__name__}]) and "
                f"{type(strategy_obj).__name__}(checkpoint_io={type(existing).__name__}); pass it in one place."
            )
        strategy_obj.checkpoint_io = io
    return strategy_obj


def _under_torchrun() -> bool:
    return "TORCHELASTIC_RUN_ID" in os.environ or (
        "RANK" in os.environ and "WORLD_SIZE" in os.environ and int(os.environ.get("WORLD_SIZE", "1")) > 1
    )
