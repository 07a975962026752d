"""Top-1/top-5 accuracy of a checkpoint on an ImageFolder split or on Fashion-MNIST, or the weighted k-NN
accuracy of its frozen features (--knn); prints one JSON line.

A vision/train.py checkpoint carries its model, classes and data settings:
    python vision/evaluate.py runs/resmlp_tiny_p4_fashion_mnist/best.pt
    python vision/evaluate.py runs/resmlp_s12_in1k/best.pt --data-root /data/imagenet --ema
Other weight files (official DeiT-repo ResMLP weights, timm checkpoints) need the timm model name and
the data root; input settings default to the model's (ResMLP: resize 224/0.9 bicubic, centre crop 224):
    python vision/evaluate.py resmlp_12_no_dist.pth --model resmlp_s12 --data-root /data/imagenet

Weighted k-NN on frozen pooled features (DINO: k 20, temperature 0.07; the train split is the memory, the
evaluation split the queries), of any backbone: a run, a DINO run (its last.pt: the teacher's backbone with
the run's settings), an official DINO file (with or without a classifier), a DINO run's teacher_backbone.pt.
Baselines: the same architecture at its initialisation (--random-init: a run's model with the run's
settings, or --model), or the input pixels themselves (--pixels, input settings from a run or --model):
    python vision/evaluate.py resmlp_24_dino.pth --model resmlp_s24 --data-root /data/imagenet --knn
    python vision/evaluate.py runs/resmlp_tiny_p4_fashion_mnist/best.pt --knn
    python vision/evaluate.py runs/dino_resmlp_tiny_p4_fashion_mnist/last.pt --knn [--random-init | --pixels]
    python vision/evaluate.py --model resmlp_tiny_p4 --random-init --knn --data fashion_mnist \\
        --data-root /usr/share/datasets/fashion-mnist
    python vision/evaluate.py --model resmlp_tiny_p4 --pixels --knn --data fashion_mnist \\
        --data-root /usr/share/datasets/fashion-mnist
Under torchrun each process embeds its share of the images (torchrun --nproc_per_node 8 vision/evaluate.py ...).
A linear probe on the same features: vision/linear_probe.py.
"""

from __future__ import annotations

import argparse
import json
import logging
from typing import Any, Optional

from resmlp_suite.cli import user_errors
from resmlp_suite.training.distributed import DistEnv, run_in_process_group
from resmlp_suite.vision.evaluation import (
    add_evaluation_arguments,
    evaluate_checkpoint,
    evaluation_mode,
    evaluation_options,
)
from resmlp_suite.vision.feature_eval import check_mode, knn_evaluate
from resmlp_suite.vision.knn import K, TEMPERATURE


def parse_args(argv: Optional[list[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_evaluation_arguments(p)
    p.add_argument("--knn", action="store_true", help="weighted k-NN accuracy of the frozen pooled features")
    p.add_argument("--k", type=int, default=K, help="neighbours that vote (--knn)")
    p.add_argument("--temperature", type=float, default=TEMPERATURE, help="votes weigh exp(cosine / T) (--knn)")
    p.add_argument("--knn-memory", type=int, default=None, metavar="N",
                   help="at most N training images (a fixed random subset) as the k-NN memory; default: all, as DINO")
    return p.parse_args(argv)


def main(argv: Optional[list[str]] = None) -> dict[str, Any]:
    args = parse_args(argv)
    options, mode = evaluation_options(args), evaluation_mode(args)
    check_mode(mode, args.checkpoint)
    if mode == "pixels" and not args.knn:
        raise ValueError("--pixels evaluates the input images as frozen features: add --knn (or use "
                         "vision/linear_probe.py)")
    def run(env: DistEnv) -> dict[str, Any]:
        if args.knn:
            result = knn_evaluate(**options, mode=mode, k=args.k, temperature=args.temperature,
                                  memory_samples=args.knn_memory)
        else:
            result = evaluate_checkpoint(**options, progress=True)
        if env.is_main:
            print(json.dumps(result, default=list))
        return result

    return run_in_process_group(args.device, run)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    with user_errors():
        main()
