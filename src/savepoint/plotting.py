"""``savepoint plot RUN_DIR``: the logged metrics of a run, and where checkpoints were saved, as a PNG.

For people without TensorBoard at hand. Metrics come from the run's ``metrics.csv`` (`CSVLogger`) or,
failing that, its TensorBoard event files; save points from the checkpoints in ``RUN_DIR/checkpoints``
(each file's ``global_step``, read through `TorchCheckpointIO`, weights-only), the best one
(ModelCheckpoint's ``best_model_path``) drawn in another colour. Needs matplotlib
(``pip install 'savepoint[plot]'``).
"""

from __future__ import annotations

import argparse
import csv
import math
import os
import sys
from typing import Any

from savepoint.cli._common import add_command
from savepoint.plugins.io.torch_io import TorchCheckpointIO

SKIPPED = ("epoch", "hp_metric")


def read_metrics(run_dir: str) -> dict[str, list[tuple[int, float]]]:
    """``{name: [(step, value), ...]}`` from ``metrics.csv``, else from TensorBoard event files."""
    path = os.path.join(run_dir, "metrics.csv")
    series: dict[str, list[tuple[int, float]]] = {}
    if os.path.isfile(path):
        with open(path, newline="") as f:
            for row in csv.DictReader(f):
                step = int(float(row.get("step") or 0))
                for name, value in row.items():
                    if name != "step" and value not in ("", None):
                        series.setdefault(name, []).append((step, float(value)))
        return series
    if not any("tfevents" in name for name in os.listdir(run_dir)):
        return series
    try:
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    except ImportError as err:
        raise ImportError(
            f"{run_dir!r} has TensorBoard event files and no metrics.csv; reading them needs the 'tensorboard' "
            f"package: pip install 'savepoint[tensorboard]'."
        ) from err
    acc = EventAccumulator(run_dir, size_guidance={"scalars": 0})
    acc.Reload()
    for tag in acc.Tags()["scalars"]:
        series[tag] = [(e.step, e.value) for e in acc.Scalars(tag)]
    return series


def read_save_points(run_dir: str) -> tuple[list[int], int | None, str | None]:
    """(global steps of the checkpoints in ``run_dir/checkpoints``, the best one's step, its monitor)."""
    steps: dict[str, int] = {}
    best_path, monitor, newest = None, None, -1
    io = TorchCheckpointIO()
    for entry in io.list_checkpoints(os.path.join(run_dir, "checkpoints")):
        path = entry.path
        if entry.is_dir:  # a sharded folder: its step is not worth assembling it
            continue
        try:
            ckpt = io.load_checkpoint(path, map_location="cpu")
        except Exception:  # a file that does not load is simply not drawn
            continue
        step = int(ckpt.get("global_step", 0))
        steps[os.path.realpath(path)] = step
        for state in (ckpt.get("callbacks") or {}).values():
            if isinstance(state, dict) and state.get("best_model_path") and step >= newest:
                newest, best_path, monitor = step, state["best_model_path"], state.get("monitor")
    best = steps.get(os.path.realpath(best_path)) if best_path else None
    return sorted(set(steps.values())), best, monitor


def plot_run(run_dir: str, output: str | None = None, metrics: list[str] | None = None) -> str:
    """Draw `run_dir`'s metrics (all, or `metrics`) to `output` (default ``RUN_DIR/metrics.png``)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as err:
        raise ImportError("savepoint plot needs matplotlib: pip install 'savepoint[plot]'.") from err
    series = read_metrics(run_dir)
    if metrics:
        missing = [m for m in metrics if m not in series]
        if missing:
            raise ValueError(f"{run_dir!r} logged no metric {missing}; it logged {sorted(series)}.")
        names = metrics
    else:
        names = [n for n in series if n not in SKIPPED]
    if not names:
        raise ValueError(f"{run_dir!r} holds no logged metrics (no metrics.csv, no TensorBoard event files).")
    saves, best, monitor = read_save_points(run_dir)
    cols = min(len(names), 2)
    rows = math.ceil(len(names) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(6.5 * cols, 3.2 * rows), squeeze=False)
    for ax, name in zip(axes.flat, names):
        _draw(ax, name, series[name], saves, best, name == monitor)
    for ax in list(axes.flat)[len(names) :]:
        ax.axis("off")
    fig.suptitle(os.path.basename(os.path.normpath(run_dir)))
    fig.tight_layout()
    output = output or os.path.join(run_dir, "metrics.png")
    fig.savefig(output, dpi=110)
    plt.close(fig)
    return output


def _draw(
    ax: Any, name: str, points: list[tuple[int, float]], saves: list[int], best: int | None, monitored: bool
) -> None:
    steps, values = zip(*points)
    ax.plot(steps, values, marker="o" if len(points) < 30 else None, markersize=3, label=name)
    for i, step in enumerate(saves):
        ax.axvline(step, color="0.6", linestyle=":", linewidth=1, label="checkpoint" if i == 0 else None)
    if best is not None:
        ax.axvline(best, color="tab:green", linestyle="--", linewidth=1.5, label="best checkpoint")
        if monitored and best in steps:
            ax.plot([best], [values[steps.index(best)]], marker="*", markersize=14, color="tab:green")
    ax.set_title(name)
    ax.set_xlabel("step")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")


def add_parser(sub: Any) -> None:
    """Register ``savepoint plot`` on the CLI's subcommands."""
    p = add_command(
        sub,
        "plot",
        _cmd_plot,
        summary="draw a run's logged metrics and its save points to a PNG (needs matplotlib)",
        description="Reads the metrics a run logged (its metrics.csv, or TensorBoard event files) and the "
        "checkpoints in its folder, and draws each metric against the step with the save points marked.",
        examples=[
            "savepoint plot runs/version_0",
            "savepoint plot runs/version_0 --metrics val_loss -o val.png",
        ],
    )
    p.add_argument("run_dir", help="the run's folder, e.g. runs/version_0")
    p.add_argument("--metrics", nargs="+", metavar="NAME", help="only these metrics (default: all logged)")
    p.add_argument("-o", "--output", help="the PNG to write (default: RUN_DIR/metrics.png)")


def _cmd_plot(args: argparse.Namespace) -> int:
    if not os.path.isdir(args.run_dir):
        raise FileNotFoundError(
            f"savepoint plot: {args.run_dir!r} is not a folder; give a run folder such as runs/version_0."
        )
    metrics = [m for item in args.metrics for m in item.split(",") if m] if args.metrics else None
    try:
        print(plot_run(args.run_dir, args.output, metrics))
    except (ValueError, ImportError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0
