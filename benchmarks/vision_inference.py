"""Inference throughput of ResMLP-S12: ours (plain and folded) against timm's resmlp_12_224, in one process.

    python benchmarks/vision_inference.py                          # batch 32, 224 px, all modes, CPU (CUDA if present)
    python benchmarks/vision_inference.py --modes eager-fp32 eager-bf16 --rounds 5
    python benchmarks/vision_inference.py --device cuda --batch 128 --json report/vision_inference.json
    python benchmarks/vision_inference.py --modes eager-fp32 eager-bf16 --skip-slow-bf16   # bf16 only where native

All three models hold the same weights (timm's, loaded into ours), so they compute the same function; each is
run in every mode (eager or ``torch.compile`` with inductor freezing; fp32 or bf16 autocast). Rounds interleave
the configurations and the GEMM roofline (a large fp32 and bf16 matmul) so that a machine shared with other
jobs slows them alike; the best round of each is reported (the median beside it). Printed ratios: ours/timm
per mode, and the model's achieved GFLOP/s (2 x MACs x images/s) as a share of the GEMM roofline of its dtype.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from contextlib import nullcontext
from typing import Callable, Optional, Sequence

import timm
import torch
import torch._inductor.config

import resmlp_suite  # noqa: F401  (registers resmlp_s12)
from resmlp_suite.device_info import device_name
from resmlp_suite.files import atomic_write_text
from resmlp_suite.vision import fold_for_inference, load_checkpoint
from resmlp_suite.vision.complexity import count_complexity

MODELS = ("timm", "ours", "ours-folded")
MODES = ("eager-fp32", "eager-bf16", "compile-fp32", "compile-bf16")


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3, help="interleaved timing rounds; the best one counts")
    parser.add_argument("--iters", type=int, default=1, help="forward passes timed per configuration and round")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    parser.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS))
    parser.add_argument("--gemm-size", type=int, default=None, help="roofline GEMM size (default 2048 CPU, 8192 CUDA)")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--skip-slow-bf16", action="store_true",
                        help="drop the bf16 modes where a bf16 matmul runs slower than an fp32 one (a CPU without "
                             "native bf16, where it is emulated: measured 500x slower on an AMD EPYC)")
    parser.add_argument("--json", default=None, help="also write the results to this JSON file")
    return parser.parse_args(argv)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def build_models(names: Sequence[str], device: torch.device) -> dict[str, dict[str, torch.nn.Module]]:
    """``{name: {"fp32": model, "bf16": model}}``; only the folded model differs: bf16 GEMM weights for bf16."""
    torch.manual_seed(0)
    reference = timm.create_model("resmlp_12_224").eval()
    # timm zero-initialises the classifier: a random one makes the logits (and their comparison) non-trivial.
    torch.nn.init.trunc_normal_(reference.head.weight, std=0.02)
    ours = timm.create_model("resmlp_s12").eval()
    load_checkpoint(ours, reference.state_dict())
    built = {
        "timm": {"fp32": reference, "bf16": reference},
        "ours": {"fp32": ours, "bf16": ours},
        "ours-folded": {"fp32": fold_for_inference(ours), "bf16": fold_for_inference(ours, gemm_dtype=torch.bfloat16)},
    }
    return {name: {dtype: model.to(device) for dtype, model in built[name].items()} for name in names}


def make_runner(model: torch.nn.Module, mode: str, x: torch.Tensor) -> Callable[[], torch.Tensor]:
    """A no-argument forward pass of ``model`` on ``x`` in ``mode`` (``"{eager,compile}-{fp32,bf16}"``)."""
    compiled, dtype = mode.split("-")
    fn = torch.compile(model) if compiled == "compile" else model

    def run() -> torch.Tensor:
        autocast = torch.autocast(x.device.type, dtype=torch.bfloat16) if dtype == "bf16" else nullcontext()
        with torch.inference_mode(), autocast:
            return fn(x)

    return run


def time_calls(fn: Callable[[], object], iters: int, device: torch.device) -> float:
    synchronize(device)
    start = time.perf_counter()
    for _ in range(iters):
        fn()
    synchronize(device)
    return (time.perf_counter() - start) / iters


def gemm_runner(dtype: torch.dtype, size: int, device: torch.device) -> Callable[[], torch.Tensor]:
    a = torch.randn(size, size, device=device).to(dtype)
    b = torch.randn(size, size, device=device).to(dtype)
    return lambda: torch.mm(a, b)


def slow_bf16(device: torch.device, size: int = 256) -> Optional[str]:
    """Why bf16 is not worth measuring on ``device`` (its matmuls slower than fp32's), or None."""
    if device.type != "cpu":
        return None
    speed = {}
    for dtype in (torch.float32, torch.bfloat16):
        run = gemm_runner(dtype, size, device)
        run()
        speed[dtype] = 2 * size**3 / time_calls(run, 3, device) / 1e9
    if speed[torch.bfloat16] >= speed[torch.float32]:
        return None
    return (f"a {size}^3 bf16 matmul runs at {speed[torch.bfloat16]:.1f} GFLOP/s against {speed[torch.float32]:.1f} "
            "in fp32: this CPU has no native bf16")


def warm_up(models: dict[str, dict[str, torch.nn.Module]], modes: Sequence[str], x: torch.Tensor) -> tuple[dict, dict]:
    """One runner per "model mode", run twice (compiling in the compile modes), logits checked against the
    first model's fp32 eager logits."""
    with torch.inference_mode():
        reference = next(iter(models.values()))["fp32"](x).float()
    runners: dict[str, Callable[[], torch.Tensor]] = {}
    setup: dict[str, dict] = {}
    for mode in modes:
        for name, variants in models.items():
            key = f"{name} {mode}"
            runners[key] = make_runner(variants[mode.split("-")[1]], mode, x)
            start = time.perf_counter()
            logits = runners[key]().float()
            runners[key]()
            synchronize(x.device)
            error = ((logits - reference).norm() / reference.norm()).item()
            setup[key] = {"warmup_s": time.perf_counter() - start, "logits_rel_err": error}
            print(f"[warm-up] {key:28s} {setup[key]['warmup_s']:6.1f} s, logits rel. error {error:.1e}", flush=True)
    return runners, setup


def measure(jobs: dict[str, tuple[Callable[[], object], int]], rounds: int, device: torch.device) -> dict[str, list[float]]:
    """Seconds per call of every job (``(fn, calls per round)``), over interleaved rounds."""
    seconds: dict[str, list[float]] = {key: [] for key in jobs}
    order = list(jobs)
    for round_index in range(rounds):
        # Rotate the order every round so no configuration always runs right after the same neighbour.
        shift = round_index % len(order)
        for key in order[shift:] + order[:shift]:
            fn, calls = jobs[key]
            seconds[key].append(time_calls(fn, calls, device))
        print(f"[round {round_index + 1}/{rounds}] done", flush=True)
    return seconds


def print_table(report: dict) -> None:
    roofline = report["roofline_gflop_per_s"]
    print(f"\nResMLP-S12 inference, batch {report['batch']}, 224 px, {report['device']} ({report['threads']} threads), "
          f"{report['rounds']} rounds x {report['iters']} passes, {report['gmacs_per_image']:.2f} GMACs/img")
    print(f"GEMM roofline ({report['gemm_size']}^3): " + ", ".join(f"{d} {v:.1f} GFLOP/s" for d, v in roofline.items()))
    if report["skipped"]:
        print(f"not measured: {' '.join(report['skipped']['modes'])} ({report['skipped']['reason']})")
    print()
    print("| model | mode | img/s (best) | img/s (median) | GFLOP/s | % of GEMM roofline | vs timm same mode |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for r in report["results"]:
        vs_timm = "-" if r["vs_timm"] is None else f"{r['vs_timm']:.2f}x"
        print(f"| {r['model']} | {r['mode']} | {r['img_per_s']:.1f} | {r['img_per_s_median']:.1f} | "
              f"{r['gflop_per_s']:.0f} | {r['roofline_pct']:.0f}% | {vs_timm} |")
    best = max(report["results"], key=lambda r: r["img_per_s"])
    print(f"\nfastest: {best['model']} {best['mode']}, {best['img_per_s']:.1f} img/s, "
          f"{best['roofline_pct']:.0f}% of the {best['mode'].split('-')[1]} GEMM roofline")


def main(argv: Optional[Sequence[str]] = None) -> dict:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    gemm_size = args.gemm_size or (8192 if device.type == "cuda" else 2048)
    gmacs = count_complexity("resmlp_s12").gmacs
    x = torch.randn(args.batch, 3, 224, 224, device=device)
    modes, skipped = list(args.modes), None
    reason = slow_bf16(device) if args.skip_slow_bf16 and any(m.endswith("bf16") for m in modes) else None
    if reason is not None:
        skipped = {"modes": [m for m in modes if m.endswith("bf16")], "reason": reason}
        modes = [m for m in modes if not m.endswith("bf16")]
        print(f"[skip] {' '.join(skipped['modes'])}: {reason}", flush=True)
        if not modes:
            raise SystemExit("vision_inference.py: --skip-slow-bf16 left no mode to measure; add an fp32 one to --modes")

    # Inference compiles treat weights as constants: pre-packed GEMMs, fused epilogues (GELU, bias).
    torch._inductor.config.freezing = True
    runners, setup = warm_up(build_models(args.models, device), modes, x)
    dtypes = {"fp32": torch.float32, "bf16": torch.bfloat16}
    gemms = {d: gemm_runner(dtype, gemm_size, device) for d, dtype in dtypes.items()
             if any(mode.endswith(d) for mode in modes)}
    for run in gemms.values():
        run()
    jobs = {**{key: (run, args.iters) for key, run in runners.items()}, **{f"gemm {d}": (run, 3) for d, run in gemms.items()}}
    seconds = measure(jobs, args.rounds, device)

    roofline = {d: 2 * gemm_size**3 / min(seconds[f"gemm {d}"]) / 1e9 for d in gemms}
    results = []
    for key in runners:
        name, mode = key.split(" ")
        best = args.batch / min(seconds[key])
        gflops = 2 * gmacs * best
        timm_key = f"timm {mode}"
        results.append({
            "model": name, "mode": mode,
            "img_per_s": best, "img_per_s_median": args.batch / statistics.median(seconds[key]),
            "gflop_per_s": gflops, "roofline_pct": 100 * gflops / roofline[mode.split("-")[1]],
            "vs_timm": best / (args.batch / min(seconds[timm_key])) if timm_key in seconds else None,
            **setup[key],
        })
    report = {
        "device": device.type,
        "device_name": device_name(device),
        "cpu_count": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "timm": timm.__version__,
        "batch": args.batch,
        "rounds": args.rounds,
        "iters": args.iters,
        "gmacs_per_image": gmacs,
        "gemm_size": gemm_size,
        "roofline_gflop_per_s": roofline,
        "skipped": skipped,
        "results": results,
    }
    print_table(report)
    if args.json:
        atomic_write_text(args.json, json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
