"""`DDPStrategy`: data parallel over ``torch.distributed`` (gloo on CPU, NCCL on GPU).

Started by ``torchrun`` (single or multi-node: it reads RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR,
MASTER_PORT), or, for ``devices=N`` on one machine, by launching the N processes itself. Checkpoints:
rank 0 writes one file through the CheckpointIO while every rank waits; a failure is raised on every
rank. Gradients are synchronised on every backward (also inside an accumulation window), so every rank
holds the same accumulated gradients and a checkpoint taken mid-window resumes exactly.
"""

from __future__ import annotations

import os
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from savepoint.plugins.io.checkpoint_io import CheckpointIO
from savepoint.strategies import elastic, launcher
from savepoint.strategies.data import add_distributed_sampler
from savepoint.strategies.launcher import launch_local_processes
from savepoint.strategies.strategy import Strategy

if TYPE_CHECKING:
    from savepoint.trainer.trainer import Trainer


class _StepWrapper(nn.Module):
    """Routes ``forward`` to ``training_step`` so DDP's gradient hooks see the step's forward pass."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module

    def forward(self, *args: Any) -> Any:
        return self.module.training_step(*args)


class DDPStrategy(Strategy):
    strategy_name = "ddp"

    def __init__(
        self,
        accelerator: str | None = None,
        checkpoint_io: CheckpointIO | None = None,
        process_group_backend: str | None = None,
        timeout: timedelta = timedelta(minutes=30),
        **ddp_kwargs: Any,
    ) -> None:
        super().__init__(checkpoint_io=checkpoint_io)
        self._accelerator = accelerator
        self._backend = process_group_backend
        self._timeout = timeout
        self._ddp_kwargs = ddp_kwargs
        self._devices = 1
        self._num_nodes = 1
        self._device: torch.device | None = None
        self._store: Any = None
        self._watchdog: elastic.FailureWatchdog | None = None
        self._control_group: Any = None

    def _configure_devices(self, devices: int, num_nodes: int, accelerator: str) -> None:
        self._devices = devices
        self._num_nodes = num_nodes
        if self._accelerator is None:
            self._accelerator = accelerator

    # -- processes ----------------------------------------------------------------------------------------

    def setup_environment(self) -> None:
        if dist.is_available() and dist.is_initialized():
            self._set_device()
            self._start_watchdog()
            return
        if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
            if self._devices * self._num_nodes > 1:
                node_rank = int(os.environ.get("NODE_RANK", os.environ.get("GROUP_RANK", "0")))
                launch_local_processes(self._devices, self._num_nodes, node_rank)
            else:
                os.environ.update(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0")
                os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
                from savepoint.strategies.launcher import free_port

                os.environ.setdefault("MASTER_PORT", str(free_port()))
        accelerator = self._accelerator or ("cuda" if torch.cuda.is_available() else "cpu")
        backend = self._backend or ("nccl" if accelerator == "cuda" else "gloo")
        self._set_device()
        self._store = elastic.init_process_group(backend, self._timeout)
        self._start_watchdog()

    def _start_watchdog(self) -> None:
        if self._store is not None and self._watchdog is None and self.world_size > 1:
            self._watchdog = elastic.FailureWatchdog(self._store, self.global_rank)
            self._watchdog.start()

    def _set_device(self) -> None:
        accelerator = self._accelerator or ("cuda" if torch.cuda.is_available() else "cpu")
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        if accelerator == "cuda":
            self._device = torch.device("cuda", local_rank)
            torch.cuda.set_device(self._device)
        else:
            self._device = torch.device("cpu")

    @property
    def root_device(self) -> torch.device:
        if self._device is None:
            self._set_device()
        return self._device  # type: ignore[return-value]

    @property
    def global_rank(self) -> int:
        return dist.get_rank() if dist.is_initialized() else int(os.environ.get("RANK", "0"))

    @property
    def local_rank(self) -> int:
        return int(os.environ.get("LOCAL_RANK", "0"))

    @property
    def node_rank(self) -> int:
        return int(os.environ.get("NODE_RANK", os.environ.get("GROUP_RANK", "0")))

    @property
    def world_size(self) -> int:
        return dist.get_world_size() if dist.is_initialized() else int(os.environ.get("WORLD_SIZE", "1"))

    # -- model ----------------------------------------------------------------------------------------------

    def setup(self, trainer: Trainer) -> None:
        super().setup(trainer)
        assert self._model is not None
        if self.world_size > 1 and any(p.requires_grad for p in self._model.parameters()):
            device_ids = [self.root_device.index] if self.root_device.type == "cuda" else None
            self._wrapped = DistributedDataParallel(
                _StepWrapper(self._model), device_ids=device_ids, **self._ddp_kwargs
            )

    def training_step(self, *args: Any) -> Any:
        if self._wrapped is not None:
            return self._wrapped(*args)
        return super().training_step(*args)

    def process_dataloader(self, loader: Any, evaluation: bool = False) -> Any:
        return add_distributed_sampler(loader, self.world_size, self.global_rank, unrepeated=evaluation)

    # -- agreement -------------------------------------------------------------------------------------------

    def barrier(self, name: str | None = None) -> None:
        if dist.is_initialized() and self.world_size > 1:
            dist.barrier()

    def broadcast(self, obj: Any, src: int = 0) -> Any:
        if not dist.is_initialized() or self.world_size == 1:
            return obj
        holder = [obj]
        dist.broadcast_object_list(holder, src=src)
        return holder[0]

    def all_gather_object(self, obj: Any) -> list[Any]:
        if not dist.is_initialized() or self.world_size == 1:
            return [obj]
        out: list[Any] = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out

    def reduce(self, tensor: torch.Tensor, reduce_op: str = "mean") -> torch.Tensor:
        if not dist.is_initialized() or self.world_size == 1:
            return tensor
        t = tensor.detach().clone().to(self.root_device)
        op = {
            "mean": dist.ReduceOp.SUM,
            "sum": dist.ReduceOp.SUM,
            "max": dist.ReduceOp.MAX,
            "min": dist.ReduceOp.MIN,
        }[reduce_op]
        dist.all_reduce(t, op=op)
        return t / self.world_size if reduce_op == "mean" else t

    def max_across_ranks(self, value: int) -> int:
        if not dist.is_initialized() or self.world_size == 1:
            return value
        # On CPU through gloo, even when training uses NCCL: no device sync for a per-batch flag.
        if self._control_group is None:
            self._control_group = (
                dist.group.WORLD if dist.get_backend() == "gloo" else dist.new_group(backend="gloo")
            )
        t = torch.tensor([int(value)], dtype=torch.int64)
        dist.all_reduce(t, op=dist.ReduceOp.MAX, group=self._control_group)
        return int(t.item())

    # -- failures ---------------------------------------------------------------------------------------------

    def report_failure(self, message: str) -> None:
        elastic.report_failure(self._store, self.global_rank, message)

    def failure_of_other_rank(self) -> tuple[int, str] | None:
        if self._watchdog is not None:
            self._watchdog.noticed.set()  # this thread reports it: the watchdog stands down
        return elastic.failure_of_other_rank(self._store, self.global_rank)

    def teardown(self) -> None:
        if self._watchdog is not None:
            self._watchdog.stop()
            self._watchdog = None
        super().teardown()

    def abort(self) -> None:
        launcher.mark_failed()
        self._control_group = None
        elastic.abort_process_group()

    def reduce_boolean_decision(self, decision: bool, all: bool = True) -> bool:
        if not dist.is_initialized() or self.world_size == 1:
            return decision
        t = torch.tensor(int(decision), device=self.root_device)
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return bool(t.item() == self.world_size) if all else bool(t.item() > 0)
