"""Entry points: a mistake of the user's is one line on stderr and exit status 2, not a traceback."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from resmlp_suite.cli import user_errors

REPO = Path(__file__).resolve().parents[1]


def run(*args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=REPO, capture_output=True, text=True, timeout=300,
                          env={**os.environ, **env})


def test_a_missing_data_root_is_one_line_and_hydra_full_error_keeps_the_traceback(tmp_path):
    args = ("vision/train.py", "data=imagefolder", "data.root=/missing", f"output_dir={tmp_path}")
    plain = run(*args)
    assert plain.returncode == 2 and "Traceback" not in plain.stderr
    assert plain.stderr.strip().splitlines()[-1].startswith("error: data.root='/missing' is not a directory")
    full = run(*args, HYDRA_FULL_ERROR="1")
    assert full.returncode != 0 and "Traceback" in full.stderr


@pytest.mark.parametrize("script", ["vision/evaluate.py", "-m resmlp_suite.convert"])
def test_a_text_file_given_as_a_checkpoint_is_one_line(tmp_path, script):
    text = tmp_path / "notes.pth"
    text.write_text("not weights\n")
    outputs = [str(tmp_path / "o.safetensors"), "--to", "timm"] if "convert" in script else []
    out = run(*script.split(), str(text), *outputs)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert f"error: {text} (12 bytes) is not a checkpoint this suite can read" in out.stderr


def test_errors_raised_elsewhere_keep_their_traceback():
    with pytest.raises(RuntimeError):  # not a type a user's mistake is reported with
        with user_errors():
            raise RuntimeError("a bug")
    with pytest.raises(ValueError):  # the right type, raised inside another library: unexpected, so it stays
        with user_errors():
            json.loads("{")
