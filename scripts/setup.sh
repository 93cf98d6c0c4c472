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
# tcmalloc: the `hftoolkit` command runs under it when it is installed (CPU training ~1.2-1.6x faster; docs/performance.md)
if ! ldconfig -p 2>/dev/null | grep -q libtcmalloc_minimal; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libtcmalloc-minimal4 >/dev/null; } ||
      echo "setup: libtcmalloc-minimal4 could not be installed; hftoolkit uses the C library's malloc (slower)"
  else
    echo "setup: for faster CPU training install tcmalloc (Debian/Ubuntu: sudo apt-get install libtcmalloc-minimal4)"
  fi
fi
