"""Starting the processes of a multi-process run on one machine when no launcher (torchrun) did.

The script is run again once per extra local rank, with the environment torchrun would set; the
current process becomes local rank 0. ``python -m pkg.mod`` is re-run as ``-m pkg.mod``.

At exit, rank 0 waits for its children, but never for minutes after a failure: when training failed on
rank 0 (`mark_failed`) or a child exited with an error, the others get `FAILED_GRACE_S` seconds and are
then killed. A clean exit waits up to `CLEAN_WAIT_S` (children may still be writing results).
"""

from __future__ import annotations

import atexit
import os
import socket
import subprocess
import sys
import time

import __main__

_children: list[subprocess.Popen[bytes]] = []
_failed = False
FAILED_GRACE_S = 10.0
CLEAN_WAIT_S = 600.0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _command() -> list[str]:
    spec = getattr(__main__, "__spec__", None)
    if spec is not None and spec.name and spec.name != "__main__":
        name = spec.name.removesuffix(".__main__")
        return [sys.executable, "-m", name, *sys.argv[1:]]
    script = sys.argv[0] if sys.argv else ""
    if not script or script in ("-c", "-") or not os.path.exists(script):
        raise RuntimeError(
            "Trainer(strategy='ddp', devices=N) starts N processes by running this script again, but this "
            "process has no script (interactive session or `python -c`). Put the training code in a file, or "
            "start the processes yourself with `torchrun --nproc_per_node=N script.py`."
        )
    return [sys.executable, os.path.abspath(script), *sys.argv[1:]]


def launch_local_processes(devices: int, num_nodes: int, node_rank: int) -> None:
    """Start local ranks 1..devices-1 and set this process's environment as local rank 0."""
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", str(free_port()))
    world = devices * num_nodes
    os.environ["WORLD_SIZE"] = str(world)
    os.environ["LOCAL_WORLD_SIZE"] = str(devices)
    os.environ["NODE_RANK"] = str(node_rank)
    command = _command()
    for local_rank in range(1, devices):
        env = dict(os.environ)
        env["LOCAL_RANK"] = str(local_rank)
        env["RANK"] = str(node_rank * devices + local_rank)
        env["SAVEPOINT_LAUNCHED"] = "1"
        _children.append(subprocess.Popen(command, env=env))
    os.environ["LOCAL_RANK"] = "0"
    os.environ["RANK"] = str(node_rank * devices)
    atexit.register(_wait_children)


def mark_failed() -> None:
    """Training failed in this process: at exit, give the children a short grace instead of a long wait."""
    global _failed
    _failed = True


def _wait_children() -> None:
    deadline = time.monotonic() + (FAILED_GRACE_S if _failed else CLEAN_WAIT_S)
    while any(p.poll() is None for p in _children):
        if any(p.returncode not in (None, 0) for p in _children):
            deadline = min(deadline, time.monotonic() + FAILED_GRACE_S)  # one child failed: do not linger
        if time.monotonic() >= deadline:
            break
        time.sleep(0.05)
    for proc in _children:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
