"""`CSVLogger`: ``metrics.csv`` and ``hparams.yaml`` in ``<save_dir>/<name>/version_<N>``, readable without
any tool (``pandas.read_csv``, a spreadsheet, ``savepoint plot``)."""

from __future__ import annotations

import csv
import os
from collections.abc import Mapping
from typing import Any

from savepoint.hparams import to_plain
from savepoint.loggers.logger import FolderLogger


class CSVLogger(FolderLogger):
    """``metrics.csv`` (one row per ``log_metrics`` call: ``step``, then a column per metric, empty where a
    row has no value) and ``hparams.yaml``.

    Rows are buffered and written by ``save()`` (each epoch end and before each checkpoint); a column
    first seen late rewrites the file with the wider header. ``CSVLogger(save_dir, name="runs",
    version=None)``: ``version=None`` takes the next free ``version_N``; a string names the folder.
    """

    NAME_HPARAMS_FILE = "hparams.yaml"
    NAME_METRICS_FILE = "metrics.csv"

    def __init__(
        self, save_dir: str | os.PathLike, name: str = "runs", version: int | str | None = None
    ) -> None:
        super().__init__(save_dir, name, version)
        self._rows: list[dict[str, Any]] = []
        self._columns: list[str] = []
        self._written_rows = 0
        self._hparams: dict[str, Any] = {}
        self._logged_rows = 0  # rows logged by this run and the runs it resumes (the checkpointed position)

    def log_hyperparams(self, params: Mapping[str, Any]) -> None:
        import yaml

        self._hparams.update(to_plain(dict(params)))
        os.makedirs(self.log_dir, exist_ok=True)
        tmp = os.path.join(self.log_dir, f".{self.NAME_HPARAMS_FILE}.tmp")
        with open(tmp, "w") as f:
            yaml.safe_dump(self._hparams, f, sort_keys=False)
        os.replace(tmp, os.path.join(self.log_dir, self.NAME_HPARAMS_FILE))

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        row: dict[str, Any] = {"step": step}
        row.update(
            {k: v if isinstance(v, int) and not isinstance(v, bool) else float(v) for k, v in metrics.items()}
        )
        self._rows.append(row)
        self._logged_rows += 1

    def save(self) -> None:
        if not self._rows:
            return
        os.makedirs(self.log_dir, exist_ok=True)
        path = os.path.join(self.log_dir, self.NAME_METRICS_FILE)
        new_columns = [k for row in self._rows for k in row if k not in self._columns]
        if new_columns or not os.path.exists(path):
            existing: list[dict[str, Any]] = []
            if os.path.exists(path):
                with open(path, newline="") as f:
                    reader = csv.DictReader(f)
                    existing = list(reader)
                    for k in reader.fieldnames or []:
                        if k not in self._columns:
                            self._columns.append(k)
            for k in new_columns:
                if k not in self._columns:
                    self._columns.append(k)
            tmp = path + ".tmp"
            with open(tmp, "w", newline="") as f:
                writer = csv.DictWriter(f, fieldnames=self._columns)
                writer.writeheader()
                writer.writerows(existing)
                writer.writerows(self._rows)
            os.replace(tmp, path)
        else:
            with open(path, "a", newline="") as f:
                csv.DictWriter(f, fieldnames=self._columns).writerows(self._rows)
        self._rows = []

    def state_dict(self) -> dict[str, Any]:
        return {"rows": self._logged_rows}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Keep the first ``state["rows"]`` rows of ``metrics.csv``: the rows a crashed run wrote after the
        checkpoint are logged again by the resumed run."""
        keep = int(state.get("rows", 0))
        self._logged_rows = keep
        path = os.path.join(self.log_dir, self.NAME_METRICS_FILE)
        if not os.path.exists(path):
            return
        with open(path, newline="") as f:
            reader = csv.DictReader(f)
            rows = list(reader)
            self._columns = list(reader.fieldnames or [])
        if len(rows) <= keep:
            return
        tmp = path + ".tmp"
        with open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=self._columns)
            writer.writeheader()
            writer.writerows(rows[:keep])
        os.replace(tmp, path)
