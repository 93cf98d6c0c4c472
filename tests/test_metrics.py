"""The shipped evaluate modules against hand-computed values, F1 edge cases included."""

import math

import pytest

from hftoolkit.metrics import load_metric


def compute(name, predictions, references, config_name=None, **kwargs):
    metric = load_metric(name, config_name=config_name) if config_name else load_metric(name)
    half = len(predictions) // 2  # fed in two batches, as during evaluation
    metric.add_batch(predictions=predictions[:half], references=references[:half])
    metric.add_batch(predictions=predictions[half:], references=references[half:])
    return metric.compute(**kwargs)


def test_accuracy():
    assert compute("accuracy", [0, 1, 2, 2], [0, 1, 1, 2])["accuracy"] == 0.75


def test_f1_per_class_and_macro_by_hand():
    # class 0: tp=2 fp=1 fn=0 → p=2/3 r=1 f1=0.8 ; class 1: tp=1 fp=0 fn=1 → p=1 r=.5 f1=2/3
    result = compute("classification_f1", [0, 0, 1, 0], [0, 0, 1, 1], label_names=["a", "b"])
    assert result["precision_a"] == pytest.approx(2 / 3) and result["recall_a"] == 1.0
    assert result["f1_a"] == pytest.approx(0.8) and result["f1_b"] == pytest.approx(2 / 3)
    assert result["f1_macro"] == pytest.approx((0.8 + 2 / 3) / 2)


def test_f1_absent_classes():
    # class 2 ("c") never occurs in references or predictions: left out of the macro average, scored 0
    result = compute("classification_f1", [0, 1, 0, 1], [0, 1, 0, 1], label_names=["a", "b", "c"])
    assert result["f1_macro"] == 1.0 and result["f1_c"] == 0.0
    # a class predicted but absent from references: precision 0, recall 0 (no support), F1 0, counted in macro
    result = compute("classification_f1", [0, 2, 0, 1], [0, 1, 0, 1], label_names=["a", "b", "c"])
    assert result["precision_c"] == 0.0 and result["recall_c"] == 0.0 and result["f1_c"] == 0.0
    assert result["f1_b"] == pytest.approx(2 / 3)
    assert result["f1_macro"] == pytest.approx((1.0 + 2 / 3 + 0.0) / 3)
    # a class in the references but never predicted: recall 0, F1 0
    result = compute("classification_f1", [0, 0, 0, 0], [0, 1, 0, 0], label_names=["a", "b"])
    assert result["recall_b"] == 0.0 and result["f1_b"] == 0.0 and result["precision_a"] == 0.75


def test_multilabel_f1():
    preds = [[1, 0, 1], [0, 1, 0], [1, 1, 0], [0, 0, 0]]
    refs = [[1, 0, 0], [0, 1, 0], [1, 0, 0], [0, 0, 0]]
    result = compute("classification_f1", preds, refs, config_name="multilabel", label_names=["x", "y", "z"])
    assert result["f1_x"] == 1.0
    assert result["precision_y"] == 0.5 and result["recall_y"] == 1.0
    assert result["f1_z"] == 0.0  # predicted once, never true
    assert result["f1_macro"] == pytest.approx((1.0 + 2 / 3 + 0.0) / 3)


def test_regression_and_perplexity():
    result = compute("regression_errors", [1.0, 2.0, 4.0, 4.0], [1.0, 3.0, 2.0, 4.0])
    assert result["mse"] == pytest.approx((0 + 1 + 4 + 0) / 4) and result["mae"] == pytest.approx(3 / 4)
    result = compute("token_perplexity", [10.0, 20.0], [10, 5])
    assert result["loss"] == 2.0 and result["perplexity"] == pytest.approx(math.exp(2.0))
