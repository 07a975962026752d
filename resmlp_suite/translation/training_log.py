"""Read what ``fairseq-train --log-format json`` prints (one or more processes appended to one file: a run
and its resumptions): validation curve, parameter count and training time."""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Optional

_VALID = re.compile(r"\| valid \| (\{.*\})\s*$")
_TRAIN_INNER = re.compile(r"\| train_inner \| (\{.*\})\s*$")
_TRAIN_EPOCH = re.compile(r"\| train \| (\{.*\})\s*$")
_PARAMS = re.compile(r"num\. shared model params: ([\d,]+)")
# Each process logs one of these as it starts: where it starts from.
_STARTS = re.compile(r"No existing checkpoint found|Loaded checkpoint .* @ (\d+) updates\)")
_TIME = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d) ")


@dataclass
class TrainingLog:
    params: Optional[int] = None
    # (num_updates, validation loss in bits per token), sorted; a resumed run re-logging an update wins.
    valid_loss: list[tuple[int, float]] = field(default_factory=list)
    # (num_updates, target words per second) of each logged training interval, as fairseq reports them.
    train_wps: list[tuple[int, float]] = field(default_factory=list)
    # Seconds of training, validation included, from the lines' time stamps (fairseq's own "wall" clock
    # stops in a resumed process). Each process counts from its start up to the update the next one resumed
    # from: the work a killed process lost and its successor redid is counted once.
    wall_s: Optional[float] = None


def read_training_log(path: Path) -> TrainingLog:
    log = TrainingLog()
    curve: dict[int, float] = {}
    # per process: the update it started from, its start time and (update, time) of its training lines
    processes: list[tuple[int, datetime, list[tuple[int, datetime]]]] = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            if (match := _VALID.search(line)) is not None:
                stats = json.loads(match.group(1))
                curve[int(float(stats["valid_num_updates"]))] = float(stats["valid_loss"])
            elif (match := _TRAIN_INNER.search(line)) is not None:
                stats = json.loads(match.group(1))
                update = int(float(stats["num_updates"]))
                log.train_wps.append((update, float(stats["wps"])))
                processes[-1][2].append((update, _time(line)))
            elif (match := _TRAIN_EPOCH.search(line)) is not None:  # the epoch's stats, "train_"-prefixed
                processes[-1][2].append((int(float(json.loads(match.group(1))["train_num_updates"])), _time(line)))
            elif (match := _STARTS.search(line)) is not None:
                processes.append((int(match.group(1) or 0), _time(line), []))
            elif (match := _PARAMS.search(line)) is not None:
                log.params = int(match.group(1).replace(",", ""))
    log.valid_loss = sorted(curve.items())
    ends = [start for start, _, _ in processes[1:]] + [None]
    counted = [max((time for update, time in lines if end is None or update <= end), default=began) - began
               for (_, began, lines), end in zip(processes, ends)]
    log.wall_s = sum(c.total_seconds() for c in counted) if any(lines for _, _, lines in processes) else None
    return log


def _time(line: str) -> datetime:
    if (match := _TIME.search(line)) is None:
        raise ValueError(f"a fairseq-train log line without its time stamp "
                         f"(expected 'YYYY-MM-DD HH:MM:SS | ...'): {line!r}")
    return datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S")
