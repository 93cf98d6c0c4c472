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


def run_cli(*args, timeout=600, env=None, cwd=REPO, umask: int | None = None) -> subprocess.CompletedProcess:
    """Run the real `hftoolkit` entry point in a subprocess (this checkout's package, from any `cwd`; `umask`: the
    one the user's shell would set)."""
    path = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    return subprocess.run([sys.executable, "-m", "hftoolkit", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "PYTHONPATH": path, **(env or {})}, cwd=cwd,
                          preexec_fn=None if umask is None else lambda: os.umask(umask))


def start_cli(*args, log: Path) -> subprocess.Popen:
    """`run_cli` in the background, its output into `log` (a pipe nobody reads would fill and stall it): for a run
    that must still be going while the test does something else."""
    path = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    with open(log, "w") as out:
        return subprocess.Popen([sys.executable, "-m", "hftoolkit", *map(str, args)], stdout=out,
                                stderr=subprocess.STDOUT, env={**os.environ, "PYTHONPATH": path}, cwd=REPO)


def run_plain_python(code: str, timeout=300) -> subprocess.CompletedProcess:
    """Run code in a fresh interpreter that must not import hftoolkit."""
    guard = "import sys\nclass _Block:\n    def find_spec(self, name, *a):\n" \
            "        if name.split('.')[0] == 'hftoolkit': raise ImportError('hftoolkit import forbidden')\n" \
            "sys.meta_path.insert(0, _Block())\n"
    return subprocess.run([sys.executable, "-c", guard + code], capture_output=True, text=True, timeout=timeout,
                          cwd="/")


@pytest.fixture(scope="session")
def tiny_chat_model(tmp_path_factory) -> Path:
    """A one-layer Llama with SmolLM2's real tokenizer and chat template and a 256-token window:
    a real chat checkpoint that trains and generates in seconds."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from hftoolkit.models.registry import pull

    tokenizer = AutoTokenizer.from_pretrained(str(pull("smollm2-135m-instruct", log=lambda m: None)))
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=256,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=True)
    folder = tmp_path_factory.mktemp("tiny-chat")
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_gemma(tmp_path_factory) -> Path:
    """A one-layer Gemma 3 with the real Gemma tokenizer (262,144 entries, no chat template of its own)."""
    import torch
    from transformers import AutoTokenizer, Gemma3ForCausalLM, Gemma3TextConfig

    from hftoolkit.models.registry import pull

    tokenizer = AutoTokenizer.from_pretrained(str(pull("gemma3-270m", log=lambda m: None)))
    torch.manual_seed(0)
    config = Gemma3TextConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                              num_attention_heads=2, num_key_value_heads=1, head_dim=16,
                              max_position_embeddings=256, bos_token_id=tokenizer.bos_token_id,
                              eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    folder = tmp_path_factory.mktemp("tiny-gemma")
    Gemma3ForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def brakes_tyres_index(tmp_path_factory) -> Path:
    """A MiniLM index of two chapters of the car corpus."""
    import shutil

    from hftoolkit.paths import resolve_data_path
    from hftoolkit.retrieval.index import build_index

    corpus = tmp_path_factory.mktemp("corpus")
    for name in ("06_brakes.txt", "07_tyres.txt"):
        shutil.copy(Path(resolve_data_path("bundled://corpora/cars/text/train")) / name, corpus / name)
    index = tmp_path_factory.mktemp("indexes") / "brakes_tyres"
    build_index(str(corpus), str(index), log=lambda m: None)
    return index


@pytest.fixture(scope="session")
def tiny_gpt(tmp_path_factory) -> Path:
    """A from-scratch GPT-2 checkpoint (64-position window) trained for a few steps through the real CLI."""
    folder = tmp_path_factory.mktemp("tiny-gpt")
    done = run_cli("train", tiny_recipe(folder, training={"max_steps": 4}))
    assert done.returncode == 0, done.stderr[-3000:]
    return folder / "run"
