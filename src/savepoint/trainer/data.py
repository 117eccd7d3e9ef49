"""Training data and its position: one iterator per epoch that a checkpoint can rebuild exactly.

At the start of every epoch the loop records the RNG state the data draws from (the global torch RNG,
and any generator the loader or sampler owns). To resume mid-epoch, that state is restored, the same
iterator is created (same permutation, same worker seeds) and the consumed batches are dropped at the
batch-sampler level: indices only, no sample is loaded. Samplers and datasets with ``state_dict`` are
saved and restored through it. An ``IterableDataset`` without state is fast-forwarded by consuming
batches, with a warning.
"""

from __future__ import annotations

import inspect
import math
import warnings
from collections.abc import Iterable, Iterator
from typing import Any

import torch
from torch.utils.data import BatchSampler, DataLoader, IterableDataset, RandomSampler, SequentialSampler
from torch.utils.data.distributed import DistributedSampler


class _SkipIterator:
    """Iterates `inner` from batch `skip` on. `prime()` starts it now, drawing what the sampler draws."""

    def __init__(self, inner: Iterable[Any], skip: int) -> None:
        self._inner = inner
        self._skip = skip
        self._it: Iterator[Any] | None = None

    def prime(self) -> None:
        if self._it is None:
            self._it = iter(self._inner)
            for _ in range(self._skip):
                if next(self._it, _END) is _END:
                    break

    def __iter__(self) -> _SkipIterator:
        return self

    def __next__(self) -> Any:
        self.prime()
        return next(self._it)  # type: ignore[arg-type]


_END = object()


class _SkipBatches:
    """A batch sampler that drops the first `skip` batches of `inner` (index lists only, no data loaded)."""

    def __init__(self, inner: Iterable[Any], skip: int) -> None:
        self.inner = inner
        self.skip = skip
        self.active: _SkipIterator | None = None

    def __iter__(self) -> Iterator[Any]:
        self.active = _SkipIterator(self.inner, self.skip)
        return self.active

    def __len__(self) -> int:
        return max(0, len(self.inner) - self.skip)  # type: ignore[arg-type]


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


def _rebuild(loader: DataLoader, **overrides: Any) -> DataLoader | None:
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


def _generators(loader: Any) -> list[torch.Generator]:
    gens = []
    for owner in (
        loader,
        getattr(loader, "sampler", None),
        getattr(getattr(loader, "batch_sampler", None), "sampler", None),
    ):
        gen = getattr(owner, "generator", None)
        if isinstance(gen, torch.Generator) and all(gen is not g for g in gens):
            gens.append(gen)
    return gens


def _stateful(obj: Any) -> bool:
    return callable(getattr(obj, "state_dict", None)) and callable(getattr(obj, "load_state_dict", None))


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
    `unrepeated`, one that gives every sample exactly once (test and predict)."""
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
        unrepeated_sampler = UnrepeatedDistributedSampler(loader.dataset, num_replicas, rank, shuffle, seed)
        rebuilt = _rebuild(
            loader, batch_size=loader.batch_size, sampler=unrepeated_sampler, drop_last=loader.drop_last
        )
        return rebuilt if rebuilt is not None else loader
    dist_sampler = DistributedSampler(
        loader.dataset,
        num_replicas=num_replicas,
        rank=rank,
        shuffle=shuffle,
        seed=seed,
        drop_last=bool(loader.drop_last),
    )
    rebuilt = _rebuild(loader, batch_size=loader.batch_size, sampler=dist_sampler, drop_last=loader.drop_last)
    return rebuilt if rebuilt is not None else loader


def sequential_loader(loader: Any) -> Any:
    """`loader` without shuffling (``overfit_batches``: the same first batches every epoch, as Lightning)."""
    if isinstance(loader, DataLoader) and isinstance(loader.sampler, RandomSampler):
        rebuilt = _rebuild(loader, batch_size=loader.batch_size, shuffle=False, drop_last=loader.drop_last)
        if rebuilt is not None:
            warnings.warn(
                "Trainer(overfit_batches=...) replaces the training data's shuffling sampler with a sequential one.",
                UserWarning,
                stacklevel=3,
            )
            return rebuilt
    return loader


class TrainData:
    """The training dataloader of a fit, with epoch iterators that can start at any batch."""

    def __init__(self, loader: Any, limit_batches: int | float) -> None:
        self.loader = loader
        self.limit = limit_batches

    @property
    def has_len(self) -> bool:
        try:
            len(self.loader)
        except TypeError:
            return False
        return True

    @property
    def num_batches(self) -> int | float:
        """Batches per epoch after ``limit_train_batches`` (``inf`` when the loader has no length)."""
        total: int | float = len(self.loader) if self.has_len else math.inf
        if isinstance(self.limit, float):
            return total if self.limit == 1.0 else int(total * self.limit) if total != math.inf else math.inf
        return min(total, self.limit)

    def describe(self) -> dict[str, Any]:
        """What exact resume depends on: compared on resume to warn when it changed."""
        info: dict[str, Any] = {"num_batches": self.num_batches if self.num_batches != math.inf else -1}
        info["batch_size"] = getattr(self.loader, "batch_size", None)
        try:
            info["dataset_len"] = len(self.loader.dataset)
        except (TypeError, AttributeError):
            info["dataset_len"] = -1
        return info

    # -- epoch start ------------------------------------------------------------------------------------------

    def set_epoch(self, epoch: int) -> None:
        for owner in (getattr(self.loader, "sampler", None), getattr(self.loader, "batch_sampler", None)):
            if hasattr(owner, "set_epoch"):
                owner.set_epoch(epoch)
        dataset = getattr(self.loader, "dataset", None)
        if hasattr(dataset, "set_epoch"):
            dataset.set_epoch(epoch)

    def generator_states(self) -> list[torch.Tensor]:
        return [g.get_state() for g in _generators(self.loader)]

    def set_generator_states(self, states: list[torch.Tensor]) -> None:
        for gen, state in zip(_generators(self.loader), states):
            gen.set_state(state)

    def iterator(self, skip: int = 0) -> Iterator[Any]:
        """An iterator over this epoch's batches, starting after `skip` batches."""
        if skip <= 0 or self._seeks_itself():
            return iter(self.loader)
        loader = self.loader
        if isinstance(loader, DataLoader) and not isinstance(loader.dataset, IterableDataset):
            skipper = _SkipBatches(
                loader.batch_sampler if loader.batch_sampler is not None else loader.sampler, skip
            )
            if loader.batch_sampler is not None:
                rebuilt = _rebuild(loader, batch_sampler=skipper)
            else:
                rebuilt = _rebuild(loader, batch_size=None, sampler=skipper)
            if rebuilt is not None:
                it = iter(rebuilt)
                # The original run drew the sampler's seed at its first batch, right after iter(); draw it
                # now, before the caller puts the save-point RNG state back.
                if skipper.active is not None:
                    skipper.active.prime()
                return it
        if (
            isinstance(loader, DataLoader)
            and isinstance(loader.dataset, IterableDataset)
            and _stateful(loader.dataset)
        ):
            return iter(loader)  # the dataset restored its own position through load_state_dict
        warnings.warn(
            f"resuming mid-epoch: skipping {skip} batches by loading and discarding them, because the training "
            f"data ({type(getattr(loader, 'dataset', loader)).__name__}) cannot seek. Give the dataset "
            f"`state_dict`/`load_state_dict`, or use a map-style dataset with a plain DataLoader, to resume "
            f"without reading the consumed batches.",
            UserWarning,
            stacklevel=3,
        )
        it = iter(loader)
        for _ in range(skip):
            next(it)
        return it

    # -- stateful samplers and datasets -------------------------------------------------------------------------

    def _seeks_itself(self) -> bool:
        """A sampler or batch sampler with its own state resumes its position through load_state_dict."""
        owners = (getattr(self.loader, "sampler", None), getattr(self.loader, "batch_sampler", None))
        return any(o is not None and _stateful(o) and not isinstance(o, _SkipBatches) for o in owners)

    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {}
        for name, obj in (
            ("sampler", getattr(self.loader, "sampler", None)),
            ("batch_sampler", getattr(self.loader, "batch_sampler", None)),
            ("dataset", getattr(self.loader, "dataset", None)),
        ):
            if obj is not None and _stateful(obj) and not isinstance(obj, DataLoader):
                state[name] = obj.state_dict()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for name in ("sampler", "batch_sampler", "dataset"):
            obj = getattr(self.loader, name, None)
            if name in state and obj is not None and _stateful(obj):
                obj.load_state_dict(state[name])


def first_tensor_len(batch: Any) -> int:
    """The batch size ``self.log`` weighs epoch means by: the first dimension of the first tensor found."""
    if isinstance(batch, torch.Tensor):
        return int(batch.shape[0]) if batch.dim() > 0 else 1
    if isinstance(batch, list | tuple):
        for item in batch:
            n = first_tensor_len(item)
            if n:
                return n
    if isinstance(batch, dict):
        for item in batch.values():
            n = first_tensor_len(item)
            if n:
                return n
    return 1


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
