"""The fairseq plugin ships inside the package: a plain (non-editable) install, used from outside the
checkout, finds its own ``--user-dir`` and registers the architectures."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

CHECK = textwrap.dedent("""
    import sys
    from argparse import Namespace
    import resmlp_suite
    from resmlp_suite.translation.plugin import USER_DIR
    from fairseq import utils
    from fairseq.models import ARCH_MODEL_REGISTRY
    site = sys.argv[1]
    assert resmlp_suite.__file__.startswith(site), resmlp_suite.__file__
    assert str(USER_DIR).startswith(site) and (USER_DIR / "__init__.py").is_file(), USER_DIR
    utils.import_user_module(Namespace(user_dir=str(USER_DIR)))
    assert {"resmlp_seq2seq", "resmlp_seq2seq_12", "resmlp_seq2seq_tiny"} <= set(ARCH_MODEL_REGISTRY)
    print("ok")
""")


def test_plugin_user_dir_works_from_a_non_editable_install(tmp_path):
    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-compile", "--target", str(site),
                    str(REPO)], check=True, cwd=tmp_path)
    # Run from elsewhere, the installed copy first on the path: nothing may come from the checkout.
    env = {**os.environ, "PYTHONPATH": str(site)}
    checked = subprocess.run([sys.executable, "-c", CHECK, str(site)], cwd=tmp_path, env=env, capture_output=True,
                             text=True)
    assert checked.returncode == 0 and checked.stdout.strip().endswith("ok"), checked.stderr[-2000:]
    printed = subprocess.run([sys.executable, "-m", "resmlp_suite.translation.plugin"], cwd=tmp_path, env=env,
                             capture_output=True, text=True, check=True)
    assert Path(printed.stdout.strip()) == site.resolve() / "resmlp_suite" / "translation" / "plugin" / "resmlp_fairseq"
