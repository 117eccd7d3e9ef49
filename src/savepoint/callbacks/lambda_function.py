"""`LambdaCallback`: a callback made of functions, for one-off hooks."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from savepoint.callbacks.callback import Callback

HOOKS = (
    "setup", "teardown", "on_fit_start", "on_fit_end", "on_sanity_check_start", "on_sanity_check_end",
    "on_train_batch_start", "on_train_batch_end", "on_train_epoch_start", "on_train_epoch_end",
    "on_validation_epoch_start", "on_validation_epoch_end", "on_test_epoch_start", "on_test_epoch_end",
    "on_predict_epoch_start", "on_predict_epoch_end", "on_validation_batch_start", "on_validation_batch_end",
    "on_test_batch_start", "on_test_batch_end", "on_predict_batch_start", "on_predict_batch_end",
    "on_train_start", "on_train_end", "on_validation_start", "on_validation_end", "on_test_start",
    "on_test_end", "on_predict_start", "on_predict_end", "on_exception", "on_save_checkpoint",
    "on_load_checkpoint", "on_before_backward", "on_after_backward", "on_before_optimizer_step",
    "on_before_zero_grad",
)  # fmt: skip


class LambdaCallback(Callback):
    """``LambdaCallback(on_train_epoch_end=lambda trainer, module: ...)``: each keyword is a hook name
    and the function it runs, called with the hook's arguments."""

    def __init__(self, **hooks: Callable[..., Any] | None) -> None:
        unknown = sorted(set(hooks) - set(HOOKS))
        if unknown:
            raise TypeError(f"LambdaCallback got unknown hook name(s) {unknown}; hooks are {list(HOOKS)}.")
        given = {name: staticmethod(fn) for name, fn in hooks.items() if fn is not None}
        # The Trainer calls only hooks a callback's class overrides: give this instance a class of its own.
        self.__class__ = type(type(self).__name__, (type(self),), given)
