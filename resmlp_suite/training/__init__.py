"""Task-independent training helpers: checkpoints, torchrun process groups, metrics files, precision, distillation."""

from .checkpoint import (
    atomic_copy,
    atomic_save,
    read_checkpoint,
    resolve_resume,
    restore_rank_rng_state,
    rng_state,
    set_rng_state,
)
from .distill import DistillationLoss, create_teacher
from .distributed import (
    DistEnv,
    all_gather_objects,
    all_reduce_sum,
    cleanup_distributed,
    init_distributed,
    resolve_device,
)
from .metrics import MetricsLogger, read_metrics
from .precision import amp_dtype, autocast, grad_scaler

__all__ = [
    "atomic_copy",
    "atomic_save",
    "read_checkpoint",
    "resolve_resume",
    "restore_rank_rng_state",
    "rng_state",
    "set_rng_state",
    "DistillationLoss",
    "create_teacher",
    "DistEnv",
    "all_gather_objects",
    "all_reduce_sum",
    "cleanup_distributed",
    "init_distributed",
    "resolve_device",
    "MetricsLogger",
    "read_metrics",
    "amp_dtype",
    "autocast",
    "grad_scaler",
]
