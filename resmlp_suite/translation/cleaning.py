"""Parallel-corpus cleaning: the Moses steps of fairseq's WMT14 recipe, in Python.

``normalize_line`` stands for ``normalize-punctuation.perl`` + ``remove-non-printing-char.perl``
(via sacremoses); ``clean_parallel`` for ``clean-corpus-n.perl -ratio 1.5 ... 1 250``, applied to
the subword-encoded files as fairseq's ``prepare-wmt14en2de.sh`` does.
"""
from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from sacremoses import MosesPunctNormalizer

from ..files import atomic_open


@lru_cache(maxsize=None)
def _normalizer(lang: str) -> MosesPunctNormalizer:
    return MosesPunctNormalizer(lang=lang)


def _printable(ch: str) -> bool:
    # remove-non-printing-char.perl drops Unicode category C (controls, format, unassigned), keeps tab.
    return ch == "\t" or not unicodedata.category(ch).startswith("C")


def normalize_line(line: str, lang: str) -> str:
    """Moses punctuation normalisation, then non-printing characters dropped."""
    text = "".join(ch for ch in _normalizer(lang).normalize(line) if _printable(ch))
    return " ".join(text.split())


@dataclass(frozen=True)
class LengthFilter:
    """Keep a pair when both sides have ``min_len..max_len`` tokens and their ratio is <= ``max_ratio``."""

    min_len: int = 1
    max_len: int = 250
    max_ratio: float = 1.5

    def keep(self, source: str, target: str) -> bool:
        n_src, n_tgt = len(source.split()), len(target.split())
        if not (self.min_len <= n_src <= self.max_len and self.min_len <= n_tgt <= self.max_len):
            return False
        return max(n_src, n_tgt) <= self.max_ratio * min(n_src, n_tgt)


def clean_parallel(
    source_in: Path, target_in: Path, source_out: Path, target_out: Path, length_filter: LengthFilter
) -> tuple[int, int]:
    """Copy the pairs ``length_filter`` keeps; returns ``(kept, total)``. Fails on misaligned files."""
    kept = total = 0
    with open(source_in, encoding="utf-8") as fs, open(target_in, encoding="utf-8") as ft, \
            atomic_open(source_out) as out_s, atomic_open(target_out) as out_t:
        for source, target in zip(fs, ft, strict=True):
            total += 1
            if length_filter.keep(source, target):
                out_s.write(source)
                out_t.write(target)
                kept += 1
    return kept, total
