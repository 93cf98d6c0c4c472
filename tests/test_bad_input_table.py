"""One table of bad inputs, each run through the real CLI entry point (in this process, so the table stays
fast): exit status 2, exactly one line on stderr that says what to fix, and nothing written anywhere in the
workspace. The cases come from the reliability review plus the usual recipe, data and checkpoint mistakes."""

import json
import shutil
from pathlib import Path

import pytest
import yaml

from conftest import tiny_recipe
from hftoolkit.cli import main


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, tiny_gpt, tiny_chat_model) -> Path:
    """Every file and folder the cases point at; no case may change any of it."""
    ws = tmp_path_factory.mktemp("bad-input")
    (ws / "good.txt").write_text("Brake pads wear down.\n\nCheck the brake fluid every year.\n")
    (ws / "empty.txt").write_text("")
    (ws / "blank.txt").write_text("\n\n   \n")
    (ws / "binary.txt").write_bytes(bytes(range(256)) * 4)
    (ws / "latin1.txt").write_bytes("Bremsflüssigkeit prüfen.\n".encode("latin-1"))
    (ws / "latin1.yaml").write_bytes("description: Bremsflüssigkeit\n".encode("latin-1"))
    (ws / "syntax.yaml").write_text("model:\n  name: [unclosed\n")
    (ws / "list.yaml").write_text("- model\n- data\n")
    (ws / "no_role.jsonl").write_text(json.dumps({"messages": [{"content": "hi"}, {"content": "hello"}]}) + "\n")
    (ws / "no_label.jsonl").write_text(json.dumps({"text": "the brakes squeal"}) + "\n")
    (ws / "no_question.jsonl").write_text(json.dumps({"answer": "two years"}) + "\n")
    (ws / "not_json.jsonl").write_text("{this is not json\n")
    (ws / "question_number.jsonl").write_text(json.dumps({"question": 7, "answer": "two years"}) + "\n")
    (ws / "no_reference.jsonl").write_text(json.dumps({"question": "When is brake fluid due?"}) + "\n")
    qa = [{"question": "When is brake fluid due?", "answer": "Every two years.", "key_facts": ["two years"]},
          {"question": "How thick is a pad?", "answer": "About 10 mm.", "key_facts": "10 mm"}]
    (ws / "facts_text.jsonl").write_text("".join(json.dumps(row) + "\n" for row in qa))
    (ws / "prompts.txt").write_text("")
    (ws / "user_folder").mkdir()
    (ws / "user_folder" / "notes.txt").write_text("mine")
    (ws / "no_config").mkdir()
    (ws / "no_config" / "weights.txt").write_text("x")
    shutil.copytree(tiny_gpt, ws / "no_tokenizer", ignore=shutil.ignore_patterns("tokenizer*", "checkpoints"))
    shutil.copytree(tiny_gpt, ws / "truncated", ignore=shutil.ignore_patterns("checkpoints"))
    weights = ws / "truncated" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    shutil.copytree(tiny_gpt, ws / "bad_tokenizer", ignore=shutil.ignore_patterns("checkpoints"))
    (ws / "bad_tokenizer" / "tokenizer.json").write_text("{not json")
    shutil.copytree(tiny_gpt, ws / "gpt", ignore=shutil.ignore_patterns("checkpoints"))
    shutil.copytree(tiny_gpt, ws / "pickled", ignore=shutil.ignore_patterns("checkpoints", "*.safetensors"))
    (ws / "pickled" / "pytorch_model.bin").write_bytes(b"a pickle would run code here")
    shutil.copytree(tiny_gpt, ws / "remote_code", ignore=shutil.ignore_patterns("checkpoints"))
    config = json.loads((ws / "remote_code" / "config.json").read_text())
    config["model_type"] = "evil_gpt"  # only its own code could build it
    config["auto_map"] = {"AutoConfig": "configuration_evil.EvilConfig",
                          "AutoModelForCausalLM": "modeling_evil.EvilModel"}
    (ws / "remote_code" / "config.json").write_text(json.dumps(config))
    for name in ("configuration_evil.py", "modeling_evil.py"):  # would leave a file behind if it ever ran
        (ws / "remote_code" / name).write_text(f"open({str(ws / 'code_ran.txt')!r}, 'w').write('ran')\n")
    base = yaml.safe_load(tiny_recipe(ws).read_text())
    base["output"]["dir"] = str(ws / "run")

    def recipe(name: str, **changes) -> None:
        data = json.loads(json.dumps(base))
        for dotted, value in changes.items():
            section, key = dotted.split("__")
            data[section][key] = value
        (ws / f"{name}.yaml").write_text(yaml.safe_dump(data))

    recipe("tiny")
    recipe("typo_key", training__learning_rat=0.1)
    recipe("bad_type", training__epochs="two")
    recipe("bad_enum", model__task="translation")
    recipe("scratch_typo", model__from_scratch={"architecture": "gpt2", "vocab_size": 400,
                                                 "config": {"n_layers": 1}})
    recipe("missing_train", data__train=str(ws / "nowhere.txt"))
    recipe("empty_train", data__train=str(ws / "empty.txt"))
    recipe("blank_train", data__train=str(ws / "blank.txt"))
    recipe("binary_train", data__train=str(ws / "binary.txt"))
    recipe("latin1_train", data__train=str(ws / "latin1.txt"))
    recipe("chat_no_role", data__train=str(ws / "no_role.jsonl"), data__format="chat",
           data__validation=str(ws / "no_role.jsonl"))
    recipe("chat_no_role_pretrained", data__train=str(ws / "no_role.jsonl"), data__format="chat",
           data__validation=str(ws / "no_role.jsonl"), model__from_scratch=None, model__name=str(tiny_chat_model))
    recipe("qa_no_question", data__train=str(ws / "no_question.jsonl"), data__format="qa",
           data__validation=str(ws / "no_question.jsonl"), model__from_scratch=None, model__name=str(tiny_chat_model))
    recipe("not_json", data__train=str(ws / "not_json.jsonl"))
    recipe("qa_facts_text", data__train=str(ws / "facts_text.jsonl"), data__format="qa",
           data__validation=str(ws / "facts_text.jsonl"), model__from_scratch=None, model__name=str(tiny_chat_model))
    recipe("no_label", data__train=str(ws / "no_label.jsonl"), data__validation=str(ws / "no_label.jsonl"),
           model__task="classification", model__from_scratch=None, model__name="minilm-l6")
    recipe("unknown_model", model__from_scratch=None, model__name="not-a-model")
    recipe("block_zero", preprocess__block_size=0)
    recipe("negative_lr", training__learning_rate=-1)
    recipe("corrupt_local_model", model__from_scratch=None, model__name=str(ws / "truncated"))
    recipe("user_output", output__dir=str(ws / "user_folder"))
    recipe("pickled_model", model__from_scratch=None, model__name=str(ws / "pickled"))
    recipe("remote_code_model", model__from_scratch=None, model__name=str(ws / "remote_code"))
    return ws


CASES = [  # (id, argv with {ws}, text the one error line must contain)
    ("recipe-missing", ["train", "{ws}/nope.yaml"], "nope.yaml"),
    ("recipe-syntax", ["train", "{ws}/syntax.yaml"], "not valid YAML"),
    ("recipe-not-mapping", ["train", "{ws}/list.yaml"], "a recipe must be a YAML mapping"),
    ("recipe-non-utf8", ["train", "{ws}/latin1.yaml"], "not UTF-8 text; save the recipe as UTF-8"),
    ("recipe-unknown-key", ["train", "{ws}/typo_key.yaml"], "training.learning_rat"),
    ("recipe-wrong-type", ["train", "{ws}/bad_type.yaml"], "training.epochs"),
    ("recipe-bad-enum", ["train", "{ws}/bad_enum.yaml"], "model.task"),
    ("scratch-config-typo", ["train", "{ws}/scratch_typo.yaml"], "model.from_scratch.config.n_layers"),
    ("override-no-equals", ["train", "{ws}/tiny.yaml", "training.epochs"], "must look like section.key=value"),
    ("override-unknown", ["train", "{ws}/tiny.yaml", "training.epoch=2"], "training.epoch"),
    ("block-size-zero", ["train", "{ws}/block_zero.yaml"], "preprocess.block_size"),
    ("negative-lr", ["train", "{ws}/negative_lr.yaml"], "training.learning_rate"),
    ("negative-num-proc", ["train", "{ws}/tiny.yaml", "preprocess.num_proc=-2"], "preprocess.num_proc: -2"),
    ("data-missing", ["train", "{ws}/missing_train.yaml"], "nowhere.txt"),
    ("data-empty", ["train", "{ws}/empty_train.yaml"], "empty.txt' is empty"),
    ("data-only-blank", ["train", "{ws}/blank_train.yaml"], "blank.txt"),
    ("data-binary", ["train", "{ws}/binary_train.yaml"], "binary.txt' looks binary"),
    ("data-non-utf8", ["train", "{ws}/latin1_train.yaml"], "latin1.txt' is not UTF-8 text"),
    ("data-not-json", ["train", "{ws}/not_json.yaml"], "not_json.jsonl"),
    ("scratch-with-chat-data", ["train", "{ws}/chat_no_role.yaml"], "data.format: chat needs a pretrained"),
    ("chat-without-role", ["train", "{ws}/chat_no_role_pretrained.yaml"], "row 1 of '{ws}/no_role.jsonl': a "
                                                                          "message has role None"),
    ("qa-without-question", ["train", "{ws}/qa_no_question.yaml"], "'question'"),
    ("missing-label-column", ["train", "{ws}/no_label.yaml"], "label"),
    ("unknown-model", ["train", "{ws}/unknown_model.yaml"], "not-a-model"),
    ("corrupt-local-weights", ["train", "{ws}/corrupt_local_model.yaml"], "truncated' could not be loaded"),
    ("pickled-weights-train", ["train", "{ws}/pickled_model.yaml"], "holds only pickled weights"),
    ("pickled-weights-generate", ["generate", "{ws}/pickled", "hi", "--max-new-tokens", "8", "--cache", "off"],
     "holds only pickled weights"),
    ("remote-code-not-trusted", ["train", "{ws}/remote_code_model.yaml"],
     "model.name: '{ws}/remote_code' ships its own Python code, which hftoolkit does not run unless a recipe sets "
     "model.trust_remote_code: true"),
    ("remote-code-generate", ["generate", "{ws}/remote_code", "hi", "--max-new-tokens", "8", "--cache", "off"],
     "checkpoint '{ws}/remote_code' ships its own Python code"),
    ("overwrite-user-folder", ["train", "{ws}/user_output.yaml", "--overwrite"], "hftoolkit did not write"),
    ("resume-nothing", ["train", "{ws}/tiny.yaml", "--resume"], "--resume"),
    ("nproc-uneven", ["train", "{ws}/tiny.yaml", "--nproc", "3"], "--nproc 3"),
    ("checkpoint-missing", ["generate", "{ws}/nothing-here", "hi"], "nothing-here"),
    ("checkpoint-no-config", ["generate", "{ws}/no_config", "hi"], "config.json"),
    ("checkpoint-no-tokenizer", ["generate", "{ws}/no_tokenizer", "hi", "--cache", "off", "--max-new-tokens", "8"],
     "no_tokenizer' has no tokenizer files"),
    ("checkpoint-truncated", ["generate", "{ws}/truncated", "hi", "--cache", "off", "--max-new-tokens", "8"],
     "truncated' could not be loaded (SafetensorError"),
    ("tokenizer-corrupt", ["generate", "{ws}/bad_tokenizer", "hi", "--cache", "off", "--max-new-tokens", "8"],
     "bad_tokenizer': its tokenizer could not be loaded (JSONDecodeError"),
    ("prompt-empty", ["generate", "{ws}/gpt", "", "--raw", "--cache", "off"], "empty prompt"),
    ("prompt-file-empty", ["generate", "{ws}/gpt", "--file", "{ws}/prompts.txt", "--cache", "off"], "prompts.txt"),
    ("max-new-tokens-window", ["generate", "{ws}/gpt", "hi", "--max-new-tokens", "500", "--cache", "off"],
     "--max-new-tokens: 500"),
    ("batch-size-zero", ["generate", "{ws}/gpt", "hi", "--batch-size", "0", "--cache", "off"], "--batch-size"),
    ("cache-typo", ["generate", "{ws}/gpt", "hi", "--cache", "memroy"], "did you mean 'memory'"),
    ("cache-bad-redis-url", ["generate", "{ws}/gpt", "hi", "--cache", "redis://127.0.0.1:port/0"],
     "not a valid Redis URL"),
    ("cache-is-a-file", ["generate", "{ws}/gpt", "hi", "--cache", "{ws}/good.txt"], "is a file"),
    ("context-not-an-index", ["generate", "{ws}/gpt", "hi", "--context", "{ws}/user_folder"],
     "not a corpus index"),
    ("classify-causal-lm", ["classify", "{ws}/gpt", "squeal"], "not a classifier"),
    ("fill-mask-causal-lm", ["fill-mask", "{ws}/gpt", "the [MASK] pads"], "{ws}/gpt"),
    ("eval-data-missing", ["eval", "{ws}/gpt", "--data", "{ws}/nowhere.jsonl"], "nowhere.jsonl"),
    ("eval-question-not-text", ["eval", "{ws}/gpt", "--data", "{ws}/question_number.jsonl"],
     "--data: row 1 of '{ws}/question_number.jsonl': 'question' must be a non-blank text (got 7)"),
    ("eval-no-reference", ["eval", "{ws}/gpt", "--data", "{ws}/no_reference.jsonl"],
     "row 1 of '{ws}/no_reference.jsonl': no 'answer' or 'key_facts' to score the answer against"),
    ("eval-key-facts-text", ["eval", "{ws}/gpt", "--data", "{ws}/facts_text.jsonl"],
     "row 2 of '{ws}/facts_text.jsonl': 'key_facts' must be a list of texts"),
    ("mistakes-key-facts-text", ["data", "mistakes", "{ws}/gpt", "--data", "{ws}/facts_text.jsonl", "--out",
                                 "{ws}/pairs.jsonl"], "row 2 of '{ws}/facts_text.jsonl': 'key_facts'"),
    ("train-key-facts-text", ["train", "{ws}/qa_facts_text.yaml"],
     "data.train: row 2 of '{ws}/facts_text.jsonl': 'key_facts' must be a list of texts"),
    ("temperature-negative", ["generate", "{ws}/gpt", "hi", "--temperature", "-1", "--cache", "off"],
     "--temperature: -1.0 must be 0 (no sampling) or more"),
    ("top-p-above-one", ["generate", "{ws}/gpt", "hi", "--top-p", "2", "--cache", "off"],
     "--top-p: 2.0 must be above 0 and at most 1"),
    ("sample-top-k-zero", ["generate", "{ws}/gpt", "hi", "--sample-top-k", "0", "--cache", "off"],
     "--sample-top-k: 0 must be at least 1"),
    ("repetition-penalty-zero", ["generate", "{ws}/gpt", "hi", "--repetition-penalty", "0", "--cache", "off"],
     "--repetition-penalty: 0.0 must be above 0"),
    ("merge-not-an-adapter", ["merge", "{ws}/gpt", "{ws}/merged"], "adapter"),
    ("index-search-not-index", ["index", "search", "{ws}/user_folder", "brakes"], "user_folder"),
    ("index-chunk-too-small", ["index", "build", "{ws}/good.txt", "--out", "{ws}/idx", "--chunk-tokens", "8"],
     "--chunk-tokens"),
    ("data-import-bad-uri", ["data", "import", "{ws}/good.txt", "--to", "mysql://x/y", "--table", "t",
                             "--format", "text"], "mysql"),
    ("recipes-cp-existing", ["recipes", "cp", "gpt_from_scratch", "{ws}/good.txt"], "already exists"),
]


def snapshot(folder: Path) -> dict:
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns) if p.is_file() else None
            for p in sorted(folder.rglob("*"))}


@pytest.mark.parametrize("argv, expected", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_and_writes_nothing(workspace, argv, expected, capsys, monkeypatch):
    monkeypatch.chdir(workspace)
    before = snapshot(workspace)
    code = main([a.format(ws=workspace) for a in argv])
    err = capsys.readouterr().err
    lines = [line for line in err.strip().splitlines() if line.startswith("hftoolkit: error:")]
    assert code == 2 and len(lines) == 1, err[-2000:]
    assert expected.format(ws=workspace) in lines[0], lines[0]
    assert snapshot(workspace) == before
