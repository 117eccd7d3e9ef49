"""What a person sees: the screen after a fit in a terminal, and the lines written to a file."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import savepoint as sp
from helpers import loaders
from integration.console_job import Shown
from integration.terminal import run_in_terminal

JOB = str(Path(__file__).with_name("console_job.py"))
ENV = {
    **os.environ,
    "PYTHONPATH": os.pathsep.join([os.environ.get("PYTHONPATH", ""), str(Path(__file__).parents[1])]),
}


@pytest.mark.parametrize("bar", ["rich", "tqdm"])
def test_progress_bar_in_a_terminal_leaves_the_last_epoch_and_why_fit_stopped(tmp_path, bar):
    os.environ["PYTHONPATH"] = ENV["PYTHONPATH"]
    screen = run_in_terminal([sys.executable, JOB, bar, "0.02"], columns=140)
    assert screen[-1] == "`Trainer.fit` stopped: `max_epochs=3` reached."
    last = screen[-2]
    assert last.startswith("Epoch 2/2") and "8/8" in last
    assert re.search(r"\d+\.\d+it/s", last)
    assert (
        re.search(r"train_loss=0\.\d{3}", last)
        and re.search(r"val_loss=0\.\d{3}", last)
        and "v_num=0" in last
    )
    shown = "\n".join(screen)
    assert "Epoch 0/2" not in shown and "Epoch 1/2" not in shown  # one bar, reused epoch after epoch
    assert "Validation" not in shown and "Sanity Checking" not in shown  # their bars are gone
    assert "Total params" in shown  # the model summary above the bar


def test_progress_bar_without_a_terminal_prints_one_plain_line_per_epoch(tmp_path):
    log = tmp_path / "train.log"
    with open(log, "w") as f:
        subprocess.run(
            [sys.executable, JOB, "rich"],
            stdout=f,
            stderr=subprocess.STDOUT,
            env=ENV,
            check=True,
            cwd=tmp_path,
        )
    text = log.read_text()
    assert "\r" not in text and "\x1b" not in text
    lines = [line for line in text.splitlines() if line.startswith(("Epoch", "`Trainer.fit`"))]
    assert len(lines) == 4
    for epoch, line in enumerate(lines[:3]):
        assert re.fullmatch(
            rf"Epoch {epoch}/2: 100% 8/8 \[\d\d:\d\d, \d+\.\d\dit/s\] train_loss=\S+ val_loss=\S+ v_num=0",
            line,
        ), line
    assert lines[3] == "`Trainer.fit` stopped: `max_epochs=3` reached."


def run_plain(capsys, **trainer_kwargs):
    bar = trainer_kwargs.pop("bar", None) or sp.callbacks.RichProgressBar(plain_interval_s=0)
    trainer = sp.Trainer(
        enable_model_summary=False,
        logger=False,
        callbacks=[bar, *trainer_kwargs.pop("callbacks", [])],
        **trainer_kwargs,
    )
    trainer.fit(Shown(), *loaders(n_train=160))
    return trainer, capsys.readouterr().err.splitlines()


def test_progress_bar_without_a_terminal_reports_long_epochs_every_tenth(capsys):
    _, lines = run_plain(capsys, max_epochs=1)
    percents = [int(m.group(1)) for line in lines if (m := re.match(r"Epoch 0/0: +(\d+)%", line))]
    assert percents == [10, 20, 30, 40, 50, 60, 70, 80, 90, 100]


def test_tqdm_bar_without_a_terminal_prints_the_same_plain_lines(capsys):
    _, lines = run_plain(capsys, max_epochs=2, bar=sp.callbacks.TQDMProgressBar())
    assert [line.split(" [")[0] for line in lines if line.startswith("Epoch")] == [
        "Epoch 0/1: 100% 20/20",
        "Epoch 1/1: 100% 20/20",
    ]


def test_fit_says_it_stopped_at_max_steps(capsys):
    trainer, lines = run_plain(capsys, max_steps=5)
    assert lines[-1] == "`Trainer.fit` stopped: `max_steps=5` reached."
    assert trainer.stop_reason == "`max_steps=5` reached"


def test_fit_says_early_stopping_stopped_it_with_the_metric(capsys):
    stop = sp.EarlyStopping(monitor="val_loss", patience=1, mode="max", min_delta=10.0)
    _, lines = run_plain(capsys, max_epochs=10, callbacks=[stop])
    assert re.fullmatch(
        r"`Trainer.fit` stopped: early stopping: val_loss did not improve in 1 checks \(best .+\)\.",
        lines[-1],
    )


def test_validate_without_a_terminal_prints_a_validation_line(capsys):
    trainer = sp.Trainer(enable_model_summary=False, logger=False)
    trainer.validate(Shown(), loaders()[1], verbose=False)
    lines = capsys.readouterr().err.splitlines()
    assert re.fullmatch(r"Validation: 100% 2/2 \[\d\d:\d\d, \S+it/s\] val_loss=0\.\d+", lines[-1])


def test_test_and_predict_without_a_terminal_print_a_line_each(capsys):
    class Evaluated(Shown):
        def test_step(self, batch, batch_idx):
            self.log("test_loss", self.validation_loss(batch), prog_bar=True)

        def predict_step(self, batch, batch_idx):
            return self(batch[0])

        def validation_loss(self, batch):
            return torch.nn.functional.cross_entropy(self(batch[0]), batch[1])

    trainer = sp.Trainer(enable_model_summary=False, logger=False)
    model = Evaluated()
    trainer.test(model, loaders()[1], verbose=False)
    trainer.predict(model, loaders()[1])
    lines = capsys.readouterr().err.splitlines()
    assert re.fullmatch(r"Testing: 2 \[\d\d:\d\d, \S+it/s\] test_loss=0\.\d+", lines[-2])
    assert lines[-1].startswith("Predicting: 2 [")
