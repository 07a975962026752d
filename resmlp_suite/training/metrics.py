"""Per-epoch metrics of a run: ``metrics.csv``, ``metrics.json`` and TensorBoard scalars in the run directory."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path
from typing import Any, Optional

from ..files import atomic_write, atomic_write_text

__all__ = ["MetricsLogger", "read_metrics"]

CSV_NAME = "metrics.csv"
JSON_NAME = "metrics.json"


def read_metrics(path: os.PathLike | str) -> list[dict[str, Any]]:
    """Rows of a ``metrics.json`` or ``metrics.csv`` file (CSV numbers parsed back to float)."""
    path = Path(path)
    if path.suffix == ".json":
        return json.loads(path.read_text())
    if path.suffix == ".csv":
        with path.open(newline="") as f:
            return [{k: _parse(v) for k, v in row.items()} for row in csv.DictReader(f)]
    raise ValueError(f"metrics file must end in .json or .csv, got {path}")


def _parse(value: str) -> Any:
    try:
        return float(value)
    except ValueError:
        return value


class MetricsLogger:
    """Collects one row per epoch and rewrites the CSV/JSON files after each, so a killed run keeps its history.

    Rows count epochs from 1. On resume, rows after ``completed_epochs`` (work about to be redone)
    are dropped, and TensorBoard purges events after ``start_step``.
    """

    def __init__(self, run_dir: os.PathLike | str, completed_epochs: int = 0, start_step: int = 0) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.json_path = self.run_dir / JSON_NAME
        self.csv_path = self.run_dir / CSV_NAME
        self.rows: list[dict[str, Any]] = []
        if completed_epochs > 0 and self.json_path.exists():
            self.rows = [r for r in read_metrics(self.json_path) if r["epoch"] <= completed_epochs]
        # Events after the checkpointed step came from the interrupted epoch: TensorBoard drops them.
        self.writer = SummaryWriter(
            str(self.run_dir / "tensorboard"), purge_step=start_step + 1 if start_step > 0 else None
        )

    def scalar(self, tag: str, value: float, step: int) -> None:
        self.writer.add_scalar(tag, value, step)

    def log_epoch(self, row: dict[str, Any], step: int) -> None:
        """Append ``row`` (must hold ``epoch``), write the files, add every number to TensorBoard at ``step``."""
        self.rows.append(row)
        for key, value in row.items():
            if key != "epoch" and isinstance(value, (int, float)):
                self.writer.add_scalar(f"epoch/{key}", value, step)
        self.writer.flush()
        atomic_write_text(self.json_path, json.dumps(self.rows, indent=1))
        atomic_write(self.csv_path, self._write_csv)

    def _write_csv(self, tmp: str) -> None:
        fields: list[str] = []
        for row in self.rows:
            fields += [k for k in row if k not in fields]
        with open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=fields)
            writer.writeheader()
            writer.writerows(self.rows)

    def close(self) -> None:
        self.writer.close()

    @property
    def last(self) -> Optional[dict[str, Any]]:
        return self.rows[-1] if self.rows else None
