#!/usr/bin/env bash
# The main job: install, fine-tune on the bundled car data, then ask car questions.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
hftoolkit train gpt_from_scratch --output-dir runs/gpt_from_scratch --overwrite
python - <<'PY'
from transformers import pipeline
generate = pipeline("text-generation", model="runs/gpt_from_scratch")
print(generate("To check the engine oil level,", max_new_tokens=40, do_sample=False)[0]["generated_text"])
PY
