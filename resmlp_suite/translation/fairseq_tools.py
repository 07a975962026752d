"""Run fairseq's command-line tools (preprocess, train, generate) as child processes.

The tools run with this interpreter (``python -m fairseq_cli.<tool>``), so they see the same
environment as the caller whether or not the ``fairseq-*`` entry points are on ``PATH``.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Optional, Sequence

from .plugin import USER_DIR  # noqa: F401  (the --user-dir every caller passes: registers resmlp_seq2seq)

TOOLS = ("preprocess", "train", "generate")


def fairseq_command(tool: str, args: Sequence[str]) -> list[str]:
    if tool not in TOOLS:
        raise ValueError(f"unknown fairseq tool {tool!r}; expected one of {TOOLS}")
    return [sys.executable, "-m", f"fairseq_cli.{tool}", *map(str, args)]


def run_fairseq(tool: str, args: Sequence[str], log_file: Optional[Path] = None) -> None:
    """Run one tool; its stdout+stderr go to ``log_file`` (appended) or to ours. Raises on failure."""
    command = fairseq_command(tool, args)
    if log_file is None:
        result = subprocess.run(command)
    else:
        Path(log_file).parent.mkdir(parents=True, exist_ok=True)
        with open(log_file, "a", encoding="utf-8") as log:
            log.write("$ " + " ".join(command) + "\n")
            log.flush()
            result = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT)
    if result.returncode != 0:
        where = f"; see {log_file}" if log_file else ""
        raise RuntimeError(f"fairseq-{tool} failed with exit code {result.returncode}{where}")
