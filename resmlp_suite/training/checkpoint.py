"""Training checkpoints: atomic writes, ``weights_only`` reads, RNG state capture, resume lookup.

A checkpoint is a plain dict of tensors, numbers, strings and containers, so ``torch.load(...,
weights_only=True)`` reads it: RNG states are converted to tensors/tuples and the run's config is
stored as a YAML string.
"""

from __future__ import annotations

import logging
import random
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence, Union

import numpy as np
import safetensors.torch
import torch
from omegaconf import DictConfig, OmegaConf
from timm.utils import random_seed

from ..files import PathLike, atomic_copy, atomic_write
from .distributed import DistEnv

__all__ = [
    "LAST",
    "BEST",
    "atomic_save",
    "atomic_copy",
    "read_checkpoint",
    "read_tensor_file",
    "rng_state",
    "set_rng_state",
    "restore_rank_rng_state",
    "resolve_resume",
    "read_resume_checkpoint",
    "resume_way_out",
    "RESULT_NEUTRAL_KEYS",
    "config_changes",
]

_logger = logging.getLogger(__name__)

LAST = "last.pt"
BEST = "best.pt"


def atomic_save(obj: Any, path: PathLike) -> None:
    """``torch.save`` to a temporary file in the same folder, then ``os.replace`` onto ``path``."""
    atomic_write(path, lambda tmp: torch.save(obj, tmp))


def read_tensor_file(path: PathLike, map_location: Union[str, torch.device] = "cpu") -> Any:
    """What a ``.safetensors`` file (by extension) or a ``torch.save`` file holds, read without running
    pickled code (``weights_only=True``). Every file that is neither (text, empty, truncated, a pickle of
    other objects) raises one ValueError that names it."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist (expected a .pth, .pt or .safetensors file)")
    try:
        if path.suffix == ".safetensors":
            return safetensors.torch.load_file(path, device=str(map_location))
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:  # what each broken file raises differs: IndexError, EOFError, RuntimeError, ...
        raise ValueError(
            f"{path} ({path.stat().st_size} bytes) is not a checkpoint this suite can read: expected a torch.save "
            f"file (read with weights_only=True) or a .safetensors file; reading it failed with "
            f"{type(error).__name__}: {error}"
        ) from error


def read_checkpoint(path: PathLike, map_location: Union[str, torch.device] = "cpu") -> dict[str, Any]:
    """Load a training checkpoint with ``weights_only=True`` (no arbitrary code runs while reading it)."""
    ckpt = read_tensor_file(path, map_location)
    if not isinstance(ckpt, dict):
        raise ValueError(f"checkpoint {path} should hold a dict, got {type(ckpt).__name__}")
    return ckpt


def rng_state() -> dict[str, Any]:
    """The python, numpy, torch and CUDA generator states, in weights_only-loadable types."""
    _, key, pos, has_gauss, gauss = np.random.get_state()
    return {
        "python": random.getstate(),
        "numpy": {
            "key": torch.from_numpy(key.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "gauss": float(gauss),
        },
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` captured."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    np_state = state["numpy"]
    np.random.set_state(
        (
            "MT19937",
            np_state["key"].numpy().astype(np.uint32),
            np_state["pos"],
            np_state["has_gauss"],
            np_state["gauss"],
        )
    )
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def restore_rank_rng_state(states: Sequence[dict[str, Any]], env: DistEnv, seed: int, source: PathLike) -> None:
    """Put this process's generators where ``states`` (:func:`rng_state` of every rank of the run that wrote
    ``source``) left them; a run with another number of processes reseeds them with ``seed`` instead, and warns."""
    if len(states) == env.world_size:
        set_rng_state(states[env.rank])
        return
    _logger.warning("%s was written by %d processes, this run has %d: random streams are reseeded, not restored",
                    source, len(states), env.world_size)
    random_seed(seed, env.rank)


def resolve_resume(resume: Optional[str], run_dir: PathLike) -> Optional[Path]:
    """The checkpoint to resume from: ``auto`` = ``run_dir/last.pt`` if present, a path, or None (fresh start)."""
    run_dir = Path(run_dir)
    if resume is None or str(resume).lower() in ("", "none", "null"):
        if (run_dir / LAST).exists():
            _logger.warning("train.resume is null: starting fresh, %s will be overwritten", run_dir / LAST)
        return None
    if resume == "auto":
        last = run_dir / LAST
        return last if last.is_file() else None
    path = Path(resume)
    if not path.is_file():
        raise FileNotFoundError(f"train.resume={resume!r}: no such checkpoint (expected 'auto', null or a file path)")
    return path


def resume_way_out(path: PathLike) -> str:
    """What a user can do when the checkpoint ``path`` cannot be resumed from."""
    return f"start over with train.resume=null (it overwrites {path}) or choose another output_dir"


# Options that do not change what a run computes (the same list is hydra's override_dirname exclude_keys in
# configs/train.yaml and configs/train_dino.yaml, so that a sweep's job directories ignore them too).
RESULT_NEUTRAL_KEYS = frozenset({"name", "output_dir", "train.resume", "train.device", "train.progress",
                                 "train.log_every", "train.num_threads", "data.root", "data.num_workers"})
# Besides those, a resumed run may change train.epochs, so that a finished run can be extended.
RESUME_MAY_CHANGE = RESULT_NEUTRAL_KEYS | {"train.epochs"}


def _flat(tree: Any, prefix: str = "") -> dict[str, Any]:
    """Dotted keys of a nested config; an empty mapping is a value of its own."""
    if not isinstance(tree, Mapping) or not tree:
        return {prefix: tree}
    return {key: value for name, child in tree.items()
            for key, value in _flat(child, f"{prefix}.{name}" if prefix else str(name)).items()}


def config_changes(saved: str, cfg: DictConfig, may_change: frozenset[str] = RESUME_MAY_CHANGE) -> list[str]:
    """``key: before -> now`` for each option, but ``may_change``, that differs between ``saved`` (a checkpoint's
    config, as YAML) and ``cfg``."""
    unset = "(unset)"
    before = _flat(OmegaConf.to_container(OmegaConf.create(saved)))
    now = _flat(OmegaConf.to_container(cfg, resolve=True))
    return [f"{key}: {before.get(key, unset)!r} -> {now.get(key, unset)!r}" for key in sorted(before.keys() | now.keys())
            if key not in may_change and before.get(key, unset) != now.get(key, unset)]


def read_resume_checkpoint(path: PathLike, cfg: Optional[DictConfig] = None) -> dict[str, Any]:
    """:func:`read_checkpoint` on CPU for resuming: a file that does not read is kept, and the error says so.

    With ``cfg``, the run's options are compared with those the checkpoint was trained with: ``train.resume=auto``
    refuses a change (two runs would mix without a word), an explicit ``train.resume=PATH`` warns and goes on.
    """
    try:
        state = read_checkpoint(path, map_location="cpu")
    except ValueError as error:
        raise ValueError(f"cannot resume from {path}: {error}. The file is kept; {resume_way_out(path)}") from error
    changes = config_changes(state["config"], cfg) if cfg is not None and "config" in state else []
    if changes and cfg.train.resume == "auto":
        raise ValueError(
            f"cannot resume from {path} (train.resume=auto): it was trained with other options, "
            f"{'; '.join(changes)} (train.epochs and options that do not change the result may "
            f"differ); {resume_way_out(path)}, or continue from it on purpose with train.resume={path}")
    if changes:
        _logger.warning("resuming from %s, trained with other options: %s", path, "; ".join(changes))
    return state
