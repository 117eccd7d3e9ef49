"""Lightning's checkpoint layout: reading its files safely, and writing one Lightning 2.x resumes from.

Reading: Lightning pickles hyperparameters as they are, so an ``argparse.Namespace`` (or its
``AttributeDict``) sits in many of its files. `foreign_containers_allowed` lets the weights-only unpickler
build exactly those plain containers, for the duration of one load, and nothing else.

Writing (`to_lightning`): Lightning needs ``pytorch-lightning_version`` and its own loop progress tree
(``loops["fit_loop"]`` with ``epoch_progress``, ``epoch_loop.batch_progress``, optimizer progress...); it
derives ``current_epoch`` and ``global_step`` from those counters, not from the top-level keys. The tree is
built here from savepoint's loop position so that Lightning restarts where savepoint would. One ordering
differs: Lightning steps epoch-interval LR schedulers right after the last batch of an epoch, savepoint
after ``on_train_epoch_end``; a savepoint file saved at the end of an epoch therefore holds the schedulers
before that step. The conversion applies the pending step (built-in torch schedulers only) so that Lightning
resumes with the learning rate savepoint would use.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import warnings
from collections.abc import Iterator
from typing import Any

import torch

from savepoint.checkpoint import format as fmt
from savepoint.checkpoint.errors import CheckpointError
from savepoint.hparams import decode

LIGHTNING_VERSION_KEY = "pytorch-lightning_version"
# The Lightning release whose layout `to_lightning` writes (any 2.x reads it).
LIGHTNING_LAYOUT = "2.6.6"

_ATTRIBUTE_DICTS = (
    "lightning.fabric.utilities.data.AttributeDict",
    "lightning_fabric.utilities.data.AttributeDict",
    "lightning.pytorch.utilities.parsing.AttributeDict",
    "pytorch_lightning.utilities.parsing.AttributeDict",
)


class _AsPlainDict:
    """Stands in for Lightning's ``AttributeDict`` while unpickling: builds a plain ``dict`` (the
    weights-only unpickler fills only exact dicts), which savepoint reads as hyperparameters anyway."""

    def __new__(cls, *args: Any, **kwargs: Any) -> dict[str, Any]:  # type: ignore[misc]
        return {}


@contextlib.contextmanager
def foreign_containers_allowed() -> Iterator[None]:
    """Within this block a weights-only load may build ``argparse.Namespace`` and Lightning's
    ``AttributeDict`` (as a plain dict). Nothing is imported; every other class is still refused."""
    allowed: list[Any] = [argparse.Namespace, *((_AsPlainDict, name) for name in _ATTRIBUTE_DICTS)]
    current = torch.serialization.get_safe_globals()
    if all(item in current for item in allowed):  # nested: leaving torch's context would drop them early
        yield
        return
    with torch.serialization.safe_globals(allowed):
        yield


def _progress(ready: int, started: int, processed: int, completed: int) -> dict[str, int]:
    return {"ready": ready, "started": started, "processed": processed, "completed": completed}


def _tracker(current: dict[str, int], total: dict[str, int], **extra: Any) -> dict[str, Any]:
    return {"total": total, "current": current, **extra}


def _eval_loop() -> dict[str, Any]:
    zero = _progress(0, 0, 0, 0)
    return {"state_dict": {}, "batch_progress": _tracker(dict(zero), dict(zero), is_last_batch=False)}


def _stage(fit: dict[str, Any]) -> str:
    """Where savepoint stopped: between epochs, inside an epoch, or at its end (schedulers pending)."""
    phase = fit.get("phase", "epoch_start")
    if phase == "epoch_done":  # upgraded from a layout without the position: the next epoch starts afresh
        return "between"
    num_batches = (fit.get("data") or {}).get("num_batches")
    done = int(fit.get("batches_done", 0))
    if phase == "epoch_start":
        return "between"
    if phase == "epoch_end" or (
        isinstance(num_batches, int | float) and not math.isinf(num_batches) and done >= num_batches
    ):
        return "end_after_batch" if phase == "after_batch" else "end"
    return "mid"


def lightning_loops(fit: dict[str, Any]) -> dict[str, Any]:
    """Lightning's ``loops`` tree for savepoint's fit-loop state `fit`."""
    epoch, done = int(fit.get("epoch", 0)), int(fit.get("batches_done", 0))
    if fit.get("phase") == "epoch_done":
        epoch += 1
    step, total = int(fit.get("global_step", 0)), int(fit.get("total_batches", 0))
    stage = _stage(fit)
    # A save in on_train_batch_end has not counted that batch as completed yet (Lightning's order too).
    pending = 1 if fit.get("phase") == "after_batch" else 0
    if stage == "between":
        epochs = _progress(epoch, epoch, epoch, epoch)
        batch, batch_total = _progress(0, 0, 0, 0), _progress(total, total, total, total)
    else:
        processed = epoch + 1 if stage == "end" else epoch
        epochs = _progress(epoch + 1, epoch + 1, processed, epoch)
        batch = _progress(done, done, done, done - pending)
        batch_total = _progress(total, total, total, total - pending)
    steps_in_epoch = min(step, done)
    optim = {
        "step": _tracker(
            {"ready": steps_in_epoch, "completed": steps_in_epoch}, {"ready": step, "completed": step}
        ),
        "zero_grad": _tracker(
            {"ready": steps_in_epoch, "started": steps_in_epoch, "completed": steps_in_epoch},
            {"ready": step, "started": step, "completed": step},
        ),
    }
    sched = epoch + (0 if stage in ("between", "mid") else 1)
    zero_eval = _eval_loop()["batch_progress"]
    fit_loop = {
        "state_dict": {},
        "epoch_progress": _tracker(dict(epochs), dict(epochs)),
        "epoch_loop.state_dict": {"_batches_that_stepped": total - pending},
        "epoch_loop.batch_progress": _tracker(batch, batch_total, is_last_batch=stage.startswith("end")),
        "epoch_loop.scheduler_progress": _tracker(
            {"ready": 0, "completed": 0}, {"ready": sched, "completed": sched}
        ),
        "epoch_loop.automatic_optimization.state_dict": {},
        "epoch_loop.automatic_optimization.optim_progress": {"optimizer": optim},
        "epoch_loop.manual_optimization.state_dict": {},
        "epoch_loop.manual_optimization.optim_step_progress": _tracker(
            {"ready": 0, "completed": 0}, {"ready": 0, "completed": 0}
        ),
        "epoch_loop.val_loop.state_dict": {},
        "epoch_loop.val_loop.batch_progress": zero_eval,
    }
    return {
        "fit_loop": fit_loop,
        "validate_loop": _eval_loop(),
        "test_loop": _eval_loop(),
        "predict_loop": _eval_loop(),
    }


def _torch_scheduler_class(name: str) -> type | None:
    module, _, qualname = name.rpartition(".")
    if module != "torch.optim.lr_scheduler":
        return None  # never import or build a class the file names, except torch's own
    cls = getattr(torch.optim.lr_scheduler, qualname, None)
    return cls if isinstance(cls, type) else None


def _step_scheduler(
    config: dict[str, Any],
    sched_state: dict[str, Any],
    opt_state: dict[str, Any],
    metrics: dict[str, Any],
    path: str,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Apply one ``scheduler.step()`` to stored states, on a stand-in optimizer with the same groups."""
    cls = _torch_scheduler_class(str(config.get("class", "")))
    if cls is None:
        raise CheckpointError(
            f"{path!r} was saved at the end of an epoch, before its LR scheduler "
            f"{config.get('class') or '(class not recorded)'} stepped; converting it for Lightning needs that step, "
            f"which savepoint can apply only to torch's built-in schedulers. Convert a checkpoint saved between "
            f"epochs (`trainer.save_checkpoint` after fit) or mid-epoch instead.",
            path,
        )
    groups = [dict(g) for g in opt_state["param_groups"]]
    params = [torch.nn.Parameter(torch.zeros(1)) for _ in groups]
    optimizer = torch.optim.SGD([{**g, "params": [p]} for g, p in zip(groups, params)], lr=groups[0]["lr"])
    scheduler = cls.__new__(cls)
    scheduler.optimizer = optimizer
    scheduler.load_state_dict(sched_state)
    with warnings.catch_warnings():  # torch warns that the stand-in optimizer never stepped
        warnings.simplefilter("ignore", UserWarning)
        if config.get("monitor"):
            if config["monitor"] not in metrics:
                raise CheckpointError(
                    f"{path!r}: its ReduceLROnPlateau monitors {config['monitor']!r}, which the file's logged metrics "
                    f"do not hold, so its pending end-of-epoch step cannot be applied for Lightning.",
                    path,
                )
            scheduler.step(float(metrics[config["monitor"]]))
        else:
            scheduler.step()
    new_groups = [
        {**old, **{k: v for k, v in g.items() if k != "params" and k in old}}
        for old, g in zip(opt_state["param_groups"], optimizer.param_groups)
    ]
    return scheduler.state_dict(), {**opt_state, "param_groups": new_groups}


def _apply_pending_epoch_steps(ckpt: dict[str, Any], fit: dict[str, Any], path: str) -> None:
    configs = fit.get("lr_scheduler_configs")
    schedulers = ckpt.get(fmt.LR_SCHEDULERS) or []
    if not schedulers:
        return
    if configs is None:
        raise CheckpointError(
            f"{path!r} does not record how its LR schedulers step (written by an older savepoint), and it was "
            f"saved at the end of an epoch, where Lightning has already stepped them. Convert a checkpoint saved "
            f"between epochs or mid-epoch, or save again with this version.",
            path,
        )
    metrics = ((fit.get("metrics") or {}).get("callback_metrics")) or {}
    epoch = int(fit.get("epoch", 0))
    for i, config in enumerate(configs):
        if config.get("interval") != "epoch" or (epoch + 1) % int(config.get("frequency", 1)) != 0:
            continue
        opt_index = int(config.get("optimizer_index", 0))
        states = ckpt[fmt.OPTIMIZER_STATES]
        schedulers[i], states[opt_index] = _step_scheduler(
            config, schedulers[i], states[opt_index], metrics, path
        )


def to_lightning(ckpt: dict[str, Any], path: str) -> dict[str, Any]:
    """A Lightning 2.x checkpoint dict from a savepoint checkpoint (upgraded to the current format)."""
    out: dict[str, Any] = {
        fmt.EPOCH: ckpt.get(fmt.EPOCH, 0),
        fmt.GLOBAL_STEP: ckpt.get(fmt.GLOBAL_STEP, 0),
        LIGHTNING_VERSION_KEY: LIGHTNING_LAYOUT,
        fmt.STATE_DICT: ckpt[fmt.STATE_DICT],
    }
    for key, name_key in (
        (fmt.HYPER_PARAMETERS, fmt.HPARAMS_NAME),
        (fmt.DATAMODULE_HYPER_PARAMETERS, fmt.DATAMODULE_HPARAMS_NAME),
    ):
        if key in ckpt:
            out[key] = decode(dict(ckpt[key]))  # Lightning stores them as the user wrote them
            out[name_key] = ckpt.get(name_key)
    if fmt.is_weights_only(ckpt):
        return out
    fit = dict((ckpt.get(fmt.LOOPS) or {}).get(fmt.FIT_LOOP) or {})
    out[fmt.OPTIMIZER_STATES] = [dict(s) for s in ckpt.get(fmt.OPTIMIZER_STATES) or []]
    out[fmt.LR_SCHEDULERS] = [dict(s) for s in ckpt.get(fmt.LR_SCHEDULERS) or []]
    if _stage(fit) in ("end", "end_after_batch"):
        _apply_pending_epoch_steps(out, fit, path)
    out[fmt.LOOPS] = lightning_loops(fit)
    out[fmt.CALLBACKS] = dict(ckpt.get(fmt.CALLBACKS) or {})
    if ckpt.get(fmt.GRAD_SCALER) is not None:
        out["MixedPrecision"] = ckpt[fmt.GRAD_SCALER]  # the key Lightning's mixed-precision plugin reads
    out[fmt.SAVEPOINT_VERSION] = ckpt.get(fmt.SAVEPOINT_VERSION)
    return out
