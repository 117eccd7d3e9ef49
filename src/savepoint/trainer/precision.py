"""Precision: autocast and, for float16, a grad scaler whose state is part of the checkpoint.

``"*-mixed"`` keeps float32 weights and runs the steps under autocast; ``"*-true"`` casts the module's
weights and the batch's floating tensors to that dtype (no autocast, no scaler).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

_ALIASES = {
    "32-true": "32-true",
    "32": "32-true",
    32: "32-true",
    "16-mixed": "16-mixed",
    "16": "16-mixed",
    16: "16-mixed",
    "bf16-mixed": "bf16-mixed",
    "bf16": "bf16-mixed",
    "64-true": "64-true",
    "64": "64-true",
    64: "64-true",
    "16-true": "16-true",
    "bf16-true": "bf16-true",
}
_TRUE_DTYPES = {"64-true": torch.float64, "16-true": torch.float16, "bf16-true": torch.bfloat16}


def normalize_precision(value: Any) -> str:
    try:
        return _ALIASES[value]
    except (KeyError, TypeError):
        raise ValueError(
            f"Trainer(precision={value!r}) is not supported; use '32-true', '16-mixed', 'bf16-mixed', "
            f"'64-true', '16-true' or 'bf16-true' (or 32, 16, 64, 'bf16')."
        ) from None


def _cast_floats(data: Any, dtype: torch.dtype) -> Any:
    if isinstance(data, torch.Tensor):
        return data.to(dtype) if data.is_floating_point() else data
    if isinstance(data, list):
        return [_cast_floats(d, dtype) for d in data]
    if isinstance(data, tuple):
        cast = [_cast_floats(d, dtype) for d in data]
        return type(data)(*cast) if hasattr(data, "_fields") else tuple(cast)
    if isinstance(data, dict):
        return type(data)((k, _cast_floats(v, dtype)) for k, v in data.items())
    return data


class Precision:
    def __init__(self, precision: str, device_type: str) -> None:
        self.precision = precision
        self.device_type = device_type
        self.scaler: torch.amp.GradScaler | None = None
        self.true_dtype = _TRUE_DTYPES.get(precision)
        self._unscaled: set[int] = set()  # optimizers already unscaled this step (clip_gradients)
        if precision == "16-mixed":
            self.scaler = torch.amp.GradScaler(device_type)

    def convert_module(self, module: nn.Module) -> None:
        if self.true_dtype is not None:
            module.to(self.true_dtype)

    def convert_input(self, batch: Any) -> Any:
        return batch if self.true_dtype is None else _cast_floats(batch, self.true_dtype)

    @contextlib.contextmanager
    def autocast(self) -> Iterator[None]:
        if self.precision == "32-true" or self.true_dtype is not None:
            yield
            return
        dtype = torch.float16 if self.precision == "16-mixed" else torch.bfloat16
        with torch.autocast(self.device_type, dtype=dtype):
            yield

    def backward(self, loss: torch.Tensor, *args: Any, **kwargs: Any) -> None:
        (self.scaler.scale(loss) if self.scaler is not None else loss).backward(*args, **kwargs)

    def unscale(self, optimizer: torch.optim.Optimizer) -> None:
        if self.scaler is not None and id(optimizer) not in self._unscaled:
            self.scaler.unscale_(optimizer)
            self._unscaled.add(id(optimizer))

    def step(self, optimizer: torch.optim.Optimizer, **kwargs: Any) -> None:
        self._unscaled.discard(id(optimizer))
        if self.scaler is not None:
            self.scaler.step(optimizer, **kwargs)
        else:
            optimizer.step(**kwargs)

    def update(self) -> None:
        if self.scaler is not None:
            self.scaler.update()

    def state_dict(self) -> dict[str, Any] | None:
        return self.scaler.state_dict() if self.scaler is not None else None

    def load_state_dict(self, state: dict[str, Any] | None) -> None:
        if self.scaler is not None and state:
            self.scaler.load_state_dict(state)
