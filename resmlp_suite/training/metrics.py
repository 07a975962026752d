"""Per-epoch metrics of a run: ``metrics.csv``, ``metrics.json`` and TensorBoard scalars in the run directory."""

from __future__ import annotations

import csv
import json
import logging
import os
from pathlib import Path
from typing import Any, Optional

from ..files import atomic_write, atomic_write_text

__all__ = ["MetricsLogger", "read_metrics", "read_scalars"]

_logger = logging.getLogger(__name__)

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


def read_scalars(run_dir: os.PathLike | str, tag: str) -> list[tuple[int, float]]:
    """``(step, value)`` of a TensorBoard scalar that :class:`MetricsLogger` wrote in ``run_dir``, in step order."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(Path(run_dir) / "tensorboard"), size_guidance={"scalars": 0})
    events.Reload()
    if tag not in events.Tags()["scalars"]:
        raise ValueError(f"{run_dir}: no TensorBoard scalar {tag!r}; it has {sorted(events.Tags()['scalars'])}")
    return sorted((event.step, event.value) for event in events.Scalars(tag))


def _parse(value: str) -> Any:
    try:
        return float(value)
    except ValueError:
        return value


class MetricsLogger:
    """Collects one row per epoch and rewrites the CSV/JSON files after each, so a killed run keeps its history.

    Rows count epochs from 1. On resume, the history comes from the checkpoint (``history``, the rows
    it was saved with) or, for a checkpoint without one, from the files; rows after ``completed_epochs``
    (work about to be redone) are dropped, the files are rewritten to match, and TensorBoard purges
    events after ``start_step``. A metrics file that cannot be read is set aside (renamed), never deleted.
    """

    def __init__(self, run_dir: os.PathLike | str, completed_epochs: int = 0, start_step: int = 0,
                 history: Optional[list[dict[str, Any]]] = None) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.json_path = self.run_dir / JSON_NAME
        self.csv_path = self.run_dir / CSV_NAME
        if history is None and completed_epochs > 0:
            history = self._recover()
        self.rows: list[dict[str, Any]] = [dict(r) for r in history or () if r["epoch"] <= completed_epochs]
        if self.rows:
            self._write()
        # Events after the checkpointed step came from the interrupted epoch: TensorBoard drops them.
        self.writer = SummaryWriter(
            str(self.run_dir / "tensorboard"), purge_step=start_step + 1 if start_step > 0 else None
        )

    def _recover(self) -> list[dict[str, Any]]:
        """The rows of the first metrics file that reads, setting aside the ones that do not."""
        for path in (self.json_path, self.csv_path):
            if not path.is_file():
                continue
            try:
                rows = read_metrics(path)
                if all(isinstance(r, dict) and "epoch" in r for r in rows):
                    return rows
                error = "rows without an epoch"
            except (ValueError, csv.Error) as failure:  # json.JSONDecodeError is a ValueError
                error = str(failure)
            aside = path.with_name(f"{path.name}.damaged")
            os.replace(path, aside)
            _logger.warning("%s cannot be read (%s): set aside as %s", path, error, aside)
        _logger.warning("no readable metrics history in %s: the metrics files restart from the resumed epoch",
                        self.run_dir)
        return []

    def scalar(self, tag: str, value: float, step: int) -> None:
        self.writer.add_scalar(tag, value, step)

    def log_epoch(self, row: dict[str, Any], step: int) -> None:
        """Append ``row`` (must hold ``epoch``), write the files, add every number to TensorBoard at ``step``."""
        self.rows.append(row)
        for key, value in row.items():
            if key != "epoch" and isinstance(value, (int, float)):
                self.writer.add_scalar(f"epoch/{key}", value, step)
        self.writer.flush()
        self._write()

    def _write(self) -> None:
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
