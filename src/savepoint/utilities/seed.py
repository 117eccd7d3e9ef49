"""`seed_everything`: one seed for Python's, numpy's and torch's RNGs (and, with ``workers=True``, the
DataLoader workers the Trainer runs), with Lightning's environment variables so subprocesses agree."""

from __future__ import annotations

import os
import random

import torch

from savepoint.utilities.rank_zero import rank_zero_only, rank_zero_warn

_MIN, _MAX = 0, 2**32 - 1  # what numpy's legacy seeding accepts


def seed_everything(seed: int | None = None, workers: bool = False, verbose: bool = True) -> int:
    """Seed ``random``, ``numpy`` and ``torch``; return the seed. ``None`` reads ``PL_GLOBAL_SEED`` (else 0).

    ``workers=True``: DataLoaders without a ``worker_init_fn`` get one that gives every worker of every
    rank its own reproducible seed (as Lightning's ``pl_worker_init_function``)."""
    if seed is None:
        env = os.environ.get("PL_GLOBAL_SEED")
        if env is None:
            seed = 0
            if verbose:
                rank_zero_warn(f"seed_everything(None): no seed found, seed set to {seed}")
        else:
            try:
                seed = int(env)
            except ValueError:
                raise ValueError(f"PL_GLOBAL_SEED={env!r} is not an integer seed.") from None
    elif isinstance(seed, bool) or not isinstance(seed, int):
        try:
            seed = int(seed)
        except (TypeError, ValueError):
            raise ValueError(f"seed_everything(seed={seed!r}) must be an integer.") from None
    if not _MIN <= seed <= _MAX:
        raise ValueError(f"seed_everything(seed={seed}) is out of bounds: numpy accepts {_MIN} to {_MAX}.")
    if verbose and rank_zero_only.rank == 0:  # type: ignore[attr-defined]
        print(f"Seed set to {seed}")
    os.environ["PL_GLOBAL_SEED"] = str(seed)
    os.environ["PL_SEED_WORKERS"] = str(int(workers))
    import numpy as np  # lazily: `import savepoint` stays light

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    return seed


def worker_init_function(worker_id: int, rank: int | None = None) -> None:
    """Seed a DataLoader worker from its torch seed (distinct per worker, rank and epoch), as Lightning."""
    import numpy as np

    global_rank = rank if rank is not None else rank_zero_only.rank  # type: ignore[attr-defined]
    process_seed = torch.initial_seed()
    base_seed = process_seed - worker_id
    ss = np.random.SeedSequence([base_seed, worker_id, global_rank])
    np.random.seed(ss.generate_state(4))
    torch_ss, stdlib_ss = ss.spawn(2)
    torch.manual_seed(torch_ss.generate_state(1, dtype=np.uint64)[0])
    stdlib_seed = (stdlib_ss.generate_state(2, dtype=np.uint64).astype(object) * [1 << 64, 1]).sum()
    random.seed(stdlib_seed)


def seeds_workers() -> bool:
    return os.environ.get("PL_SEED_WORKERS") == "1"
