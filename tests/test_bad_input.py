"""Bad input gets one clear line and exit status 2 (cases from the reliability review), and sampling knobs do
what they say."""

import pytest

from conftest import run_cli, tiny_recipe


def one_error_line(done) -> str:
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1, done.stderr[-2000:]
    return lines[0]


def test_misspelt_from_scratch_setting(tmp_path):
    recipe = tiny_recipe(tmp_path, model={"task": "causal_lm", "from_scratch": {
        "architecture": "gpt2", "vocab_size": 400, "config": {"n_layers": 1, "n_head": 2, "n_embd": 32}}})
    line = one_error_line(run_cli("train", recipe))
    assert line == ("hftoolkit: error: model.from_scratch.config.n_layers: not a setting of GPT2Config "
                    "(did you mean 'n_layer'?)")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("args, expected", [
    (["--max-new-tokens", "500"], "--max-new-tokens: 500 leaves no room for the prompt in this model's 64-token "
                                  "window"),
    (["--max-new-tokens", "0"], "--max-new-tokens: 0 must be at least 1"),
    (["--batch-size", "0", "--max-new-tokens", "8"], "--batch-size: 0 must be at least 1"),
])
def test_generation_limits(tiny_gpt, args, expected):
    line = one_error_line(run_cli("generate", tiny_gpt, "The brake pads", "--raw", "--cache", "off", *args))
    assert expected in line


def test_cache_path_that_is_a_file(tiny_gpt, tmp_path):
    taken = tmp_path / "cache-file"
    taken.write_text("not a folder")
    line = one_error_line(run_cli("generate", tiny_gpt, "The brake pads", "--raw", "--cache", taken))
    assert line == f"hftoolkit: error: --cache: '{taken}' is a file; give a folder for the disk cache"
    assert taken.read_text() == "not a folder"


def test_top_k_or_top_p_alone_samples_and_seeded_samples_ignore_batching(tiny_gpt):
    from hftoolkit.generate.api import TextGenerator
    from hftoolkit.generate.engine import GenerationSettings

    gen = TextGenerator(str(tiny_gpt), cache="off", log=lambda m: None)
    prompt = "The brake pads"
    greedy = gen.generate([prompt], settings=GenerationSettings(max_new_tokens=12))[0].completion
    sampled = {gen.generate([prompt], settings=GenerationSettings(max_new_tokens=12, top_k=50, seed=s))[0].completion
               for s in range(4)}
    assert sampled != {greedy} and len(sampled) > 1  # top_k without a temperature samples
    nucleus = GenerationSettings(max_new_tokens=12, top_p=0.95, seed=7)
    alone = gen.generate([prompt], settings=nucleus)[0].completion
    batched = gen.generate(["Tyres", prompt, "Check the oil level"], settings=nucleus, batch_size=8)[1].completion
    assert alone == batched  # a seeded sample does not depend on its batch neighbours


@pytest.mark.parametrize("cache, expected", [
    ("memroy", "--cache: 'memroy' is not off, memory, disk or a Redis URL; did you mean 'memory'? for a new "
               "cache folder write a path, e.g. ./memroy"),
    ("redis://127.0.0.1:notaport/0", "--cache: 'redis://127.0.0.1:notaport/0' is not a valid Redis URL"),
])
def test_bad_cache_names(tiny_gpt, tmp_path, cache, expected):
    line = one_error_line(run_cli("generate", tiny_gpt, "The brake pads", "--raw", "--cache", cache, cwd=tmp_path))
    assert expected in line
    assert not list(tmp_path.iterdir())  # no folder called memroy


def test_classify_refuses_a_checkpoint_without_a_classifier_head(tiny_gpt):
    line = one_error_line(run_cli("classify", tiny_gpt, "The brakes squeal"))
    assert line == (f"hftoolkit: error: checkpoint '{tiny_gpt}' is not a classifier (GPT2LMHeadModel); use a "
                    "checkpoint trained with that head")


def test_non_utf8_recipe_and_prompt_file(tiny_gpt, tmp_path):
    recipe = tmp_path / "latin1.yaml"
    recipe.write_bytes("description: Bremsflüssigkeit\n".encode("latin-1"))
    assert one_error_line(run_cli("recipes", "show", recipe)) == \
        f"hftoolkit: error: {recipe}: not UTF-8 text; save the recipe as UTF-8"
    prompts = tmp_path / "prompts.txt"
    prompts.write_bytes("Bremsflüssigkeit\n".encode("latin-1"))
    assert one_error_line(run_cli("generate", tiny_gpt, "--file", prompts, "--raw")) == \
        f"hftoolkit: error: --file: '{prompts}' is not UTF-8 text; save it as UTF-8"


def test_hub_id_with_no_hub_fails_in_seconds(tmp_path):
    import socket
    import time

    with socket.socket() as closed:  # a port nothing listens on: the hub is down
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    recipe = tiny_recipe(tmp_path, model={"name": "someorg/no-such-model", "task": "causal_lm", "from_scratch": None})
    started = time.perf_counter()
    done = run_cli("train", recipe, env={"HF_ENDPOINT": f"http://127.0.0.1:{port}",
                                         "HF_HUB_CACHE": str(tmp_path / "hub-cache")})
    line = one_error_line(done)
    assert time.perf_counter() - started < 20  # not tens of seconds of retries
    assert line == ("hftoolkit: error: model.name: 'someorg/no-such-model' is not a local folder or a cached model, "
                    f"and the hub at http://127.0.0.1:{port} cannot be reached; check the name, set HF_ENDPOINT, "
                    "or use a local folder or one of smollm2-135m-instruct, minilm-l6, gemma3-270m")
    assert not (tmp_path / "run").exists()


def test_null_and_blank_rows_are_skipped_and_counted(tmp_path):
    import json

    from hftoolkit.data.splits import load_data
    from hftoolkit.recipe.schema import DataSection

    rows = tmp_path / "rows.jsonl"
    rows.write_text("".join(json.dumps(r) + "\n" for r in [
        {"text": "Brake pads wear down."}, {"text": None}, {"text": "   "}, {"text": "Check the brake fluid."}]))
    loaded = load_data(DataSection(train=str(rows), validation=str(rows)), seed=0)
    assert list(loaded.train["text"]) == ["Brake pads wear down.", "Check the brake fluid."]
    assert loaded.skipped == {"train": 2, "validation": 2}


def test_a_checkpoint_that_asks_to_sample_samples_unless_greedy_is_asked(tiny_gpt, tmp_path):
    import json
    import shutil

    from hftoolkit.generate.api import TextGenerator
    from hftoolkit.generate.engine import GenerationSettings

    sampler = tmp_path / "sampler"
    shutil.copytree(tiny_gpt, sampler, ignore=shutil.ignore_patterns("checkpoints"))
    config = json.loads((sampler / "generation_config.json").read_text())
    (sampler / "generation_config.json").write_text(json.dumps({**config, "do_sample": True, "top_k": 50}))
    prompt, quiet = "The brake pads", (lambda m: None)
    plain = TextGenerator(str(tiny_gpt), cache="off", log=quiet)
    greedy = plain.generate([prompt], settings=GenerationSettings(max_new_tokens=12))[0].completion
    assert plain.generate([prompt], settings=GenerationSettings(max_new_tokens=12))[0].completion == greedy

    own = TextGenerator(str(sampler), cache="memory", log=quiet)
    sampled = {own.generate([prompt], settings=GenerationSettings(max_new_tokens=12, seed=s))[0].completion
               for s in range(4)}
    assert len(sampled) > 1  # the checkpoint's do_sample/top_k apply when the request sets no knob
    unseeded = [own.generate([prompt], settings=GenerationSettings(max_new_tokens=12))[0] for _ in range(2)]
    assert not unseeded[1].cached  # sampled answers without a seed are never served from the cache
    forced = own.generate([prompt], settings=GenerationSettings(max_new_tokens=12, greedy=True))[0].completion
    assert forced == greedy  # same weights: --greedy gives the plain greedy answer
