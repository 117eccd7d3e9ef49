"""Data helpers a strategy needs: moving a batch to its device, and a distributed sampler per rank.

They live here, not in ``trainer/``, because strategies never import the Trainer's modules; the Trainer's
data handling (`savepoint.trainer.data`) uses them from here.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from typing import Any

import torch
from torch.utils.data import BatchSampler, DataLoader, IterableDataset, RandomSampler, SequentialSampler
from torch.utils.data.distributed import DistributedSampler

_LOADER_ARGS = (
    "num_workers",
    "collate_fn",
    "pin_memory",
    "timeout",
    "worker_init_fn",
    "multiprocessing_context",
    "generator",
    "prefetch_factor",
    "persistent_workers",
    "pin_memory_device",
    "in_order",
)


def rebuild_loader(loader: DataLoader, **overrides: Any) -> DataLoader | None:
    """A plain DataLoader like `loader` with some arguments replaced, or None if that is not possible."""
    if type(loader) is not DataLoader:
        return None
    params = inspect.signature(DataLoader.__init__).parameters
    kwargs = {
        name: getattr(loader, name) for name in _LOADER_ARGS if name in params and hasattr(loader, name)
    }
    if kwargs.get("num_workers", 0) == 0:
        kwargs.pop("prefetch_factor", None)
        kwargs["persistent_workers"] = False
    kwargs.update(overrides)
    return DataLoader(loader.dataset, **kwargs)


class UnrepeatedDistributedSampler(DistributedSampler):
    """Every sample once over all ranks: rank r takes indices r, r + world_size, ... (ranks may differ by one
    sample; `DistributedSampler` pads with duplicates instead, which would count them twice in test metrics)."""

    def __init__(
        self, dataset: Any, num_replicas: int, rank: int, shuffle: bool = False, seed: int = 0
    ) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed)
        self.num_samples = len(range(rank, len(dataset), num_replicas))  # type: ignore[arg-type]
        self.total_size = len(dataset)  # type: ignore[arg-type]

    def __iter__(self) -> Iterator[int]:
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed + self.epoch)
            indices = torch.randperm(len(self.dataset), generator=g).tolist()  # type: ignore[arg-type]
        else:
            indices = list(range(len(self.dataset)))  # type: ignore[arg-type]
        return iter(indices[self.rank : self.total_size : self.num_replicas])


def add_distributed_sampler(
    loader: Any, num_replicas: int, rank: int, seed: int = 0, unrepeated: bool = False
) -> Any:
    """Replace a default sampler with a `DistributedSampler` (shuffling when the original did); with
    `unrepeated`, one that gives every sample to exactly one rank (test and predict)."""
    if not isinstance(loader, DataLoader) or isinstance(loader.dataset, IterableDataset):
        return loader
    sampler = loader.sampler
    if isinstance(sampler, DistributedSampler) or not isinstance(sampler, RandomSampler | SequentialSampler):
        return loader
    batch_sampler = loader.batch_sampler
    if batch_sampler is not None and type(batch_sampler) is not BatchSampler:
        return loader
    shuffle = isinstance(sampler, RandomSampler)
    if unrepeated:
        dist_sampler: DistributedSampler = UnrepeatedDistributedSampler(
            loader.dataset, num_replicas, rank, shuffle, seed
        )
    else:
        dist_sampler = DistributedSampler(
            loader.dataset,
            num_replicas=num_replicas,
            rank=rank,
            shuffle=shuffle,
            seed=seed,
            drop_last=bool(loader.drop_last),
        )
    rebuilt = rebuild_loader(
        loader, batch_size=loader.batch_size, sampler=dist_sampler, drop_last=loader.drop_last
    )
    return rebuilt if rebuilt is not None else loader


def move_to_device(batch: Any, device: torch.device) -> Any:
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True) if batch.device != device else batch
    if isinstance(batch, list):
        return [move_to_device(b, device) for b in batch]
    if isinstance(batch, tuple):
        moved = [move_to_device(b, device) for b in batch]
        return type(batch)(*moved) if hasattr(batch, "_fields") else tuple(moved)
    if isinstance(batch, dict):
        return type(batch)((k, move_to_device(v, device)) for k, v in batch.items())
    return batch
