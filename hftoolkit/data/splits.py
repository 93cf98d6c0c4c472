"""Load a recipe's train and validation documents, checking the columns it names."""

from __future__ import annotations

from dataclasses import dataclass

from hftoolkit.data.qa_rows import checked_key_facts
from hftoolkit.data.sources import describe, fingerprint, load_split, require_columns
from hftoolkit.errors import UserError
from hftoolkit.recipe.schema import DataSection


@dataclass
class LoadedData:
    train: object  # datasets.Dataset
    validation: object
    content_hash: str  # hash of every file behind both splits (and extra_text)
    extra_text: object = None  # datasets.Dataset of documents, or None
    skipped: dict | None = None  # split -> rows dropped for a null or blank required column


def required_columns(data: DataSection, task: str = "causal_lm") -> list[tuple[str, str]]:
    if task == "classification":
        return [("data.text_column", data.text_column), ("data.label_column", data.label_column)]
    if data.format == "qa":
        return [("data.question_column", data.question_column), ("data.answer_column", data.answer_column)]
    if data.format == "chat":
        return [("data.messages_column", data.messages_column)]
    if data.format == "preference":
        return [("data.prompt_column", data.prompt_column), ("data.chosen_column", data.chosen_column),
                ("data.rejected_column", data.rejected_column)]
    if data.format == "rated":
        return [("data.prompt_column", data.prompt_column), ("data.completion_column", data.completion_column),
                ("data.label_column", data.label_column)]
    return [("data.text_column", data.text_column)]


def load_data(data: DataSection, seed: int, task: str = "causal_lm") -> LoadedData:
    """Train/validation datasets; validation is split off deterministically when not given."""
    if not data.train:
        raise UserError("data.train is empty; name a file, folder, glob or hub dataset id")
    columns = required_columns(data, task)
    skipped = {}
    train = load_split(data.train, "data.train", data.text_documents)
    require_columns(train.column_names, columns, data.train)
    hashes = [fingerprint(data.train, train)]
    train, skipped["train"] = drop_empty_rows(decode_messages(train, data), columns, "data.train", data.train)
    check_messages(train, data, "data.train", data.train)
    if data.format == "qa":
        train = checked_key_facts(train, "data.train", data.train)
    if data.validation:
        validation = load_split(data.validation, "data.validation", data.text_documents)
        require_columns(validation.column_names, columns, data.validation)
        hashes.append(fingerprint(data.validation, validation))
        validation, skipped["validation"] = drop_empty_rows(decode_messages(validation, data), columns,
                                                            "data.validation", data.validation)
        check_messages(validation, data, "data.validation", data.validation)
        if data.format == "qa":
            validation = checked_key_facts(validation, "data.validation", data.validation)
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
        extra = load_split(data.extra_text, "data.extra_text", data.text_documents)
        require_columns(extra.column_names, [("data.text_column", data.text_column)], data.extra_text)
        hashes.append(fingerprint(data.extra_text, extra))
        extra, skipped["extra_text"] = drop_empty_rows(extra, [("data.text_column", data.text_column)],
                                                       "data.extra_text", data.extra_text)
    return LoadedData(train, validation, "-".join(hashes), extra, {k: v for k, v in skipped.items() if v})


def drop_empty_rows(split, columns: list[tuple[str, str]], field: str, spec):
    """(rows whose required columns are all present and not blank, how many were dropped). A split with
    nothing left is an error: training on it would only learn padding."""
    names = [column for _, column in columns]
    if {"data.prompt_column"} <= {field_name for field_name, _ in columns}:
        return split, 0  # preference/rated rows: a blank answer is a mistake to name (data.preference_rows)

    def usable(row) -> bool:
        return not any(is_empty(row[c]) for c in names)

    before = len(split)
    kept = split.filter(usable, desc="dropping empty rows") if before else split
    if len(kept) == 0:
        shown = ", ".join(f"'{n}'" for n in names)
        raise UserError(f"{field}: '{describe(spec)}' has no rows with text in {shown} ({before} rows, all empty "
                        "or null); give data with text in it")
    return kept, before - len(kept)


ROLES = ("system", "user", "assistant", "tool")


def check_messages(split, data: DataSection, field: str, spec) -> None:
    """Chat rows must be lists of {role, content} turns with an assistant turn to learn from; the first
    row that is not is named, before any tokenizing."""
    if data.format != "chat":
        return
    for number, messages in enumerate(split[data.messages_column], 1):
        where = f"{field}: row {number} of '{describe(spec)}'"
        if not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages):
            raise UserError(f"{where}: '{data.messages_column}' must be a list of {{role, content}} messages")
        for turn in messages:
            if turn.get("role") not in ROLES:
                raise UserError(f"{where}: a message has role {turn.get('role')!r}; each message needs a role "
                                f"({', '.join(ROLES)}) and a content")
            if not isinstance(turn.get("content"), str):
                raise UserError(f"{where}: a {turn['role']} message has no text content")
        if not any(turn["role"] == "assistant" for turn in messages):
            raise UserError(f"{where}: no assistant message, so nothing to learn; add the answer as an "
                            "assistant turn")


def is_empty(value) -> bool:
    return value is None or (isinstance(value, str) and not value.strip()) or value == []


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
