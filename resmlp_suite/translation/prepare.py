"""From plain parallel text to a fairseq ``data-bin``: joint sentencepiece, cleaning, binarising.

Input: ``<raw_dir>/{train,valid,test}.{src,tgt}``, one sentence a line. Output under ``out_dir``:
``spm.model``, ``spm/`` (encoded and cleaned text) and ``data-bin/`` (``fairseq-preprocess
--joined-dictionary``). Each step is skipped when its output exists, and each output is written
atomically, so an interrupted preparation resumes where it stopped. The test split is never
filtered: every test sentence is translated and scored.
"""
from __future__ import annotations

import json
import os
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .cleaning import LengthFilter, clean_parallel
from .fairseq_tools import run_fairseq
from ..files import atomic_write_text
from .subword import encode_file, train_joint_sentencepiece

SPLITS = ("train", "valid", "test")


@dataclass(frozen=True)
class PrepareConfig:
    source_lang: str
    target_lang: str
    vocab_size: int = 32000
    spm_model_type: str = "unigram"
    spm_input_sentences: int = 10_000_000
    length_filter: LengthFilter = field(default_factory=LengthFilter)
    workers: int = 2


def prepare_corpus(raw_dir: Path, out_dir: Path, config: PrepareConfig) -> Path:
    """Run (or resume) the preparation; returns the ``data-bin`` folder."""
    raw_dir, out_dir = Path(raw_dir), Path(out_dir)
    src, tgt = config.source_lang, config.target_lang
    raw = {(split, lang): raw_dir / f"{split}.{lang}" for split in SPLITS for lang in (src, tgt)}
    missing = [str(p) for p in raw.values() if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"expected plain-text splits {{train,valid,test}}.{{{src},{tgt}}}; missing: {missing}")

    spm_model = out_dir / "spm.model"
    if not spm_model.is_file():
        train_joint_sentencepiece(
            [raw["train", src], raw["train", tgt]], out_dir / "spm", config.vocab_size,
            config.spm_model_type, config.spm_input_sentences, config.workers,
        )

    encoded = out_dir / "spm"
    for (split, lang), path in raw.items():
        if not (encoded / f"{split}.{lang}").is_file():
            encode_file(spm_model, path, encoded / f"{split}.{lang}")
    for split in ("train", "valid"):
        if not (encoded / f"{split}.clean.{tgt}").is_file():
            # Target written last: its presence means the pair is complete.
            kept, total = clean_parallel(
                encoded / f"{split}.{src}", encoded / f"{split}.{tgt}",
                encoded / f"{split}.clean.{src}", encoded / f"{split}.clean.{tgt}.part", config.length_filter,
            )
            os.replace(encoded / f"{split}.clean.{tgt}.part", encoded / f"{split}.clean.{tgt}")
            print(f"cleaning {split}: kept {kept} of {total} sentence pairs")

    data_bin = out_dir / "data-bin"
    if not (data_bin / "prepare.json").is_file():
        binarize(encoded, data_bin, config)
    return data_bin


def binarize(encoded: Path, data_bin: Path, config: PrepareConfig) -> None:
    """``fairseq-preprocess --joined-dictionary`` into a temporary folder renamed when complete."""
    partial = data_bin.with_name(data_bin.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    run_fairseq("preprocess", [
        "--source-lang", config.source_lang, "--target-lang", config.target_lang,
        "--trainpref", encoded / "train.clean", "--validpref", encoded / "valid.clean",
        "--testpref", encoded / "test", "--destdir", partial,
        "--joined-dictionary", "--workers", config.workers,
    ], log_file=data_bin.parent / "preprocess.log")
    settings = asdict(config)
    atomic_write_text(partial / "prepare.json", json.dumps(settings, indent=1))
    shutil.rmtree(data_bin, ignore_errors=True)
    os.replace(partial, data_bin)
