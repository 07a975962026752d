"""Print parameters and MACs of ResMLP models beside the paper's numbers.

    python -m resmlp_suite.info                         # the paper's five models at 224 px
    python -m resmlp_suite.info resmlp_s12 resmlp_12_224 --img-size 224
    python -m resmlp_suite.info resmlp_tiny_p4          # any timm model name works

MACs are counted with torch.utils.flop_counter.FlopCounterMode on the meta device (MACs = FLOPs / 2).
"""
from __future__ import annotations

import argparse
from typing import Optional, Sequence

from .vision.complexity import PAPER_COMPLEXITY, complexity_table, format_table


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m resmlp_suite.info", description=__doc__.split("\n")[0])
    parser.add_argument("models", nargs="*", help=f"timm model names (default: {' '.join(PAPER_COMPLEXITY)})")
    parser.add_argument("--img-size", type=int, default=None, help="input resolution (default: each model's own)")
    args = parser.parse_args(argv)
    print(format_table(complexity_table(args.models or None, args.img_size)))


if __name__ == "__main__":
    main()
