"""What every subcommand shares: registration with a description and an example, and output that prints
paths exactly, never wraps when piped, and carries no terminal escape codes from other tools' messages."""

from __future__ import annotations

import argparse
import io
import json
import math
import re
import sys
import textwrap
from collections.abc import Callable, Sequence
from typing import Any

from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from savepoint._version import __version__

Handler = Callable[[argparse.Namespace], int]

_ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b[@-Z\\-_]")


class CliError(Exception):
    """Bad input found by a subcommand: printed as ``error: <message>``, exit code 2."""


def add_command(
    sub: argparse._SubParsersAction,
    name: str,
    handler: Handler,
    *,
    summary: str,
    description: str,
    examples: Sequence[str],
) -> argparse.ArgumentParser:
    """A subcommand whose ``--help`` shows a description and examples, and that answers ``--version``."""
    epilog = "examples:\n" + "\n".join(f"  {line}" for line in examples)
    parser = sub.add_parser(
        name,
        help=summary,
        description=textwrap.fill(description, 88),
        epilog=epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_version(parser)
    parser.set_defaults(func=handler)
    return parser


def add_version(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--version", action="version", version=f"savepoint {__version__}")


def clean(text: object) -> str:
    """`text` as a string without terminal escape codes (torch's messages embed some)."""
    return _ANSI.sub("", str(text))


def console(stderr: bool = False) -> Console:
    """A console that wraps and colours only on a terminal; piped output keeps each line whole."""
    stream = sys.stderr if stderr else sys.stdout
    if stream.isatty():
        return Console(file=stream, highlight=False)
    return Console(file=stream, highlight=False, width=1_000_000, no_color=True, soft_wrap=True)


def text(value: object, style: str = "") -> Text:
    """A literal cell or line: never read as rich markup, so ``run [seed=1]`` prints as it is."""
    return Text(clean(value), style=style)


def emit(renderable: Any) -> None:
    """Print to stdout: styled and fitted on a terminal; piped, every line whole and without trailing blanks."""
    if sys.stdout.isatty():
        console().print(renderable)
        return
    buffer = io.StringIO()
    Console(file=buffer, highlight=False, width=1_000_000, no_color=True, soft_wrap=True).print(renderable)
    lines = buffer.getvalue().splitlines()
    sys.stdout.write("".join(line.rstrip() + "\n" for line in lines))


def table(*columns: str, title: str | None = None) -> Table:
    grid = Table(
        title=Text(title) if title else None,
        box=box.SIMPLE_HEAD,
        show_edge=False,
        pad_edge=False,
        title_justify="left",
    )
    for column in columns:
        grid.add_column(column, overflow="fold", no_wrap=not sys.stdout.isatty())
    return grid


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=_json_default) + "\n")


def _json_default(value: Any) -> Any:
    import torch

    if isinstance(value, torch.Tensor):
        return value.item() if value.numel() == 1 else value.tolist()
    return clean(value)


def human_size(n: int | None) -> str:
    """Bytes in binary units with three significant digits: ``812 B``, ``1.53 KiB``, ``24.1 MiB``, ``394 KiB``."""
    if n is None:
        return "-"
    if n < 1024:
        return f"{n} B"
    exponent = min(int(math.log(n, 1024)), 4)
    value = n / 1024**exponent
    unit = ("B", "KiB", "MiB", "GiB", "TiB")[exponent]
    decimals = 2 if value < 10 else 1 if value < 100 else 0
    return f"{value:.{decimals}f} {unit}"


def scalar(value: Any) -> Any:
    """A metric or score as a Python number (tensors of one element included); others unchanged."""
    import torch

    if isinstance(value, torch.Tensor) and value.numel() == 1:
        return value.item()
    return value


def show_number(value: Any) -> str:
    value = scalar(value)
    if isinstance(value, float):
        return f"{value:.6g}"
    return "-" if value is None else str(value)
