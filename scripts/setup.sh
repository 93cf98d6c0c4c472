#!/usr/bin/env bash
# Create .venv with a CPU torch (a bare `pip install torch` would pull a multi-GB CUDA build)
# and install hftoolkit in editable mode with its test extras. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
. .venv/bin/activate
python -m pip install --quiet --upgrade pip
python -m pip install --quiet "torch==2.13.0" || python -m pip install --quiet "torch>=2.6" --index-url https://download.pytorch.org/whl/cpu
python -m pip install --quiet -e ".[dev]"
