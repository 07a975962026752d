"""Top-1/top-5 accuracy of a checkpoint on an ImageFolder split or on Fashion-MNIST; prints one JSON line.

A vision/train.py checkpoint carries its model, classes and data settings:
    python vision/evaluate.py runs/resmlp_tiny_p4_fashion_mnist/best.pt
    python vision/evaluate.py runs/resmlp_s12_in1k/best.pt --data-root /data/imagenet --ema
Other weight files (official DeiT-repo ResMLP weights, timm checkpoints) need the timm model name and
the data root; input settings default to the model's (ResMLP: resize 224/0.9 bicubic, centre crop 224):
    python vision/evaluate.py resmlp_12_no_dist.pth --model resmlp_s12 --data-root /data/imagenet
"""

from __future__ import annotations

import argparse
import json
import logging
from typing import Any, Optional

from resmlp_suite.cli import user_errors
from resmlp_suite.vision.data import DATASETS
from resmlp_suite.vision.evaluation import evaluate_checkpoint


def parse_args(argv: Optional[list[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint", help="a vision/train.py checkpoint or a weight file")
    p.add_argument("--model", help="timm model name (needed unless the file is a vision/train.py checkpoint)")
    p.add_argument("--ema", action="store_true", help="the EMA weights of a training checkpoint")
    p.add_argument("--data", dest="name", choices=DATASETS, help="dataset kind (default: the run's, else imagefolder)")
    p.add_argument("--data-root", dest="root", help="dataset root (default: the run's)")
    p.add_argument("--split", help="split to evaluate (default: the run's validation split, else val / test)")
    p.add_argument("--img-size", type=int)
    p.add_argument("--in-chans", type=int)
    p.add_argument("--crop-pct", type=float)
    p.add_argument("--interpolation", choices=("bilinear", "bicubic", "nearest"))
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--num-workers", type=int, default=None,
                   help="data-loading processes (default: min(4, the CPUs this process may use))")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("--amp", default="none", choices=("none", "bf16", "fp16"))
    return p.parse_args(argv)


def main(argv: Optional[list[str]] = None) -> dict[str, Any]:
    args = parse_args(argv)
    data = {k: getattr(args, k) for k in ("name", "root", "img_size", "in_chans", "crop_pct", "interpolation")}
    result = evaluate_checkpoint(
        args.checkpoint,
        model_name=args.model,
        use_ema=args.ema,
        data=data,
        split=args.split,
        batch_size=args.batch_size,
        num_workers=args.num_workers,
        device=args.device,
        amp=args.amp,
        progress=True,
    )
    print(json.dumps(result, default=list))
    return result


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    with user_errors():
        main()
