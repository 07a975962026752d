"""Where fairseq finds the ResMLP plugin: :data:`USER_DIR`, a folder inside the installed package.

fairseq imports a ``--user-dir`` by putting its parent folder on ``sys.path``; this folder holds
nothing else, so no other module of the package becomes importable under a top-level name.
``python -m resmlp_suite.translation.plugin`` prints the path, for the command line.
"""
from pathlib import Path

USER_DIR = Path(__file__).resolve().parent / "resmlp_fairseq"
