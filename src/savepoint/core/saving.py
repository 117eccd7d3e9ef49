"""``savepoint.core.saving``: hyperparameter files, at the module path users know."""

from savepoint.hparams_yaml import load_hparams_from_yaml, save_hparams_to_yaml

__all__ = ["load_hparams_from_yaml", "save_hparams_to_yaml"]
