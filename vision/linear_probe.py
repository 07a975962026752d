"""Linear probe of a backbone's frozen pooled features, DINO's eval_linear: a linear classifier trained on
the train split, top-1/top-5 on the evaluation split; prints one JSON line.

SGD (momentum 0.9, no weight decay) at --lr x batch / 256, cosine to 0, --epochs (default 100 for an
ImageFolder such as ImageNet, 10 for Fashion-MNIST). The features of the train images are extracted once,
without augmentation, and the classifier trains on them (minutes on a CPU); --augment is DINO's protocol
(random-resized crop and flip, a backbone pass per image and epoch: for a GPU), off by default.
Checkpoints and baselines as vision/evaluate.py --knn takes them:
    python vision/linear_probe.py resmlp_24_dino.pth --model resmlp_s24 --data-root /data/imagenet --augment
    python vision/linear_probe.py runs/resmlp_tiny_p4_fashion_mnist/best.pt
    python vision/linear_probe.py --model resmlp_tiny_p4 --pixels --data fashion_mnist \\
        --data-root /usr/share/datasets/fashion-mnist
Under torchrun the features are gathered and every process trains the same classifier (--augment: each
embeds its share of every batch and the gradients are averaged).
"""

from __future__ import annotations

import argparse
import json
import logging
from typing import Any, Optional

from resmlp_suite.cli import user_errors
from resmlp_suite.training.distributed import DistEnv, run_in_process_group
from resmlp_suite.vision.evaluation import add_evaluation_arguments, evaluation_mode, evaluation_options
from resmlp_suite.vision.linear_probe import BASE_LR, linear_probe


def parse_args(argv: Optional[list[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_evaluation_arguments(p)
    p.add_argument("--epochs", type=int, help="passes over the train split (default: 100, Fashion-MNIST 10)")
    p.add_argument("--lr", type=float, default=BASE_LR, help="learning rate at a batch of 256 (scaled linearly)")
    p.add_argument("--augment", action="store_true",
                   help="DINO's random-resized crops and flips, embedded every epoch (slow without a GPU)")
    p.add_argument("--seed", type=int, default=0, help="classifier initialisation and batch order")
    return p.parse_args(argv)


def main(argv: Optional[list[str]] = None) -> dict[str, Any]:
    args = parse_args(argv)
    def probe(env: DistEnv) -> dict[str, Any]:
        result = linear_probe(**evaluation_options(args), mode=evaluation_mode(args), epochs=args.epochs,
                              lr=args.lr, augment=args.augment, seed=args.seed)
        if env.is_main:
            print(json.dumps(result, default=list))
        return result

    return run_in_process_group(args.device, probe)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    with user_errors():
        main()
