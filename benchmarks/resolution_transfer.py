"""A ResMLP trained at 28 px, evaluated and fine-tuned at 32 and 40 px on Fashion-MNIST: resampled token
mixing against resizing the images back and against training from scratch, and what resampling A
alone loses (resmlp_suite.vision.resolution).

    python benchmarks/resolution_transfer.py                      # trains the default 28-px run first (~2 min)
    python benchmarks/resolution_transfer.py --base-epochs 3      # ... for 3 epochs (the README's table)
    python benchmarks/resolution_transfer.py --base-run runs/demo/vision/resmlp     # reuse a finished run
    python benchmarks/resolution_transfer.py --quick              # a pipeline check in a few minutes

Writes docs/resolution_transfer.{md,json} (with --quick: under the work directory).
"""
from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path
from typing import Optional, Sequence

from resmlp_suite.cli import REPO, user_errors
from resmlp_suite.vision.resolution import SIZES, run_study, write_report

QUICK_OVERRIDES = ("data.train_samples=2000", "train.batch_size=64")


def main(argv: Optional[Sequence[str]] = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base-run", type=Path, default=None, help="a finished 28-px vision/train.py run to start from")
    parser.add_argument("--work-dir", type=Path, default=None, help="default runs/resolution_transfer[_quick]")
    parser.add_argument("--sizes", type=int, nargs="+", default=list(SIZES), help="image sizes (multiples of 4)")
    parser.add_argument("--base-epochs", type=int, default=None,
                        help="epochs of the 28-px run it trains (default: the default run's); not with --base-run")
    parser.add_argument("--quick", action="store_true", help="1 epoch on 2,000 training images per run")
    args = parser.parse_args(argv)
    if args.base_epochs is not None and args.base_run is not None:
        parser.error("--base-epochs sets the 28-px run this script trains; --base-run gives a finished one instead")
    work_dir = args.work_dir or REPO / "runs" / ("resolution_transfer_quick" if args.quick else "resolution_transfer")
    epochs = args.base_epochs or (1 if args.quick else None)
    base = ((f"train.epochs={epochs}",) if epochs else ()) + (QUICK_OVERRIDES if args.quick else ())
    results = run_study(work_dir, args.base_run, args.sizes, base_overrides=base,
                        epoch_overrides=QUICK_OVERRIDES if args.quick else ())
    out = work_dir / "resolution_transfer" if args.quick else REPO / "docs" / "resolution_transfer"
    report = write_report(results, out, shlex.join(["python", "benchmarks/resolution_transfer.py", *sys.argv[1:]]))
    print(report.read_text())
    return report


if __name__ == "__main__":
    with user_errors():
        main()
