#!/usr/bin/env bash
# Install (scripts/setup.sh plus redis-server for the cache tests) and run the whole
# test suite, slow real-model tests included. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
if ! command -v redis-server >/dev/null 2>&1; then
  # the tests start their own redis-server on a free port; they only need the binary
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null
fi
. .venv/bin/activate
python -m pytest -q "$@"
