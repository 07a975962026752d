"""The DINO settings of the Fashion-MNIST demo (``configs/dino_experiment/fmnist_tiny.yaml``), chosen on
held-out training images, never on the test set.

Each setting is one ``vision/train_dino.py`` run of one epoch over 50,000 training images with
``data.holdout=10000``: the other 10,000 training images are the queries of the teacher's weighted k-NN
(k 20, T 0.07; memory: 10,000 of the 50,000), which scores the setting. One epoch, so the last layer is not
frozen (``dino.freeze_last_layer=0``: DINO freezes it for the first of hundreds of epochs). Runs one at a
time (they share the CPU badly) and re-uses finished runs, so the search can stop and go on.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from ..cli import REPO
from ..device_info import device_name
from ..files import atomic_write_text
from ..plotting import plot_grouped_bars
from ..training.metrics import read_metrics

HOLDOUT = 10_000
COMMON = ("data.holdout=10000", "data.train_samples=null", "train.epochs=1", "dino.freeze_last_layer=0",
          "train.progress=false")
# label -> overrides, in the order they were tried: each row changes what the rows before it suggested.
# optim.lr is at a batch of 256 (scaled linearly: at batch 64 the step size is a quarter of it).
SETTINGS: dict[str, tuple[str, ...]] = {
    "DINO's: batch 256, lr 5e-4, teacher momentum 0.99": (
        "train.batch_size=256", "optim.lr=5e-4", "dino.momentum_teacher=0.99"),
    "lr 2e-3": ("train.batch_size=256", "optim.lr=2e-3", "dino.momentum_teacher=0.99"),
    "lr 5e-3": ("train.batch_size=256", "optim.lr=5e-3", "dino.momentum_teacher=0.99"),
    "lr 5e-3, batch 64 (4x the steps)": ("train.batch_size=64", "optim.lr=5e-3", "dino.momentum_teacher=0.99"),
    "lr 5e-3, momentum 0.9": ("train.batch_size=256", "optim.lr=5e-3", "dino.momentum_teacher=0.9"),
    "lr 5e-3, batch 64, momentum 0.95": ("train.batch_size=64", "optim.lr=5e-3", "dino.momentum_teacher=0.95"),
    "lr 2e-2, batch 64, momentum 0.95": ("train.batch_size=64", "optim.lr=2e-2", "dino.momentum_teacher=0.95"),
    "lr 2e-2, batch 64, momentum 0.9": ("train.batch_size=64", "optim.lr=2e-2", "dino.momentum_teacher=0.9"),
    "lr 5e-2, batch 64, momentum 0.95": ("train.batch_size=64", "optim.lr=5e-2", "dino.momentum_teacher=0.95"),
    "lr 1e-1, batch 64, momentum 0.95": ("train.batch_size=64", "optim.lr=1e-1", "dino.momentum_teacher=0.95"),
    "lr 5e-2, batch 32, momentum 0.975": ("train.batch_size=32", "optim.lr=5e-2", "dino.momentum_teacher=0.975"),
    "lr 5e-2, batch 64, momentum 0.95, 4 epochs of 12,500 images": (
        "train.batch_size=64", "optim.lr=5e-2", "dino.momentum_teacher=0.95", "train.epochs=4",
        "data.train_samples=12500"),
}


# What configs/dino_experiment/fmnist_tiny.yaml takes (one epoch, on 50 k of the 60 k images in the demo): the best
# here, and the steadiest. At batch 64 the teacher's entropy swung from near 0 to near ln(out_dim) and back, and
# the demo's first run with "lr 5e-2, batch 64, momentum 0.95" (on 60 k images) stayed uniform from step 480 on.
CHOSEN = "lr 5e-2, batch 32, momentum 0.975"


def slug(label: str) -> str:
    return "".join(c if c.isalnum() or c in ".-" else "_" for c in label).strip("_")


def run_settings(work_dir: Path, settings: dict[str, tuple[str, ...]] = SETTINGS) -> dict[str, dict[str, Any]]:
    """Train every setting without a finished run in ``work_dir``; returns label -> result."""
    results = {}
    for label, overrides in settings.items():
        run_dir = work_dir / slug(label)
        # a setting's own value of a COMMON key replaces it (hydra refuses a key given twice)
        merged = dict(override.split("=", 1) for override in (*COMMON, *overrides))
        args = [f"{key}={value}" for key, value in merged.items()] + [f"output_dir={run_dir}"]
        metrics = run_dir / "metrics.json"
        if not (metrics.is_file() and read_metrics(metrics)):
            print(f"[dino settings] {label}", flush=True)
            subprocess.run([sys.executable, str(REPO / "vision" / "train_dino.py"), *args], cwd=REPO, check=True)
        row = read_metrics(metrics)[-1]
        results[label] = {"overrides": list(overrides), "knn_top1": row["knn_top1"],
                          "teacher_entropy": row["teacher_entropy"],
                          "train_min": sum(r["train_time_s"] for r in read_metrics(metrics)) / 60,
                          "img_per_s": row["train_img_per_s"]}
    return results


def write_report(results: dict[str, dict[str, Any]], out: Path, command: str) -> Path:
    """``out``.md (the table), ``.json`` and ``.png`` (k-NN top-1 per setting)."""
    lines = [
        "# DINO on Fashion-MNIST: the demo's settings, chosen on held-out training images", "",
        f"Produced by `{command}` on {device_name()}, {os.cpu_count()} cores; written by "
        "`resmlp_suite.ssl.demo_settings` (its docstring: the protocol). Every run: "
        f"`python vision/train_dino.py {' '.join(COMMON[:4])}` and the overrides below, the rest of "
        "`configs/dino_experiment/fmnist_tiny.yaml` as it stood. Score: the teacher's weighted k-NN top-1 on the "
        f"{HOLDOUT:,} held-out training images at the end of the run; entropy: the teacher's mean output entropy "
        "over the last epoch (nats; ln 2048 = 7.62 is a uniform output).", "",
        f"Chosen for the demo (in bold): {CHOSEN}, for the reasons in the comment of `CHOSEN` in "
        "`resmlp_suite/ssl/demo_settings.py`.", "",
        "| setting | overrides | k-NN top-1 (%) | teacher entropy | train minutes | images/s |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for label, r in results.items():
        mark = "**" if label == CHOSEN else ""
        lines.append(f"| {mark}{label}{mark} | `{' '.join(r['overrides'])}` | {mark}{r['knn_top1']:.2f}{mark} | "
                     f"{r['teacher_entropy']:.2f} | {r['train_min']:.1f} | {r['img_per_s']:.0f} |")
    plot = plot_grouped_bars({"k-NN top-1": {str(i): r["knn_top1"] for i, r in enumerate(results.values(), 1)}},
                             out.with_suffix(".png"), "held-out k-NN top-1 (%)",
                             "DINO, one epoch on Fashion-MNIST: settings in table order")
    lines += ["", f"![k-NN top-1 per setting, in table order]({plot.name})", ""]
    atomic_write_text(out.with_suffix(".md"), "\n".join(lines))
    atomic_write_text(out.with_suffix(".json"), json.dumps({"command": command, "results": results}, indent=1))
    return out.with_suffix(".md")
