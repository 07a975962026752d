"""ResMLP-6 against the base transformer on a GPU, with the WMT presets: fairseq-train words/s, then
beam-4 translation of the whole test set.

    python benchmarks/translation_gpu.py --data-bin runs/translation_study/full/data-bin \
        --refs runs/translation_study/full/corpus/test.en --max-update 300 --json gpu.json

Each model trains with the command line of ``translation/train_wmt14.sh MODEL en-de`` (ResMLP-6: d 512,
6+6 layers, Adagrad; the transformer base: Adam; both ``--fp16``, 3,584 tokens per batch), pointed at the
given De->En data-bin for ``--max-update`` updates. Words/s is fairseq's own ``wps`` (target words per
second), the median of the logged intervals after the first (which holds CUDA's start-up). Precisions:
``--fp16`` (the presets') and ``--amp`` (fp16 autocast with fp32 weights). fairseq 0.12's ``--bf16``
implies ``--tpu`` (torch_xla) and cannot run on a CUDA GPU, so bf16 is not offered.
The test set is then translated by ``fairseq-generate`` (beam 4, ``--fp16``) from the fp16 checkpoint
and scored with sacreBLEU; a few hundred updates of the WMT recipe (32k warm-up steps for ResMLP)
are far from a trained model, so that BLEU only shows the pipeline runs on the GPU.
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import time
from pathlib import Path
from typing import Optional, Sequence

import sacrebleu
import torch

from resmlp_suite.files import atomic_write_text, read_lines
from resmlp_suite.translation.fairseq_tools import USER_DIR, run_fairseq
from resmlp_suite.translation.generation import GenerationSettings, translate
from resmlp_suite.translation.training_log import read_training_log

REPO = Path(__file__).resolve().parents[1]
MODELS = ("resmlp", "transformer")
PRECISIONS = {"fp16": [], "amp": ["--amp"]}


def preset_flags(model: str, data_bin: Path) -> list[str]:
    """The fairseq-train arguments of ``train_wmt14.sh MODEL en-de DATA`` (its DRY_RUN output, program name dropped)."""
    printed = subprocess.run(["bash", str(REPO / "translation" / "train_wmt14.sh"), model, "en-de", str(data_bin)],
                             env={**os.environ, "DRY_RUN": "1"}, capture_output=True, text=True, check=True, cwd=REPO)
    return shlex.split(printed.stdout)[1:]


def without_flag(flags: list[str], flag: str) -> list[str]:
    """``flags`` without a store-true ``flag`` (``--amp`` refuses ``--fp16``)."""
    return [f for f in flags if f != flag]


def train(model: str, precision: str, data_bin: Path, out: Path, max_update: int) -> dict:
    flags = preset_flags(model, data_bin)
    if precision != "fp16":
        flags = without_flag(flags, "--fp16")
    save_dir = out / f"{model}-{precision}"
    flags += [*PRECISIONS[precision], "--source-lang", "de", "--target-lang", "en", "--max-update", max_update,
              "--save-dir", save_dir, "--log-interval", 25, "--disable-validation", "--no-epoch-checkpoints",
              "--no-progress-bar", "--num-workers", 2]
    start = time.perf_counter()
    run_fairseq("train", flags, log_file=save_dir / "train.log")
    log = read_training_log(save_dir / "train.log")
    wps = [w for _, w in log.train_wps[1:]]
    if not wps:
        raise RuntimeError(f"no training speed logged in {save_dir / 'train.log'}: raise --max-update")
    return {"model": model, "precision": precision, "params": log.params, "wps": round(statistics.median(wps), 1),
            "wall_s": round(time.perf_counter() - start, 1), "checkpoint": str(save_dir / "checkpoint_last.pt")}


def main(argv: Optional[Sequence[str]] = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-bin", type=Path, required=True, help="a De->En fairseq data-bin (joined dictionary)")
    parser.add_argument("--refs", type=Path, required=True, help="the test references, one sentence a line")
    parser.add_argument("--max-update", type=int, default=300)
    parser.add_argument("--out", type=Path, default=Path("runs/translation_gpu"))
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        parser.error("this benchmark needs a CUDA GPU (benchmarks/translation_speed.py measures on the CPU)")
    references = read_lines(args.refs)
    results: dict = {"device": torch.cuda.get_device_name(), "max_update": args.max_update, "runs": [], "bleu": {}}
    for precision in PRECISIONS:
        for model in MODELS:
            results["runs"].append(train(model, precision, args.data_bin, args.out, args.max_update))
            print(f"[gpu] {model} {precision}: {results['runs'][-1]['wps']:.0f} words/s", flush=True)
    for model in MODELS:
        checkpoint = next(r["checkpoint"] for r in results["runs"] if r["model"] == model and r["precision"] == "fp16")
        start = time.perf_counter()
        hypotheses = translate(args.data_bin, Path(checkpoint), args.out / f"{model}-generate", len(references),
                               settings=GenerationSettings(beam=4, max_len_a=1.5, max_len_b=10, fp16=True),
                               user_dir=USER_DIR)
        seconds = time.perf_counter() - start
        results["bleu"][model] = {"bleu": round(sacrebleu.corpus_bleu(hypotheses, [references]).score, 2),
                                  "sentences": len(hypotheses), "generate_wall_s": round(seconds, 1)}
    lines = [f"{results['device']}, {args.max_update} updates, WMT presets (ResMLP-6 vs transformer base)",
             "| precision | resmlp words/s | transformer words/s | resmlp / transformer |", "| --- | --- | --- | --- |"]
    for precision in PRECISIONS:
        wps = {r["model"]: r["wps"] for r in results["runs"] if r["precision"] == precision}
        lines.append(f"| {precision} | {wps['resmlp']:.0f} | {wps['transformer']:.0f} | "
                     f"{wps['resmlp'] / wps['transformer']:.2f}x |")
    for model, b in results["bleu"].items():
        lines.append(f"{model}: test sacreBLEU {b['bleu']:.2f} on {b['sentences']} sentences, "
                     f"beam-4 fp16 generation {b['generate_wall_s']:.0f} s (model loading included)")
    results["table"] = "\n".join(lines)
    print(results["table"])
    if args.json:
        atomic_write_text(args.json, json.dumps(results, indent=1))
    return results


if __name__ == "__main__":
    main()
