"""Precision: autocast and, for float16, a grad scaler whose state is part of the checkpoint."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch

_ALIASES = {
    "32-true": "32-true",
    "32": "32-true",
    32: "32-true",
    "16-mixed": "16-mixed",
    "16": "16-mixed",
    16: "16-mixed",
    "bf16-mixed": "bf16-mixed",
    "bf16": "bf16-mixed",
}


def normalize_precision(value: Any) -> str:
    try:
        return _ALIASES[value]
    except (KeyError, TypeError):
        raise ValueError(
            f"Trainer(precision={value!r}) is not supported; use '32-true', '16-mixed' or 'bf16-mixed'."
        ) from None


class Precision:
    def __init__(self, precision: str, device_type: str) -> None:
        self.precision = precision
        self.device_type = device_type
        self.scaler: torch.amp.GradScaler | None = None
        if precision == "16-mixed":
            self.scaler = torch.amp.GradScaler(device_type)

    @contextlib.contextmanager
    def autocast(self) -> Iterator[None]:
        if self.precision == "32-true":
            yield
            return
        dtype = torch.float16 if self.precision == "16-mixed" else torch.bfloat16
        with torch.autocast(self.device_type, dtype=dtype):
            yield

    def backward(self, loss: torch.Tensor) -> None:
        (self.scaler.scale(loss) if self.scaler is not None else loss).backward()

    def unscale(self, optimizer: torch.optim.Optimizer) -> None:
        if self.scaler is not None:
            self.scaler.unscale_(optimizer)

    def step(self, optimizer: torch.optim.Optimizer) -> None:
        if self.scaler is not None:
            self.scaler.step(optimizer)
        else:
            optimizer.step()

    def update(self) -> None:
        if self.scaler is not None:
            self.scaler.update()

    def state_dict(self) -> dict[str, Any] | None:
        return self.scaler.state_dict() if self.scaler is not None else None

    def load_state_dict(self, state: dict[str, Any] | None) -> None:
        if self.scaler is not None and state:
            self.scaler.load_state_dict(state)
