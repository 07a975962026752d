"""Training and beam-search speed of resmlp_seq2seq against fairseq's transformer of the same size, in one process.

    python benchmarks/translation_speed.py                  # the translation demo's models, CPU (CUDA if present)
    python benchmarks/translation_speed.py --quick          # the quick demo's models, fewer rounds
    python benchmarks/translation_speed.py --dim 512 --ffn-dim 2048 --layers 6 --batch 128 --json speed.json
    python benchmarks/translation_speed.py --dim 256 --ffn-dim 1024 --layers 3 --resmlp-options="--token-mixer multihead"

fairseq builds both models from the demo's flags (``resmlp_suite.translation.demo.model_args``: same
width, FFN, depth, vocabulary and shared embeddings, the ResMLP's defaults for everything else).
Training: target words per second of forward, label-smoothed loss, backward and an Adam step on
synthetic batches of ``--batch`` sentence pairs of 25-30 tokens, collated by fairseq's own ``collate``.
Generation: sentences per second of fairseq's SequenceGenerator, beam 4, each hypothesis forced to
``--gen-len`` tokens (``min_len = max_len``) so both models decode the same number of steps. Rounds
interleave the two models, so a machine shared with other jobs slows both alike; the median round
counts. Targets: training >= 1.25x and generation >= 1.2x the transformer, in wall-clock time; the
ratios in process CPU time are printed beside them, steadier when other jobs share the machine
(cleanest with ``--threads 1``, where no thread waits on another). Beside them: the ratios of the floating-point
operations of a training step and of a beam search (counted by ``torch.utils.flop_counter``), the speed-ups a
run bound by its matrix products would reach: the models share the embeddings, cross-attention, FFNs and the
output projection, so a large vocabulary against a small width caps both ratios whatever the token mixing.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import shlex
import statistics
import time
from pathlib import Path
from typing import Callable, Optional, Sequence

import torch
from fairseq import utils
from fairseq.data import Dictionary
from fairseq.data.language_pair_dataset import collate
from fairseq.sequence_generator import SequenceGenerator
from torch.utils.flop_counter import FlopCounterMode

from resmlp_suite.device_info import device_name
from resmlp_suite.files import atomic_write_text
from resmlp_suite.translation.build import build_from_flags, synthetic_dictionary
from resmlp_suite.translation.demo import FULL, MODELS, QUICK, DemoSize, model_args

TARGETS = {"train": 1.25, "generate": 1.2}


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dim", type=int, default=None, help="width (default: the demo's)")
    parser.add_argument("--ffn-dim", type=int, default=None, help="FFN width (default: the demo's)")
    parser.add_argument("--layers", type=int, default=None, help="encoder and decoder layers each (default: the demo's)")
    parser.add_argument("--heads", type=int, default=None, help="attention heads (default: the demo's)")
    parser.add_argument("--vocab", type=int, default=None, help="vocabulary (default: the demo's)")
    parser.add_argument("--batch", type=int, default=32, help="sentences per training and generation batch")
    parser.add_argument("--gen-len", type=int, default=28, help="tokens decoded per hypothesis")
    parser.add_argument("--rounds", type=int, default=None,
                        help="interleaved timing rounds; the median counts (default 5, 3 with --quick)")
    parser.add_argument("--train-steps", type=int, default=2, help="training steps timed per model and round")
    parser.add_argument("--quick", action="store_true", help="the quick demo's models, 3 rounds")
    parser.add_argument("--resmlp-options", default="", metavar="FLAGS",
                        help="plugin flags for the ResMLP after the demo's (they win), e.g. "
                             "--resmlp-options='--token-mixer multihead'")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--json", type=Path, default=None, help="also write the results to this JSON file")
    args = parser.parse_args(argv)
    if args.rounds is None:
        args.rounds = 3 if args.quick else 5
    return args


def model_size(args: argparse.Namespace) -> DemoSize:
    """The demo's (or quick demo's) model size and options, with those given on the command line."""
    overrides = {field: getattr(args, arg) for field, arg in (("dim", "dim"), ("ffn_dim", "ffn_dim"), ("layers", "layers"),
                                                              ("heads", "heads"), ("vocab_size", "vocab"))
                 if getattr(args, arg) is not None}
    size = QUICK if args.quick else FULL
    resmlp = (*size.model_options.get("resmlp", ()), *shlex.split(args.resmlp_options))
    return dataclasses.replace(size, model_options={**size.model_options, "resmlp": resmlp}, **overrides)


def build(name: str, size: DemoSize, dictionary: Dictionary, device: torch.device):
    """``(model, criterion)`` built by fairseq from the demo's command-line flags."""
    model, criterion = build_from_flags([
        *model_args(name, size), "--dropout", size.dropout,
        "--criterion", "label_smoothed_cross_entropy", "--label-smoothing", 0.1, *size.model_options.get(name, ()),
    ], dictionary)
    return model.to(device), criterion


def synthetic_batch(dictionary: Dictionary, batch: int, generator: torch.Generator, device: torch.device) -> dict:
    """Random sentence pairs of 25-30 tokens each side, batched by fairseq's ``LanguagePairDataset`` collate."""
    def sentence() -> torch.Tensor:
        n = int(torch.randint(25, 31, (1,), generator=generator))
        return torch.cat([torch.randint(dictionary.nspecial, len(dictionary), (n,), generator=generator),
                          torch.tensor([dictionary.eos()])])

    samples = [{"id": i, "source": sentence(), "target": sentence()} for i in range(batch)]
    sample = collate(samples, pad_idx=dictionary.pad(), eos_idx=dictionary.eos(), left_pad_source=True,
                     left_pad_target=False)
    return utils.apply_to_sample(lambda t: t.to(device), sample)


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
    size = model_size(args)
    dictionary = synthetic_dictionary(size.vocab_size)
    generator = torch.Generator().manual_seed(0)
    batches = [synthetic_batch(dictionary, args.batch, generator, device) for _ in range(args.train_steps)]
    gen_batch = synthetic_batch(dictionary, args.batch, generator, device)

    torch.manual_seed(0)
    built = {name: build(name, size, dictionary, device) for name in MODELS}
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
    flops = {name: {} for name in MODELS}
    for name in MODELS:  # warm-up (allocator, first-call overheads), counting the operations of each kind
        for kind, (fn, _) in work.items():
            with FlopCounterMode(display=False) as counter:
                fn(name)
            flops[name][kind] = counter.get_total_flops()
    for _ in range(args.rounds):
        for name in MODELS:
            for kind, (fn, _) in work.items():
                times[name][kind].append(timed(lambda: fn(name), device))

    models = {}
    for name, (model, _) in built.items():
        models[name] = {"params": sum(p.numel() for p in model.parameters()),
                        "train_flops_per_word": flops[name]["train"] / work["train"][1],
                        "generate_flops_per_sentence": flops[name]["generate"] / work["generate"][1]}
        for kind, (_, units) in work.items():
            unit = "words" if kind == "train" else "sentences"
            models[name][f"{kind}_{unit}_per_s"] = units / statistics.median(w for w, _ in times[name][kind])
            models[name][f"{kind}_{unit}_per_cpu_s"] = units / statistics.median(c for _, c in times[name][kind])
    ratios = {f"{kind}{suffix}": models["resmlp"][key] / models["transformer"][key]
              for kind, unit in (("train", "words"), ("generate", "sentences"))
              for suffix, key in (("", f"{kind}_{unit}_per_s"), ("_cpu", f"{kind}_{unit}_per_cpu_s"))}
    ratios.update({f"{kind}_flops": flops["transformer"][kind] / flops["resmlp"][kind] for kind in work})
    results = {
        "device": str(device),
        "device_name": device_name(device),
        "threads": torch.get_num_threads(),
        "settings": {"dim": size.dim, "ffn_dim": size.ffn_dim, "layers": size.layers, "heads": size.heads,
                     "vocab": size.vocab_size, "model_options": size.model_options,
                     **{k: getattr(args, k) for k in ("batch", "gen_len", "rounds", "train_steps")}},
        "models": models, "ratios": ratios, "targets": TARGETS,
    }

    print(f"{results['device_name']} ({results['threads']} threads), d {size.dim}, FFN {size.ffn_dim}, "
          f"{size.layers}+{size.layers} layers, vocab {size.vocab_size}, batch {args.batch}, "
          f"beam 4 x {args.gen_len} tokens, {args.rounds} rounds")
    print("model options: " + "; ".join(f"{name} {' '.join(flags)}" for name, flags in size.model_options.items()))
    print(f"{'model':<12}{'params':>12}{'train MFLOP/word':>18}{'train words/s':>16}{'gen sentences/s':>18}")
    for name, m in models.items():
        print(f"{name:<12}{m['params']:>12,}{m['train_flops_per_word'] / 1e6:>18.1f}{m['train_words_per_s']:>16.0f}"
              f"{m['generate_sentences_per_s']:>18.1f}")
    for kind, target in TARGETS.items():
        verdict = "meets" if ratios[kind] >= target else "misses"
        print(f"{kind}: resmlp / transformer = {ratios[kind]:.2f}x wall-clock ({verdict} the {target:.2f}x target), "
              f"{ratios[kind + '_cpu']:.2f}x in CPU time")
    for kind, unit, what in (("train", "word", "training step"), ("generate", "sentence", "beam search")):
        print(f"{kind}: transformer / resmlp operations per {unit} = {ratios[kind + '_flops']:.2f}x, "
              f"the ratio a matmul-bound {what} would reach")
    if args.json is not None:
        atomic_write_text(args.json, json.dumps(results, indent=1))
    return results


if __name__ == "__main__":
    main()
