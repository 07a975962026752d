"""The suite's main job: both of the paper's results at laptop scale, each beside its baseline, and a report.

    python -m resmlp_suite.demo            # ~45 min on 2 CPU cores: report/index.html, report/README.md
    python -m resmlp_suite.demo --quick    # ~5 min: smaller runs, same pipeline, runs/demo-quick, report-quick/

Steps (each is skipped when its result file exists, and the training steps resume a killed run):
  1. vision: ``vision/train.py`` (ResMLP on Fashion-MNIST), then its attention baseline ``experiment=fmnist_vit``;
  2. dino: ``vision/train_dino.py`` (the same ResMLP, self-supervised on the same images), then
     ``vision/evaluate.py --knn`` on the test images for its teacher, the same network at initialisation, the raw
     pixels and the supervised run of step 1;
  3. translation: ``translation/bible_demo.py`` (resmlp_seq2seq vs an equal-size transformer, Bible De->En);
  4. models: parameter and multiply-accumulate counts of the paper's models against the paper;
  5. benchmarks: ``benchmarks/vision_inference.py`` and ``benchmarks/translation_speed.py``;
  6. report: tables and plots from the files the steps wrote, nothing else.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from omegaconf import OmegaConf

from .cli import REPO, user_errors
from .files import atomic_write_text
from .training.metrics import read_metrics
from .translation.study import summary

STUDY_JSON = REPO / "docs" / "translation_study.json"


@dataclass(frozen=True)
class DemoSize:
    vision_overrides: tuple[str, ...]
    dino_overrides: tuple[str, ...]
    knn_args: tuple[str, ...]  # vision/evaluate.py --knn options of the DINO step's side-by-side
    translation_args: tuple[str, ...]
    vision_bench_args: tuple[str, ...]
    translation_bench_args: tuple[str, ...]


FULL = DemoSize(
    vision_overrides=(),
    # The step evaluates the teacher by k-NN right after training, with all the training images as the memory.
    dino_overrides=("dino.knn_every=0",),
    knn_args=(),
    translation_args=(),
    # The eager modes: compiling took 99 of the 158 seconds this step took with all four modes (Intel Xeon,
    # 2 cores); the compiled modes are measured by the script run alone. bf16 only where it is native: on an
    # AMD EPYC without it, the bf16 warm-ups alone took 5 minutes and the rounds would have taken about 15 more.
    vision_bench_args=("--modes", "eager-fp32", "eager-bf16", "--skip-slow-bf16"),
    translation_bench_args=(),
)
QUICK = DemoSize(
    vision_overrides=("train.epochs=1", "data.train_samples=12000"),
    dino_overrides=("train.epochs=1", "data.train_samples=6000"),
    knn_args=("--knn-memory", "10000"),
    translation_args=("--quick",),
    # A pipeline check: on CPUs without native bf16 matmuls (AMD EPYC here: 0.3 bf16 GFLOP/s against 170 fp32)
    # four calls of the default 2048^3 roofline GEMM took about 4 of the quick demo's 7.4 minutes.
    vision_bench_args=("--rounds", "1", "--batch", "8", "--gemm-size", "512", "--modes", "eager-fp32", "eager-bf16",
                       "--skip-slow-bf16"),
    translation_bench_args=("--quick",),
)
VISION_RUNS = {"resmlp": (), "baseline": ("experiment=fmnist_vit",)}


def _script(relative: str) -> str:
    path = REPO / relative
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: the demo runs from a checkout of the repository (pip install -e .)")
    return str(path)


def _run(cmd: Sequence[str]) -> float:
    """Run a step's command with its output streamed through; returns its wall time in seconds."""
    print(f"[demo] $ {' '.join(cmd)}", flush=True)
    start = time.perf_counter()
    subprocess.run(list(cmd), cwd=REPO, check=True)
    return time.perf_counter() - start


def _run_json(cmd: Sequence[str]) -> dict[str, Any]:
    """Run a command that prints one JSON line last (its logs stream through); returns that line, parsed."""
    print(f"[demo] $ {' '.join(cmd)}", flush=True)
    out = subprocess.run(list(cmd), cwd=REPO, check=True, stdout=subprocess.PIPE, text=True).stdout
    print(out, end="", flush=True)
    return json.loads(out.strip().splitlines()[-1])


# The side-by-side k-NN of the DINO step: label -> (checkpoint: "dino" or "supervised", vision/evaluate.py flags)
KNN_BASELINES = {
    "raw pixels": ("dino", ("--pixels",)),
    "same network at initialisation": ("dino", ("--random-init",)),
    "DINO (teacher)": ("dino", ()),
    "supervised (step 1)": ("supervised", ()),
}


class Demo:
    def __init__(self, work_dir: Path, size: DemoSize) -> None:
        self.work_dir = work_dir
        self.size = size

    def step(self, name: str, run: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        """``run()`` once; its result is kept in ``<work_dir>/<name>.json`` (paths relative to ``work_dir``, so the
        folder can move) and re-used on the next call."""
        path = self.work_dir / f"{name}.json"
        if path.is_file():
            print(f"[demo] {name}: re-using {path}", flush=True)
            return json.loads(path.read_text())
        start = time.perf_counter()
        result = run()
        result["step_wall_s"] = round(time.perf_counter() - start, 1)
        atomic_write_text(path, json.dumps(result, indent=1))
        return result

    def vision(self) -> dict[str, Any]:
        runs = {}
        for label, overrides in VISION_RUNS.items():
            run_dir = self.work_dir / "vision" / label
            wall = _run([sys.executable, _script("vision/train.py"), f"output_dir={run_dir}", f"name={label}",
                         *overrides, *self.size.vision_overrides])
            rows = read_metrics(run_dir / "metrics.json")
            runs[label] = {**self.run_summary(run_dir, wall, rows), "best_top1": max(r["val_top1"] for r in rows)}
        return {"runs": runs}

    def run_summary(self, run_dir: Path, wall: float, rows: list[dict[str, Any]]) -> dict[str, Any]:
        """A training run of a step: where it is, its wall and training time, epochs and last metrics row."""
        return {"run_dir": str(run_dir.relative_to(self.work_dir)), "wall_s": round(wall, 1), "epochs": len(rows),
                "train_s": round(sum(r["train_time_s"] for r in rows), 1), "final": rows[-1]}

    def dino(self) -> dict[str, Any]:
        run_dir = self.work_dir / "dino"
        wall = _run([sys.executable, _script("vision/train_dino.py"), f"output_dir={run_dir}", *self.size.dino_overrides])
        checkpoints = {"dino": run_dir / "last.pt", "supervised": self.work_dir / "vision" / "resmlp" / "last.pt"}
        knn = {}
        for label, (source, flags) in KNN_BASELINES.items():
            args = [os.path.relpath(checkpoints[source], REPO), "--knn", *flags, *self.size.knn_args]
            result = _run_json([sys.executable, _script("vision/evaluate.py"), *args])
            knn[label] = {"command": " ".join(["python vision/evaluate.py", *args]),
                          **{k: result[k] for k in ("knn_top1", "knn_top5", "knn_count", "knn_memory", "split")}}
        out_dim = OmegaConf.load(run_dir / ".hydra" / "config.yaml").dino.out_dim
        return {**self.run_summary(run_dir, wall, read_metrics(run_dir / "metrics.json")), "knn": knn, "out_dim": out_dim}

    def translation(self) -> dict[str, Any]:
        out = self.work_dir / "translation"
        _run([sys.executable, _script("translation/bible_demo.py"), "--work-dir", str(out), *self.size.translation_args])
        return {"work_dir": str(out.relative_to(self.work_dir)), **json.loads((out / "results.json").read_text())}

    def models(self) -> dict[str, Any]:
        from .vision.complexity import complexity_table

        return {"rows": [vars(row) for row in complexity_table()]}

    def benchmark(self, script: str, args: Sequence[str]) -> dict[str, Any]:
        out = self.work_dir / f"{Path(script).stem}.raw.json"
        _run([sys.executable, _script(script), "--json", str(out), *args])
        return json.loads(out.read_text())


def run(work_dir: Path, report_dir: Path, size: DemoSize, command: str, readme: bool = False) -> Path:
    """All steps, then the report (and, with ``readme``, the repository README's results); returns the HTML page."""
    from .demo_report import build_report, publish_to_readme

    start = time.perf_counter()
    work_dir.mkdir(parents=True, exist_ok=True)
    demo = Demo(work_dir, size)
    steps = [
        ("vision", demo.vision),
        ("dino", demo.dino),
        ("translation", demo.translation),
        ("models", demo.models),
        ("vision_inference", lambda: demo.benchmark("benchmarks/vision_inference.py", size.vision_bench_args)),
        ("translation_speed", lambda: demo.benchmark("benchmarks/translation_speed.py", size.translation_bench_args)),
    ]
    results: dict[str, Any] = {}
    for i, (name, fn) in enumerate(steps, 1):
        print(f"[demo] step {i}/{len(steps) + 1}: {name}", flush=True)
        results[name] = demo.step(name, fn)
    print(f"[demo] step {len(steps) + 1}/{len(steps) + 1}: report", flush=True)
    results["meta"] = {
        "command": command,
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores",
        "this_invocation_wall_s": round(time.perf_counter() - start, 1),
        # the study's standings so far: read from the repository, not re-run (hours of training)
        "translation_study": summary(STUDY_JSON) if STUDY_JSON.is_file() else [],
    }
    doc, page = build_report(results, work_dir, report_dir)
    print(f"[demo] report: {page} (open it in a browser) and {report_dir / 'README.md'}", flush=True)
    if readme:
        publish_to_readme(doc, report_dir, REPO / "README.md", REPO / "docs" / "results")
        print(f"[demo] results section of {REPO / 'README.md'} rewritten, plots in {REPO / 'docs' / 'results'}", flush=True)
    return page


def main(argv: Optional[Sequence[str]] = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller runs of every step (about 5 minutes)")
    parser.add_argument("--work-dir", type=Path, default=None, help="runs and step results (default runs/demo[-quick])")
    parser.add_argument("--report-dir", type=Path, default=None, help="the report (default report[-quick])")
    parser.add_argument("--fresh", action="store_true", help="delete the work directory first instead of re-using it")
    parser.add_argument("--readme", action="store_true",
                        help="also put the report into the results section of the repository's README.md (docs/results/)")
    args = parser.parse_args(argv)
    suffix = "-quick" if args.quick else ""
    work_dir = (args.work_dir or REPO / "runs" / f"demo{suffix}").resolve()
    report_dir = (args.report_dir or REPO / f"report{suffix}").resolve()
    if args.fresh and work_dir.exists():
        shutil.rmtree(work_dir)
    command = "python -m resmlp_suite.demo" + (" --quick" if args.quick else "")
    return run(work_dir, report_dir, QUICK if args.quick else FULL, command, readme=args.readme)


if __name__ == "__main__":
    with user_errors():
        main()
