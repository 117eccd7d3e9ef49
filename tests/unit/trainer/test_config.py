import pytest

from savepoint import Trainer
from savepoint.plugins.io import TorchCheckpointIO


def test_trainer_unknown_argument_is_named_with_a_suggestion():
    with pytest.raises(TypeError, match=r"'max_epoch'.*Did you mean 'max_epochs'"):
        Trainer(max_epoch=3)


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"max_epochs": -5}, "max_epochs"),
        ({"max_steps": -2}, "max_steps"),
        ({"limit_train_batches": 1.5}, "limit_train_batches"),
        ({"limit_val_batches": -1}, "limit_val_batches"),
        ({"val_check_interval": 0.0}, "val_check_interval"),
        ({"check_val_every_n_epoch": 0}, "check_val_every_n_epoch"),
        ({"accumulate_grad_batches": 0}, "accumulate_grad_batches"),
        ({"gradient_clip_val": -1.0}, "gradient_clip_val"),
        ({"precision": "8-bit"}, "precision"),
        ({"accelerator": "tpu"}, "accelerator"),
        ({"devices": 0}, "devices"),
        ({"strategy": "deepspeed"}, "strategy"),
        ({"deterministic": "maybe"}, "deterministic"),
    ],
)
def test_trainer_bad_values_raise_at_construction_naming_the_argument(kwargs, name):
    with pytest.raises((ValueError, TypeError), match=name):
        Trainer(**kwargs)


def test_trainer_two_checkpoint_io_plugins_are_refused():
    with pytest.raises(ValueError, match="at most one"):
        Trainer(plugins=[TorchCheckpointIO(), TorchCheckpointIO()])


def test_trainer_defaults_users_know(tmp_path):
    trainer = Trainer()
    assert trainer.max_epochs == 1000 and trainer.max_steps == -1
    assert trainer.default_root_dir == str(tmp_path)
    assert trainer.checkpoint_callback is not None and trainer.progress_bar_callback is not None
    assert trainer.world_size == 1 and trainer.global_rank == 0 and trainer.is_global_zero
    assert Trainer(max_steps=10).max_epochs == -1
    assert Trainer(precision=16).precision == "16-mixed"


@pytest.mark.parametrize(("devices", "index"), [(1, 0), ("auto", 0), ([1], 1), ((2,), 2)])
def test_single_device_cuda_uses_the_gpu_named_by_a_device_list(monkeypatch, devices, index):
    """``devices=[k]`` trains on GPU k (as Lightning), a count of 1 on the first; no GPU is touched here."""
    import torch

    from savepoint.trainer.config import select_strategy

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    strategy = select_strategy({"accelerator": "cuda", "devices": devices})
    assert strategy.root_device == torch.device("cuda", index)
