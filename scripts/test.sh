#!/usr/bin/env bash
# Install (scripts/setup.sh plus redis-server and PostgreSQL for the cache and database tests) and run the whole
# test suite, slow real-model tests included. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# the tests start their own redis-server and PostgreSQL server on free ports; they only need the binaries (and
# Debian's chromium for the chat page test: `playwright install` cannot download browsers offline)
missing=()
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
command -v initdb >/dev/null 2>&1 || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing+=(postgresql)
command -v chromium >/dev/null 2>&1 || missing+=(chromium)  # the chat page's browser test (playwright drives it)
if [ ${#missing[@]} -gt 0 ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
. .venv/bin/activate
# Two workers, each test file on one worker (its module fixtures built once), each worker's torch on its share of the
# cores: much of the suite is single-threaded Python (imports, CLI subprocesses, servers), which then overlaps
# (docs/contributing.md has the times). HFTOOLKIT_TEST_WORKERS=0 runs it in one process, as before.
workers="${HFTOOLKIT_TEST_WORKERS:-2}"
if [ "$workers" -gt 0 ]; then
  threads=$(( $(nproc) / workers )); [ "$threads" -ge 1 ] || threads=1
  export OMP_NUM_THREADS="$threads" MKL_NUM_THREADS="$threads"  # never more threads than cores (they spin)
  python -m pytest -q -n "$workers" --dist loadfile "$@"
else
  python -m pytest -q "$@"
fi
