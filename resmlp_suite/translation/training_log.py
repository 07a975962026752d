"""Read what ``fairseq-train --log-format json`` prints: validation curve and parameter count."""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

_VALID = re.compile(r"\| valid \| (\{.*\})\s*$")
_TRAIN_INNER = re.compile(r"\| train_inner \| (\{.*\})\s*$")
_PARAMS = re.compile(r"num\. shared model params: ([\d,]+)")


@dataclass
class TrainingLog:
    params: Optional[int] = None
    # (num_updates, validation loss in bits per token), sorted; a resumed run re-logging an update wins.
    valid_loss: list[tuple[int, float]] = field(default_factory=list)
    # (num_updates, target words per second) of each logged training interval, as fairseq reports them.
    train_wps: list[tuple[int, float]] = field(default_factory=list)


def read_training_log(path: Path) -> TrainingLog:
    log = TrainingLog()
    curve: dict[int, float] = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            if (match := _VALID.search(line)) is not None:
                stats = json.loads(match.group(1))
                curve[int(float(stats["valid_num_updates"]))] = float(stats["valid_loss"])
            elif (match := _TRAIN_INNER.search(line)) is not None:
                stats = json.loads(match.group(1))
                log.train_wps.append((int(float(stats["num_updates"])), float(stats["wps"])))
            elif (match := _PARAMS.search(line)) is not None:
                log.params = int(match.group(1).replace(",", ""))
    log.valid_loss = sorted(curve.items())
    return log
