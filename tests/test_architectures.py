"""Nothing is SmolLM2-specific: every causal-LM recipe path trains Llama, Gemma 3 and GPT-2 alike.

Tiny configs of each: Llama with SmolLM2's real tokenizer and chat template, Gemma 3 with Gemma's real tokenizer
(262,144 entries, no chat template of its own) and GPT-2: built from scratch with a tokenizer trained on the data
for plain text (as `gpt_from_scratch`), and as a saved folder with such a tokenizer where a recipe needs weights to
adapt or a pretrained model to chat with.
Each path trains a few steps in this process and must lower the validation loss, and what it writes must load in
plain transformers as the same architecture; QA paths must save the chat template they trained with.
"""

import json
import sqlite3
from pathlib import Path

import pytest
import yaml
from transformers import AutoModelForCausalLM, AutoTokenizer

from hftoolkit import app
from hftoolkit.paths import resolve_data_path

QA_VALIDATION = "bundled://corpora/cars/qa/validation.jsonl"
BRAKES = "bundled://corpora/cars/text/train/06_brakes.txt"
quiet = lambda message: None  # noqa: E731

ARCHITECTURES = {"llama": "llama", "gemma3": "gemma3_text", "gpt2": "gpt2"}
PATHS = ("full", "lora", "qa", "retrieval", "database")


@pytest.fixture(autouse=True)
def fresh_accelerate_state():
    """Training runs in this process; accelerate's process-wide state is reset after each run."""
    from accelerate.state import AcceleratorState

    yield
    AcceleratorState._reset_state(reset_partial_state=True)


@pytest.fixture(scope="module")
def qa_files(tmp_path_factory) -> dict:
    """24 car questions to train on and 8 others to validate on, as files and as a SQLite table."""
    rows = [json.loads(line) for line in Path(resolve_data_path(QA_VALIDATION)).read_text().splitlines()][:32]
    folder = tmp_path_factory.mktemp("qa")
    (folder / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[:24]))
    (folder / "validation.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[24:]))
    with sqlite3.connect(folder / "qa.db") as db:
        db.execute("CREATE TABLE pairs (id INTEGER PRIMARY KEY, question TEXT, answer TEXT)")
        db.executemany("INSERT INTO pairs (question, answer) VALUES (?, ?)",
                       [(r["question"], r["answer"]) for r in rows[:24]])
    return {"train": str(folder / "train.jsonl"), "validation": str(folder / "validation.jsonl"),
            "db": f"sqlite:///{folder / 'qa.db'}"}


@pytest.fixture(scope="module")
def tiny_gpt2(tmp_path_factory, tiny_gpt) -> Path:
    """A one-layer GPT-2 with a 256-token window and the 400-entry tokenizer a from-scratch run trained."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    tokenizer = AutoTokenizer.from_pretrained(str(tiny_gpt))
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=len(tokenizer), n_layer=1, n_head=2, n_embd=32, n_positions=256,
                        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    folder = tmp_path_factory.mktemp("tiny-gpt2")
    GPT2LMHeadModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def model_section(architecture: str, path: str, folders: dict) -> dict:
    if architecture == "gpt2" and path == "full":
        return {"task": "causal_lm", "from_scratch": {"architecture": "gpt2", "vocab_size": 400,
                                                      "config": {"n_layer": 1, "n_head": 2, "n_embd": 32}}}
    return {"task": "causal_lm", "name": str(folders[architecture])}


def recipe_for(path: str, model: dict, qa: dict, index: Path, out: Path) -> dict:
    text = {"train": BRAKES, "validation": "bundled://corpora/cars/text/heldout.txt"}
    questions = {"train": qa["train"], "validation": qa["validation"], "format": "qa",
                 "system_prompt": "Answer in one short sentence."}
    data = {"full": text, "lora": text, "qa": questions,
            "retrieval": {**questions, "retrieval": {"index": str(index), "top_k": 1, "sentences": 2,
                                                     "context_tokens": 64, "distractor_percent": 0}},
            "database": {**questions, "train": {"uri": qa["db"], "table": "pairs"}}}[path]
    lora = {"enabled": True, "r": 4, "alpha": 8, "dropout": 0.0} if path in ("lora", "retrieval") else {}
    if "from_scratch" in model:
        lora = {}  # a model built from scratch trains all its weights
    return {"description": f"{path} path", "model": model, "data": data, "preprocess": {"block_size": 256},
            "training": {"max_steps": 6, "batch_size": 2, "learning_rate": 3e-2 if lora else 3e-3,
                         "eval_on_start": True, "eval_steps": 100, "save_steps": 100, "logging_steps": 1,
                         "precision": "fp32", **({"lora": lora} if lora else {})},
            "output": {"dir": str(out)}}


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_every_causal_lm_recipe_path_trains_every_architecture(architecture, path, tmp_path, tiny_chat_model,
                                                                tiny_gemma, tiny_gpt2, qa_files, brakes_tyres_index):
    model = model_section(architecture, path, {"llama": tiny_chat_model, "gemma3": tiny_gemma, "gpt2": tiny_gpt2})
    recipe = recipe_for(path, model, qa_files, brakes_tyres_index, tmp_path / "run")
    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump(recipe))

    metrics = app.train(str(tmp_path / "recipe.yaml"), log=quiet)

    assert metrics["eval_loss"] < metrics["eval_loss_start"], metrics
    folder = tmp_path / "run"
    model = AutoModelForCausalLM.from_pretrained(str(folder))  # plain transformers, merged weights
    assert model.config.model_type == ARCHITECTURES[architecture]
    assert not (folder / "adapter_config.json").exists()
    if path in ("qa", "retrieval", "database"):
        tokenizer = AutoTokenizer.from_pretrained(str(folder))
        rendered = tokenizer.apply_chat_template([{"role": "user", "content": "Why?"}], tokenize=False,
                                                 add_generation_prompt=True)
        assert "Why?" in rendered and rendered.index("Why?") > 0  # a real turn format around the question
    if path == "retrieval":
        assert json.loads((folder / "retrieval.json").read_text())["top_k"] == 1

