"""The DINO settings of the Fashion-MNIST demo, measured on held-out training images
(resmlp_suite.ssl.demo_settings: the protocol). Runs the settings without a finished run, one at a time
(about 5 minutes each on 2 CPU cores), then writes docs/dino_settings.{md,json,png}.

    python benchmarks/dino_settings.py
"""
from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path
from typing import Optional, Sequence

from resmlp_suite.cli import REPO, user_errors
from resmlp_suite.ssl.demo_settings import run_settings, write_report


def main(argv: Optional[Sequence[str]] = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work-dir", type=Path, default=REPO / "runs" / "dino_settings", help="the runs")
    args = parser.parse_args(argv)
    results = run_settings(args.work_dir)
    report = write_report(results, REPO / "docs" / "dino_settings",
                          shlex.join(["python", "benchmarks/dino_settings.py", *sys.argv[1:]]))
    print(report.read_text())
    return report


if __name__ == "__main__":
    with user_errors():
        main()
