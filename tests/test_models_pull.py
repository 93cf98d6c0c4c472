"""Pulling a known model into the shared cache: two runs that pull the same model at once both end with it."""

import json
import os
import subprocess
import sys

from conftest import REPO


def test_two_pulls_at_once_into_an_empty_cache_both_succeed_with_one_folder(tmp_path):
    env = {**os.environ, "HFTOOLKIT_CACHE": str(tmp_path / "cache"), "PYTHONPATH": str(REPO), "HF_ENDPOINT": ""}
    pulls = [subprocess.Popen([sys.executable, "-m", "hftoolkit", "models", "pull", "minilm-l6"], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outputs = [p.communicate(timeout=600) for p in pulls]
    assert [p.returncode for p in pulls] == [0, 0], [err[-1500:] for _, err in outputs]
    said = " ".join(out + err for out, err in outputs)
    assert "ready at" in said and "cached at" in said  # one converted it, the other waited and found it
    models = tmp_path / "cache" / "models"
    assert sorted(p.name for p in models.iterdir() if not p.name.startswith(".")) == ["minilm-l6"]
    assert json.loads((models / "minilm-l6" / "config.json").read_text())["model_type"] == "bert"
