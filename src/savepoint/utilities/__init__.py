"""Helpers a Lightning script imports from ``lightning.pytorch.utilities``: rank-zero logging, `AttributeDict`,
`seed_everything`."""

from savepoint.hparams import AttributeDict
from savepoint.utilities.rank_zero import rank_zero_debug, rank_zero_info, rank_zero_only, rank_zero_warn
from savepoint.utilities.seed import seed_everything

__all__ = [
    "AttributeDict",
    "rank_zero_debug",
    "rank_zero_info",
    "rank_zero_only",
    "rank_zero_warn",
    "seed_everything",
]
