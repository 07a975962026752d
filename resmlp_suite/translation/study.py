"""What the paper leaves open for the MT model, measured: ResMLP against the transformer on the Bible.

German -> English (validation Romans, test Acts), joint 8k sentencepiece vocabulary, and for every run
the same batch (4,096 tokens), optimiser (Adam (0.9, 0.98), lr 1e-3, inverse sqrt, 1k warm-up),
label smoothing 0.1 and number of updates; sacreBLEU and chrF2 on all 1,007 verses of Acts, beam 4.

1. **screen** (d 128, 2+2 layers, FFN 512, 1,500 updates, seeds 1 and 2): the paper's ResMLP, then
   one choice changed at a time (:data:`RESMLP_FACTORS`), and the transformer with its own learning
   rate and dropout varied the same way (:data:`TRANSFORMER_FACTORS`);
2. **combine**: each factor's best option (mean BLEU over the seeds) put together, same size and seeds;
3. **confirm** (d 256, 3+3 layers, FFN 1024, 3,000 updates, BLEU at 1,500 and 3,000): the transformer
   (as given, and with its best screened options), the paper's ResMLP and the combination.

::

    python -m resmlp_suite.translation.study                  # all stages, one training at a time
    python -m resmlp_suite.translation.study --jobs 8         # 8 trainings at once (a GPU, or many cores)
    python -m resmlp_suite.translation.study --report-only    # rewrite the report from finished runs

Runs go to ``runs/translation_study/full/`` and are reused by a re-run (a killed training resumes);
the report is ``docs/translation_study.md`` with ``.json`` and ``.png`` beside it. The ``.json`` holds
every finished run, and a re-run skips them: ``--deadline-min`` lets a study go on over several sittings.
"""
from __future__ import annotations

import argparse
import dataclasses
import fnmatch
import glob
import json
import os
import re
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from statistics import mean
from typing import Optional, Sequence

import sacrebleu

from ..device_info import device_name
from ..files import atomic_write_text
from ..plotting import plot_valid_loss
from .demo import QUICK, DemoSize, Stopwatch, prepare_bible, train_args
from .fairseq_tools import USER_DIR, run_fairseq
from .generation import GenerationSettings, translate
from .training_log import read_training_log

_RECIPE = dict(max_tokens=4096, vocab_size=8000, lr=1e-3, warmup_updates=1000, dropout=0.1)
SIZES = {
    "screen": DemoSize(dim=128, ffn_dim=512, layers=2, heads=4, max_update=1500, validate_every=250, **_RECIPE),
    "confirm": DemoSize(dim=256, ffn_dim=1024, layers=3, heads=4, max_update=3000, validate_every=500, **_RECIPE),
}
# Pipeline check in a minute or two (tests, --quick): tiny models on the gospels, Jude and Philemon.
_QUICK = dict(max_tokens=1024, vocab_size=1000, lr=3e-3, warmup_updates=4, validate_every=4,
              valid_books=QUICK.valid_books, test_books=QUICK.test_books, train_books=QUICK.train_books)
QUICK_SIZES = {
    "screen": DemoSize(dim=32, ffn_dim=64, layers=1, heads=2, max_update=4, **_QUICK),
    "confirm": DemoSize(dim=32, ffn_dim=64, layers=1, heads=2, max_update=8, **_QUICK),
}
SEEDS = (1, 2)
# The paper's ResMLP, spelled out so that the study does not depend on the architecture's defaults.
PAPER_RESMLP = ("--token-mixer", "dense", "--token-mixer-init", "trunc_normal", "--normalization", "affine",
                "--layerscale-init", "0.2")
# factor -> option -> flags; the first option of each factor is the paper's (or the recipe's) choice. In the
# order they run: a partial GPU screen (docs/translation_study_notes.md) saw the inits and LayerNorm change the
# validation loss least, so they come last; short runs at the demo's size saw ResMLP gain most from a larger
# learning rate (or LayerScale init), hence 4e-3.
RESMLP_FACTORS: dict[str, dict[str, tuple[str, ...]]] = {
    "learning rate": {"1e-3": (), "5e-4": ("--lr", "5e-4"), "2e-3": ("--lr", "2e-3"), "4e-3": ("--lr", "4e-3")},
    "LayerScale init": {"0.2": (), "0.1": ("--layerscale-init", "0.1"), "1.0": ("--layerscale-init", "1.0")},
    "token mixer": {"dense": (), "toeplitz": ("--token-mixer", "toeplitz"),
                    "multihead (4)": ("--token-mixer", "multihead", "--token-mixer-heads", "4")},
    "dropout": {"0.1": (), "0.3": ("--dropout", "0.3")},
    "token-mixing init": {"trunc_normal": (), "average": ("--token-mixer-init", "average"),
                          "identity": ("--token-mixer-init", "identity")},
    "normalisation": {"affine": (), "layernorm": ("--normalization", "layernorm")},
}
TRANSFORMER_FACTORS = {factor: RESMLP_FACTORS[factor] for factor in ("learning rate", "dropout")}
BEAM = GenerationSettings(beam=4, max_len_a=1.5, max_len_b=10)


@dataclass(frozen=True)
class Run:
    model: str  # "resmlp" or "transformer"
    size: str  # a key of SIZES
    label: str
    options: tuple[str, ...]
    seed: int

    @property
    def key(self) -> str:
        return f"{self.size}/{self.model}-{re.sub(r'[^A-Za-z0-9.=-]+', '_', self.label)}-s{self.seed}"

    def bleu_updates(self, sizes: dict[str, DemoSize]) -> tuple[int, ...]:
        last = sizes[self.size].max_update
        return (last // 2, last) if self.size == "confirm" else (last,)


def screen_runs() -> list[Run]:
    """Per seed: both models as given, then ResMLP's factors, then the transformer's; seed 1 of every setting
    before seed 2, so a study cut short still covers every factor once."""
    runs = []
    for seed in SEEDS:
        variants = [("transformer", "paper", ()), ("resmlp", "paper", PAPER_RESMLP)]
        for model, base, factors in (("resmlp", PAPER_RESMLP, RESMLP_FACTORS), ("transformer", (), TRANSFORMER_FACTORS)):
            variants += [(model, f"{factor}={option}", base + flags)
                         for factor, choices in factors.items() for option, flags in list(choices.items())[1:]]
        runs += [Run(model, "screen", label, options, seed) for model, label, options in variants]
    return runs


def best_options(results: dict[str, dict], model: str, factors: dict) -> dict[str, str]:
    """Each factor's option with the best mean screening BLEU (the paper's option when nothing beats it)."""
    chosen = {}
    for factor, choices in factors.items():
        scores = {}
        for option in choices:
            label = "paper" if option == next(iter(choices)) else f"{factor}={option}"
            bleus = [results[r.key]["bleu"][-1][1] for r in screen_runs()
                     if r.model == model and r.label == label and r.key in results]
            if len(bleus) == len(SEEDS):
                scores[option] = mean(bleus)
        chosen[factor] = max(scores, key=scores.get) if scores else next(iter(choices))
    return chosen


def options_of(base: tuple[str, ...], factors: dict, chosen: dict[str, str]) -> tuple[str, ...]:
    return base + tuple(flag for factor, option in chosen.items() for flag in factors[factor][option])


def first_runs() -> list[Run]:
    """What needs no screening result: the screen, then the confirmation of the given models."""
    return [*screen_runs(), Run("transformer", "confirm", "paper", (), 1),
            Run("resmlp", "confirm", "paper", PAPER_RESMLP, 1)]


def later_runs(results: dict[str, dict]) -> list[Run]:
    """The combination (confirmed first, then screened) and the tuned transformer, from the screening results."""
    resmlp = options_of(PAPER_RESMLP, RESMLP_FACTORS, best_options(results, "resmlp", RESMLP_FACTORS))
    transformer = options_of((), TRANSFORMER_FACTORS, best_options(results, "transformer", TRANSFORMER_FACTORS))
    runs = [Run("resmlp", "confirm", "combined", resmlp, 1)]
    if transformer:
        runs.append(Run("transformer", "confirm", "tuned", transformer, 1))
    return runs + [Run("resmlp", "screen", "combined", resmlp, seed) for seed in SEEDS]


def checkpoint_at(save_dir: Path, update: int) -> Path:
    found = glob.glob(str(save_dir / f"checkpoint_*_{update}.pt"))
    if len(found) != 1:
        raise FileNotFoundError(f"expected one checkpoint of update {update} in {save_dir}, found {found}")
    return Path(found[0])


def execute(run: Run, sizes: dict[str, DemoSize], data_bin: Path, references: Sequence[str], work_dir: Path) -> dict:
    """Train (or resume, or reuse) one run and score it at its BLEU points; returns its record."""
    run_dir = work_dir / run.key
    record_path = run_dir / "result.json"
    if record_path.is_file():
        return json.loads(record_path.read_text())
    size = sizes[run.size]
    args = train_args(run.model, size, data_bin, run_dir / "checkpoints", seed=run.seed, options=run.options,
                      keep_checkpoints=size.max_update // size.validate_every)
    with Stopwatch() as clock:
        run_fairseq("train", args, log_file=run_dir / "train.log")
    log = read_training_log(run_dir / "train.log")
    bleu, chrf = [], []
    for update in run.bleu_updates(sizes):
        hypotheses = translate(data_bin, checkpoint_at(run_dir / "checkpoints", update), run_dir / f"generate_{update}",
                               len(references), settings=BEAM, user_dir=USER_DIR)
        bleu.append([update, round(sacrebleu.corpus_bleu(hypotheses, [references]).score, 2)])
        chrf.append([update, round(sacrebleu.corpus_chrf(hypotheses, [references]).score, 2)])
    record = {**dataclasses.asdict(run), "key": run.key, "params": log.params, "valid_loss": log.valid_loss,
              "bleu": bleu, "chrf": chrf, "train_wall_s": clock.wall_s, "test_sentences": len(references)}
    atomic_write_text(record_path, json.dumps(record, indent=1))
    for checkpoint in (run_dir / "checkpoints").glob("checkpoint*.pt"):
        checkpoint.unlink()  # 30-odd runs: keep the scores and logs, not the weights
    return record


def run_all(runs: list[Run], sizes: dict[str, DemoSize], data_bin: Path, references: Sequence[str], work_dir: Path, jobs: int,
            deadline: Optional[float], results: dict[str, dict], only: Optional[str] = None) -> None:
    def one(run: Run) -> None:
        if run.key in results or (only is not None and not fnmatch.fnmatch(run.key, only)):
            return
        if deadline is not None and time.time() > deadline and not (work_dir / run.key / "result.json").is_file():
            print(f"[study] {run.key}: skipped, past the deadline", flush=True)
            return
        try:
            results[run.key] = execute(run, sizes, data_bin, references, work_dir)
            print(f"[study] {run.key}: BLEU {results[run.key]['bleu']}", flush=True)
        except Exception as error:  # one failed run must not lose the others; the report lists it as missing
            print(f"[study] {run.key}: FAILED: {error}", flush=True)

    with ThreadPoolExecutor(max_workers=jobs) as pool:
        list(pool.map(one, runs))


def read_results(work_dir: Path, report_json: Path) -> dict[str, dict]:
    """Finished runs: those of the report (so a study goes on across machines and sessions from what
    the repository holds), then those of the work directory."""
    results = json.loads(report_json.read_text())["runs"] if report_json.is_file() else {}
    for path in sorted(work_dir.glob("*/*/result.json")):
        record = json.loads(path.read_text())
        results[record["key"]] = record
    return results


def _cell(results: dict, runs: list[Run], metric: str) -> tuple[list[Optional[float]], Optional[float]]:
    values = [results[r.key][metric][-1][1] if r.key in results else None for r in runs]
    done = [v for v in values if v is not None]
    return values, (round(mean(done), 2) if len(done) == len(values) and done else None)


def _fmt(value: Optional[float]) -> str:
    return "-" if value is None else f"{value:.2f}"


def write_report(results: dict[str, dict], sizes: dict[str, DemoSize], out: Path, command: str, device: str) -> Path:
    """``out``.md (tables), ``out``.json (every run) and ``out``.png (validation curves at the confirm size)."""
    lines = [f"# Translation study: ResMLP against the transformer on the Bible (De->En)", "",
             f"Produced by `{command}` on {device}. Written by `resmlp_suite.translation.study`; its docstring "
             "describes the stages. BLEU: sacreBLEU on every verse of the test book, beam 4, last checkpoint; "
             "valid: label-smoothed validation loss (bits/token) on Romans at the last update.", ""]
    groups: dict[tuple[str, str, str], list[Run]] = {}
    for run in sorted(first_runs() + later_runs(results), key=lambda r: r.size != "screen"):
        groups.setdefault((run.size, run.model, run.label), []).append(run)
    transformer_screen = _cell(results, groups[("screen", "transformer", "paper")], "bleu")[1]
    for size, s in sizes.items():
        lines += [f"## {size}: d {s.dim}, {s.layers}+{s.layers} layers, FFN {s.ffn_dim}, {s.max_update} updates", ""]
        if size == "screen":
            lines += ["| model | changed from the paper's model | BLEU per seed | BLEU mean | chrF2 mean | valid | "
                      "vs transformer |", "| --- | --- | --- | --- | --- | --- | --- |"]
        else:
            half, last = s.max_update // 2, s.max_update
            lines += [f"| model | options | BLEU @{half} | BLEU @{last} | chrF2 @{last} | valid | params | train min |",
                      "| --- | --- | --- | --- | --- | --- | --- | --- |"]
        for (run_size, model, label), runs in groups.items():
            if run_size != size:
                continue
            if size == "screen":
                per_seed, bleu = _cell(results, runs, "bleu")
                chrf, valid = _cell(results, runs, "chrf")[1], _cell(results, runs, "valid_loss")[1]
                ratio = f"{bleu / transformer_screen:.2f}x" if bleu and transformer_screen else "-"
                lines.append(f"| {model} | {label} | {' / '.join(map(_fmt, per_seed))} | {_fmt(bleu)} | {_fmt(chrf)} | "
                             f"{_fmt(valid)} | {ratio} |")
            else:
                r = results.get(runs[0].key)
                options = " ".join(runs[0].options) or "(recipe as given)"
                if r is None:
                    lines.append(f"| {model} {label} | `{options}` | - | - | - | - | - | - |")
                    continue
                bleu = dict(r["bleu"])
                lines.append(f"| {model} {label} | `{options}` | {_fmt(bleu.get(half))} | {_fmt(bleu.get(last))} | "
                             f"{_fmt(r['chrf'][-1][1])} | {_fmt(r['valid_loss'][-1][1])} | {r['params'] / 1e6:.2f} M | "
                             f"{r['train_wall_s'] / 60:.1f} |")
        lines.append("")
    chosen = best_options(results, "resmlp", RESMLP_FACTORS)
    lines += ["Best option per factor (ResMLP, mean BLEU over both seeds; the paper's while no other option has "
              "both seeds): " + ", ".join(f"{f} {o}" for f, o in chosen.items()) + ".", ""]
    curves = {f"{r['model']} {r['label']}": r for r in results.values() if r["size"] == "confirm"}
    if curves:
        confirm = sizes["confirm"]
        plot_valid_loss(curves, out.with_suffix(".png"),
                        f"Bible De->En, d {confirm.dim}, {confirm.layers}+{confirm.layers} layers: validation loss")
        lines += [f"![Validation loss at the confirm size]({out.with_suffix('.png').name})", ""]
    atomic_write_text(out.with_suffix(".md"), "\n".join(lines))
    atomic_write_text(out.with_suffix(".json"), json.dumps({"command": command, "device": device, "runs": results},
                                                           indent=1))
    return out.with_suffix(".md")


def describe_device() -> str:
    import torch

    if torch.cuda.is_available():
        return f"{device_name(torch.device('cuda'))} (fp32)"
    return f"{device_name()}, {os.cpu_count()} cores"


def main(argv: Optional[Sequence[str]] = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work-dir", type=Path, default=None, help="default runs/translation_study/{full,quick}")
    parser.add_argument("--out", type=Path, default=None,
                        help="report path without suffix (default docs/translation_study; with --quick, in the work dir)")
    parser.add_argument("--jobs", type=int, default=1, help="trainings at once (1 on a CPU: they share its cores)")
    parser.add_argument("--deadline-min", type=float, default=None,
                        help="start no new run after this many minutes (the report lists what is missing)")
    parser.add_argument("--report-only", action="store_true", help="only rewrite the report from finished runs")
    parser.add_argument("--quick", action="store_true", help="a pipeline check: tiny models, a few updates")
    parser.add_argument("--only", default=None, metavar="PATTERN",
                        help="run only the runs whose key matches this shell pattern, e.g. 'screen/resmlp-*-s1'")
    args = parser.parse_args(argv)
    if args.jobs < 1:
        parser.error(f"--jobs must be >= 1, got {args.jobs}")
    deadline = None if args.deadline_min is None else time.time() + 60 * args.deadline_min
    command = "python -m resmlp_suite.translation.study" + (f" --jobs {args.jobs}" if args.jobs > 1 else "")
    device = describe_device()
    sizes = QUICK_SIZES if args.quick else SIZES
    args.work_dir = args.work_dir or Path("runs/translation_study") / ("quick" if args.quick else "full")
    args.out = args.out or (args.work_dir / "report" if args.quick else Path("docs/translation_study"))
    if not args.report_only:
        if args.jobs > 1:  # trainings side by side: split the cores instead of oversubscribing them
            os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // args.jobs)))
        _, data_bin, references = prepare_bible(args.work_dir, sizes["screen"])
        results = read_results(args.work_dir, args.out.with_suffix(".json"))
        run_all(first_runs(), sizes, data_bin, references, args.work_dir, args.jobs, deadline, results, args.only)
        run_all(later_runs(results), sizes, data_bin, references, args.work_dir, args.jobs, deadline, results, args.only)
    report = write_report(read_results(args.work_dir, args.out.with_suffix(".json")), sizes, args.out, command, device)
    print(f"[study] wrote {report}")
    return report


if __name__ == "__main__":
    main()
