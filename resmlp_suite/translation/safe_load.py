"""Let ``torch.load``'s weights-only unpickler read fairseq checkpoints.

Since torch 2.6 ``torch.load`` defaults to ``weights_only=True``, which refuses every global it does
not know; fairseq's ``checkpoint_utils.load_checkpoint_to_cpu`` calls it without the argument, so
fairseq-generate / fairseq-interactive fail on checkpoints holding other objects. Listing the
globals of checkpoints written by fairseq-train (``torch.serialization.get_unsafe_globals_in_checkpoint``)
gives exactly:

- ``numpy.ndarray``, ``numpy.dtype``, the int64 dtype class and numpy's array reconstructor: the
  BLEU n-gram counts (int64 arrays) that ``--eval-bleu`` keeps in the metrics state
  (``extra_state``) of every checkpoint;
- ``argparse.Namespace``: the ``args`` entry of checkpoints from fairseq <= 0.10 (and of its
  released models), which fairseq still upgrades on load.

Only these are allowed, for the whole process: ``weights_only`` stays on, so a file holding any
other class is still refused. Each is registered under its explicit name, ``(obj, "module.name")``:
timm's checkpoint loader wraps ``torch.load`` in ``safe_globals([argparse.Namespace])``, whose exit
removes the bare class from the process-wide list, and would so break every later fairseq load.
"""
from __future__ import annotations

import argparse

import numpy as np
import torch

# The reconstructor's module moved in numpy 2 (numpy.core -> numpy._core): ask the array itself.
_NUMPY_RECONSTRUCT = np.ndarray((0,)).__reduce__()[0]

FAIRSEQ_CHECKPOINT_GLOBALS = [
    (obj, f"{obj.__module__}.{obj.__name__}")
    for obj in (argparse.Namespace, np.ndarray, np.dtype, type(np.dtype(np.int64)), _NUMPY_RECONSTRUCT)
]


def allow_fairseq_checkpoints() -> None:
    """Allow-list the classes fairseq checkpoints contain for ``torch.load(weights_only=True)``."""
    torch.serialization.add_safe_globals(FAIRSEQ_CHECKPOINT_GLOBALS)
