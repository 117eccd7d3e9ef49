"""The Trainer and its loops. (Imported lazily: strategies use `trainer.data` without the Trainer.)"""

from typing import Any

__all__ = ["Trainer"]


def __getattr__(name: str) -> Any:
    if name == "Trainer":
        from savepoint.trainer.trainer import Trainer

        return Trainer
    raise AttributeError(name)
