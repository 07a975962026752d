"""Build a fairseq translation model in-process from ``fairseq-train`` flags, without a data-bin."""
from __future__ import annotations

from typing import Any, Sequence

from fairseq import options
from fairseq.data import Dictionary
from fairseq.tasks.translation import TranslationTask

from .fairseq_tools import USER_DIR


def synthetic_dictionary(size: int) -> Dictionary:
    """A joined dictionary of ``size`` symbols (fairseq's 4 specials included)."""
    dictionary = Dictionary()
    for i in range(size - len(dictionary)):
        dictionary.add_symbol(f"w{i}")
    return dictionary


def build_from_flags(flags: Sequence[str], dictionary: Dictionary) -> tuple[Any, Any]:
    """``(model, criterion)`` exactly as fairseq-train would build them from ``flags`` (``--arch`` etc.).

    The ResMLP user dir is always loaded, so ``--arch resmlp_seq2seq*`` works without naming it.
    """
    args = options.parse_args_and_arch(options.get_training_parser(), [
        "unused-data", "--task", "translation", "--user-dir", str(USER_DIR), *map(str, flags),
    ])
    task = TranslationTask(args, dictionary, dictionary)
    return task.build_model(args), task.build_criterion(args)
