"""Load a recipe's train and validation documents, checking the columns it names."""

from __future__ import annotations

from dataclasses import dataclass

from hftoolkit.data.sources import describe, fingerprint, load_split, require_columns
from hftoolkit.errors import UserError
from hftoolkit.recipe.schema import DataSection


@dataclass
class LoadedData:
    train: object  # datasets.Dataset
    validation: object
    content_hash: str  # hash of every file behind both splits (and extra_text)
    extra_text: object = None  # datasets.Dataset of documents, or None


def required_columns(data: DataSection, task: str = "causal_lm") -> list[tuple[str, str]]:
    if task == "classification":
        return [("data.text_column", data.text_column), ("data.label_column", data.label_column)]
    if data.format == "qa":
        return [("data.question_column", data.question_column), ("data.answer_column", data.answer_column)]
    if data.format == "chat":
        return [("data.messages_column", data.messages_column)]
    return [("data.text_column", data.text_column)]


def load_data(data: DataSection, seed: int, task: str = "causal_lm") -> LoadedData:
    """Train/validation datasets; validation is split off deterministically when not given."""
    if not data.train:
        raise UserError("data.train is empty; name a file, folder, glob or hub dataset id")
    train = load_split(data.train, "data.train")
    require_columns(train.column_names, required_columns(data, task), data.train)
    hashes = [fingerprint(data.train, train)]
    train = decode_messages(train, data)
    if data.validation:
        validation = load_split(data.validation, "data.validation")
        require_columns(validation.column_names, required_columns(data, task), data.validation)
        hashes.append(fingerprint(data.validation, validation))
        validation = decode_messages(validation, data)
    else:
        if not 0 < data.validation_percent < 100:
            raise UserError(f"data.validation_percent: {data.validation_percent} must be between 0 and 100 "
                            "(exclusive), or set data.validation to a file")
        if len(train) < 2:
            raise UserError(f"data.train: '{describe(data.train)}' has {len(train)} document(s); need at least 2 "
                            "to split off validation, or set data.validation")
        parts = train.train_test_split(test_size=data.validation_percent / 100, seed=seed)
        train, validation = parts["train"], parts["test"]
    if data.max_train_samples:
        train = train.select(range(min(data.max_train_samples, len(train))))
    extra = None
    if data.extra_text:
        extra = load_split(data.extra_text, "data.extra_text")
        require_columns(extra.column_names, [("data.text_column", data.text_column)], data.extra_text)
        hashes.append(fingerprint(data.extra_text, extra))
    return LoadedData(train, validation, "-".join(hashes), extra)


def decode_messages(split, data: DataSection):
    """Chat messages stored as JSON text (database columns hold text) become lists of messages again."""
    import json

    column = data.messages_column
    dtype = getattr(split.features[column], "dtype", None) if column in split.column_names else None
    stored_as_text = dtype in ("string", "large_string")
    if data.format != "chat" or not stored_as_text:
        return split
    try:
        return split.map(lambda row: {column: json.loads(row[column])})
    except ValueError:
        raise UserError(f"data.messages_column: '{column}' holds text that is not a JSON list of messages; store "
                        "each row's messages as JSON (hftoolkit data import --format chat does)") from None
