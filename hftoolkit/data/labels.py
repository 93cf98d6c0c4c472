"""Label names for classification, read from the data, and their encoding as training targets."""

from __future__ import annotations

from collections import Counter

from hftoolkit.errors import UserError


def label_names(datasets_: list, column: str, problem_type: str) -> list[str]:
    """Sorted label names found in the data (empty for regression)."""
    if problem_type == "regression":
        return []
    names: set[str] = set()
    for dataset in datasets_:
        for value in dataset[column]:
            if problem_type == "multi_label_classification":
                if not isinstance(value, list):
                    raise UserError(f"data.label_column: multi-label needs a list of labels per row, got {value!r}")
                names.update(str(v) for v in value)
            else:
                if isinstance(value, list):
                    raise UserError("data.label_column holds lists; set model.problem_type: "
                                    "multi_label_classification")
                names.add(str(value))
    if len(names) < 2:
        raise UserError(f"data.label_column: found {len(names)} distinct label(s); classification needs at least 2")
    return sorted(names)


def encode_label(value, names: list[str], problem_type: str):
    if problem_type == "regression":
        try:
            return float(value)
        except (TypeError, ValueError):
            raise UserError(f"data.label_column: regression needs numbers, got {value!r}") from None
    index = {name: i for i, name in enumerate(names)}
    if problem_type == "multi_label_classification":
        hot = [0.0] * len(names)
        for v in value:
            if str(v) not in index:
                raise UserError(f"label '{v}' does not occur in the training data; known: {', '.join(names)}")
            hot[index[str(v)]] = 1.0
        return hot
    if str(value) not in index:
        raise UserError(f"label '{value}' does not occur in the training data; known: {', '.join(names)}")
    return index[str(value)]


def inverse_frequency_weights(labels: list[int], n: int) -> list[float]:
    """Weights n_samples / (n_classes * count): rare classes count more; balanced data gets 1.0 each."""
    counts = Counter(labels)
    total = len(labels)
    return [total / (n * counts[c]) if counts[c] else 0.0 for c in range(n)]
