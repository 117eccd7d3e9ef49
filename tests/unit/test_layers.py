"""The layers as drawn in docs/design.md, checked on the source: who may import whom at run time."""

from __future__ import annotations

import ast
from pathlib import Path

import savepoint

SRC = Path(savepoint.__file__).parent


def _runtime_imports(path: Path) -> list[str]:
    """Modules imported by `path` outside ``if TYPE_CHECKING:`` blocks (function-level imports included)."""
    tree = ast.parse(path.read_text())
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skip.update(id(child) for child in ast.walk(node))
    found = []
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.ImportFrom) and node.module:
            found.append(node.module)
        elif isinstance(node, ast.Import):
            found.extend(alias.name for alias in node.names)
    return found


def test_strategies_import_nothing_from_the_trainer_at_run_time():
    offenders = {
        path.name: [m for m in _runtime_imports(path) if m.startswith("savepoint.trainer")]
        for path in (SRC / "strategies").glob("*.py")
    }
    assert {k: v for k, v in offenders.items() if v} == {}


def test_checkpoint_format_modules_import_nothing_from_the_io_layer():
    # verify.py is a tool over both layers (it reads files); the format itself stays below the IO.
    offenders = {
        path.name: [m for m in _runtime_imports(path) if m.startswith("savepoint.plugins")]
        for path in (SRC / "checkpoint").glob("*.py")
        if path.name != "verify.py"
    }
    assert {k: v for k, v in offenders.items() if v} == {}


def test_only_the_io_layer_lists_or_globs_checkpoint_folders():
    offenders = [
        str(path.relative_to(SRC))
        for path in SRC.rglob("*.py")
        if "glob" in _runtime_imports(path) and path.parent.name != "io"
    ]
    assert offenders == []
