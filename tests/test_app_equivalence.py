"""Every verb gives the same result through the command line and through `hftoolkit.app` with default
arguments: the CLI only parses and prints, the defaults live once in `hftoolkit.defaults`."""

import inspect
import json
import shutil
import sqlite3

import pytest
from huggingface_hub import HfApi

from conftest import tiny_recipe
from hftoolkit import app, cli, defaults
from hftoolkit.paths import resolve_data_path
from hub_server import LocalHub
from test_encoders import train as train_encoder

HELD_OUT_TEXT = "bundled://corpora/cars/text/heldout.txt"
quiet = lambda message: None  # noqa: E731


@pytest.fixture(autouse=True)
def fresh_accelerate_state():
    """Training here runs in this process; later tests build their own Accelerator (bf16), which accelerate
    refuses once its process-wide state is set, so each test leaves it as it found it."""
    from accelerate.state import AcceleratorState

    yield
    AcceleratorState._reset_state(reset_partial_state=True)


def run(capsys, *argv) -> str:
    """stdout of the real entry point, run in this process; it must succeed."""
    capsys.readouterr()
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    assert code == 0, err[-2000:]
    return out


def json_lines(text: str) -> list:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


@pytest.fixture(scope="module")
def encoders(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("encoders")
    classifier = train_encoder(tmp, "cls", model={"task": "classification"},
                               data={"train": "bundled://corpora/cars/issues/train.jsonl",
                                     "validation": "bundled://corpora/cars/issues/test.jsonl"})
    masked = train_encoder(tmp, "mlm", model={"task": "masked_lm"},
                           data={"train": "bundled://corpora/cars/text/train/06_brakes.txt",
                                 "validation": HELD_OUT_TEXT})
    return {"classifier": classifier, "masked": masked}


def test_train(tmp_path, capsys):
    recipe = tiny_recipe(tmp_path)
    run(capsys, "train", recipe, "--output-dir", tmp_path / "by_cli")
    returned = app.train(str(recipe), output_dir=str(tmp_path / "by_python"), log=quiet)
    by_cli = json.loads((tmp_path / "by_cli" / "metrics.json").read_text())
    by_python = json.loads((tmp_path / "by_python" / "metrics.json").read_text())
    for key in ("train_loss", "eval_loss", "train_steps", "tokens_seen", "precision"):
        assert by_cli[key] == by_python[key] == returned[key], key
    assert sorted(p.name for p in (tmp_path / "by_cli").iterdir()) == \
        sorted(p.name for p in (tmp_path / "by_python").iterdir())


def test_eval_generate_and_stream(tiny_gpt, capsys):
    by_cli = json.loads(run(capsys, "eval", tiny_gpt, "--data", HELD_OUT_TEXT, "--json"))
    assert by_cli == app.evaluate(str(tiny_gpt), HELD_OUT_TEXT, log=quiet)
    assert by_cli["perplexity"] > 1
    prompts = ["The brake pads", "Check the tyre pressure"]  # 12 new tokens: the tiny model's window is 64
    [first, second] = json_lines(run(capsys, "generate", tiny_gpt, *prompts, "--json", "--max-new-tokens", 12))
    short = app.request_settings(max_new_tokens=12)
    done = app.generate(str(tiny_gpt), prompts, settings=short, log=quiet)
    assert [first["completion"], second["completion"]] == [d.completion for d in done]
    assert first["completion"] and not done[0].chat  # no chat template: the text is continued
    streamed = run(capsys, "generate", tiny_gpt, prompts[0], "--stream", "--max-new-tokens", 12).splitlines()
    assert streamed == ["".join(next(app.stream(str(tiny_gpt), [prompts[0]], settings=short, log=quiet)))]
    assert streamed[0] == first["completion"]  # greedy, so streaming says the same


def test_chat_answers_with_the_template_by_default_everywhere(tiny_chat_model, capsys, monkeypatch):
    import io

    monkeypatch.setattr("sys.stdin", io.StringIO("How often is brake fluid replaced?\n/exit\n"))
    by_cli = run(capsys, "chat", tiny_chat_model, "--max-new-tokens", 12)
    chat = app.Chat(str(tiny_chat_model), settings=app.request_settings(max_new_tokens=12), log=quiet)
    by_python = "".join(chat.send("How often is brake fluid replaced?"))
    assert by_cli == by_python + "\n" and by_python  # random weights: 12 tokens of something
    assert chat.history[-2:] == [{"role": "user", "content": "How often is brake fluid replaced?"},
                                 {"role": "assistant", "content": by_python.strip()}]
    [generated] = app.generate(str(tiny_chat_model), ["How often is brake fluid replaced?"],
                               settings=app.request_settings(max_new_tokens=12), cache="off", log=quiet)
    assert generated.chat and generated.completion == by_python  # generate chats by default too
    assert app.Chat(str(tiny_chat_model), log=quiet).settings.max_new_tokens == defaults.CHAT_MAX_NEW_TOKENS
    chat_parser = cli.build_parser().parse_args(["chat", str(tiny_chat_model)])
    assert chat_parser.max_new_tokens == defaults.CHAT_MAX_NEW_TOKENS


def test_classify_and_fill_mask(encoders, capsys):
    texts = ["grinding noise when braking", "engine overheats on hills"]
    by_cli = json_lines(run(capsys, "classify", encoders["classifier"], *texts, "--json"))
    assert by_cli == app.classify(str(encoders["classifier"]), texts)
    assert [len(row["labels"]) for row in by_cli] == [defaults.CLASSIFY_TOP_K] * 2
    masked = ["check the brake [MASK] regularly"]
    by_cli = json_lines(run(capsys, "fill-mask", encoders["masked"], *masked, "--json"))
    assert by_cli == app.fill_mask(str(encoders["masked"]), masked)
    assert len(by_cli[0]["predictions"]) == defaults.FILL_MASK_TOP_K


def test_index_build_and_search(tmp_path, capsys):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    shutil.copy(resolve_data_path("bundled://corpora/cars/text/train/06_brakes.txt"), corpus)
    run(capsys, "index", "build", corpus, "--out", tmp_path / "by_cli")
    stats = app.build_index(str(corpus), str(tmp_path / "by_python"), log=quiet)
    question = "How often should brake fluid be replaced?"
    by_cli = json_lines(run(capsys, "index", "search", tmp_path / "by_cli", question, "--json"))
    by_python = app.search_index(str(tmp_path / "by_python"), question, log=quiet)
    assert len(by_cli) == len(by_python) == defaults.SEARCH_TOP_K and stats["chunks"] >= len(by_cli)
    assert [(h["file"], h["start"], h["end"]) for h in by_cli] == [(h.file, h.start, h.end) for h in by_python]
    assert [h["score"] for h in by_cli] == pytest.approx([h.score for h in by_python], abs=1e-4)  # the CLI prints 4 decimals


def test_push_and_pull(tiny_gpt, tmp_path, capsys, monkeypatch):
    with LocalHub(tmp_path / "hub") as hub:
        monkeypatch.setenv("HF_TOKEN", hub.token)
        run(capsys, "push", tiny_gpt, "me/by-cli", "--endpoint", hub.endpoint)
        app.push(str(tiny_gpt), "me/by-python", endpoint=hub.endpoint, log=quiet)
        api = HfApi(endpoint=hub.endpoint, token=hub.token)
        sent = sorted(api.list_repo_files("me/by-cli"))
        assert sent == sorted(api.list_repo_files("me/by-python")) and "model.safetensors" in sent
        run(capsys, "pull", "me/by-cli", tmp_path / "pulled_by_cli", "--endpoint", hub.endpoint)
        app.pull("me/by-cli", str(tmp_path / "pulled_by_python"), endpoint=hub.endpoint)
    files = lambda folder: {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}  # noqa: E731
    assert files(tmp_path / "pulled_by_cli") == files(tmp_path / "pulled_by_python")


def test_export_recipes_models_and_data(tiny_gpt, tmp_path, capsys):
    run(capsys, "convert", tiny_gpt, tmp_path / "by_cli.h5")
    app.convert(str(tiny_gpt), str(tmp_path / "by_python.h5"))
    run(capsys, "convert", tmp_path / "by_cli.h5", tmp_path / "back_by_cli")
    app.convert(str(tmp_path / "by_python.h5"), str(tmp_path / "back_by_python"))
    assert (tmp_path / "back_by_cli" / "model.safetensors").read_bytes() == \
        (tmp_path / "back_by_python" / "model.safetensors").read_bytes()
    listed = run(capsys, "recipes", "list").splitlines()
    assert [line.split()[0] for line in listed] == [r["name"] for r in app.list_recipes()]
    assert run(capsys, "recipes", "show", "cars_qa") == app.show_recipe("cars_qa")
    models = run(capsys, "models", "list").splitlines()
    assert [line.split()[0] for line in models] == [m["name"] for m in app.list_models()]
    notes = tmp_path / "notes.txt"
    notes.write_text("Brake fluid every two years.\n\nTyres at 3 mm.\n")
    run(capsys, "data", "import", notes, "--to", f"sqlite:///{tmp_path}/cli.db", "--table", "notes")
    app.import_files([str(notes)], f"sqlite:///{tmp_path}/py.db", "notes")
    rows = lambda db: sqlite3.connect(db).execute("SELECT text FROM notes ORDER BY id").fetchall()  # noqa: E731
    assert rows(tmp_path / "cli.db") == rows(tmp_path / "py.db")
    assert [text.strip() for (text,) in rows(tmp_path / "py.db")] == ["Brake fluid every two years.", "Tyres at 3 mm."]
    shown = json.loads(run(capsys, "data", "show", f"sqlite:///{tmp_path}/cli.db", "--table", "notes", "--json"))
    assert shown == json.loads(json.dumps(app.show_table(f"sqlite:///{tmp_path}/py.db", "notes"), default=str))


def test_cli_defaults_are_the_verbs_defaults():
    """Each option's default in the parser is the verb's default (both read hftoolkit.defaults)."""
    parser = cli.build_parser()
    cases = {
        ("generate", "CK"): (app.generate, {"batch_size": "batch_size"}),
        ("classify", "CK"): (app.classify, {"top_k": "top_k", "batch_size": "batch_size"}),
        ("fill-mask", "CK", "t"): (app.fill_mask, {"top_k": "top_k"}),
        ("index", "search", "I", "q"): (app.search_index, {"top_k": "top_k"}),
        ("index", "build", "C", "--out", "O"): (app.build_index, {"embedder": "embedder", "chunk_tokens":
                                                                  "chunk_tokens", "overlap_tokens": "overlap_tokens"}),
        ("push", "CK", "me/x"): (app.push, {"revision": "revision"}),
        ("pull", "me/x", "D"): (app.pull, {"revision": "revision"}),
        ("quickstart",): (app.quickstart, {"output_dir": "output_dir"}),
        ("data", "show", "U", "--table", "t"): (app.show_table, {"rows": "rows"}),
        ("data", "import", "F", "--to", "U", "--table", "t"): (app.import_files, {"format": "data_format"}),
        ("data", "export-log", "U", "--out", "O"): (app.export_answers, {"min_rating": "min_rating", "as_": "as_"}),
        ("cache", "stats"): (app.cache_stats, {"cache": "cache"}),
    }
    for argv, (verb, options) in cases.items():
        parsed = parser.parse_args(list(argv))
        signature = inspect.signature(verb).parameters
        for flag, parameter in options.items():
            assert getattr(parsed, flag) == signature[parameter].default, (argv, flag)
    generated = parser.parse_args(["generate", "CK"])
    assert generated.max_new_tokens == app.request_settings().max_new_tokens == defaults.MAX_NEW_TOKENS
    assert generated.cache == inspect.signature(app.generate.__globals__["TextGenerator"]).parameters["cache"].default
    assert generated.context == defaults.CONTEXT
    assert generated.precision == inspect.signature(app.open_generator).parameters["precision"].default
    from hftoolkit.serve import serve

    served = parser.parse_args(["serve", "CK"])
    signature = inspect.signature(serve).parameters
    for flag in ("host", "port", "max_batch", "precision"):
        assert getattr(served, flag) == signature[flag].default, flag
    assert served.cache == generated.cache and served.context == generated.context


def test_merge(tiny_chat_model, tmp_path, capsys):
    import yaml

    qa = tmp_path / "qa.jsonl"
    qa.write_text("".join(json.dumps({"question": f"What is part {i}?", "answer": f"Part {i} is the caliper."})
                          + "\n" for i in range(8)))
    recipe = tmp_path / "lora.yaml"
    recipe.write_text(yaml.safe_dump({
        "model": {"name": str(tiny_chat_model)},
        "data": {"train": str(qa), "validation": str(qa), "format": "qa"},
        "preprocess": {"block_size": 128},
        "training": {"max_steps": 2, "batch_size": 4, "precision": "fp32", "eval_steps": 2, "save_steps": 2,
                     "lora": {"enabled": True, "save_merged": False, "r": 2, "alpha": 4,
                              "target_modules": ["q_proj", "v_proj"]}},
        "output": {"dir": str(tmp_path / "run")}}))
    app.train(str(recipe), log=quiet)
    adapter = tmp_path / "run" / "adapter"
    run(capsys, "merge", adapter, tmp_path / "by_cli")
    app.merge(str(adapter), str(tmp_path / "by_python"))
    assert (tmp_path / "by_cli" / "model.safetensors").read_bytes() == \
        (tmp_path / "by_python" / "model.safetensors").read_bytes()


def test_rate_and_export_log(tiny_gpt, tmp_path, capsys):
    log = f"sqlite:///{tmp_path}/answers.db"
    [done] = app.generate(str(tiny_gpt), ["The brake pads"], settings=app.request_settings(max_new_tokens=8),
                          cache="off", request_log=log, log=quiet)
    shutil.copy(tmp_path / "answers.db", tmp_path / "copy.db")
    copy = f"sqlite:///{tmp_path}/copy.db"
    run(capsys, "data", "rate", log, done.log_id, "bad", "--fix", "Pads last about 50,000 km.")
    assert app.rate(copy, done.log_id, "bad", "Pads last about 50,000 km.")["correction"] == \
        "Pads last about 50,000 km."
    run(capsys, "data", "export-log", log, "--out", tmp_path / "by_cli.jsonl")
    assert app.export_answers(copy, str(tmp_path / "by_python.jsonl")) == 1
    exported = (tmp_path / "by_cli.jsonl").read_text()
    assert exported == (tmp_path / "by_python.jsonl").read_text()
    assert json.loads(exported)["answer"] == "Pads last about 50,000 km."
