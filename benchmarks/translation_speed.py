"""Training and beam-search speed of resmlp_seq2seq against fairseq's transformer of the same size, in one process.

    python benchmarks/translation_speed.py                  # d 256, FFN 1024, 3+3 layers, CPU (CUDA if present)
    python benchmarks/translation_speed.py --quick          # smaller and fewer rounds, for the demo
    python benchmarks/translation_speed.py --dim 512 --ffn-dim 2048 --layers 6 --batch 128 --json speed.json

fairseq builds both models from the same flags but ``--arch`` (same width, FFN, depth, vocabulary and
shared embeddings; the transformer's self-attention has ``--heads`` heads, like the ResMLP decoder's
cross-attention). Training: target words per second of forward, label-smoothed loss, backward and an
Adam step on synthetic batches of ``--batch`` sentences of 25-30 source and target tokens.
Generation: sentences per second of fairseq's SequenceGenerator, beam 4, each hypothesis forced to
``--gen-len`` tokens (``min_len = max_len``) so both models decode the same number of steps. Rounds
interleave the two models, so a machine shared with other jobs slows both alike; the median round
counts. Targets: training >= 1.2x and generation >= 1.0x the transformer, in wall-clock time; the
ratios in process CPU time are printed beside them, steadier when other jobs share the machine
(cleanest with ``--threads 1``, where no thread waits on another).
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path
from typing import Callable, Optional, Sequence

import torch
from fairseq.data import Dictionary, data_utils
from fairseq.sequence_generator import SequenceGenerator

from resmlp_suite.translation.build import build_from_flags, synthetic_dictionary
from resmlp_suite.files import atomic_write_text

MODELS = ("resmlp", "transformer")
TARGETS = {"train": 1.2, "generate": 1.0}


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--ffn-dim", type=int, default=1024)
    parser.add_argument("--layers", type=int, default=3, help="encoder and decoder layers each")
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--vocab", type=int, default=8000)
    parser.add_argument("--batch", type=int, default=32, help="sentences per training and generation batch")
    parser.add_argument("--gen-len", type=int, default=28, help="tokens decoded per hypothesis")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved timing rounds; the median counts")
    parser.add_argument("--train-steps", type=int, default=2, help="training steps timed per model and round")
    parser.add_argument("--quick", action="store_true", help="defaults d 128, FFN 512, 2+2 layers, 3 rounds")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--json", type=Path, default=None, help="also write the results to this JSON file")
    if parser.parse_args(argv).quick:  # smaller defaults; flags given explicitly still win
        parser.set_defaults(dim=128, ffn_dim=512, layers=2, rounds=3)
    return parser.parse_args(argv)


def build(name: str, args: argparse.Namespace, dictionary: Dictionary, device: torch.device):
    """``(model, criterion)`` built by fairseq from its command-line flags."""
    arch = {"resmlp": ["--arch", "resmlp_seq2seq"],
            "transformer": ["--arch", "transformer", "--encoder-attention-heads", args.heads]}[name]
    max_positions = max(30, args.gen_len) + 2
    model, criterion = build_from_flags([
        *arch, "--encoder-embed-dim", args.dim, "--decoder-embed-dim", args.dim,
        "--encoder-ffn-embed-dim", args.ffn_dim, "--decoder-ffn-embed-dim", args.ffn_dim,
        "--encoder-layers", args.layers, "--decoder-layers", args.layers, "--decoder-attention-heads", args.heads,
        "--share-all-embeddings", "--dropout", 0.1, "--max-source-positions", max_positions,
        "--max-target-positions", max_positions,
        "--criterion", "label_smoothed_cross_entropy", "--label-smoothing", 0.1,
    ], dictionary)
    return model.to(device), criterion


def synthetic_batch(dictionary: Dictionary, batch: int, generator: torch.Generator, device: torch.device) -> dict:
    """Random sentences of 25-30 tokens each side, collated the way fairseq's LanguagePairDataset does."""
    def sentences() -> list[torch.Tensor]:
        lengths = torch.randint(25, 31, (batch,), generator=generator)
        return [torch.cat([torch.randint(dictionary.nspecial, len(dictionary), (int(n),), generator=generator),
                           torch.tensor([dictionary.eos()])]) for n in lengths]

    pad, eos = dictionary.pad(), dictionary.eos()
    source, target = sentences(), sentences()
    net_input = {
        "src_tokens": data_utils.collate_tokens(source, pad, eos, left_pad=True),
        "src_lengths": torch.tensor([len(s) for s in source]),
        "prev_output_tokens": data_utils.collate_tokens(target, pad, eos, move_eos_to_beginning=True),
    }
    target_tokens = data_utils.collate_tokens(target, pad, eos)
    sample = {"net_input": net_input, "target": target_tokens, "nsentences": batch,
              "ntokens": int(target_tokens.ne(pad).sum())}
    return {k: ({n: t.to(device) for n, t in v.items()} if k == "net_input" else
                v.to(device) if torch.is_tensor(v) else v) for k, v in sample.items()}


def timed(fn: Callable[[], None], device: torch.device) -> tuple[float, float]:
    """``(wall seconds, CPU seconds of this process, all threads)`` of one call."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - wall, time.process_time() - cpu


def main(argv: Optional[Sequence[str]] = None) -> dict:
    args = parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    dictionary = synthetic_dictionary(args.vocab)
    generator = torch.Generator().manual_seed(0)
    batches = [synthetic_batch(dictionary, args.batch, generator, device) for _ in range(args.train_steps)]
    gen_batch = synthetic_batch(dictionary, args.batch, generator, device)

    torch.manual_seed(0)
    built = {name: build(name, args, dictionary, device) for name in MODELS}
    optimizers = {name: torch.optim.Adam(model.parameters(), lr=1e-4) for name, (model, _) in built.items()}
    searchers = {name: SequenceGenerator([model], dictionary, beam_size=4, max_len_a=0, max_len_b=args.gen_len,
                                         min_len=args.gen_len) for name, (model, _) in built.items()}

    def train(name: str) -> None:
        model, criterion = built[name]
        model.train()
        for sample in batches:
            optimizers[name].zero_grad(set_to_none=True)
            loss, _, _ = criterion(model, sample)
            loss.backward()
            optimizers[name].step()

    def generate(name: str) -> None:
        model = built[name][0]
        model.eval()
        with torch.inference_mode():
            searchers[name].generate([model], gen_batch)

    work = {"train": (train, sum(b["ntokens"] for b in batches)), "generate": (generate, args.batch)}
    times = {name: {kind: [] for kind in work} for name in MODELS}
    for name in MODELS:  # warm-up: allocator, first-call overheads
        train(name)
        generate(name)
    for _ in range(args.rounds):
        for name in MODELS:
            for kind, (fn, _) in work.items():
                times[name][kind].append(timed(lambda: fn(name), device))

    models = {}
    for name, (model, _) in built.items():
        models[name] = {"params": sum(p.numel() for p in model.parameters())}
        for kind, (_, units) in work.items():
            unit = "words" if kind == "train" else "sentences"
            models[name][f"{kind}_{unit}_per_s"] = units / statistics.median(w for w, _ in times[name][kind])
            models[name][f"{kind}_{unit}_per_cpu_s"] = units / statistics.median(c for _, c in times[name][kind])
    ratios = {f"{kind}{suffix}": models["resmlp"][key] / models["transformer"][key]
              for kind, unit in (("train", "words"), ("generate", "sentences"))
              for suffix, key in (("", f"{kind}_{unit}_per_s"), ("_cpu", f"{kind}_{unit}_per_cpu_s"))}
    results = {
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        "threads": torch.get_num_threads(),
        "settings": {k: getattr(args, k) for k in ("dim", "ffn_dim", "layers", "heads", "vocab", "batch", "gen_len",
                                                    "rounds", "train_steps")},
        "models": models, "ratios": ratios, "targets": TARGETS,
    }

    print(f"{device} ({results['threads']} threads), d {args.dim}, FFN {args.ffn_dim}, {args.layers}+{args.layers} "
          f"layers, vocab {args.vocab}, batch {args.batch}, beam 4 x {args.gen_len} tokens, {args.rounds} rounds")
    print(f"{'model':<12}{'params':>12}{'train words/s':>16}{'gen sentences/s':>18}")
    for name, m in models.items():
        print(f"{name:<12}{m['params']:>12,}{m['train_words_per_s']:>16.0f}{m['generate_sentences_per_s']:>18.1f}")
    for kind, target in TARGETS.items():
        verdict = "meets" if ratios[kind] >= target else "misses"
        print(f"{kind}: resmlp / transformer = {ratios[kind]:.2f}x wall-clock ({verdict} the {target:.1f}x target), "
              f"{ratios[kind + '_cpu']:.2f}x in CPU time")
    if args.json is not None:
        atomic_write_text(args.json, json.dumps(results, indent=1))
    return results


if __name__ == "__main__":
    main()
