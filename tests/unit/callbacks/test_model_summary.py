"""ModelSummary's table: the same text as Lightning's for the same layers."""

import pytest
import torch
from torch import nn

import savepoint as sp
from savepoint.callbacks.model_summary import get_human_readable_count, summarize


def build(base, example: bool):
    class Net(base):
        def __init__(self):
            super().__init__()
            self.net = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 2))
            self.bn = nn.BatchNorm1d(2)
            self.frozen = nn.Linear(2, 2)
            self.frozen.requires_grad_(False)
            self.bn.eval()
            if example:
                self.example_input_array = torch.zeros(4, 8)

        def forward(self, x):
            return self.frozen(self.bn(self.net(x)))

    return Net()


@pytest.mark.parametrize("example", [True, False])
@pytest.mark.parametrize("max_depth", [1, 2, -1])
def test_summarize_matches_lightning_text(example, max_depth):
    import lightning.pytorch as pl
    from lightning.pytorch.utilities.model_summary import ModelSummary as LightningSummary

    expected = str(LightningSummary(build(pl.LightningModule, example), max_depth=max_depth))
    assert str(summarize(build(sp.TrainingModule, example), max_depth)) == expected


def test_summarize_example_input_gives_sizes_and_keeps_training_mode():
    model = build(sp.TrainingModule, example=True)
    summary = summarize(model, 1)
    first = summary.layers[0]
    assert (first.name, first.in_size, first.out_size) == ("net", [4, 8], [4, 2])
    assert model.training and model.net.training and not model.bn.training


def test_get_human_readable_count_uses_lightning_units():
    assert [get_human_readable_count(n) for n in (0, 999, 1234, 2_500_000)] == ["0", "999", "1.2 K", "2.5 M"]


def test_model_summary_rejects_a_negative_depth():
    with pytest.raises(ValueError, match="max_depth=-2"):
        sp.callbacks.ModelSummary(max_depth=-2)
