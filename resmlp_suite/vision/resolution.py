"""A ResMLP trained at one resolution, used at others: resampled token mixing against the alternatives.

On Fashion-MNIST, from the default 28-px run (``resmlp_tiny_p4``, patch 4: a 7 x 7 grid), for each new
size (32 px: 8 x 8 patches, 40 px: 10 x 10), every number on the 10k test images at that size:

(a) the 28-px weights with every token-mixing matrix resampled to the new grid, no training;
(b) the naive alternative: the test images resized back to 28 px for the unchanged model;
(c) (a) plus one epoch of fine-tuning at the new size (``model.pretrained_file``, learning rate
    :data:`FINETUNE_LR`), against one epoch from scratch at the new size (the default recipe);
(d) what the interpolation of A alone loses: every matrix resampled to the new grid and back, evaluated
    at 28 px, where the patches show what they were trained on. Near the 28-px accuracy, A survives its
    resampling and the loss in (a) comes from the images (smaller parts of a garment per patch).

Every training is ``vision/train.py`` with overrides; the result is a JSON file and a Markdown table.
"""
from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path
from typing import Any, Optional, Sequence

from ..cli import REPO
from ..files import atomic_write_text
from ..training.checkpoint import atomic_save, read_checkpoint
from ..training.metrics import read_metrics
from .evaluation import evaluate_checkpoint
from .resample import resample_state_dict

__all__ = ["FINETUNE_LR", "SIZES", "run_study", "write_report"]

SIZES = (32, 40)
# A tenth of the default run's 1e-2: fine-tuning adapts trained weights (DeiT fine-tunes at 384 px far
# below its training rate). Fixed before any run, not tuned on the test set.
FINETUNE_LR = 1e-3
BASE_SIZE = 28
PATCH = 4


def _shown(path: Path) -> str:
    """A path as the report shows it: relative to the repository when inside it (the report is committed)."""
    resolved = path.resolve()
    return str(resolved.relative_to(REPO)) if resolved.is_relative_to(REPO) else str(path)


def train_run(output_dir: Path, overrides: Sequence[str]) -> dict[str, Any]:
    """``vision/train.py output_dir=... <overrides>`` (a finished run returns at once, a killed one resumes):
    the last epoch's metrics."""
    cmd = [sys.executable, str(REPO / "vision" / "train.py"), f"output_dir={output_dir}", *overrides]
    print(f"[resolution] $ {' '.join(cmd)}", flush=True)
    subprocess.run(cmd, cwd=REPO, check=True)
    rows = read_metrics(output_dir / "metrics.json")
    return {"top1": rows[-1]["val_top1"], "epochs": len(rows), "train_s": round(sum(r["train_time_s"] for r in rows), 1),
            "run_dir": _shown(output_dir)}


def round_trip(checkpoint: Path, grid: int, out: Path) -> Path:
    """A copy of a 28-px run's checkpoint whose token-mixing matrices went to a ``grid x grid`` patch grid and
    back (its EMA weights too, if any)."""
    state = read_checkpoint(checkpoint)
    base_grid = BASE_SIZE // PATCH
    for key in ("model", "model_ema"):
        if state.get(key) is not None:
            there, _ = resample_state_dict(state[key], grid, old_grid=base_grid)
            state[key], _ = resample_state_dict(there, base_grid, old_grid=grid)
    atomic_save(state, out)
    return out


def claim_work_dir(work_dir: Path, checkpoint: Path) -> None:
    """Tie ``work_dir`` to the 28-px checkpoint its runs start from: finished runs are re-used, so runs
    fine-tuned from another checkpoint must not be mixed in."""
    stamp = {"checkpoint": str(checkpoint), "sha256": hashlib.sha256(checkpoint.read_bytes()).hexdigest()}
    record = work_dir / "base.json"
    if record.is_file():
        old = json.loads(record.read_text())
        if old["sha256"] != stamp["sha256"]:
            raise ValueError(f"{work_dir} holds runs made from another 28-px checkpoint ({old['checkpoint']}, "
                             f"sha256 {old['sha256'][:12]}) than {checkpoint} (sha256 {stamp['sha256'][:12]}); "
                             f"give another --work-dir, or delete {work_dir} to start over")
    else:
        unclaimed = sorted(str(d) for pattern in ("finetune_*", "scratch_*") for d in work_dir.glob(pattern))
        if unclaimed:
            raise ValueError(f"{work_dir} holds runs ({', '.join(unclaimed)}) with no record of the 28-px checkpoint "
                             f"they started from; give another --work-dir, or delete {work_dir} to start over")
        work_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(record, json.dumps(stamp, indent=1))


def run_study(work_dir: Path, base_run: Optional[Path] = None, sizes: Sequence[int] = SIZES,
              base_overrides: Sequence[str] = (), epoch_overrides: Sequence[str] = ()) -> dict[str, Any]:
    """Train (or reuse) the 28-px run, then measure (a) to (d) at each size; returns the results.

    ``base_overrides`` go to the 28-px training, ``epoch_overrides`` to the one-epoch runs (both: quick checks).
    """
    if base_run is None:
        base = train_run(work_dir / f"base_{BASE_SIZE}", [f"data.img_size={BASE_SIZE}", *base_overrides])
        base_run = Path(base["run_dir"])
    checkpoint = base_run / "last.pt"
    if not checkpoint.is_file():
        raise FileNotFoundError(f"{checkpoint} not found: --base-run takes a vision/train.py run directory")
    claim_work_dir(work_dir, checkpoint)
    results: dict[str, Any] = {"base_run": _shown(base_run), "finetune_lr": FINETUNE_LR,
                               "base": evaluate_checkpoint(checkpoint, data={"img_size": BASE_SIZE})["top1"],
                               "sizes": {}}
    for size in sizes:
        one_epoch = [f"data.img_size={size}", "train.epochs=1", *epoch_overrides]
        results["sizes"][str(size)] = {
            "resampled": evaluate_checkpoint(checkpoint, data={"img_size": size})["top1"],
            "resized_to_28": evaluate_checkpoint(checkpoint, source_img_size=size)["top1"],
            "round_trip_at_28": evaluate_checkpoint(round_trip(checkpoint, size // PATCH, work_dir / f"round_trip_{size}.pt"),
                                                    data={"img_size": BASE_SIZE})["top1"],
            "resampled_finetuned": train_run(work_dir / f"finetune_{size}", [
                *one_epoch, f"model.pretrained_file={checkpoint}", f"optim.lr={FINETUNE_LR}"]),
            "scratch": train_run(work_dir / f"scratch_{size}", one_epoch),
        }
        print(f"[resolution] {size} px: {json.dumps(results['sizes'][str(size)])}", flush=True)
    return results


def write_report(results: dict[str, Any], out: Path, command: str) -> Path:
    """``out``.json and ``out``.md: the table of (a) to (d) per size."""
    base = results["base"]
    lines = [
        "# A ResMLP at another resolution: resampled token mixing on Fashion-MNIST", "",
        f"`{command}`", "",
        f"Top-1 (%) on the 10k test images; the 28-px run ({results['base_run']}) scores {base:.2f} at 28 px.", "",
        "| size | patches | (a) resampled A | vs 28 px | (b) images resized to 28 px | "
        "(c) resampled A + 1 epoch | 1 epoch from scratch | (d) A there and back, at 28 px |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for size, row in results["sizes"].items():
        grid = int(size) // PATCH
        lines.append(f"| {size} px | {grid}x{grid} | {row['resampled']:.2f} | {row['resampled'] - base:+.2f} | "
                     f"{row['resized_to_28']:.2f} | {row['resampled_finetuned']['top1']:.2f} | "
                     f"{row['scratch']['top1']:.2f} | {row['round_trip_at_28']:.2f} |")
    lines += ["", f"Fine-tuning: one epoch of the default recipe at lr {results['finetune_lr']:g} from the 28-px "
              "weights (`model.pretrained_file`), against the same epoch at the default lr from random weights. "
              "(d): every token-mixing matrix resampled to the size's grid and back to 7x7, evaluated at 28 px: "
              "what the interpolation of A loses, apart from the images' new scale."]
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out.with_suffix(".json"), json.dumps(results, indent=1))
    atomic_write_text(out.with_suffix(".md"), "\n".join(lines) + "\n")
    return out.with_suffix(".md")
