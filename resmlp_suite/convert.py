"""Convert ResMLP weight files between the suite, timm and official DeiT-repo layouts.

    python -m resmlp_suite.convert resmlp_12_no_dist.pth resmlp_s12.safetensors --to suite
    python -m resmlp_suite.convert resmlp_s12.safetensors resmlp_12_224.pth --to timm
    python -m resmlp_suite.convert resmlp_s12.safetensors resmlp_12.pth --to deit   # written as {"model": ...}

The input layout is detected; ``.safetensors`` or ``.pth`` output is chosen by the extension of OUT.
"""
from __future__ import annotations

import argparse
from typing import Optional, Sequence

from .cli import user_errors
from .vision.weights import LAYOUTS, detect_layout, from_suite_layout, read_state_dict, save_state_dict, to_suite_layout


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m resmlp_suite.convert", description=__doc__.split("\n")[0])
    parser.add_argument("src", help="input weights: .pth/.pt (read with weights_only=True) or .safetensors")
    parser.add_argument("dst", help="output file: .safetensors, anything else is written with torch.save")
    parser.add_argument("--to", required=True, choices=LAYOUTS, help="layout of the output")
    args = parser.parse_args(argv)

    raw = read_state_dict(args.src)
    source_layout = detect_layout(raw)
    converted = from_suite_layout(to_suite_layout(raw), args.to)
    save_state_dict(converted, args.dst, wrap_model=args.to == "deit")
    num_params = sum(v.numel() for v in converted.values())
    print(f"{args.src} ({source_layout}) -> {args.dst} ({args.to}): {len(converted)} tensors, {num_params / 1e6:.2f} M values")


if __name__ == "__main__":
    with user_errors():
        main()
