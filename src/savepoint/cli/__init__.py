"""The ``savepoint`` command: list, inspect, diff, verify, export, convert and upgrade checkpoints.

One module per subcommand, each with a ``register(subparsers)`` function built on
`savepoint.cli._common.add_command`; `savepoint.cli._app` builds the parser and runs the handler with
uniform error handling. Registering a new subcommand is one line: add its module's name to
`savepoint.cli._app.SUBCOMMANDS`.
"""

from __future__ import annotations

from savepoint.cli._app import SUBCOMMANDS, build_parser, main

__all__ = ["SUBCOMMANDS", "build_parser", "main"]
