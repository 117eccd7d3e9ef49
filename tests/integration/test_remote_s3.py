"""s3:// checkpoints against a real S3-compatible server (moto) started on 127.0.0.1 by the test."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import fsspec
import pytest
import torch

import savepoint as sp
from helpers import TinyModel, loaders, quiet_trainer
from integration import s3_resume_job

moto_server = pytest.importorskip("moto.server")
pytest.importorskip("s3fs")


@pytest.fixture(scope="module")
def s3_endpoint():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    mp = pytest.MonkeyPatch()
    mp.setenv("AWS_ACCESS_KEY_ID", "testing")
    mp.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    mp.setenv("AWS_DEFAULT_REGION", "us-east-1")
    mp.setitem(fsspec.config.conf, "s3", {"client_kwargs": {"endpoint_url": endpoint}})
    fs = fsspec.filesystem("s3", skip_instance_cache=True)
    fs.mkdir("ckpts")
    yield endpoint
    mp.undo()
    server.stop()


def _fs():
    return fsspec.filesystem("s3", skip_instance_cache=True)


def test_s3_training_checkpoints_resume_and_load(s3_endpoint):
    train, val = loaders()
    cb = sp.ModelCheckpoint(dirpath="s3://ckpts/run1", save_top_k=1, save_last=True)
    quiet_trainer(max_epochs=2, callbacks=[cb]).fit(TinyModel(), train, val)
    names = sorted(p.rsplit("/", 1)[1] for p in _fs().ls("ckpts/run1", detail=False, refresh=True))
    assert names == ["epoch=1-step=16.ckpt", "last.ckpt"]  # epoch 0 removed through the CheckpointIO

    trainer = quiet_trainer(
        max_epochs=3, callbacks=[sp.ModelCheckpoint(dirpath="s3://ckpts/run1", save_last=True)]
    )
    trainer.fit(TinyModel(), train, val, ckpt_path="s3://ckpts/run1/last.ckpt")
    assert trainer.global_step == 24
    model = TinyModel.load_from_checkpoint("s3://ckpts/run1/last.ckpt")
    ckpt = sp.TorchCheckpointIO().load_checkpoint("s3://ckpts/run1/last.ckpt")
    assert torch.equal(model.net[0].weight, ckpt["state_dict"]["net.0.weight"])


def test_s3_missing_object_is_a_typed_error(s3_endpoint):
    with pytest.raises(sp.CheckpointNotFoundError, match=r"s3://ckpts/none.ckpt"):
        sp.TorchCheckpointIO().load_checkpoint("s3://ckpts/none.ckpt")


JOB = Path(__file__).with_name("s3_resume_job.py")


def _job(endpoint: str, dirpath: str, out: Path, *flags: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing")
    env["AWS_DEFAULT_REGION"] = "us-east-1"
    root = out.parent / "root"
    command = [sys.executable, str(JOB), endpoint, dirpath, str(root), str(out), *flags]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=240)


def _checkpoints(prefix: str) -> list[str]:
    return sorted(p.rsplit("/", 1)[1] for p in _fs().ls(prefix, detail=False, refresh=True))


def test_s3_async_run_killed_with_sigkill_resumes_from_last_exactly(s3_endpoint, tmp_path):
    expected = s3_resume_job.train("s3://ckpts/reference", str(tmp_path / "reference"))  # uninterrupted
    killed = _job(s3_endpoint, "s3://ckpts/killed", tmp_path / "unused.pt", "--kill-at-step", "10")
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    assert "last.ckpt" in _checkpoints("ckpts/killed")
    resumed = _job(s3_endpoint, "s3://ckpts/killed", tmp_path / "resumed.pt", "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    got = torch.load(tmp_path / "resumed.pt", weights_only=True)
    assert all(torch.equal(expected[k], got[k]) for k in expected)
    kept = _checkpoints("ckpts/reference")
    assert len(kept) == 3 and "last.ckpt" in kept  # the top-2 and last: removals happened on the bucket
    # The resumed run kept the same files (a removal the kill interrupted may leave one more behind).
    assert set(kept) <= set(_checkpoints("ckpts/killed"))

    train, val = loaders()
    cb = sp.ModelCheckpoint(dirpath="s3://ckpts/killed", monitor="train_loss", every_n_train_steps=3)
    trainer = quiet_trainer(max_epochs=3, callbacks=[cb], logger=False)
    trainer.fit(TinyModel(), train, val, ckpt_path="best")
    assert trainer.ckpt_path.startswith("s3://ckpts/killed/epoch=")  # "best" resolved on the bucket


def test_s3_ls_and_inspect_read_a_run_in_a_bucket(s3_endpoint, capsys):
    import json

    from savepoint.cli import main

    cb = sp.ModelCheckpoint(dirpath="s3://ckpts/listed", monitor="val_loss", save_last=True)
    quiet_trainer(max_epochs=1, callbacks=[cb]).fit(TinyModel(), *loaders())
    capsys.readouterr()  # the Trainer's own console lines
    assert main(["ls", "s3://ckpts/listed", "--verify", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["path"] for r in rows] == [
        "s3://ckpts/listed/epoch=0-step=8.ckpt",
        "s3://ckpts/listed/last.ckpt",
    ]
    assert all(r["monitor"] == "val_loss" and r["status"] == "ok (crc)" for r in rows)
    assert main(["inspect", "s3://ckpts/listed/last.ckpt", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["position"]["global_step"] == 8
