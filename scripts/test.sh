#!/usr/bin/env bash
# Install (scripts/setup.sh) and run the whole test suite, slow real-model tests included.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
python -m pytest -q "$@"
