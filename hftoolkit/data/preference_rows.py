"""Preference and rated rows → the conversational examples TRL's DPO and KTO trainers read.

A row's prompt is the user turn exactly as generation showed it (passages included when the answer was given
with retrieved passages; `data export-log` and `data mistakes` write it that way), after the row's own system
prompt or the recipe's. TRL renders prompt and answers with the checkpoint's chat template, as `generate --chat`
and `serve` do, so training sees the prompt the model answered.

Rows are checked before anything trains: an empty answer, a pair whose two answers are the same, a label that is
neither true nor false, and (for KTO) data with no good or no bad answer are each one line naming the row.
"""

from __future__ import annotations

from hftoolkit.data.sources import describe
from hftoolkit.errors import UserError
from hftoolkit.recipe.schema import DataSection

TRUE_LABELS = {"true", "1", "good", "yes"}
FALSE_LABELS = {"false", "0", "bad", "no"}


def as_label(value, where: str, column: str) -> bool:
    """true/false, 1/0, good/bad, yes/no (as text, numbers or booleans)."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower() if value is not None else ""
    if text in TRUE_LABELS:
        return True
    if text in FALSE_LABELS:
        return False
    raise UserError(f"{where}: '{column}' is {value!r}; a rated answer's label is true (good) or false (bad)")


def _text(row: dict, column: str, where: str, what: str) -> str:
    value = row.get(column)
    if not isinstance(value, str) or not value.strip():
        raise UserError(f"{where}: '{column}' is empty; every row needs {what}")
    return value.strip()


def preference_examples(split, data: DataSection, system: str | None, method: str, field: str, spec) -> list[dict]:
    """TRL rows for one split: {prompt, chosen, rejected} for DPO; {prompt, completion, label} for KTO (a
    preference pair gives KTO one good and one bad row)."""
    examples = []
    for number, row in enumerate(split, 1):
        where = f"{field}: row {number} of '{describe(spec)}'"
        prompt = _messages(row, data, system, _text(row, data.prompt_column, where, "a prompt"))
        if data.format == "preference":
            chosen = _text(row, data.chosen_column, where, "a chosen answer")
            rejected = _text(row, data.rejected_column, where, "a rejected answer")
            if chosen == rejected:
                raise UserError(f"{where}: '{data.chosen_column}' and '{data.rejected_column}' are the same answer; "
                                "a pair must prefer one answer over a different one")
            if method == "dpo":
                examples.append({"prompt": prompt, "chosen": _answer(chosen), "rejected": _answer(rejected)})
            else:
                examples += [{"prompt": prompt, "completion": _answer(chosen), "label": True},
                             {"prompt": prompt, "completion": _answer(rejected), "label": False}]
        else:
            completion = _text(row, data.completion_column, where, "a rated answer")
            label = as_label(row.get(data.label_column), where, data.label_column)
            examples.append({"prompt": prompt, "completion": _answer(completion), "label": label})
    if method == "kto" and examples and field == "data.train":
        labels = {example["label"] for example in examples}
        if labels != {True, False}:
            missing = "false (bad)" if True in labels else "true (good)"
            raise UserError(f"{field}: '{describe(spec)}' has no answer labelled {missing}; KTO learns from good "
                            "and bad answers together: add some, or train the good ones with a qa recipe")
    return examples


def _messages(row: dict, data: DataSection, system: str | None, prompt: str) -> list[dict]:
    own = row.get(data.system_column)
    system = own.strip() if isinstance(own, str) and own.strip() else system
    return ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": prompt}]


def _answer(text: str) -> list[dict]:
    return [{"role": "assistant", "content": text}]
