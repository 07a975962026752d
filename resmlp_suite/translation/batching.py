"""Give back the last batch that fairseq's ``batch_by_size`` drops.

In fairseq 0.12 (``fairseq/data/data_utils.py``, upstream issue #5036) ``batch_by_size`` ends with
``if bsz_mult > 1 and len(b[-1]) % bsz_mult != 0: b = b[:-1]``: the final batch is discarded when
its size is not a multiple of ``--required-batch-size-multiple`` (default 8). fairseq-generate on a
1,007-sentence test set then translates 1,000 sentences and reports BLEU on those, and training and
validation lose the same tail (up to 7 sentences) every epoch.

:func:`install` wraps the function so that the indices it left out come back as one more batch.
The Cython batchers cut ``indices`` into consecutive runs, so what was dropped is exactly the tail
of ``indices`` after the last kept batch. The wrapper is installed only if a probe shows the drop,
so a fairseq that no longer has the bug is left untouched. The translation user-dir imports this
module, which installs it in every fairseq tool that loads the plugin.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
from fairseq.data import data_utils

_original_batch_by_size: Callable = data_utils.batch_by_size


def _drops_tail(batch_by_size: Callable) -> bool:
    probe = np.arange(9, dtype=np.int64)
    batches = batch_by_size(probe, lambda i: 1, num_tokens_vec=np.ones(9, dtype=np.int64),
                            required_batch_size_multiple=8)
    return sum(len(b) for b in batches) != len(probe)


def batch_by_size_keeping_tail(indices, num_tokens_fn, num_tokens_vec=None, max_tokens=None, max_sentences=None,
                               required_batch_size_multiple=1, fixed_shapes=None) -> list[np.ndarray]:
    """``fairseq.data.data_utils.batch_by_size`` with every index of ``indices`` in some batch."""
    if not isinstance(indices, np.ndarray):
        indices = np.fromiter(indices, dtype=np.int64, count=-1)
    batches = _original_batch_by_size(
        indices, num_tokens_fn, num_tokens_vec=num_tokens_vec, max_tokens=max_tokens, max_sentences=max_sentences,
        required_batch_size_multiple=required_batch_size_multiple, fixed_shapes=fixed_shapes,
    )
    if fixed_shapes is not None:  # that path never had the drop
        return batches
    batched = sum(len(b) for b in batches)
    if batched < len(indices):
        batches = list(batches) + [indices[batched:]]
    return batches


def install() -> bool:
    """Replace ``data_utils.batch_by_size`` if it drops a tail; returns whether it is (now) replaced."""
    if data_utils.batch_by_size is batch_by_size_keeping_tail:
        return True
    if not _drops_tail(_original_batch_by_size):
        return False
    data_utils.batch_by_size = batch_by_size_keeping_tail
    return True


install()
