"""Loggers on their own: files written and read back, resume cut-back, missing optional packages."""

import csv
import sys
import time

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from savepoint.loggers import CSVLogger, TensorBoardLogger
from savepoint.loggers._tb_events import truncate_events_after
from savepoint.trainer import logger_connector


def test_csv_logger_load_state_dict_keeps_the_rows_logged_before_the_checkpoint(tmp_path):
    logger = CSVLogger(tmp_path)
    for step in range(5):
        logger.log_metrics({"loss": float(step)}, step=step)
    logger.save()
    resumed = CSVLogger(tmp_path, version=0)
    resumed.load_state_dict({"rows": 3})
    resumed.log_metrics({"loss": 30.0, "acc": 1.0}, step=3)
    resumed.save()
    with open(tmp_path / "runs/version_0/metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert [(r["step"], r["loss"], r["acc"]) for r in rows] == [
        ("0", "0.0", ""),
        ("1", "1.0", ""),
        ("2", "2.0", ""),
        ("3", "30.0", "1.0"),
    ]


def test_truncate_events_after_drops_only_later_events(tmp_path):
    logger = TensorBoardLogger(tmp_path)
    logger.log_metrics({"loss": 1.0}, step=1)
    logger.save()
    cut = logger.state_dict()["wall_time"]
    time.sleep(0.01)
    logger.log_metrics({"loss": 2.0}, step=2)
    logger.finalize("success")
    truncate_events_after(logger.log_dir, cut)
    acc = EventAccumulator(logger.log_dir)
    acc.Reload()
    assert [(e.step, e.value) for e in acc.Scalars("loss")] == [(1, 1.0)]


def test_tensorboard_logger_without_the_package_names_the_extra(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    with pytest.raises(ImportError, match=r"savepoint\[tensorboard\]"):
        TensorBoardLogger(tmp_path).log_metrics({"loss": 1.0}, step=0)


def test_default_logger_is_csv_without_tensorboard(tmp_path, monkeypatch):
    monkeypatch.setattr(logger_connector, "tensorboard_available", lambda: False)
    (logger,) = logger_connector.build_loggers(True, str(tmp_path))
    assert type(logger) is CSVLogger and logger.log_dir == str(tmp_path / "runs" / "version_0")


def test_default_logger_is_tensorboard_when_installed(tmp_path):
    (logger,) = logger_connector.build_loggers(None, str(tmp_path))
    assert type(logger) is TensorBoardLogger and logger.name == "runs"
