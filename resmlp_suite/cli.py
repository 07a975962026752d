"""Entry points report the user's mistakes (bad options, paths, files) as one line, not a traceback.

An error counts as the user's when the suite raised it on purpose: a ValueError, TypeError or
FileNotFoundError whose raise statement is in this repository's code (the package or its scripts).
The same types raised inside torch, timm or fairseq are unexpected, and keep their traceback; so does
everything with ``HYDRA_FULL_ERROR=1`` in the environment.
"""
from __future__ import annotations

import os
import sys
import traceback
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

REPO = Path(__file__).resolve().parents[1]  # the checkout (site-packages in a plain install)
OWN_CODE = (REPO / "resmlp_suite", REPO / "vision", REPO / "translation", REPO / "benchmarks")
USER_ERRORS = (ValueError, TypeError, FileNotFoundError)


def raised_on_purpose(error: BaseException) -> bool:
    frames = traceback.extract_tb(error.__traceback__)
    return bool(frames) and any(Path(frames[-1].filename).resolve().is_relative_to(own) for own in OWN_CODE)


@contextmanager
def user_errors() -> Iterator[None]:
    """Turn an error the suite raised on purpose into ``error: <message>`` on stderr and exit status 2."""
    try:
        yield
    except USER_ERRORS as error:
        if os.environ.get("HYDRA_FULL_ERROR") == "1" or not raised_on_purpose(error):
            raise
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
