from __future__ import annotations

import pytest
import torch

from savepoint.trainer.precision import Precision, normalize_precision


@pytest.mark.parametrize(
    "alias, name",
    [
        (32, "32-true"),
        ("16", "16-mixed"),
        ("bf16", "bf16-mixed"),
        (64, "64-true"),
        ("bf16-true", "bf16-true"),
    ],
)
def test_normalize_precision_maps_lightnings_aliases(alias, name):
    assert normalize_precision(alias) == name


def test_true_precision_casts_floating_inputs_only():
    precision = Precision("64-true", "cpu")
    x, y = precision.convert_input((torch.zeros(2), torch.zeros(2, dtype=torch.long)))
    assert x.dtype == torch.float64 and y.dtype == torch.long
    module = torch.nn.Linear(2, 2)
    precision.convert_module(module)
    assert module.weight.dtype == torch.float64
