#!/usr/bin/env bash
# Set up (idempotent) and run the main job; arguments go to `python -m resmlp_suite.demo` (e.g. --quick).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python -m resmlp_suite.demo "$@"
