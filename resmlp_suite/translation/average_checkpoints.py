"""Average the parameters of fairseq checkpoints (port of fairseq's ``scripts/average_checkpoints.py``).

fairseq's pip package does not ship its ``scripts/``; this port loads each checkpoint with
``torch.load(weights_only=True)`` (only tensors, containers and ``argparse.Namespace`` are
unpickled) and writes the result atomically. As in fairseq, everything but ``model`` is copied
from the first checkpoint, half-precision tensors are averaged in float32.
"""
from __future__ import annotations

import re
from collections import OrderedDict
from pathlib import Path
from typing import Any, Optional, Sequence

import torch

from ..files import atomic_open
from ..training.checkpoint import read_tensor_file
from .safe_load import allow_fairseq_checkpoints

_EPOCH_CHECKPOINT = re.compile(r"checkpoint(\d+)\.pt")
_UPDATE_CHECKPOINT = re.compile(r"checkpoint_\d+_(\d+)\.pt")


def load_checkpoint(path: Path) -> dict[str, Any]:
    allow_fairseq_checkpoints()  # for good: torch's safe_globals context would also remove the plugin's on exit
    state = read_tensor_file(path)
    if not isinstance(state, dict) or "model" not in state:
        raise ValueError(f"{path} is not a fairseq checkpoint: expected a dict with a 'model' entry")
    return state


def average_checkpoints(paths: Sequence[Path]) -> dict[str, Any]:
    """The first checkpoint's state with ``model`` replaced by the element-wise mean over ``paths``."""
    if not paths:
        raise ValueError("no checkpoints to average")
    first: Optional[dict[str, Any]] = None
    sums: "OrderedDict[str, torch.Tensor]" = OrderedDict()
    for path in paths:
        state = load_checkpoint(path)
        params = state["model"]
        if first is None:
            first = state
        elif list(params) != list(sums):
            raise KeyError(f"{path} has parameters {list(params)}, expected those of {paths[0]}: {list(sums)}")
        for name, value in params.items():
            value = value.float() if value.dtype == torch.half else value
            # clone(): tied parameters share storage, and in-place sums must not alias the checkpoint.
            sums[name] = value.clone() if name not in sums else sums[name].add_(value)
    for value in sums.values():
        if value.is_floating_point():
            value.div_(len(paths))
        else:  # integer buffers (e.g. step counters) cannot be averaged in place
            value.copy_(torch.div(value, len(paths), rounding_mode="floor"))
    first["model"] = sums
    return first


def last_checkpoints(directory: Path, count: int, update_based: bool = False,
                     upper_bound: Optional[int] = None) -> list[Path]:
    """The ``count`` latest ``checkpointN.pt`` (or ``checkpoint_E_U.pt``) files, newest first."""
    pattern = _UPDATE_CHECKPOINT if update_based else _EPOCH_CHECKPOINT
    found = []
    for path in Path(directory).iterdir():
        match = pattern.fullmatch(path.name)
        if match and (upper_bound is None or int(match.group(1)) <= upper_bound):
            found.append((int(match.group(1)), path))
    if len(found) < count:
        raise FileNotFoundError(
            f"found {len(found)} checkpoints matching {pattern.pattern} in {directory}, need {count}"
        )
    return [path for _, path in sorted(found, reverse=True)[:count]]


def checkpoint_update(path: Path) -> int:
    """The update a ``checkpoint_E_U.pt`` file was saved at."""
    match = _UPDATE_CHECKPOINT.fullmatch(Path(path).name)
    if match is None:
        raise ValueError(f"{path} is not an update checkpoint: expected a name like checkpoint_E_U.pt")
    return int(match.group(1))


def save_checkpoint(state: dict[str, Any], path: Path) -> None:
    with atomic_open(Path(path), "wb") as f:
        torch.save(state, f)
