"""The process group savepoint makes (`strategies.elastic.init_process_group`)."""

import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

SRC = str(Path(__file__).parents[3] / "src")


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(script: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, RANK="0", WORLD_SIZE="1", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(_port()))
    env["PYTHONPATH"] = SRC + os.pathsep + env.get("PYTHONPATH", "")
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)], env=env, capture_output=True, text=True, timeout=120
    )


def test_the_group_is_destroyed_at_interpreter_exit():
    # atexit runs its handlers last-registered first: this one, registered before the group exists, runs
    # after savepoint's and sees what it left.
    proc = _run(
        """
        import atexit
        from datetime import timedelta
        import torch.distributed as dist
        atexit.register(lambda: print("initialized at exit:", dist.is_initialized(), flush=True))
        from savepoint.strategies import elastic
        elastic.init_process_group("gloo", timedelta(seconds=30))
        print("initialized:", dist.is_initialized(), flush=True)
        """
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.splitlines() == ["initialized: True", "initialized at exit: False"]


def test_a_group_the_script_destroyed_is_left_alone_at_exit():
    proc = _run(
        """
        from datetime import timedelta
        import torch.distributed as dist
        from savepoint.strategies import elastic
        elastic.init_process_group("gloo", timedelta(seconds=30))
        dist.destroy_process_group()
        print("done", flush=True)
        """
    )
    assert proc.returncode == 0 and proc.stdout.strip() == "done", proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
