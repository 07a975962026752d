"""BLEU of detokenised translations: sacreBLEU with its signature, and the paper-comparable score.

The ResMLP paper (Table 5) reports *tokenized* BLEU on newstest2014 as in Ott et al. 2018:
Moses-tokenised hypothesis and reference, hyphenated compounds split by fairseq's
``compound_split_bleu.sh`` rule ``s{(\\S)-(\\S)}{$1 ##AT##-##AT## $2}g``, then plain 4-gram BLEU.
That number is only comparable to other compound-split scores; sacreBLEU is the standard one.
Both refuse to score unless there is exactly one hypothesis per reference.
"""
from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Sequence

from sacrebleu.metrics import BLEU
from sacremoses import MosesTokenizer

_COMPOUND = re.compile(r"(\S)-(\S)")


@dataclass(frozen=True)
class BleuScore:
    score: float
    signature: str
    text: str  # sacrebleu's one-line summary: n-gram precisions, brevity penalty, lengths
    sentences: int

    def as_dict(self) -> dict:
        return asdict(self)


def check_counts(hypotheses: Sequence[str], references: Sequence[str]) -> None:
    if len(hypotheses) != len(references):
        raise ValueError(
            f"got {len(hypotheses)} hypotheses for {len(references)} references: BLEU must cover the whole "
            "test set (did generation drop sentences? pass --required-batch-size-multiple 1)"
        )
    if not references:
        raise ValueError("no references to score against")


def _score(metric: BLEU, hypotheses: Sequence[str], references: Sequence[str]) -> BleuScore:
    check_counts(hypotheses, references)
    result = metric.corpus_score(list(hypotheses), [list(references)])
    signature = str(metric.get_signature())
    return BleuScore(result.score, signature, result.format(signature=signature), len(references))


def sacrebleu_score(hypotheses: Sequence[str], references: Sequence[str]) -> BleuScore:
    """Detokenised BLEU with sacreBLEU's defaults (13a tokenisation, mixed case, exp smoothing)."""
    return _score(BLEU(), hypotheses, references)


def compound_split(line: str) -> str:
    """fairseq's ``compound_split_bleu.sh`` rule: ``Café-Liebhaber`` -> ``Café ##AT##-##AT## Liebhaber``."""
    return _COMPOUND.sub(r"\1 ##AT##-##AT## \2", line)


def compound_split_bleu(hypotheses: Sequence[str], references: Sequence[str], lang: str) -> BleuScore:
    """Tokenized BLEU: Moses tokenisation for ``lang``, compound splitting, no further tokenisation."""
    tokenizer = MosesTokenizer(lang=lang)

    def prepare(lines: Sequence[str]) -> list[str]:
        return [compound_split(tokenizer.tokenize(line, return_str=True, escape=False)) for line in lines]

    check_counts(hypotheses, references)
    # Unsmoothed and untokenised: the multi-bleu / fairseq-score computation on the prepared tokens.
    return _score(BLEU(tokenize="none", smooth_method="none", force=True), prepare(hypotheses), prepare(references))
