"""``savepoint plot``: a run's metrics and save points drawn to a PNG."""

import struct

import torch

import savepoint as sp
from helpers import TinyModel, loaders
from savepoint.cli import main
from savepoint.loggers import CSVLogger
from savepoint.plotting import read_metrics, read_save_points


def fit_run(tmp_path, logger):
    torch.manual_seed(0)
    trainer = sp.Trainer(
        max_epochs=4,
        default_root_dir=tmp_path,
        enable_progress_bar=False,
        enable_model_summary=False,
        log_every_n_steps=4,
        logger=logger,
        callbacks=[sp.ModelCheckpoint(monitor="val_loss", save_top_k=2)],
    )
    trainer.fit(TinyModel(), *loaders())
    return trainer


def png_size(path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", data[16:24])


def test_plot_draws_the_metrics_of_a_csv_run_with_its_save_points(tmp_path, capsys):
    trainer = fit_run(tmp_path, CSVLogger(tmp_path))
    run = trainer.log_dir
    assert main(["plot", run]) == 0
    out = capsys.readouterr().out.strip()
    assert out == f"{run}/metrics.png"
    width, height = png_size(tmp_path / "runs/version_0/metrics.png")
    assert width > height > 300  # two panels side by side: train_loss and val_loss
    steps, best, monitor = read_save_points(run)
    assert steps == [24, 32] and monitor == "val_loss"  # the two kept by save_top_k=2
    assert best == int(
        torch.load(trainer.checkpoint_callback.best_model_path, weights_only=True)["global_step"]
    )


def test_plot_reads_tensorboard_event_files_when_there_is_no_csv(tmp_path):
    trainer = fit_run(tmp_path, True)
    series = read_metrics(trainer.log_dir)
    assert [s for s, _ in series["val_loss"]] == [7, 15, 23, 31]  # steps counted from 0
    assert main(["plot", trainer.log_dir, "--metrics", "val_loss", "-o", str(tmp_path / "val.png")]) == 0
    width, _ = png_size(tmp_path / "val.png")
    assert width < 800  # one panel (two would be about 1400 wide)


def test_plot_unknown_metric_is_a_clear_error(tmp_path, capsys):
    trainer = fit_run(tmp_path, CSVLogger(tmp_path))
    assert main(["plot", trainer.log_dir, "--metrics", "accuracy"]) == 2
    err = capsys.readouterr().err
    assert "logged no metric ['accuracy']" in err and "val_loss" in err
