"""The ``savepoint`` command as a user runs it: a subprocess with piped output (and a pty for the terminal
path), on real checkpoints: single files, a sharded folder, corrupted files, odd paths."""

from __future__ import annotations

import json
import os
import pty
import select
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import savepoint as sp
from helpers import TinyModel, loaders, quiet_trainer
from savepoint.cli import main

CLI = [sys.executable, "-m", "savepoint.cli"]


def run_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, cwd=cwd, timeout=120)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """A real run: two epochs, val_loss monitored, top-2 plus last."""
    root = tmp_path_factory.mktemp("run")
    cwd = os.getcwd()
    os.chdir(root)
    try:
        train, val = loaders()
        cb = sp.ModelCheckpoint(dirpath=str(root / "ck"), monitor="val_loss", save_top_k=2, save_last=True)
        quiet_trainer(max_epochs=2, callbacks=[cb]).fit(TinyModel(hidden=12), train, val)
    finally:
        os.chdir(cwd)
    return root / "ck"


@pytest.fixture(scope="module")
def sharded_dir(tmp_path_factory) -> Path:
    """A sharded (DCP) checkpoint from a real FSDP run in one process (a 1-rank gloo group)."""
    root = tmp_path_factory.mktemp("sharded")
    script = f"""
import os, socket, sys
sys.path.insert(0, {str(Path(__file__).parents[1])!r})
with socket.socket() as s:
    s.bind(("127.0.0.1", 0)); port = s.getsockname()[1]
os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK="0", WORLD_SIZE="1", LOCAL_RANK="0")
import savepoint as sp
from helpers import TinyModel, loaders
train, val = loaders()
cb = sp.ModelCheckpoint(dirpath="ck", save_last=True)
sp.Trainer(max_epochs=1, strategy=sp.FSDPStrategy(), enable_progress_bar=False, callbacks=[cb]).fit(TinyModel(), train, val)
"""
    proc = subprocess.run(
        [sys.executable, "-c", script], cwd=root, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return root / "ck" / "last.ckpt"


def test_ls_lists_a_run_sorted_by_step_with_best_and_last(run_dir):
    proc = run_cli("ls", str(run_dir))
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].split()[:4] == ["name", "epoch", "step", "monitor"]
    rows = [line.split() for line in lines[2:]]
    assert [r[0] for r in rows] == ["epoch=0-step=8.ckpt", "epoch=1-step=16.ckpt", "last.ckpt"]
    assert all("val_loss" in r and "ok (structure)" in " ".join(r) for r in rows)
    assert all(len(line) == len(line.rstrip()) for line in lines)


def test_ls_json_marks_best_and_last_and_verifies_crcs(run_dir, capsys):
    assert main(["ls", str(run_dir), "--verify", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    best = torch.load(run_dir / "last.ckpt", weights_only=True)["callbacks"]
    best_path = next(iter(best.values()))["best_model_path"]
    assert [n for n, r in rows.items() if r["best"]] == [Path(best_path).name]
    assert [n for n, r in rows.items() if r["last"]] == ["last.ckpt"]
    assert {r["status"] for r in rows.values()} == {"ok (crc)"}
    assert rows["last.ckpt"]["step"] == 16 and rows["last.ckpt"]["written_by"].startswith("savepoint ")


def test_ls_verify_fails_a_file_with_a_flipped_byte(run_dir, tmp_path):
    shutil.copytree(run_dir, tmp_path / "ck")
    path = tmp_path / "ck" / "epoch=0-step=8.ckpt"
    torn = tmp_path / "ck" / "torn.ckpt"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    torn.write_bytes(bytes(data))
    assert main(["ls", str(tmp_path / "ck"), "--verify", "--json"]) == 1


def test_ls_reads_fsspec_urls(run_dir, capsys):
    import fsspec

    fs = fsspec.filesystem("memory")
    for name in ("epoch=1-step=16.ckpt", "last.ckpt"):
        fs.pipe_file(f"/lsrun/ck/{name}", (run_dir / name).read_bytes())
    assert main(["ls", "memory://lsrun", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["path"] for r in rows] == [
        "memory:///lsrun/ck/epoch=1-step=16.ckpt",
        "memory:///lsrun/ck/last.ckpt",
    ]


def test_inspect_shows_metrics_best_score_hparams_and_sizes(run_dir):
    proc = run_cli("inspect", str(run_dir / "last.ckpt"))
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "val_loss=" in out and "train_loss=" in out
    assert "monitor=val_loss" in out and "best=" in out
    assert "hidden = 12" in out and "__savepoint_type__" not in out
    assert "0.00 MB" not in out and "4 tensors, 536 B" in out  # (8*12 + 12 + 12*2 + 2) float32


def test_inspect_json_decodes_hparams_and_lists_tensors(tmp_path, capsys):
    model = TinyModel()
    model.hparams["dims"] = (1, 2)
    trainer = quiet_trainer(max_epochs=1)
    trainer.fit(model, *loaders())
    trainer.save_checkpoint(tmp_path / "m.ckpt")
    capsys.readouterr()  # the Trainer's own console lines
    assert main(["inspect", str(tmp_path / "m.ckpt"), "--tensors", "net.0.*", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["hyper_parameters"]["dims"] == [1, 2]
    assert summary["metrics"]["train_loss"] > 0
    assert summary["tensors"] == [
        {"name": "net.0.weight", "shape": [16, 8], "dtype": "float32", "bytes": 512},
        {"name": "net.0.bias", "shape": [16], "dtype": "float32", "bytes": 64},
    ]


def test_inspect_shows_a_sharded_layout(sharded_dir, capsys):
    assert main(["inspect", str(sharded_dir), "--tensors", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["kind"] == "sharded" and summary["sharded"]["world_size"] == 1
    assert [f["name"] for f in summary["sharded"]["shard_files"]] == ["__0_0.distcp"]
    assert summary["sharded"]["bytes"] == sum(p.stat().st_size for p in sharded_dir.iterdir())
    assert {t["name"] for t in summary["tensors"]} == {
        "net.0.weight",
        "net.0.bias",
        "net.2.weight",
        "net.2.bias",
    }
    assert main(["ls", str(sharded_dir.parent), "--verify"]) == 0


def test_convert_and_diff_a_sharded_folder(sharded_dir, tmp_path, capsys):
    assert main(["convert", str(sharded_dir), str(tmp_path / "full.ckpt")]) == 0
    assert main(["diff", str(sharded_dir), str(tmp_path / "full.ckpt"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out.split("\n", 1)[1])["identical"]
    assert main(["export", str(sharded_dir), "--safetensors", str(tmp_path / "exported")]) == 0
    full = torch.load(tmp_path / "full.ckpt", weights_only=True)["state_dict"]
    model = TinyModel.load_from_checkpoint(tmp_path / "exported")
    assert all(torch.equal(model.state_dict()[k], full[k]) for k in full)


def test_diff_exit_codes_and_per_tensor_differences(run_dir, capsys):
    same = run_cli("diff", str(run_dir / "last.ckpt"), str(run_dir / "epoch=1-step=16.ckpt"))
    assert same.returncode == 0 and same.stdout.startswith("identical"), same.stderr
    assert main(["diff", str(run_dir / "epoch=0-step=8.ckpt"), str(run_dir / "last.ckpt"), "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["position"]["global_step"] == [8, 16]
    a = torch.load(run_dir / "epoch=0-step=8.ckpt", weights_only=True)["state_dict"]["net.0.weight"]
    b = torch.load(run_dir / "last.ckpt", weights_only=True)["state_dict"]["net.0.weight"]
    expected = (a.double() - b.double()).abs().max().item()
    assert report["tensors"]["changed"]["net.0.weight"]["max_abs_diff"] == pytest.approx(expected)


def test_diff_reports_hparam_changes_and_keys_only_in_one(run_dir, tmp_path, capsys):
    ckpt = torch.load(run_dir / "last.ckpt", weights_only=True)
    ckpt["hyper_parameters"]["lr"] = 0.5
    del ckpt["state_dict"]["net.2.bias"]
    ckpt["extra"] = 1
    torch.save(ckpt, tmp_path / "edited.ckpt")
    assert main(["diff", str(run_dir / "last.ckpt"), str(tmp_path / "edited.ckpt")]) == 1
    out = capsys.readouterr().out
    assert "hyper parameters: lr: 0.1 -> 0.5" in out
    assert "key only in B: extra" in out and "tensor only in A: net.2.bias" in out


def test_export_safetensors_loads_back_everywhere(run_dir, tmp_path):
    safetensors_torch = pytest.importorskip("safetensors.torch")
    out = tmp_path / "exported"
    assert main(["export", str(run_dir / "last.ckpt"), "--safetensors", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "hparams.yaml", "model.safetensors"]
    weights = safetensors_torch.load_file(str(out / "model.safetensors"))
    original = torch.load(run_dir / "last.ckpt", weights_only=True)["state_dict"]
    assert weights.keys() == original.keys() and all(torch.equal(weights[k], original[k]) for k in weights)
    model = TinyModel.load_from_checkpoint(out)
    assert model.hparams.hidden == 12 and torch.equal(model.net[0].weight, original["net.0.weight"])
    with pytest.raises(sp.WeightsOnlyCheckpointError):
        quiet_trainer(max_epochs=3).fit(TinyModel(hidden=12), *loaders(), ckpt_path=str(out))


def test_export_dtype_casts(run_dir, tmp_path):
    assert (
        main(
            ["export", str(run_dir / "last.ckpt"), "--safetensors", str(tmp_path / "h"), "--dtype", "float16"]
        )
        == 0
    )
    model = TinyModel.load_from_checkpoint(tmp_path / "h")
    assert model.net[0].weight.dtype == torch.float32  # load_state_dict copies into the module's dtype
    from safetensors.torch import load_file

    assert load_file(str(tmp_path / "h/model.safetensors"))["net.0.weight"].dtype == torch.float16


def test_upgrade_requires_an_output_or_in_place(tmp_path, capsys):
    legacy = Path(__file__).parents[1] / "fixtures" / "lightning_format_v0.ckpt"
    with pytest.raises(SystemExit) as refused:
        main(["upgrade", str(legacy)])
    assert refused.value.code == 2 and "-o/--output --in-place" in capsys.readouterr().err
    assert main(["upgrade", str(legacy), "-o", str(tmp_path / "up.ckpt")]) == 0
    assert torch.load(tmp_path / "up.ckpt", weights_only=True)["format_version"] == 1
    shutil.copy(legacy, tmp_path / "inplace.ckpt")
    assert main(["upgrade", str(tmp_path / "inplace.ckpt"), "--in-place"]) == 0
    assert torch.load(tmp_path / "inplace.ckpt", weights_only=True)["format_version"] == 1


@pytest.mark.parametrize(
    "args", [["--version"], ["ls", "--version"], ["inspect", "--version"], ["diff", "--version"]]
)
def test_version_everywhere(args, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    assert exit_info.value.code == 0 and capsys.readouterr().out.startswith(f"savepoint {sp.__version__}")


def test_every_subcommand_help_has_a_description_and_an_example(capsys):
    from savepoint.cli import build_parser

    commands = build_parser()._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    for name in commands:
        with pytest.raises(SystemExit):
            main([name, "--help"])
        out = capsys.readouterr().out
        assert "examples:\n  savepoint " + name in out, name
        description = out.split("\n\n")[1]
        assert len(description) > 40 and not description.startswith("positional"), name


def _bad_files(run_dir: Path, folder: Path) -> dict[str, Path]:
    good = torch.load(run_dir / "last.ckpt", weights_only=True)
    files = {"empty": folder / "torn_empty.ckpt", "missing": folder / "missing.ckpt"}
    files["empty"].write_bytes(b"")
    for name, key, value in [
        ("version_minus_one", "format_version", -1),
        ("version_99", "format_version", 99),
        ("version_abc", "format_version", "abc"),
        ("loops_str", "loops", "oops"),
        ("fit_loop_list", "loops", {"fit_loop": [1, 2]}),
        ("state_dict_list", "state_dict", [1]),
    ]:
        files[name] = folder / f"{name}.ckpt"
        torch.save({**good, key: value}, files[name])
    return files


@pytest.mark.parametrize("command", ["inspect", "ls", "diff", "export", "convert", "upgrade", "verify"])
def test_bad_input_is_a_message_and_a_nonzero_exit(run_dir, tmp_path, capsys, command):
    for name, path in _bad_files(run_dir, tmp_path).items():
        args = {
            "diff": [str(path), str(run_dir / "last.ckpt")],
            "export": [str(path), "--safetensors", str(tmp_path / "x")],
            "convert": [str(path), str(tmp_path / "x.ckpt"), "--to", "lightning"],
            "upgrade": [str(path), "-o", str(tmp_path / "x.ckpt")],
        }.get(command, [str(path)])
        code = main([command, *args])
        captured = capsys.readouterr()
        assert code != 0, (command, name, captured.out)
        if command not in ("ls", "verify"):
            assert captured.err.startswith("error: ") and path.name in captured.err, (
                command,
                name,
                captured.err,
            )
            assert "Traceback" not in captured.err


def test_paths_with_brackets_print_exactly(run_dir, tmp_path, capsys):
    odd = tmp_path / "run [seed=1]" / "a[" / "b]"
    odd.mkdir(parents=True)
    shutil.copy(run_dir / "last.ckpt", odd / "last [v2].ckpt")
    assert main(["ls", str(tmp_path / "run [seed=1]")]) == 0
    assert "last [v2].ckpt" in capsys.readouterr().out
    assert main(["inspect", str(odd / "last [v2].ckpt")]) == 0
    assert f"checkpoint {odd / 'last [v2].ckpt'}" in capsys.readouterr().out
    proc = run_cli("inspect", str(odd / "nope[/b].ckpt"))
    assert proc.returncode == 2 and "nope[/b].ckpt" in proc.stderr and "Traceback" not in proc.stderr


def test_piped_output_never_wraps(run_dir, tmp_path):
    deep = tmp_path / ("x" * 150)
    shutil.copytree(run_dir, deep)
    proc = run_cli("inspect", str(deep / "last.ckpt"))
    assert f"checkpoint {deep / 'last.ckpt'}" in proc.stdout
    callbacks_line = next(line for line in proc.stdout.splitlines() if line.startswith("callbacks"))
    assert callbacks_line.rstrip().endswith("'train_time_interval': None}")


def test_inspect_json_into_head_exits_quietly(run_dir):
    """`savepoint inspect --json X | head`: the reader is gone before the output is written."""
    read_end, write_end = os.pipe()
    proc = subprocess.Popen(
        [*CLI, "inspect", str(run_dir / "last.ckpt"), "--json"], stdout=write_end, stderr=subprocess.PIPE
    )
    os.close(write_end)
    os.close(read_end)  # no reader left: the first write fails with EPIPE
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 141 and err == b"", err.decode()


def test_terminal_output_is_styled_and_fits_the_terminal(run_dir):
    """The terminal path (a pty): rich's table, fitted to the terminal's width."""
    pid, fd = pty.fork()
    if pid == 0:  # child
        os.environ["COLUMNS"] = "100"
        os.execv(sys.executable, [*CLI, "inspect", str(run_dir / "last.ckpt")])
    chunks = []
    while True:
        ready, _, _ = select.select([fd], [], [], 60)
        if not ready:
            break
        try:
            data = os.read(fd, 65536)
        except OSError:
            break
        if not data:
            break
        chunks.append(data)
    _, status = os.waitpid(pid, 0)
    out = b"".join(chunks).decode()
    assert os.waitstatus_to_exitcode(status) == 0, out
    assert "\x1b[" in out  # styled
    visible = [line for line in out.replace("\r", "").splitlines() if line.strip()]
    import re

    plain = [re.sub(r"\x1b\[[0-9;]*m", "", line) for line in visible]
    assert max(len(line) for line in plain) <= 100 and any("val_loss" in line for line in plain)


class _Custom:
    pass


@pytest.mark.writes_unsafe_files
def test_refusal_of_a_pickled_class_names_it_without_terminal_codes(run_dir, tmp_path, capsys):
    ckpt = torch.load(run_dir / "last.ckpt", weights_only=True)
    ckpt["hyper_parameters"]["obj"] = _Custom()
    torch.save(ckpt, tmp_path / "unsafe.ckpt")
    assert main(["inspect", str(tmp_path / "unsafe.ckpt")]) == 2
    err = capsys.readouterr().err
    assert "_Custom" in err and "never executed" in err
    assert "\x1b" not in err and "\\x1b" not in err
