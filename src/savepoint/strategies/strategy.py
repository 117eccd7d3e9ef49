"""`Strategy`: devices, process group, model wrapping, and model/optimizer state in and out.

Call order during ``Trainer.fit`` (every call is made on every rank unless noted):

1. ``setup_environment()``: start the process group if distributed (launching processes first when the
   Trainer must), pick the device.
2. ``connect(model)``; ``setup(trainer)``: move/wrap the model; ``setup_optimizers`` after
   ``configure_optimizers``. A sharded strategy checks here that its `CheckpointIO` can write shards.
3. During training: ``batch_to_device``, ``training_step``/``validation_step`` through the wrapped model,
   ``reduce``/``broadcast``/``barrier`` for agreement between ranks; ``max_across_ranks(flag)`` after each
   batch to agree on a stop signal (multi-process only).
4. Saving: ``save_checkpoint(checkpoint, path)`` on every rank. Single-file strategies write on global
   rank 0 through the CheckpointIO and every rank waits; an error on the writing rank is raised on every
   rank, naming the rank. ``remove_checkpoint(path)`` and ``link_checkpoint(src, dst)``: likewise, rank 0
   removes or links. A sharded strategy has rank 0 call ``CheckpointIO.save_sharded_meta`` and then every
   rank ``CheckpointIO.save_sharded``.
5. Loading: ``load_checkpoint(path)`` on every rank (the CheckpointIO's ``load_checkpoint``; a sharded
   strategy asks ``is_sharded_checkpoint`` / ``load_sharded_meta`` and defers the tensors to
   ``load_sharded``); then ``load_model_state_dict`` / ``load_optimizer_state_dict``.
6. On an exception in fit, on the failing rank(s) only: ``failure_of_other_rank()`` (did a peer fail
   first?), else ``report_failure(message)``; after the ``on_exception`` callbacks, ``abort()``. No
   collective is made on this path: the other ranks may never join it.
7. ``teardown()``: on every rank, also after an error; flushes the CheckpointIO (async writes) and
   raises its pending error.

The Trainer never opens files or checks ranks itself, and a strategy never touches a path itself:
everything that touches storage goes through ``self.checkpoint_io``, so a custom plugin sees every save,
load and removal. Strategies import nothing from ``trainer/`` (their data helpers are in
``strategies/data.py``).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from savepoint.checkpoint.errors import CheckpointWriteError
from savepoint.plugins.io.checkpoint_io import CheckpointIO
from savepoint.plugins.io.torch_io import TorchCheckpointIO
from savepoint.strategies.data import move_to_device

if TYPE_CHECKING:
    from savepoint.module import TrainingModule
    from savepoint.trainer.trainer import Trainer


class Strategy(ABC):
    """Abstract base; see the module docstring for the call order."""

    strategy_name = "strategy"

    def __init__(self, checkpoint_io: CheckpointIO | None = None) -> None:
        if checkpoint_io is not None and not isinstance(checkpoint_io, CheckpointIO):
            raise TypeError(f"checkpoint_io={checkpoint_io!r} must be a CheckpointIO instance.")
        self._checkpoint_io = checkpoint_io
        self._model: TrainingModule | None = None
        self._wrapped: nn.Module | None = None
        self.trainer: Trainer | None = None

    # -- identity -------------------------------------------------------------------------------------------

    @property
    def checkpoint_io(self) -> CheckpointIO:
        if self._checkpoint_io is None:
            self._checkpoint_io = TorchCheckpointIO()
        return self._checkpoint_io

    @checkpoint_io.setter
    def checkpoint_io(self, io: CheckpointIO) -> None:
        self._checkpoint_io = io

    @property
    @abstractmethod
    def root_device(self) -> torch.device: ...

    @property
    def global_rank(self) -> int:
        return 0

    @property
    def local_rank(self) -> int:
        return 0

    @property
    def node_rank(self) -> int:
        return 0

    @property
    def world_size(self) -> int:
        return 1

    @property
    def is_global_zero(self) -> bool:
        return self.global_rank == 0

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1

    @property
    def model(self) -> nn.Module:
        """The model as it runs (possibly wrapped)."""
        assert self._wrapped is not None or self._model is not None
        return self._wrapped if self._wrapped is not None else self._model  # type: ignore[return-value]

    @property
    def lightning_module(self) -> TrainingModule | None:
        return self._model

    training_module = lightning_module

    # -- set-up ---------------------------------------------------------------------------------------------

    def setup_environment(self) -> None:  # noqa: B027 - optional hook, nothing to do on one device
        """Start processes / the process group; called once before anything else."""

    def connect(self, model: TrainingModule) -> None:
        self._model = model
        self._wrapped = None

    def setup(self, trainer: Trainer) -> None:
        self.trainer = trainer
        assert self._model is not None
        self._model.to(self.root_device)

    def setup_optimizers(self, optimizers: list[torch.optim.Optimizer]) -> list[torch.optim.Optimizer]:
        return optimizers

    def batch_to_device(self, batch: Any) -> Any:
        return move_to_device(batch, self.root_device)

    def process_dataloader(self, loader: Any, evaluation: bool = False) -> Any:
        """`loader` as this strategy runs it (a distributed sampler under DDP). ``evaluation`` (test, predict):
        every sample exactly once over all ranks, no padding duplicates."""
        return loader

    def training_step(self, *args: Any) -> Any:
        """``(batch, batch_idx)``, or ``(batch,)`` when the module's ``training_step`` takes no index."""
        assert self._model is not None
        return self._model.training_step(*args)

    def validation_step(self, *args: Any) -> Any:
        assert self._model is not None
        return self._model.validation_step(*args)

    def test_step(self, *args: Any) -> Any:
        assert self._model is not None
        return self._model.test_step(*args)

    def predict_step(self, *args: Any) -> Any:
        assert self._model is not None
        return self._model.predict_step(*args)

    # -- agreement between ranks ------------------------------------------------------------------------------

    def barrier(self, name: str | None = None) -> None:  # noqa: B027 - one process: nothing to wait for
        """Wait until every rank reaches this point."""

    def broadcast(self, obj: Any, src: int = 0) -> Any:
        """`obj` as rank `src` has it, on every rank."""
        return obj

    def all_gather_object(self, obj: Any) -> list[Any]:
        return [obj]

    def reduce(self, tensor: torch.Tensor, reduce_op: str = "mean") -> torch.Tensor:
        return tensor

    def reduce_boolean_decision(self, decision: bool, all: bool = True) -> bool:
        return decision

    def max_across_ranks(self, value: int) -> int:
        """The largest `value` any rank passed (a stop signal's number), on every rank."""
        return value

    # -- failures (multi-process strategies; no-ops on one process) ---------------------------------------------

    def report_failure(self, message: str) -> None:  # noqa: B027 - nothing to tell on one process
        """Record this rank's error where the other ranks can read it."""

    def failure_of_other_rank(self) -> tuple[int, str] | None:
        """(rank, error) another rank recorded, or None."""
        return None

    def abort(self) -> None:  # noqa: B027 - nothing to close on one process
        """Close the process group so ranks blocked in a collective with this one fail at once."""

    # -- state in and out ----------------------------------------------------------------------------------------

    def model_state_dict(self) -> dict[str, Any]:
        assert self._model is not None
        return self._model.state_dict()

    def load_model_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True) -> None:
        assert self._model is not None
        self._model.load_state_dict(state_dict, strict=strict)

    def optimizer_state(self, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
        return optimizer.state_dict()

    def load_optimizer_state_dict(self, optimizer: torch.optim.Optimizer, state: dict[str, Any]) -> None:
        optimizer.load_state_dict(state)

    # -- storage ---------------------------------------------------------------------------------------------------

    def save_checkpoint(
        self, checkpoint: dict[str, Any], filepath: str, storage_options: Any | None = None
    ) -> None:
        """Write on global rank 0; every rank returns only after the write, and every rank raises its error."""
        self._on_rank_zero(
            lambda: self.checkpoint_io.save_checkpoint(checkpoint, filepath, storage_options=storage_options),
            f"saving checkpoint {filepath!r}",
            filepath,
        )

    def _on_rank_zero(self, write: Callable[[], None], what: str, path: str) -> None:
        """Run `write` on global rank 0. Every rank returns only after it ended and raises
        `CheckpointWriteError` when it failed (the broadcast of its error doubles as the barrier)."""
        if not self.is_distributed:
            write()
            return
        local_error: Exception | None = None
        if self.is_global_zero:
            try:
                write()
            except Exception as err:
                local_error = err
        error = self.broadcast(
            None if local_error is None else f"{type(local_error).__name__}: {local_error}"
        )
        if error is not None:
            raise CheckpointWriteError(f"{what} failed on rank 0: {error}", path) from local_error

    def load_checkpoint(self, checkpoint_path: str, map_location: Any | None = None) -> dict[str, Any]:
        """The whole checkpoint in this process, from the CheckpointIO (which assembles a sharded folder
        into full tensors; a sharded strategy overrides this to load only its shards, resharding)."""
        return self.checkpoint_io.load_checkpoint(checkpoint_path, map_location=map_location or "cpu")

    def remove_checkpoint(self, filepath: str) -> None:
        if self.is_global_zero:
            self.checkpoint_io.remove_checkpoint(filepath)
        self.barrier("remove_checkpoint")

    @property
    def supports_link(self) -> bool:
        """Whether `link_checkpoint` is cheaper than a second save (ModelCheckpoint asks)."""
        return self.checkpoint_io.supports_link

    def link_checkpoint(self, src: str, dst: str) -> None:
        """Give the checkpoint saved at `src` the second name `dst` (rank 0, through the CheckpointIO);
        every rank returns after it and raises its error, like `save_checkpoint`."""
        self._on_rank_zero(
            lambda: self.checkpoint_io.link_checkpoint(src, dst),
            f"linking checkpoint {dst!r} to {src!r}",
            dst,
        )

    def teardown(self) -> None:
        self.checkpoint_io.teardown()


class SingleDeviceStrategy(Strategy):
    """One process, one device (``"cpu"``, ``"cuda:0"``, ...)."""

    strategy_name = "single_device"

    def __init__(
        self,
        device: str | torch.device | int = "cpu",
        checkpoint_io: CheckpointIO | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(checkpoint_io=checkpoint_io)
        if isinstance(device, int):
            device = torch.device("cuda", device)
        self._device = torch.device(device)

    @property
    def root_device(self) -> torch.device:
        return self._device
