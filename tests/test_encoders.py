"""BERT-style paths on tiny models: masked LM, single/multi-label classification, regression,
`hftoolkit eval` reproducing training metrics, and predict pipelines matching plain transformers."""

import json

import pytest
import torch
import yaml

from conftest import run_cli, run_plain_python

TINY_BERT = {"architecture": "bert", "vocab_size": 600,
             "config": {"num_hidden_layers": 1, "hidden_size": 32, "num_attention_heads": 2,
                        "intermediate_size": 64}}
ISSUES = "bundled://corpora/cars/issues/"


def write_recipe(tmp_path, name, **sections):
    recipe = {"model": {"from_scratch": TINY_BERT}, "preprocess": {"block_size": 32},
              "training": {"max_steps": 30, "batch_size": 16, "learning_rate": 3e-3, "eval_steps": 15,
                           "save_steps": 1000, "logging_steps": 5, "precision": "fp32"},
              "output": {"dir": str(tmp_path / name)}}
    for section, values in sections.items():
        recipe.setdefault(section, {}).update(values)
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def train(tmp_path, name, **sections):
    done = run_cli("train", write_recipe(tmp_path, name, **sections))
    assert done.returncode == 0, done.stderr[-3000:]
    return tmp_path / name


@pytest.fixture(scope="module")
def classifier(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cls")
    return train(tmp, "cls", model={"task": "classification"},
                 data={"train": ISSUES + "train.jsonl", "validation": ISSUES + "test.jsonl"},
                 training={"class_weights": True, "max_steps": 60, "eval_steps": 30})


def test_classifier_checkpoint_labels_and_eval_reproduces(classifier):
    config = json.loads((classifier / "config.json").read_text())
    assert sorted(config["label2id"]) == ["brakes", "cooling", "electrical", "engine", "suspension",
                                          "transmission", "tyres"]
    assert config["problem_type"] == "single_label_classification"
    metrics = json.loads((classifier / "metrics.json").read_text())
    assert {"eval_accuracy", "eval_f1_macro", "eval_f1_brakes", "eval_precision_macro"} <= set(metrics)
    done = run_cli("eval", classifier, "--data", ISSUES + "test.jsonl", "--json")
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout)
    for key in ("eval_loss", "eval_accuracy", "eval_f1_macro", "eval_f1_engine"):
        # float sums differ in the last bits between the two runs: 1.94455004 against 1.94454992 once
        assert result[key] == pytest.approx(metrics[key], abs=1e-5), key


def test_eval_with_a_label_unseen_in_training_is_one_line(classifier, tmp_path):
    data = tmp_path / "new_label.jsonl"
    data.write_text(json.dumps({"text": "The sat-nav freezes", "label": "infotainment"}) + "\n")
    done = run_cli("eval", classifier, "--data", data)
    assert done.returncode == 2 and done.stderr.strip().splitlines()[-1] == (
        "hftoolkit: error: label 'infotainment' does not occur in the training data; known: brakes, cooling, "
        "electrical, engine, suspension, transmission, tyres")


def test_classify_cli_matches_plain_pipeline(classifier):
    from hftoolkit.paths import resolve_data_path
    rows = [json.loads(line) for line in open(resolve_data_path(ISSUES + "test.jsonl"))][:20]
    texts = [r["text"] for r in rows]
    done = run_cli("classify", classifier, *texts, "--json", "--top-k", "2")
    assert done.returncode == 0, done.stderr[-2000:]
    ours = [json.loads(line) for line in done.stdout.splitlines()]
    assert len(ours) == 20 and all(len(o["labels"]) == 2 for o in ours)
    plain = run_plain_python(f"""
import json
from transformers import pipeline
clf = pipeline("text-classification", model={str(classifier)!r})
print(json.dumps([r["label"] for r in clf({texts!r})]))
""")
    assert plain.returncode == 0, plain.stderr[-2000:]
    assert [o["labels"][0]["label"] for o in ours] == json.loads(plain.stdout.strip().splitlines()[-1])


def test_multilabel_and_regression(tmp_path):
    rows = [("brakes squeal and the engine knocks", ["brakes", "engine"], 7.5), ("the brakes squeal", ["brakes"], 3.0),
            ("the engine knocks", ["engine"], 4.0), ("tyres are bald", ["tyres"], 2.0),
            ("bald tyres and squealing brakes", ["tyres", "brakes"], 6.0), ("engine knocks on hills", ["engine"], 4.5)]
    data = tmp_path / "multi.jsonl"
    data.write_text("".join(json.dumps({"text": t, "labels": l, "severity": s}) + "\n" for t, l, s in rows * 6))
    multi = train(tmp_path, "multi", model={"task": "classification", "problem_type": "multi_label_classification"},
                  data={"train": str(data), "validation": str(data), "label_column": "labels"})
    metrics = json.loads((multi / "metrics.json").read_text())
    assert "eval_f1_macro" in metrics and "eval_accuracy" not in metrics
    assert json.loads((multi / "config.json").read_text())["problem_type"] == "multi_label_classification"
    done = run_cli("classify", multi, "the brakes squeal", "--top-k", "3", "--json")
    assert done.returncode == 0 and len(json.loads(done.stdout)["labels"]) == 3

    reg = train(tmp_path, "reg", model={"task": "classification", "problem_type": "regression"},
                data={"train": str(data), "validation": str(data), "label_column": "severity"})
    metrics = json.loads((reg / "metrics.json").read_text())
    assert metrics["eval_mse"] < metrics["eval_mse_start"]
    assert "eval_mae" in metrics


def test_masked_lm_whole_word_and_fill_mask(tmp_path):
    out = train(tmp_path, "mlm", model={"task": "masked_lm"},
                data={"train": "bundled://corpora/cars/text/train", "validation": "bundled://corpora/cars/text/heldout.txt"},
                preprocess={"block_size": 64, "whole_word_mask": True, "mlm_probability": 0.2},
                training={"max_steps": 40, "eval_steps": 20})
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["eval_perplexity"] < metrics["eval_perplexity_start"]
    done = run_cli("fill-mask", out, "check the tyre [MASK] every month", "--json", "--top-k", "3")
    assert done.returncode == 0, done.stderr[-2000:]
    ours = json.loads(done.stdout)["predictions"]
    plain = run_plain_python(f"""
import json
from transformers import pipeline
fill = pipeline("fill-mask", model={str(out)!r})
print(json.dumps([(o["token_str"], o["score"]) for o in fill("check the tyre [MASK] every month", top_k=3)]))
""")
    assert plain.returncode == 0, plain.stderr[-2000:]
    oracle = json.loads(plain.stdout.strip().splitlines()[-1])  # transformers' own pipeline, same ranking
    assert [o["token"] for o in ours] == [token.strip() for token, _ in oracle]
    assert [o["score"] for o in ours] == pytest.approx([score for _, score in oracle], abs=1e-4)

    # a fixed model with a known answer: the same weights with the output bias of "pressure" raised far
    # above every other token, so "pressure" must rank first with a probability near 1
    from transformers import AutoModelForMaskedLM, AutoTokenizer

    tokenizer, model = AutoTokenizer.from_pretrained(out), AutoModelForMaskedLM.from_pretrained(out)
    [pressure] = tokenizer("pressure", add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        model.get_output_embeddings().bias[pressure] += 60.0
    model.save_pretrained(tmp_path / "fixed")
    tokenizer.save_pretrained(tmp_path / "fixed")
    fixed = run_cli("fill-mask", tmp_path / "fixed", "check the tyre [MASK] every month", "--json", "--top-k", "2")
    assert fixed.returncode == 0, fixed.stderr[-2000:]
    first = json.loads(fixed.stdout)["predictions"][0]
    assert first["token"] == "pressure" and first["score"] > 0.99
    bad = run_cli("fill-mask", out, "no mask here")
    assert bad.returncode == 2 and "mask token" in bad.stderr


def test_masked_lm_line_by_line(tmp_path):
    out = train(tmp_path, "mlm_lines", model={"task": "masked_lm"},
                data={"train": "bundled://corpora/cars/text/train/06_brakes.txt",
                      "validation": "bundled://corpora/cars/text/heldout.txt"},
                preprocess={"block_size": 48, "packing": False}, training={"max_steps": 6, "eval_steps": 3})
    stats = json.loads((out / "metrics.json").read_text())["preprocessing"]["train"]
    assert stats["max_length"] <= 48 and stats["examples"] > 1
