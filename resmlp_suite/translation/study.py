"""What the paper leaves open for the MT model, measured: ResMLP against the transformer on the Bible.

German -> English (validation Romans, test Acts), joint 8k sentencepiece vocabulary, and for every run
the same batch (4,096 tokens), optimiser (Adam (0.9, 0.98), lr 1e-3, inverse sqrt, 1k warm-up),
label smoothing 0.1 and number of updates; sacreBLEU and chrF2 on all 1,007 verses of Acts, beam 4.

1. **screen** (d 128, 2+2 layers, FFN 512, 1,500 updates): per model, the learning rate first, searched
   as a ladder from the recipe's 1e-3; then, at the chosen rate, one choice changed at a time
   (:data:`RESMLP_FACTORS`; the transformer's are :data:`TRANSFORMER_FACTORS`). Seed 1 for every
   option, seed 2 for the options within :data:`MARGIN` BLEU of the best before one is chosen;
2. **combine**: each factor's choice put together, same size and seeds, against each change alone: the
   combination is kept only if it is the best of them;
3. **confirm** (d 256, 3+3 layers, FFN 1024, 3,000 updates, BLEU at 1,500 and 3,000, seed 1): both models
   as given; each model's learning rate searched again, as a ladder down from the screen's, with its
   choices less those that go beyond the paper's model (:data:`RESEARCH_ONLY`); then, at the rate found,
   all its choices, and the architecture's defaults: the ladder's choices with the next best option where
   one breaks a guarantee of the tests (:data:`UNSAFE_DEFAULTS`);
4. **final**: each model's best confirm run of the tuning again with seed 2, back to back (:func:`final_pair`),
   the faster first; the second is also scored where its training time reaches the first's (at equal
   training wall time on one machine), then trained on to its last update;
5. **averaging** (the screen's size, both seeds): each model's tuned screen setting again, scored with its
   last checkpoint and with its last checkpoints averaged (:data:`AVERAGE_LAST`); **final-averaging**: the
   same for the final pair, at the confirm size, back to back as in the final stage: the second model is also
   scored at the first one's training time, with its last checkpoints so far averaged there too.

What runs next follows from what has finished (:func:`plan`), so the study can stop and go on anywhere.

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

from ..cli import user_errors
from ..device_info import device_name, machine_id
from ..files import atomic_write_text
from ..plotting import plot_valid_loss
from .average_checkpoints import average_checkpoints, checkpoint_update, last_checkpoints, save_checkpoint
from .demo import QUICK, DemoSize, prepare_bible, train_args
from .fairseq_tools import USER_DIR, run_fairseq
from .generation import GenerationSettings, translate
from .training_log import read_training_log

_RECIPE = dict(max_tokens=4096, vocab_size=8000, lr=1e-3, warmup_updates=1000, dropout=0.1)
_SCREEN = DemoSize(dim=128, ffn_dim=512, layers=2, heads=4, max_update=1500, validate_every=250, **_RECIPE)
_CONFIRM = DemoSize(dim=256, ffn_dim=1024, layers=3, heads=4, max_update=3000, validate_every=500, **_RECIPE)
AVERAGING, FINAL_AVERAGING = "averaging", "final-averaging"  # see AVERAGE_LAST
SIZES = {"screen": _SCREEN, "confirm": _CONFIRM, AVERAGING: _SCREEN, FINAL_AVERAGING: _CONFIRM}
# Pipeline check in a minute or two (tests, --quick): tiny models on the gospels, Jude and Philemon.
_QUICK = dict(max_tokens=1024, vocab_size=1000, lr=3e-3, warmup_updates=4, validate_every=4,
              valid_books=QUICK.valid_books, test_books=QUICK.test_books, train_books=QUICK.train_books)
QUICK_SIZES = {
    "screen": DemoSize(dim=32, ffn_dim=64, layers=1, heads=2, max_update=4, **_QUICK),
    "confirm": DemoSize(dim=32, ffn_dim=64, layers=1, heads=2, max_update=8, **_QUICK),
}
QUICK_SIZES.update({AVERAGING: QUICK_SIZES["screen"], FINAL_AVERAGING: QUICK_SIZES["confirm"]})
SEEDS = (1, 2)
# The paper's ResMLP, spelled out so that the study does not depend on the architecture's defaults.
PAPER_RESMLP = ("--token-mixer", "dense", "--token-mixer-init", "trunc_normal", "--normalization", "affine",
                "--output-normalization", "same", "--layerscale-init", "0.2")
# factor -> option -> flags; the first option of each factor is the paper's (or the recipe's) choice. In the
# order they run, most promising first: the learning rate moved BLEU most (docs/translation_study_notes.md);
# short runs at the demo's size saw LayerScale init 1.0 act like a larger rate; a partial GPU screen saw the
# inits change the validation loss least; dropout 0.3 regularises a budget of about five epochs.
RESMLP_FACTORS: dict[str, dict[str, tuple[str, ...]]] = {
    "learning rate": {"1e-3": (), "5e-4": ("--lr", "5e-4"), "2e-3": ("--lr", "2e-3"), "4e-3": ("--lr", "4e-3"),
                      "8e-3": ("--lr", "8e-3"), "1.6e-2": ("--lr", "1.6e-2")},
    "LayerScale init": {"0.2": (), "0.1": ("--layerscale-init", "0.1"), "1.0": ("--layerscale-init", "1.0")},
    # LayerNorm with an Affine before the output projection: the one norm that decides the toy reversal.
    "normalisation": {"affine": (), "layernorm": ("--normalization", "layernorm"),
                      "layernorm-affine-output": ("--normalization", "layernorm", "--output-normalization", "affine")},
    "token mixer": {"dense": (), "toeplitz": ("--token-mixer", "toeplitz"),
                    "multihead (4)": ("--token-mixer", "multihead", "--token-mixer-heads", "4")},
    "token-mixing init": {"trunc_normal": (), "average": ("--token-mixer-init", "average"),
                          "identity": ("--token-mixer-init", "identity")},
    "dropout": {"0.1": (), "0.3": ("--dropout", "0.3")},
}
# Options beyond what the paper fixes for its model (one linear map over the tokens per sublayer): confirmed
# when they win, kept as research options, never the architecture's defaults.
RESEARCH_ONLY = (("token mixer", "multihead (4)"),)
# Choices the architecture's defaults replace by the factor's next best option, because a model with them
# fails a test the paper's model passes: with a LayerNorm before the output projection, ResMLP does not
# learn the tests' toy reversal (docs/translation_study_notes.md, "Eighth CPU sitting").
UNSAFE_DEFAULTS = (("normalisation", "layernorm"),)
LEARNING_RATE = "learning rate"
TRANSFORMER_FACTORS = {factor: RESMLP_FACTORS[factor] for factor in (LEARNING_RATE, "dropout")}
ORDERED = (LEARNING_RATE, "LayerScale init")  # searched as ladders (see screen)
# Checkpoint averaging, which the paper leaves open (fairseq's WMT recipe averages the last 10): a setting
# trained again, saving every 1/AVERAGE_SAVES of its updates, and scored with its last checkpoint and with the
# mean of its last n, for each n in AVERAGE_LAST. One training gives every score, so their differences carry
# no seed noise. (A save also validates: these runs' times do not compare.) Size -> what it trains again.
AVERAGED = {AVERAGING: "Each model's tuned screen setting", FINAL_AVERAGING: "The final pair's settings"}
AVERAGE_SAVES, AVERAGE_LAST = 30, (5, 10)
MARGIN = 1.0  # BLEU: options closer than this to the best get a second seed before one is chosen
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


@dataclass(frozen=True)
class Setting:
    """One model with one set of options: a cell of the screen, run once per seed."""

    model: str
    label: str
    options: tuple[str, ...]

    def run(self, seed: int, size: str = "screen") -> Run:
        return Run(self.model, size, self.label, self.options, seed)


def merged(options: tuple[str, ...]) -> tuple[str, ...]:
    """``--flag value`` pairs with each flag once, where it first came, with its last value: a change replaces
    the paper's flag instead of following it, so the commands in the report say each option once."""
    if len(options) % 2 or not all(flag.startswith("--") for flag in options[::2]):
        raise ValueError(f"expected --flag value pairs, got {options}")
    return tuple(item for pair in dict(zip(options[::2], options[1::2])).items() for item in pair)


def factor_settings(base: Setting, factor: str, choices: dict[str, tuple[str, ...]]) -> dict[str, Setting]:
    """``base`` with each option of ``factor``; its first option is ``base`` itself."""
    prefix = "" if base.label == "paper" else f"{base.label}, "
    first = next(iter(choices))
    return {option: base if option == first else
            Setting(base.model, f"{prefix}{factor}={option}", merged(base.options + flags))
            for option, flags in choices.items()}


@dataclass(frozen=True)
class Decision:
    best: str  # the option with the best mean BLEU so far
    reseed: tuple[str, ...]  # options within MARGIN of the best that still lack a seed
    ranking: tuple[str, ...] = ()  # every scored option, best mean BLEU first

    @property
    def settled(self) -> bool:
        return not self.reseed


def decide(bleus: dict[str, list[float]], seeds: Sequence[int] = SEEDS) -> Decision:
    """The best option by mean BLEU, settled when every option within MARGIN of it has all ``seeds``."""
    means = {option: mean(scores) for option, scores in bleus.items()}
    ranking = tuple(sorted(means, key=means.get, reverse=True))
    best = ranking[0]
    close = [option for option in means if means[best] - means[option] < MARGIN]
    return Decision(best, tuple(o for o in close if len(bleus[o]) < len(seeds)) if len(close) > 1 else (), ranking)


def bleu_per_seed(setting: Setting, results: dict[str, dict], size: str = "screen",
                  seeds: Sequence[int] = SEEDS) -> list[float]:
    """The final BLEU of the setting's seeds, in seed order, up to the first one not finished."""
    scores = []
    for seed in seeds:
        key = setting.run(seed, size).key
        if key not in results:
            break
        scores.append(results[key]["bleu"][-1][1])
    return scores


def screen(settings: dict[str, Setting], results: dict[str, dict], todo: list[Run], ordered: bool = False,
           size: str = "screen", seeds: Sequence[int] = SEEDS) -> Optional[Decision]:
    """Adds to ``todo`` what choosing among ``settings`` at ``size`` still needs; returns the decision so far,
    or None while an option that takes part has no first seed.

    ``ordered``: numeric options, searched as a ladder from the first one (assumes one peak): only the
    neighbours of the best so far are run, so a learning rate needs three to four runs, not the whole grid.
    """
    bleus = {option: bleu_per_seed(setting, results, size, seeds) for option, setting in settings.items()}
    if ordered:
        ladder = sorted(settings, key=float)
        tried = [option for option in ladder if bleus[option]]
        at = ladder.index(max(tried, key=lambda o: mean(bleus[o]))) if tried else None
        needed = [next(iter(settings))] if at is None else [
            ladder[i] for i in (at - 1, at + 1) if 0 <= i < len(ladder) and not bleus[ladder[i]]]
    else:
        needed = [option for option in settings if not bleus[option]]
    if needed:
        todo += [settings[option].run(seeds[0], size) for option in needed]
        return None
    decision = decide({option: scores for option, scores in bleus.items() if scores}, seeds)
    todo += [settings[option].run(seeds[len(bleus[option])], size) for option in decision.reseed]
    return decision


@dataclass
class Plan:
    runs: list[Run]  # every run the study needs given the results so far, finished ones included
    chosen: dict[str, dict[str, str]]  # model -> factor -> option, for the models whose screen is settled
    tuned: dict[str, Setting]  # model -> its best screened setting (the combination once settled)
    # model -> the tuned setting without its RESEARCH_ONLY options, and each of its UNSAFE_DEFAULTS replaced by
    # the factor's next best option: what the architecture's defaults become
    defaults: dict[str, Setting]
    confirm_rate: dict[str, str]  # model -> the learning rate chosen again at the confirm size
    finals: dict[str, Run] = dataclasses.field(default_factory=dict)  # model -> its best confirm run (final_pair)


def plan(results: dict[str, dict]) -> Plan:
    """The study as a function of what has finished. Per model: the learning rate first (seed 1 of every
    rate the ladder reaches, a second seed where two are within MARGIN BLEU); then every other factor, one
    at a time, at the best rate so far (while the rate's second seeds are pending too: if they change the
    best, the factors are screened again at the new one); once every choice is settled, their combination,
    kept only if it beats each change alone (second seeds where within MARGIN); then the confirm size: the
    rate again, as a ladder down from the screen's (with the choices less the RESEARCH_ONLY ones, one seed),
    the tuned setting and the architecture's defaults at the rate it finds, and the paper's model at the
    recipe's rate; last, the final pair's second seeds. For checkpoint averaging, with both seeds: once a
    model's screen is settled, its tuned setting again at the screen's size; the final pair again."""
    runs: list[Run] = []
    chosen, tuned, defaults, confirm_rate = {}, {}, {}, {}
    contenders: list[Run] = []  # the tuning's confirm runs: the final pair is chosen among them
    for model, paper, factors in (("transformer", (), TRANSFORMER_FACTORS), ("resmlp", PAPER_RESMLP, RESMLP_FACTORS)):
        rate_settings = factor_settings(Setting(model, "paper", paper), LEARNING_RATE, factors[LEARNING_RATE])
        runs.append(Run(model, "confirm", "paper", paper, 1))
        rate = screen(rate_settings, results, runs, ordered=True)
        if rate is None:
            continue
        best = rate_settings[rate.best]
        decisions = {LEARNING_RATE: rate}
        for factor, choices in factors.items():
            if factor != LEARNING_RATE:
                decisions[factor] = screen(factor_settings(best, factor, choices), results, runs,
                                           ordered=factor in ORDERED)
        if not all(decision is not None and decision.settled for decision in decisions.values()):
            tuned[model] = best
            continue
        picks = {factor: decision.best for factor, decision in decisions.items()}
        changed = changes_of(picks, factors)
        if len(changed) > 1:  # the combination against each change alone: it must earn its place
            candidates = {f: with_changes(best, {f: o}, factors) for f, o in changed.items()}
            candidates["combined"] = with_changes(best, changed, factors)
            decision = screen(candidates, results, runs)
            if decision is None or not decision.settled:
                tuned[model] = best
                continue
            if decision.best != "combined":  # one change alone wins: the others go back to the paper's options
                picks.update({f: next(iter(factors[f])) for f in changed if f != decision.best})
        chosen[model], changed = picks, changes_of(picks, factors)
        tuned[model] = with_changes(best, changed, factors)
        runs += [tuned[model].run(seed, AVERAGING) for seed in SEEDS]
        allowed = {f: o for f, o in changed.items() if (f, o) not in RESEARCH_ONLY}
        safe = {f: next(option for option in decisions[f].ranking if (f, option) not in UNSAFE_DEFAULTS)
                if (f, o) in UNSAFE_DEFAULTS else o for f, o in allowed.items()}
        safe = changes_of(safe, factors)
        defaults[model] = with_changes(best, safe, factors)
        if len(safe) > 1:  # a combination of its own when it differs from the tuned one
            screen({"defaults": defaults[model]}, results, runs)
        # Adam wants a lower rate for a wider, deeper model, not a higher one (assumed): the confirm size takes
        # the rate down from the screen's while BLEU improves. The screen's ResMLP rate, 1.6e-2, gave 16.4 BLEU
        # at d 256, its validation loss behind the recipe's 1e-3 (docs/translation_study_notes.md).
        # One seed: a confirm run takes an hour and a half on 2 cores.
        lower = [o for o in factors[LEARNING_RATE] if float(o) <= float(rate.best)]
        lower.sort(key=lambda o: o != rate.best)  # the ladder starts at the screen's rate
        ladder = {o: with_changes(rate_settings[o], allowed, factors) for o in lower}
        tuning = len(runs)
        decision = screen(ladder, results, runs, ordered=True, size="confirm", seeds=SEEDS[:1])
        if decision is not None:
            confirm_rate[model] = decision.best
            runs += [with_changes(rate_settings[decision.best], picked, factors).run(1, "confirm")
                     for picked in (changed, safe)]
        ran = [setting.run(1, "confirm") for setting in ladder.values()]
        contenders += [run for run in ran if run.key in results] + runs[tuning:]
    finals = final_pair(contenders, results, confirm_rate)
    runs += [dataclasses.replace(run, seed=seed) for run in finals.values() for seed in SEEDS[1:]]
    runs += [dataclasses.replace(run, size=FINAL_AVERAGING, seed=seed) for run in finals.values() for seed in SEEDS]
    return Plan(list({run.key: run for run in runs}.values()), chosen, tuned, defaults, confirm_rate, finals)


def final_pair(contenders: list[Run], results: dict[str, dict], confirm_rate: dict[str, str]) -> dict[str, Run]:
    """model -> its best confirm run by final BLEU among ``contenders`` (the tuning's: the rate ladder, the
    tuned setting and the defaults), once all of both models' have finished, the faster of the two first. The
    paper's model at the recipe's rate is a reference and not waited for, unless the ladder reaches that rate.
    The pair gets its other seeds: one seed decided the confirm ladders, and the headline comparison should
    not rest on one; run back to back on one machine, the second also stops at the first one's training time
    to be scored there (:func:`equal_time_stop`)."""
    confirmed = {model: [run for run in contenders if run.model == model] for model in ("transformer", "resmlp")}
    if set(confirm_rate) != set(confirmed) or not all(run.key in results for group in confirmed.values()
                                                      for run in group):
        return {}
    best = {model: max(group, key=lambda run: results[run.key]["bleu"][-1][1]) for model, group in confirmed.items()}
    # faster by its first seed's time, maybe on another machine: only the order, so that the second one stops
    return dict(sorted(best.items(), key=lambda item: results[item[1].key]["train_wall_s"]))


def this_machine() -> str:
    return f"{device_name()}, machine {machine_id()}"


def equal_time_stop(run: Run, finals: dict[str, Run], results: dict[str, dict],
                    work_dir: Path) -> Optional[tuple[str, float]]:
    """(key, train minutes) of the final pair's first run at ``run``'s size and seed when ``run`` is the second
    one's (a seed of the pair after the one that chose it, or either seed trained again for averaging) and both
    have trained on this machine alone: the second is then also scored at the first one's time; None otherwise."""
    if run.size not in ("confirm", FINAL_AVERAGING) or (run.size, run.seed) == ("confirm", SEEDS[0]):
        return None
    first, second = ([dataclasses.replace(final, size=run.size, seed=run.seed).key for final in finals.values()]
                     or [None, None])
    here = this_machine()
    if (run.key != second or first not in results or results[first]["cpu"] != here
            or not machines(work_dir / run.key) <= {here}):
        return None
    return first, results[first]["train_wall_s"] / 60


def machines(run_dir: Path) -> set[str]:
    """The machines a run has trained on so far: a resumed run may span several."""
    path = run_dir / "cpus.txt"
    return set(path.read_text(encoding="utf-8").splitlines()) if path.is_file() else set()


def changes_of(picks: dict[str, str], factors: dict) -> dict[str, str]:
    """The picks that differ from the paper's option, the learning rate aside (every setting has its own)."""
    return {f: o for f, o in picks.items() if f != LEARNING_RATE and o != next(iter(factors[f]))}


def with_changes(base: Setting, changes: dict[str, str], factors: dict) -> Setting:
    """``base`` with ``changes`` (factor -> option), labelled as the screen labels its settings."""
    if len(changes) == 1:
        (factor, option), = changes.items()
        return factor_settings(base, factor, factors[factor])[option]
    if not changes:
        return base
    labels = ([] if base.label == "paper" else [base.label]) + [f"{f}={o}" for f, o in changes.items()]
    options = base.options + tuple(flag for factor, option in changes.items() for flag in factors[factor][option])
    return Setting(base.model, ", ".join(labels), merged(options))


def checkpoint_at(save_dir: Path, update: int) -> Path:
    found = glob.glob(str(save_dir / f"checkpoint_*_{update}.pt"))
    if len(found) != 1:
        raise FileNotFoundError(f"expected one checkpoint of update {update} in {save_dir}, found {found}")
    return Path(found[0])


def execute(run: Run, sizes: dict[str, DemoSize], data_bin: Path, references: Sequence[str], work_dir: Path,
            stop: Optional[tuple[str, float]] = None) -> dict:
    """Train (or resume, or reuse) one run and score it at its BLEU points; returns its record.

    ``stop``: (another run's key, its train minutes): the training first stops at that time (fairseq's
    ``--stop-time-hours``, validation included, as in the record's ``train_wall_s``), its last checkpoint
    is scored as ``equal_time`` (an averaging run also with its last checkpoints so far averaged), then it goes
    on to its last update as if never stopped (the learning rate does not depend on the number of updates)."""
    run_dir = work_dir / run.key
    record_path = run_dir / "result.json"
    if record_path.is_file():
        return json.loads(record_path.read_text())
    size = sizes[run.size]
    save_every = max(size.max_update // AVERAGE_SAVES, 1) if run.size in AVERAGED else size.validate_every
    keep = size.max_update // save_every
    args = train_args(run.model, size, data_bin, run_dir / "checkpoints", seed=run.seed, options=run.options,
                      keep_checkpoints=keep, save_every=save_every)
    run_dir.mkdir(parents=True, exist_ok=True)
    with open(run_dir / "cpus.txt", "a", encoding="utf-8") as cpus:  # a resumed run may span machines
        cpus.write(this_machine() + "\n")

    def score(checkpoint: Path, name: str) -> tuple[float, float]:
        hypotheses = translate(data_bin, checkpoint, run_dir / name, len(references), settings=BEAM, user_dir=USER_DIR)
        return (round(sacrebleu.corpus_bleu(hypotheses, [references]).score, 2),
                round(sacrebleu.corpus_chrf(hypotheses, [references]).score, 2))

    def score_averages(update: int, prefix: str) -> list[dict]:
        """For each n in AVERAGE_LAST: the mean of the last n checkpoints saved by ``update``, scored."""
        scored = []
        for count in sorted({min(count, update // save_every) for count in AVERAGE_LAST} - {0}):
            paths = last_checkpoints(run_dir / "checkpoints", count, update_based=True)
            averaged = run_dir / "checkpoints" / f"checkpoint_average{count}.pt"
            save_checkpoint(average_checkpoints(paths), averaged)
            bleu, chrf = score(averaged, f"generate_{prefix}average{count}")
            averaged.unlink()  # not a checkpoint to resume from
            scored.append({"updates": sorted(map(checkpoint_update, paths)), "bleu": bleu, "chrf": chrf})
        return scored

    equal_time_path = run_dir / "equal_time.json"
    if stop is not None and not equal_time_path.is_file():
        against, minutes = stop
        log_file = run_dir / "train.log"
        if not (log_file.is_file() and "Stopping training due to" in log_file.read_text(encoding="utf-8")):
            run_fairseq("train", [*args, "--stop-time-hours", f"{minutes / 60:.6f}"], log_file=log_file)
        log = read_training_log(log_file)
        update = log.valid_loss[-1][0]  # fairseq validates and saves where it stops
        bleu, chrf = score(run_dir / "checkpoints" / "checkpoint_last.pt", f"generate_at_{update}")
        stopped = {"against": against, "minutes": minutes, "update": update, "train_wall_s": log.wall_s,
                   "bleu": bleu, "chrf": chrf}
        if run.size in AVERAGED:
            stopped["averaged"] = score_averages(update, f"at_{update}_")
        atomic_write_text(equal_time_path, json.dumps(stopped))
    run_fairseq("train", args, log_file=run_dir / "train.log")
    log = read_training_log(run_dir / "train.log")
    bleu, chrf = [], []
    for update in run.bleu_updates(sizes):
        scores = score(checkpoint_at(run_dir / "checkpoints", update), f"generate_{update}")
        bleu.append([update, scores[0]])
        chrf.append([update, scores[1]])
    record = {**dataclasses.asdict(run), "key": run.key, "params": log.params, "valid_loss": log.valid_loss,
              "bleu": bleu, "chrf": chrf, "train_wall_s": log.wall_s, "test_sentences": len(references),
              "cpu": " + ".join(sorted(machines(run_dir)))}
    if equal_time_path.is_file():
        record["equal_time"] = json.loads(equal_time_path.read_text())
    if run.size in AVERAGED:
        record["averaged"] = score_averages(size.max_update, "")
    atomic_write_text(record_path, json.dumps(record, indent=1))
    for checkpoint in (run_dir / "checkpoints").glob("checkpoint*.pt"):
        checkpoint.unlink()  # 30-odd runs: keep the scores and logs, not the weights
    return record


def run_all(sizes: dict[str, DemoSize], data_bin: Path, references: Sequence[str], work_dir: Path, jobs: int,
            deadline: Optional[float], results: dict[str, dict], only: Optional[str] = None) -> None:
    """Runs what the plan needs (the screen before the confirm size), planning again as results come in,
    until nothing that matches ``only`` is left."""
    tried: set[str] = set()  # failed or skipped: not retried in this invocation

    def one(run: Run, finals: dict[str, Run]) -> None:
        tried.add(run.key)
        if deadline is not None and time.time() > deadline and not (work_dir / run.key / "result.json").is_file():
            print(f"[study] {run.key}: skipped, past the deadline", flush=True)
            return
        try:
            results[run.key] = execute(run, sizes, data_bin, references, work_dir,
                                       stop=equal_time_stop(run, finals, results, work_dir))
            print(f"[study] {run.key}: BLEU {results[run.key]['bleu']}", flush=True)
        except Exception as error:  # one failed run must not lose the others; the report lists it as missing
            print(f"[study] {run.key}: FAILED: {error}", flush=True)

    while True:
        current = plan(results)
        todo = sorted((run for run in current.runs if run.key not in results and run.key not in tried
                       and (only is None or fnmatch.fnmatch(run.key, only))), key=lambda run: run.size != "screen")
        if not todo:
            return
        with ThreadPoolExecutor(max_workers=jobs) as pool:  # one worker: in the plan's order, back to back
            list(pool.map(lambda run: one(run, current.finals), todo))


def read_results(work_dir: Path, report_json: Path) -> dict[str, dict]:
    """Finished runs: those of the report (so a study goes on across machines and sessions from what
    the repository holds), then those of the work directory."""
    results = json.loads(report_json.read_text())["runs"] if report_json.is_file() else {}
    for path in sorted(work_dir.glob("*/*/result.json")):
        record = json.loads(path.read_text())
        results[record["key"]] = record
    return results


def _cell(results: dict, runs: list[Run], metric: str) -> tuple[list[Optional[float]], Optional[float]]:
    """The metric's last value per run, and their mean over the finished runs."""
    values = [results[r.key][metric][-1][1] if r.key in results else None for r in runs]
    done = [v for v in values if v is not None]
    return values, (round(mean(done), 2) if done else None)


def _fmt(value: Optional[float]) -> str:
    return "-" if value is None else f"{value:.2f}"


def setting_groups(results: dict[str, dict], study: Plan) -> dict[tuple[str, str, str], list[Run]]:
    """(size, model, label) -> the setting's run per seed, for every planned or finished setting, in table order."""
    known = study.runs + [Run(r["model"], r["size"], r["label"], merged(tuple(r["options"])), r["seed"])
                          for r in results.values()]  # records from before options were merged repeat flags
    order = {**{size: i for i, size in enumerate(SIZES)}, "transformer": 0, "resmlp": 1, "paper": 0}
    groups: dict[tuple[str, str, str], list[Run]] = {}
    def rate_ordered(label: str) -> str:  # "learning rate=2e-3" before "learning rate=1.6e-2"
        return re.sub(r"(?<=learning rate=)[0-9.e-]+", lambda m: f"{float(m.group()):.6f}", label)

    for run in sorted(known, key=lambda r: (order[r.size], order[r.model], order.get(r.label, 1),
                                            rate_ordered(r.label))):
        setting = Setting(run.model, run.label, run.options)
        groups.setdefault((run.size, run.model, run.label), [setting.run(seed, run.size) for seed in SEEDS])
    return groups


def screen_bleu(results: dict[str, dict], groups: dict[tuple[str, str, str], list[Run]]) -> dict[str, dict[str, float]]:
    """model -> label -> mean BLEU over the finished seeds, for the screen settings with any."""
    screened: dict[str, dict[str, float]] = {}
    for (size, model, label), runs in groups.items():
        if size == "screen" and _cell(results, runs, "bleu")[1] is not None:
            screened.setdefault(model, {})[label] = _cell(results, runs, "bleu")[1]
    return screened


def summary(report_json: Path) -> list[list]:
    """For other reports: each model's given and best screen setting so far (model, setting, mean BLEU, seeds)."""
    results = json.loads(Path(report_json).read_text())["runs"]
    groups = setting_groups(results, plan(results))
    rows = []
    for model, bleus in screen_bleu(results, groups).items():
        for label in dict.fromkeys(["paper", max(bleus, key=bleus.get)]):
            if label in bleus:
                seeds = sum(run.key in results for run in groups[("screen", model, label)])
                rows.append([model, label, bleus[label], seeds])
    return rows


def write_report(results: dict[str, dict], sizes: dict[str, DemoSize], out: Path, command: str, device: str) -> Path:
    """``out``.md (tables), ``out``.json (every run) and ``out``.png (validation curves at the confirm size)."""
    lines = [f"# Translation study: ResMLP against the transformer on the Bible (De->En)", "",
             f"Produced by `{command}` on {device}. Written by `resmlp_suite.translation.study`; its docstring "
             "describes the stages. BLEU: sacreBLEU on every verse of the test book, beam 4, last checkpoint; "
             "valid: label-smoothed validation loss (bits/token) on Romans at the last update.", ""]
    study = plan(results)
    groups = setting_groups(results, study)
    screened = screen_bleu(results, groups)
    leaders = {model: max(bleus, key=bleus.get) for model, bleus in screened.items()}
    reference = leaders.get("transformer")
    transformer_screen = screened.get("transformer", {}).get(reference)
    for size, s in sizes.items():
        lines += [f"## {size}: d {s.dim}, {s.layers}+{s.layers} layers, FFN {s.ffn_dim}, {s.max_update} updates", ""]
        if size in AVERAGED:
            lines += [*averaging_lines(results, groups, size), ""]
            continue
        if size == "screen":
            lines += [f"vs transformer: mean BLEU over the best transformer's so far (`{reference}`).", "",
                      "| model | changed from the paper's model | BLEU per seed | BLEU mean | chrF2 mean | valid | "
                      "vs transformer |", "| --- | --- | --- | --- | --- | --- | --- |"]
        else:
            half, last = s.max_update // 2, s.max_update
            confirmed = {key: bleu for key, r in results.items() if r["size"] == size and r["model"] == "transformer"
                         for update, bleu in r["bleu"] if update == last}
            best_transformer = max(confirmed, key=confirmed.get, default=None)
            lines += ["train min: from the training log's time stamps, validation included, summed over the "
                      "processes of a resumed run; compare it only between runs on one machine (the CPU's name and a "
                      "tag that changes with each boot; older runs recorded the name alone). vs transformer: BLEU "
                      "over the best transformer's at this size "
                      f"(`{results[best_transformer]['label'] if best_transformer else '-'}`), at equal updates.", "",
                      f"| model | options | BLEU @{half} | BLEU @{last} | chrF2 @{last} | valid | params | train min | "
                      "machine | vs transformer |", "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
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
                options = " ".join(runs[0].options) or "(recipe as given)"
                for run in runs:
                    r = results.get(run.key)
                    name = f"{model} {label}" + (f" (seed {run.seed})" if run.seed != SEEDS[0] else "")
                    if r is None:  # planned, not finished; a second seed is shown once the plan wants it
                        if run.seed == SEEDS[0] or run in study.runs:
                            lines.append(f"| {name} | `{options}` | - | - | - | - | - | - | - | - |")
                        continue
                    bleu = dict(r["bleu"])
                    ratio = (f"{bleu[last] / confirmed[best_transformer]:.2f}x" if best_transformer and last in bleu
                             else "-")
                    lines.append(f"| {name} | `{options}` | {_fmt(bleu.get(half))} | {_fmt(bleu.get(last))} | "
                                 f"{_fmt(r['chrf'][-1][1])} | {_fmt(r['valid_loss'][-1][1])} | "
                                 f"{r['params'] / 1e6:.2f} M | {r['train_wall_s'] / 60:.1f} | {r['cpu']} | {ratio} |")
        if size == "confirm":
            lines += ["", *final_lines(results, study.finals, last)]
        lines.append("")
    lines += [f"Choices: each factor's best option by mean BLEU, settled once every option within {MARGIN:g} BLEU "
              "of it has both seeds.", ""]
    for model, setting in study.tuned.items():
        picks = study.chosen.get(model)
        lines.append(f"- {model}: " + (", ".join(f"{factor} {option}" for factor, option in picks.items()) + "."
                                         if picks else f"screen not finished; best so far `{setting.label}`."))
        if model in study.defaults and study.defaults[model] != setting:
            beyond = ", ".join(f"{factor} {option}" for factor, option in RESEARCH_ONLY)
            unsafe = ", ".join(f"{factor} {option}" for factor, option in UNSAFE_DEFAULTS)
            lines.append(f"  The architecture's defaults, without the options beyond the paper's model ({beyond}) "
                         f"and with the next best option in place of one that fails a test ({unsafe}): "
                         f"`{study.defaults[model].label}`.")
        if model in study.confirm_rate:
            lines.append(f"  At the confirm size, searched again down from the screen's: learning rate "
                         f"{study.confirm_rate[model]}.")
    lines.append("")
    curves = {f"{r['model']} {r['label']}": r for r in results.values() if r["size"] == "confirm"}
    plotted = "confirm"
    if not curves:  # until the confirm size has run: the screen's given and best settings so far, seed 1
        plotted = "screen"
        keys = {Setting(model, label, ()).run(SEEDS[0]).key for model, leader in leaders.items()
                for label in ("paper", leader)}
        curves = {f"{results[key]['model']} {results[key]['label']}": results[key]
                  for key in sorted(keys) if key in results}
    if curves:
        sized = sizes[plotted]
        plot_valid_loss(curves, out.with_suffix(".png"),
                        f"Bible De->En, d {sized.dim}, {sized.layers}+{sized.layers} layers: validation loss")
        lines += [f"![Validation loss at the {plotted} size]({out.with_suffix('.png').name})", ""]
    atomic_write_text(out.with_suffix(".md"), "\n".join(lines))
    atomic_write_text(out.with_suffix(".json"), json.dumps({"command": command, "device": device, "runs": results},
                                                           indent=1))
    return out.with_suffix(".md")


def averaging_lines(results: dict[str, dict], groups: dict[tuple[str, str, str], list[Run]], size: str) -> list[str]:
    """The BLEU of each averaging run of ``size`` with its last checkpoint and with its last ones averaged; per
    model the mean change, and resmlp / transformer at each over the seeds that both have run."""
    lines = [f"{AVERAGED[size]} trained again, saving a checkpoint every 1/{AVERAGE_SAVES} of "
             "its updates, and scored with its last checkpoint and with the mean of its last "
             f"{' and '.join(map(str, AVERAGE_LAST))}; the differences within a row come from one training.", "",
             "| model | setting | seed | BLEU last | " + " | ".join(f"BLEU last {n} averaged" for n in AVERAGE_LAST)
             + " | chrF2 last | " + " | ".join(f"chrF2 last {n}" for n in AVERAGE_LAST) + " |",
             "| --- " * (4 + 2 * len(AVERAGE_LAST)) + "| --- |"]
    bleus: dict[str, dict[int, list[float]]] = {}  # model -> seed -> BLEU last, then each average
    for (run_size, model, label), runs in groups.items():
        if run_size != size:
            continue
        for r in (results[run.key] for run in runs if "averaged" in results.get(run.key, {})):
            bleu = bleus.setdefault(model, {})[r["seed"]] = [r["bleu"][-1][1], *(a["bleu"] for a in r["averaged"])]
            chrf = [r["chrf"][-1][1], *(a["chrf"] for a in r["averaged"])]
            spans = [f"{_fmt(a['bleu'])} ({a['updates'][0]}-{a['updates'][-1]})" for a in r["averaged"]]
            lines.append(f"| {model} | {label} | {r['seed']} | {_fmt(bleu[0])} | {' | '.join(spans)} | "
                         + " | ".join(map(_fmt, chrf)) + " |")
    lines.append("")

    def means(model: str, seeds: Sequence[int]) -> list[float]:
        return [mean(column) for column in zip(*(bleus[model][seed] for seed in seeds))]

    for model, per_seed in bleus.items():
        bleu = means(model, sorted(per_seed))
        lines.append(f"- {model}, mean BLEU: last {_fmt(bleu[0])}; " + "; ".join(
            f"last {n} averaged {_fmt(b)} ({b - bleu[0]:+.2f})" for n, b in zip(AVERAGE_LAST, bleu[1:])) + ".")
    # a seed moves BLEU about as much as averaging: the ratio pairs the models' runs by seed
    paired = sorted(set(bleus.get("resmlp", {})) & set(bleus.get("transformer", {})))
    if paired:
        ratios = [r / t for r, t in zip(means("resmlp", paired), means("transformer", paired))]
        lines.append(f"- resmlp / transformer, seed {' and '.join(map(str, paired))}: last {ratios[0]:.2f}x; "
                     + "; ".join(f"last {n} averaged {ratio:.2f}x" for n, ratio in zip(AVERAGE_LAST, ratios[1:])) + ".")
    at_equal_time = equal_time_lines(results, [results[run.key] for (run_size, _, _), runs in groups.items()
                                               if run_size == size for run in runs if run.key in results])
    return lines + [f"- {line}" for line in at_equal_time]


def final_lines(results: dict[str, dict], finals: dict[str, Run], last: int) -> list[str]:
    """The final pair's BLEU over its seeds, and its training times where a machine ran both models."""
    if not finals:
        return ["Final pair (each model's best confirm run, seed 2): chosen once every confirm run has finished."]
    seeds = {model: [dataclasses.replace(run, seed=seed).key for seed in SEEDS] for model, run in finals.items()}
    done = {model: [results[key] for key in keys if key in results] for model, keys in seeds.items()}
    bleu = {model: [dict(r["bleu"])[last] for r in records] for model, records in done.items()}
    means = {model: mean(scores) for model, scores in bleu.items()}
    lines = [f"Final pair, BLEU @{last} per seed (mean): " + "; ".join(
        f"{model} `{finals[model].label}` {' / '.join(map(_fmt, bleu[model]))} ({_fmt(means[model])})"
        for model in finals) + f"; resmlp / transformer {means['resmlp'] / means['transformer']:.2f}x."]
    for machine in sorted({r["cpu"] for records in done.values() for r in records}):
        minutes = {model: [r["train_wall_s"] / 60 for r in records if r["cpu"] == machine]
                   for model, records in done.items()}
        if all(minutes.values()):
            lines.append(f"Train min on `{machine}`: " + ", ".join(
                f"{model} {mean(m):.1f}" for model, m in minutes.items())
                + f"; resmlp / transformer {mean(minutes['resmlp']) / mean(minutes['transformer']):.2f}x.")
    return lines + equal_time_lines(results, [r for records in done.values() for r in records])


def equal_time_lines(results: dict[str, dict], records: Sequence[dict]) -> list[str]:
    """Each record stopped at its pair's first run's training time, beside that run at its end: BLEU with the
    last checkpoint (and, for averaging runs, with the last n averaged where both have a mean of n), and
    resmlp / transformer for each."""
    lines = []
    for record in (r for r in records if r.get("equal_time", {}).get("against") in results):
        stopped, first = record["equal_time"], results[record["equal_time"]["against"]]
        points = {first["model"]: (first["bleu"][-1][0], first["train_wall_s"], first["bleu"][-1][1], first),
                  record["model"]: (stopped["update"], stopped["train_wall_s"], stopped["bleu"], stopped)}
        means = {model: {len(a["updates"]): a["bleu"] for a in scores.get("averaged", [])}
                 for model, (*_, scores) in points.items()}
        counts = sorted(set.intersection(*map(set, means.values())))
        bleus = {model: [bleu, *(means[model][n] for n in counts)] for model, (_, _, bleu, _) in points.items()}
        names = ["", *(f"last {n} averaged " for n in counts)]
        lines.append(f"At equal train time on `{record['cpu']}` (seed {record['seed']}): " + "; ".join(
            f"{model} update {update}, {seconds / 60:.1f} min, BLEU "
            + ", ".join(f"{name}{_fmt(bleu)}" for name, bleu in zip(names, bleus[model]))
            for model, (update, seconds, _, _) in points.items()) + "; resmlp / transformer "
            + ", ".join(f"{name}{r / t:.2f}x" for name, r, t in zip(names, bleus["resmlp"], bleus["transformer"]))
            + ".")
    return lines


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
        run_all(sizes, data_bin, references, args.work_dir, args.jobs, deadline, results, args.only)
    report = write_report(read_results(args.work_dir, args.out.with_suffix(".json")), sizes, args.out, command, device)
    print(f"[study] wrote {report}")
    return report


if __name__ == "__main__":
    with user_errors():
        main()
