"""Generation from a saved checkpoint: batching, streaming, stop strings, long and empty prompts."""

import json
import re
import shutil

import pytest

from conftest import run_cli
from hftoolkit.errors import UserError
from hftoolkit.generate.api import TextGenerator
from hftoolkit.generate.engine import GenerationSettings

PROMPTS = ["The", "Brake fluid absorbs water from the air, so", "Tyres", "A timing belt",
           "When the engine overheats the driver should", "Oil", "The alternator charges the battery while",
           "Coolant", "Disc brakes use a caliper", "The clutch", "Electric cars", "ABS stops the wheels from",
           "Spark plugs wear as the electrodes erode and", "A turbocharger", "Fuses protect", "Winter tyres"]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("gen")
    out = tmp / "run"
    # the bundled from-scratch recipe, shortened: enough to produce words (8 epochs gave only "." and newlines
    # on one CPU), not just bytes
    done = run_cli("train", "gpt_from_scratch", "--output-dir", out, "training.epochs=16",
                   "training.early_stopping_patience=null", "preprocess.block_size=64")
    assert done.returncode == 0, done.stderr[-2000:]
    return str(out)


def test_batched_greedy_equals_single(checkpoint):
    gen = TextGenerator(checkpoint, cache="off")
    settings = GenerationSettings(max_new_tokens=12)
    batched = gen.generate(PROMPTS, settings=settings, batch_size=16)
    single = [gen.generate([p], settings=settings)[0] for p in PROMPTS]
    assert len(set(len(p) for p in PROMPTS)) > 8  # really different lengths, so left padding matters
    assert [c.completion for c in batched] == [c.completion for c in single]
    assert [c.tokens for c in batched] == [c.tokens for c in single]
    assert sum(len(c.completion) for c in batched) > 16 * 8  # real text came out, not empty strings


def third_word_start(text: str) -> int | None:
    """Where the third word begins, if the text has one that does not occur earlier in it."""
    words = list(re.finditer(r"\S+", text))
    if len(words) < 3 or text.find(words[2].group()) != words[2].start():
        return None
    return words[2].start()


def test_stream_matches_generate_and_stop_strings(checkpoint):
    gen = TextGenerator(checkpoint, cache="off")
    settings = GenerationSettings(max_new_tokens=16)
    # a prompt whose greedy completion has a third word to stop at (a tiny model trained in fp32 on an AVX2 CPU
    # completed "The brake fluid" with a run of dashes only)
    completions = [c.completion for c in gen.generate(PROMPTS, settings=settings, batch_size=16)]
    prompt, whole = next(((p, c) for p, c in zip(PROMPTS, completions) if third_word_start(c)), (None, ""))
    assert prompt is not None, completions
    assert "".join(gen.stream(prompt, chat=False, settings=settings)) == whole
    start = third_word_start(whole)
    stop_word = whole[start:].split()[0]  # a word the model certainly produces, and not before there
    stopped = gen.generate([prompt], settings=GenerationSettings(max_new_tokens=16, stop=[stop_word]))[0]
    assert stopped.completion == whole[:start]  # cut right before it
    streamed = "".join(gen.stream(prompt, chat=False, settings=GenerationSettings(max_new_tokens=16,
                                                                                  stop=[stop_word])))
    assert streamed == stopped.completion
    # the server's batched streaming: the same text, and no piece of the stop string ever went out
    pieces: list[str] = []
    [batched] = gen.stream_batch([prompt], False, GenerationSettings(max_new_tokens=16, stop=[stop_word]),
                                 on_piece=lambda row, piece: pieces.append(piece))
    assert "".join(pieces) == batched.completion == stopped.completion


def with_beams(checkpoint: str, folder, num_beams: int):
    """A copy of `checkpoint` whose generation_config.json asks for beam search."""
    shutil.copytree(checkpoint, folder)
    config = json.loads((folder / "generation_config.json").read_text())
    (folder / "generation_config.json").write_text(json.dumps({**config, "num_beams": num_beams,
                                                                "early_stopping": True}))
    return folder


def test_beam_search_runs_each_prompt_once(checkpoint, tmp_path):
    """The prompts go through the model once per batch, not once per beam: every later forward pass
    feeds one new token per beam (the answers equal transformers' own beam search: the test below)."""
    generator = TextGenerator(str(with_beams(checkpoint, tmp_path / "beams", 3)), cache="off")
    prompts = PROMPTS[:4]
    longest = max(len(generator.generator.tokenizer(p, add_special_tokens=False)["input_ids"]) for p in prompts)
    shapes = []
    hook = generator.generator.model.register_forward_pre_hook(
        lambda module, args, kwargs: shapes.append(tuple(kwargs["input_ids"].shape)), with_kwargs=True)
    try:
        done = generator.generate(prompts, settings=GenerationSettings(max_new_tokens=6), batch_size=4)
    finally:
        hook.remove()
    assert shapes[0] == (4, longest - 1)  # the prompts, once, without their last token
    assert len(shapes) > 3 and set(shapes[1:]) == {(4 * 3, 1)}  # then one token per beam per step
    assert all(c.completion for c in done)


def test_checkpoint_beam_width_is_the_default_except_for_streams_and_sampling(checkpoint, tmp_path):
    """A checkpoint saved with output.num_beams answers by beam search, exactly as transformers' own
    generate() does from the same folder; a stream (one sequence) and sampling fall back to one beam."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    beams = with_beams(checkpoint, tmp_path / "beams", 3)
    settings = GenerationSettings(max_new_tokens=12)
    searched = [c.completion for c in TextGenerator(str(beams), cache="off").generate(PROMPTS, settings=settings)]
    greedy = [c.completion for c in TextGenerator(checkpoint, cache="off").generate(PROMPTS, settings=settings)]

    model, tokenizer = AutoModelForCausalLM.from_pretrained(str(beams)), AutoTokenizer.from_pretrained(str(beams))
    expected = []
    for prompt in PROMPTS:
        ids = tokenizer(prompt, return_tensors="pt", add_special_tokens=False)
        with torch.inference_mode():
            out = model.generate(**ids, max_new_tokens=12)  # the folder's own defaults: 3 beams
        expected.append(tokenizer.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True))
    assert searched == expected
    assert searched != greedy  # the beams really were searched
    generator = TextGenerator(str(beams), cache="off")
    one_beam = GenerationSettings(max_new_tokens=12, num_beams=1)  # what `generate --greedy` asks for
    assert [c.completion for c in generator.generate(PROMPTS, settings=one_beam)] == greedy
    assert "".join(generator.stream("The brake fluid", chat=False, settings=settings)) == \
        TextGenerator(checkpoint, cache="off").generate(["The brake fluid"], settings=settings)[0].completion
    sampled = GenerationSettings(max_new_tokens=12, temperature=1.0, seed=3)
    assert generator.generate(["Oil"], settings=sampled)[0].completion == \
        TextGenerator(checkpoint, cache="off").generate(["Oil"], settings=sampled)[0].completion


def test_long_prompt_truncated_with_warning_and_empty_prompt_rejected(checkpoint):
    warnings = []
    gen = TextGenerator(checkpoint, cache="off", log=warnings.append)
    long_prompt = "the brake pads wear down " * 400  # far beyond the 64-token context
    done = gen.generate([long_prompt], settings=GenerationSettings(max_new_tokens=8))[0]
    assert done.tokens > 0 and any("truncated from the left" in w for w in warnings)
    with pytest.raises(UserError, match="empty prompt"):
        gen.generate(["   "])


def test_sampling_with_seed_is_reproducible(checkpoint):
    gen = TextGenerator(checkpoint, cache="off")
    settings = GenerationSettings(max_new_tokens=12, temperature=1.0, seed=3)
    assert gen.generate(["Oil"], settings=settings)[0].completion == \
        gen.generate(["Oil"], settings=settings)[0].completion


def test_cli_generate_json_and_bad_checkpoint(checkpoint, tmp_path):
    done = run_cli("generate", checkpoint, "Brake pads", "Tyres", "--json", "--cache", "off",
                   "--max-new-tokens", "6")
    assert done.returncode == 0, done.stderr[-2000:]
    import json
    rows = [json.loads(line) for line in done.stdout.splitlines()]
    assert [r["prompt"] for r in rows] == ["Brake pads", "Tyres"]
    assert all(set(r) == {"prompt", "completion", "tokens", "seconds", "cached", "sources"} for r in rows)
    assert all(r["sources"] == [] for r in rows)  # no index: plain generation
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text("{}")
    bad = run_cli("generate", broken, "hi")
    assert bad.returncode == 2 and "no weights" in bad.stderr
    (broken / "model.safetensors").write_bytes(b"not really weights")
    no_tokenizer = run_cli("generate", broken, "hi", "--cache", "off")
    assert no_tokenizer.returncode == 2 and "has no tokenizer files" in no_tokenizer.stderr
    corrupt = tmp_path / "corrupt"
    shutil.copytree(checkpoint, corrupt, ignore=shutil.ignore_patterns("checkpoints", "logs"))
    weights = corrupt / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:5000])  # a download or copy cut short
    done = run_cli("generate", corrupt, "hi", "--cache", "off", "--max-new-tokens", "6")
    assert done.returncode == 2 and "could not be loaded" in done.stderr, done.stderr[-1500:]
    assert len(done.stderr.strip().splitlines()) == 1



def test_chat_needs_a_chat_template(checkpoint):
    import subprocess
    import sys
    from conftest import REPO
    done = subprocess.run([sys.executable, "-m", "hftoolkit", "chat", checkpoint], input="Tyres\n/exit\n",
                          text=True, capture_output=True, cwd=REPO, timeout=300)
    assert done.returncode == 2 and "no chat template" in done.stderr
