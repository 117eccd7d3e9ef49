"""Strategies: how training runs on devices and processes, and how its state is saved."""

from savepoint.strategies.ddp import DDPStrategy
from savepoint.strategies.fsdp import FSDPStrategy
from savepoint.strategies.strategy import SingleDeviceStrategy, Strategy

__all__ = ["DDPStrategy", "FSDPStrategy", "SingleDeviceStrategy", "Strategy"]
