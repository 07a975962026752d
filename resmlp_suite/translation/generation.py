"""Translate a binarised split with ``fairseq-generate`` and read back one hypothesis per sentence.

Generation always runs with ``--required-batch-size-multiple 1`` so fairseq's ``batch_by_size``
has no short final batch to drop (see :mod:`resmlp_suite.translation.batching`), and the output is
checked to hold a hypothesis for every sentence id: a score over part of a test set is refused.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from .fairseq_tools import run_fairseq


class IncompleteGenerationError(RuntimeError):
    """fairseq-generate returned fewer (or other) hypotheses than the split has sentences."""


@dataclass(frozen=True)
class GenerationSettings:
    beam: int = 4
    lenpen: float = 1.0
    max_tokens: int = 8000
    # Output length bound a*src_len+b; fairseq's default (0, 200) lets an untrained model emit 200 tokens.
    max_len_a: float = 0.0
    max_len_b: int = 200
    post_process: str = "sentencepiece"
    fp16: bool = False  # half-precision decoding (GPU)


def generate_args(data_bin: Path, checkpoint: Path, results_dir: Path, subset: str = "test",
                  settings: GenerationSettings = GenerationSettings(), user_dir: Optional[Path] = None) -> list[str]:
    args = [
        data_bin, "--path", checkpoint, "--gen-subset", subset, "--results-path", results_dir,
        "--beam", settings.beam, "--lenpen", settings.lenpen, "--max-tokens", settings.max_tokens,
        "--max-len-a", settings.max_len_a, "--max-len-b", settings.max_len_b,
        "--post-process", settings.post_process, "--required-batch-size-multiple", 1,
    ]
    if settings.fp16:
        args.append("--fp16")
    if user_dir is not None:
        args += ["--user-dir", user_dir]
    return [str(a) for a in args]


def read_hypotheses(generate_output: Path) -> dict[int, str]:
    """``{sentence id: detokenised best hypothesis}`` from the ``D-`` lines of fairseq-generate output."""
    hypotheses: dict[int, str] = {}
    with open(generate_output, encoding="utf-8") as f:
        for line in f:
            if line.startswith("D-"):
                tag, _score, *text = line.rstrip("\n").split("\t")
                sentence_id = int(tag[2:])
                # nbest > 1 prints several D- lines per id; the first is the best.
                hypotheses.setdefault(sentence_id, text[0] if text else "")
    return hypotheses


def hypotheses_in_order(hypotheses: dict[int, str], num_sentences: int) -> list[str]:
    """Hypotheses for ids ``0..num_sentences-1``; raises if any is missing or extra."""
    expected = set(range(num_sentences))
    missing, extra = sorted(expected - hypotheses.keys()), sorted(hypotheses.keys() - expected)
    if missing or extra:
        raise IncompleteGenerationError(
            f"expected a hypothesis for each of the {num_sentences} sentences, got {len(hypotheses)} "
            f"(missing ids {missing[:10]}{'...' if len(missing) > 10 else ''}, unexpected ids {extra[:10]}); "
            "fairseq drops a final batch that is not a multiple of --required-batch-size-multiple, "
            "and --skip-invalid-size-inputs-valid-test drops long sentences"
        )
    return [hypotheses[i] for i in range(num_sentences)]


def translate(data_bin: Path, checkpoint: Path, results_dir: Path, num_sentences: int, subset: str = "test",
              settings: GenerationSettings = GenerationSettings(), user_dir: Optional[Path] = None) -> list[str]:
    """Run fairseq-generate into ``results_dir``; returns the hypotheses in sentence order."""
    results_dir = Path(results_dir)
    run_fairseq("generate", generate_args(data_bin, checkpoint, results_dir, subset, settings, user_dir),
                log_file=results_dir / "generate.log")
    return hypotheses_in_order(read_hypotheses(results_dir / f"generate-{subset}.txt"), num_sentences)
