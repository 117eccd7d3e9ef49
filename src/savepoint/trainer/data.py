"""Training data and its position: one iterator per epoch that a checkpoint can rebuild exactly.

At the start of every epoch the loop records the RNG state the data draws from (the global torch RNG,
and any generator the loader or sampler owns). To resume mid-epoch, that state is restored, the same
iterator is created (same permutation, same worker seeds) and the consumed batches are dropped at the
batch-sampler level: indices only, no sample is loaded. Samplers and datasets with ``state_dict`` are
saved and restored through it. An ``IterableDataset`` without state is fast-forwarded by consuming
batches, with a warning.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader, IterableDataset, RandomSampler

from savepoint.strategies.data import add_distributed_sampler, move_to_device, rebuild_loader

__all__ = ["TrainData", "add_distributed_sampler", "first_tensor_len", "move_to_device"]


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


def sequential_loader(loader: Any) -> Any:
    """`loader` without shuffling (``overfit_batches``: the same first batches every epoch, as Lightning)."""
    if isinstance(loader, DataLoader) and isinstance(loader.sampler, RandomSampler):
        rebuilt = rebuild_loader(
            loader, batch_size=loader.batch_size, shuffle=False, drop_last=loader.drop_last
        )
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
        if self.has_len:
            check_fraction_limit("limit_train_batches", limit_batches, len(loader), "training")

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
            gen.set_state(state.cpu())  # resumed on CUDA: the checkpoint's tensors were mapped to the GPU

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
                rebuilt = rebuild_loader(loader, batch_sampler=skipper)
            else:
                rebuilt = rebuild_loader(loader, batch_size=None, sampler=skipper)
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


def check_fraction_limit(name: str, limit: int | float, total: int, what: str) -> None:
    """A fraction of a loader that rounds to no batch at all is a mistake: name the argument, suggest a value."""
    if isinstance(limit, float) and 0.0 < limit < 1.0 and total > 0 and int(total * limit) == 0:
        raise ValueError(
            f"Trainer({name}={limit!r}) selects {limit!r} of the {total} {what} batches, which rounds to 0 "
            f"batches. Use at least {name}={1 / total:.4g}, an int number of batches, or 0.0 to skip them."
        )


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
