import pytest
import torch
from torch import nn

from savepoint.trainer.optim import parse_optimizers


@pytest.fixture
def params():
    return nn.Linear(2, 2).parameters


def test_configure_optimizers_accepts_every_form(params):
    opt = torch.optim.SGD(params(), lr=0.1)
    sched = torch.optim.lr_scheduler.StepLR(opt, 1)
    assert parse_optimizers(opt) == ([opt], [])
    assert parse_optimizers([opt])[0] == [opt]
    opts, configs = parse_optimizers(([opt], [sched]))
    assert opts == [opt] and configs[0].scheduler is sched and configs[0].interval == "epoch"
    opts, configs = parse_optimizers({"optimizer": opt, "lr_scheduler": sched})
    assert configs[0].scheduler is sched
    opts, configs = parse_optimizers(
        {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step", "frequency": 2}}
    )
    assert configs[0].interval == "step" and configs[0].frequency == 2
    plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(opt)
    _, configs = parse_optimizers({"optimizer": opt, "lr_scheduler": plateau, "monitor": "val_loss"})
    assert configs[0].reduce_on_plateau and configs[0].monitor == "val_loss"


def test_configure_optimizers_bad_forms_are_explained(params):
    opt = torch.optim.SGD(params(), lr=0.1)
    with pytest.raises(ValueError, match="'optimizer' key"):
        parse_optimizers({"lr_scheduler": None})
    with pytest.raises(ValueError, match="interval"):
        parse_optimizers(
            {
                "optimizer": opt,
                "lr_scheduler": {"scheduler": torch.optim.lr_scheduler.StepLR(opt, 1), "interval": "batch"},
            }
        )
    with pytest.raises(ValueError, match="ReduceLROnPlateau needs a metric"):
        parse_optimizers({"optimizer": opt, "lr_scheduler": torch.optim.lr_scheduler.ReduceLROnPlateau(opt)})
    with pytest.raises(TypeError, match=r"not a torch.optim.Optimizer"):
        parse_optimizers(["adam"])
