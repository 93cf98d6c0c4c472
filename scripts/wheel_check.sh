#!/usr/bin/env bash
# Install hftoolkit as a user would and use it from outside the checkout: build the wheel, install it (not
# editable) into a fresh virtual environment, then in an empty folder run `hftoolkit --version`, list and copy
# the bundled recipes, and train the bundled cars_qa recipe by name for one step. CI runs this after the tests.
set -euo pipefail
cd "$(dirname "$0")/.."
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
.venv/bin/python -m pip wheel --quiet --no-deps --no-build-isolation -w "$work/dist" .
python3 -m venv "$work/venv"
"$work/venv/bin/python" -m pip install --quiet "torch==2.13.0"  # the CPU build; see scripts/setup.sh
"$work/venv/bin/python" -m pip install --quiet "$work"/dist/hftoolkit-*.whl
hftoolkit="$work/venv/bin/hftoolkit"
mkdir "$work/empty" && cd "$work/empty"
"$hftoolkit" --version
"$hftoolkit" recipes list | grep '^cars_qa '
"$hftoolkit" recipes copy cars_qa my_recipe.yaml
grep -q '^description: retrieval-augmented' my_recipe.yaml
"$hftoolkit" train cars_qa training.max_steps=1 training.logging_steps=1
test -f runs/cars_qa/model.safetensors && test -f runs/cars_qa/metrics.json
python3 - runs/cars_qa/metrics.json <<'PY'
import json, sys
metrics = json.load(open(sys.argv[1]))
assert metrics["train_steps"] == 1, metrics
print(f"wheel check: trained cars_qa by name from {sys.argv[1].split('/')[0]}/ outside the checkout, "
      f"1 step, eval_loss {metrics['eval_loss']:.3f}")
PY
# the installed package serves that folder, chat page included (package data, not the checkout)
"$work/venv/bin/python" - "$hftoolkit" <<'PY'
import socket, subprocess, sys, time, urllib.request
with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
server = subprocess.Popen([sys.argv[1], "serve", "runs/cars_qa", "--port", str(port)], stderr=subprocess.DEVNULL)
try:
    for _ in range(600):
        try:
            if urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2).status == 200:
                break
        except OSError:
            time.sleep(0.2)
    page = urllib.request.urlopen(f"http://127.0.0.1:{port}/").read().decode()
    assert 'data-testid="question"' in page, page[:300]
    print(f"wheel check: the installed hftoolkit serves runs/cars_qa and its chat page ({len(page)} bytes)")
finally:
    server.terminate()
    server.wait(timeout=30)
PY
