"""Shared fixtures: an isolated cache folder and a tiny, fast recipe."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True, scope="session")
def isolated_cache(tmp_path_factory):
    """Preprocessing/tokenizer caches go to a fresh folder; pulled models keep the shared one."""
    root = tmp_path_factory.mktemp("hftoolkit-cache")
    shared_models = Path(os.environ.get("HFTOOLKIT_CACHE", Path.home() / ".cache" / "hftoolkit")) / "models"
    shared_models.mkdir(parents=True, exist_ok=True)
    (root / "models").symlink_to(shared_models, target_is_directory=True)
    os.environ["HFTOOLKIT_CACHE"] = str(root)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    yield root


def tiny_recipe(tmp_path: Path, **sections) -> Path:
    """A from-scratch GPT-2 small enough to train in seconds; `sections` override recipe keys."""
    recipe = {
        "description": "tiny test recipe",
        "model": {"task": "causal_lm", "from_scratch": {
            "architecture": "gpt2", "vocab_size": 400,
            "config": {"n_layer": 1, "n_head": 2, "n_embd": 32}}},
        "data": {"train": "bundled://corpora/cars/text/train/06_brakes.txt",
                 "validation": "bundled://corpora/cars/text/heldout.txt"},
        "preprocess": {"block_size": 64},
        "training": {"max_steps": 6, "batch_size": 8, "learning_rate": 3e-3, "eval_steps": 3,
                     "save_steps": 3, "logging_steps": 1, "precision": "fp32"},
        "output": {"dir": str(tmp_path / "run")},
    }
    for section, values in sections.items():
        recipe.setdefault(section, {}).update(values)
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def run_cli(*args, timeout=600, env=None) -> subprocess.CompletedProcess:
    """Run the real `hftoolkit` entry point in a subprocess."""
    return subprocess.run([sys.executable, "-m", "hftoolkit", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})}, cwd=REPO)


def run_plain_python(code: str, timeout=300) -> subprocess.CompletedProcess:
    """Run code in a fresh interpreter that must not import hftoolkit."""
    guard = "import sys\nclass _Block:\n    def find_spec(self, name, *a):\n" \
            "        if name.split('.')[0] == 'hftoolkit': raise ImportError('hftoolkit import forbidden')\n" \
            "sys.meta_path.insert(0, _Block())\n"
    return subprocess.run([sys.executable, "-c", guard + code], capture_output=True, text=True, timeout=timeout,
                          cwd="/")
