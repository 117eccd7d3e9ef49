"""The CLI's shared pieces: sizes, escape codes, registration."""

from __future__ import annotations

import argparse
import importlib

import pytest

from savepoint.cli import SUBCOMMANDS, build_parser
from savepoint.cli._common import add_command, clean, human_size


@pytest.mark.parametrize(
    ("n", "shown"),
    [
        (0, "0 B"),
        (712, "712 B"),
        (1536, "1.50 KiB"),
        (33_900, "33.1 KiB"),
        (5 * 1024**3, "5.00 GiB"),
        (394 * 1024, "394 KiB"),
        (None, "-"),
    ],
)
def test_human_size_keeps_small_sizes_visible(n, shown):
    assert human_size(n) == shown


def test_clean_removes_terminal_escape_codes():
    assert clean("a \x1b[1mbold\x1b[0m word") == "a bold word"


def test_every_subcommand_module_registers_itself():
    for entry in SUBCOMMANDS:
        module, _, function = entry.partition(":")
        assert callable(getattr(importlib.import_module(module), function or "register")), entry
    commands = build_parser()._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    assert {"ls", "inspect", "diff", "verify", "export", "convert", "upgrade", "plot"} <= set(commands)


def test_add_command_help_has_description_and_examples(capsys):
    parser = argparse.ArgumentParser(prog="savepoint")
    sub = parser.add_subparsers()
    add_command(
        sub, "hello", lambda a: 0, summary="s", description="Says hello.", examples=["savepoint hello"]
    )
    with pytest.raises(SystemExit):
        parser.parse_args(["hello", "--help"])
    out = capsys.readouterr().out
    assert "Says hello." in out and "examples:\n  savepoint hello" in out


def test_console_entry_point_is_the_dispatcher():
    from importlib.metadata import entry_points

    from savepoint.cli import main

    (script,) = [e for e in entry_points(group="console_scripts") if e.name == "savepoint"]
    assert script.value == "savepoint.cli:main" and script.load() is main
