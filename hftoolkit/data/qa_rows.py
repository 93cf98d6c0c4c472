"""Question-and-answer rows as the answer scorers read them, checked before any answer is generated or any
step trained: a malformed row costs one line naming it, not a traceback after minutes of generation."""

from __future__ import annotations

import json

from hftoolkit.data.sources import describe
from hftoolkit.errors import UserError

FACTS = "key_facts"


def key_facts_problem(value) -> str | None:
    """Why a `key_facts` cell is unusable, or None: it must be empty (null) or a list of non-blank texts."""
    if value is None:
        return None
    if not isinstance(value, list):
        return f"'{FACTS}' must be a list of texts, like [\"10 mm\"] (got {type(value).__name__} {value!r:.40})"
    for fact in value:
        if not isinstance(fact, str) or not fact.strip():
            return f"'{FACTS}' must hold non-blank texts only (got {fact!r:.40}); write each fact as text"
    return None


def checked_key_facts(split, field: str, spec):
    """`split` with its `key_facts` checked, the first unusable row named (rows numbered from 1, as in the file).
    Key facts stored as JSON text (a database column: `data import` writes them so) become lists again."""
    if FACTS not in split.column_names:
        return split
    values = split[FACTS]
    stored_as_text = getattr(split.features[FACTS], "dtype", None) in ("string", "large_string")
    if stored_as_text:
        values = [_json_list(value) for value in values]
    for number, value in enumerate(values, 1):
        problem = key_facts_problem(value)
        if problem:
            raise UserError(f"{field}: row {number} of '{describe(spec)}': {problem}")
    return split.remove_columns(FACTS).add_column(FACTS, values) if stored_as_text else split


def _json_list(value):
    """A JSON list in text, decoded; anything else as it was (to be named by `key_facts_problem`)."""
    if isinstance(value, str) and value.lstrip().startswith("["):
        try:
            return json.loads(value)
        except ValueError:
            pass
    return value


def scoring_rows(split, field: str, spec, question_column: str = "question", answer_column: str = "answer",
                 need_answer: bool = False) -> list[dict]:
    """Each row as {question, answer, key_facts, group}: the question is text, the key facts are the row's or, without
    them, its answer. `need_answer`: the reference answer itself is used (as the chosen side of a pair)."""
    rows = []
    for number, row in enumerate(split, 1):
        where = f"{field}: row {number} of '{describe(spec)}'"
        question = row.get(question_column)
        if not isinstance(question, str) or not question.strip():
            raise UserError(f"{where}: '{question_column}' must be a non-blank text (got {question!r:.40})")
        answer = row.get(answer_column)
        if isinstance(answer, (int, float)) and not isinstance(answer, bool):
            answer = str(answer)
        if answer is not None and not isinstance(answer, str):
            raise UserError(f"{where}: '{answer_column}' must be a text (got {type(answer).__name__})")
        answer = answer if answer and answer.strip() else None
        problem = key_facts_problem(row.get(FACTS))
        if problem:
            raise UserError(f"{where}: {problem}")
        facts = row.get(FACTS) or ([answer] if answer else None)
        if facts is None or (need_answer and answer is None):
            wanted = f"'{answer_column}'" if need_answer else f"'{answer_column}' or '{FACTS}'"
            raise UserError(f"{where}: no {wanted} to score the answer against; give each question one")
        rows.append({"question": question, "answer": answer, FACTS: facts, "group": row.get("group")})
    return rows
