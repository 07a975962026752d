"""Joint sentencepiece vocabulary for both languages, and encoding to space-separated pieces.

Pieces joined by spaces are what ``fairseq-preprocess`` reads and what ``fairseq-generate
--post-process sentencepiece`` turns back into text.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import sentencepiece as spm

from ..files import atomic_open


def train_joint_sentencepiece(
    inputs: Sequence[Path],
    model_prefix: Path,
    vocab_size: int,
    model_type: str = "unigram",
    input_sentence_size: int = 10_000_000,
    num_threads: int = 2,
) -> Path:
    """Train one model on the text of both languages; returns ``<model_prefix>.model``.

    ``hard_vocab_limit=False`` lets a small corpus end with fewer pieces than asked instead of
    failing; full character coverage keeps rare letters (umlauts, accents) as pieces, not ``<unk>``.
    """
    model_prefix = Path(model_prefix)
    model_prefix.parent.mkdir(parents=True, exist_ok=True)
    partial = model_prefix.with_name(model_prefix.name + ".partial")
    spm.SentencePieceTrainer.train(
        input=[str(p) for p in inputs],
        model_prefix=str(partial),
        vocab_size=vocab_size,
        model_type=model_type,
        character_coverage=1.0,
        input_sentence_size=input_sentence_size,
        shuffle_input_sentence=True,
        hard_vocab_limit=False,
        num_threads=num_threads,
        minloglevel=2,
    )
    # The .model file is what callers test for: it arrives last, and whole.
    for suffix in (".vocab", ".model"):
        os.replace(partial.with_name(partial.name + suffix), model_prefix.with_name(model_prefix.name + suffix))
    return model_prefix.with_name(model_prefix.name + ".model")


def encode_file(model: Path, src: Path, dst: Path, batch_lines: int = 10_000) -> int:
    """Write each line of ``src`` as space-separated pieces to ``dst``; returns the line count."""
    processor = spm.SentencePieceProcessor(model_file=str(model))
    count = 0
    with open(src, encoding="utf-8") as fin, atomic_open(dst) as fout:
        batch: list[str] = []
        for line in fin:
            batch.append(line.rstrip("\n"))
            if len(batch) == batch_lines:
                count += _write_encoded(processor, batch, fout)
                batch = []
        count += _write_encoded(processor, batch, fout)
    return count


def _write_encoded(processor: spm.SentencePieceProcessor, lines: list[str], fout) -> int:
    for pieces in processor.encode(lines, out_type=str):
        fout.write(" ".join(pieces) + "\n")
    return len(lines)
