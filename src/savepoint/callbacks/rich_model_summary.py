"""`RichModelSummary`: the `ModelSummary` table drawn with rich."""

from __future__ import annotations

from typing import Any

from savepoint.callbacks.model_summary import ModelSummary, Summary


class RichModelSummary(ModelSummary):
    """`ModelSummary` as a rich table (``header_style``, ``title`` and other ``rich.table.Table`` options
    as keywords)."""

    def __init__(self, max_depth: int = 1, **summarize_kwargs: Any) -> None:
        super().__init__(max_depth, **summarize_kwargs)

    def summarize(self, summary: Summary, **kwargs: Any) -> None:
        from rich import get_console
        from rich.table import Table

        header, rows = summary.table()
        table = Table(header_style=kwargs.pop("header_style", "bold magenta"), **kwargs)
        for i, name in enumerate(header):
            table.add_column(name, justify="right" if i in (0, 3) else "left")
        for row in rows:
            table.add_row(*row)
        console = get_console()
        console.print(table)
        for value, label in summary.totals():
            console.print(f"[bold]{label}[/]: {value}")
