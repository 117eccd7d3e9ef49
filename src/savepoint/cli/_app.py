"""Builds the ``savepoint`` parser from the registered subcommands and runs one with uniform errors:
a message and a non-zero exit code for bad input, never a traceback, and a quiet exit when the reader of
piped output goes away (``savepoint inspect --json ckpt | head``)."""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from savepoint.checkpoint.errors import CheckpointError
from savepoint.cli._common import CliError, add_version, clean, console, text

# Registering a subcommand: add "module" (whose ``register(subparsers)`` adds it) or "module:function" here.
SUBCOMMANDS: tuple[str, ...] = (
    "savepoint.cli.ls",
    "savepoint.cli.inspect",
    "savepoint.cli.diff",
    "savepoint.cli.verify",
    "savepoint.cli.export",
    "savepoint.cli.convert",
    "savepoint.cli.upgrade",
    "savepoint.plotting:add_parser",
)

EXIT_BAD_INPUT = 2
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE, what a shell reports for a command killed by a closed pipe


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="savepoint",
        description="List, inspect, compare, verify, export, convert and upgrade savepoint checkpoints "
        "(and Lightning ones). Run `savepoint COMMAND --help` for a command's options and examples.",
    )
    add_version(parser)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for entry in SUBCOMMANDS:
        module, _, function = entry.partition(":")
        getattr(importlib.import_module(module), function or "register")(sub)
    return parser


def _error(message: object) -> None:
    line = text("error: ", style="bold red")
    line.append(clean(message))
    console(stderr=True).print(line)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code = int(args.func(args) or 0)
        sys.stdout.flush()
        return code
    except BrokenPipeError:
        # The reader left (`| head`): point stdout at /dev/null so the interpreter's final flush is silent.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_BROKEN_PIPE
    except (CliError, CheckpointError, OSError, ValueError, TypeError) as err:
        _error(err)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        return 130
    except Exception as err:
        if os.environ.get("SAVEPOINT_DEBUG"):
            raise
        _error(
            f"unexpected {type(err).__name__} ({err}) while running `savepoint {args.command}`; the file may "
            f"be of a layout this version does not know. Set SAVEPOINT_DEBUG=1 for the traceback."
        )
        return EXIT_BAD_INPUT
