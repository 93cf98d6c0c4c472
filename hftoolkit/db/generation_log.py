"""The generation log: every answer a checkpoint gave, a person's rating of it, and the way back into training.

    log = GenerationLog("sqlite:///answers.db")    # or postgresql://...
    TextGenerator("runs/cars_qa", request_log=log)  # or `generate --log URI`
    rate(uri, 3, "bad", fix="Every two years.")      # `hftoolkit data rate`
    export_answers(uri, "fixes.jsonl", "good")       # `hftoolkit data export-log`: QA rows a recipe reads
    export_answers(uri, "pairs.jsonl", as_="preference")  # corrected bad answers as DPO pairs (or "rated": KTO)

Each row keeps what the model was shown: the user message with the retrieved passages in it, and the system
prompt, so a preference row built from it renders the same prompt the answer was given to.

Logging never fails a generation: when the database is down the first failure
warns once, later requests keep trying, and generation goes on.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

from hftoolkit import defaults
from hftoolkit.circuit import CircuitBreaker
from hftoolkit.db.uri import database_errors, error_line, open_engine, redact
from hftoolkit.errors import UserError
from hftoolkit.safe_write import require_new_file, write_new_file

TABLE = "generation_log"
RATINGS = ("good", "bad")
EXPORT_AS = ("qa", "preference", "rated")
SHOWN_COLUMNS = ("shown_prompt", "system")  # added after the first release: older logs gain them on open


def log_table(metadata):
    from sqlalchemy import Boolean, Column, Float, Integer, String, Table, Text

    return Table(TABLE, metadata,
                 Column("id", Integer, primary_key=True, autoincrement=True),
                 Column("created_at", String(32), nullable=False),
                 Column("checkpoint", Text, nullable=False),
                 Column("model_fingerprint", String(64), nullable=False),
                 Column("prompt", Text, nullable=False),       # the question (the last user message of a chat)
                 Column("answer", Text, nullable=False),
                 Column("settings", Text, nullable=False),     # generation parameters, JSON
                 Column("sources", Text, nullable=False),      # retrieved passages used, JSON list
                 Column("latency_ms", Float, nullable=False),
                 Column("cached", Boolean, nullable=False),
                 Column("rating", String(8)),
                 Column("correction", Text),
                 Column("rated_at", String(32)),
                 Column("shown_prompt", Text),  # the user message as the model saw it (passages included)
                 Column("system", Text))        # the system prompt it was rendered with


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class GenerationLog:
    """Appends one row per answered request; an unreachable database only warns (once per outage)."""

    def __init__(self, uri: str, warn=print):
        from sqlalchemy import MetaData

        self.uri, self.warn = uri, warn
        self.engine = open_engine(uri, "--log", create=True)  # a malformed URI is bad input: fail now
        self.table = log_table(MetaData())
        self._ready = False
        self.breaker = CircuitBreaker(  # tried on every request: a log row is cheap, and each one matters
            warn, lambda exc: f"warning: generation log {redact(uri)} unavailable ({error_line(exc, uri)}); "
                              "answers are not being logged, generation goes on",
            f"generation log {redact(uri)} is reachable again; logging resumed")

    def record(self, checkpoint: str, fingerprint: str, prompt: str, answer: str, settings: dict,
               sources: list, seconds: float, cached: bool, shown_prompt: str | None = None,
               system: str | None = None) -> int | None:
        """The new row's id, or None when the database could not be written."""
        row = {"created_at": _now(), "checkpoint": checkpoint, "model_fingerprint": fingerprint,
               "prompt": prompt, "answer": answer, "settings": json.dumps(settings, sort_keys=True),
               "sources": json.dumps(sources), "latency_ms": round(seconds * 1000, 3), "cached": cached,
               "shown_prompt": shown_prompt if shown_prompt is not None else prompt, "system": system}
        return self.breaker.call(self._insert, row)  # a database failure: the answer matters more than its log

    def _insert(self, row: dict) -> int:
        with self.engine.begin() as connection:
            if not self._ready:
                self.table.create(connection, checkfirst=True)
                add_missing_columns(connection)
                self._ready = True
            return connection.execute(self.table.insert().values(**row)).inserted_primary_key[0]


def add_missing_columns(connection) -> None:
    """A log written before `shown_prompt`/`system` existed gains them (empty for its old rows)."""
    from sqlalchemy import inspect, text

    present = {column["name"] for column in inspect(connection).get_columns(TABLE)}
    for name in SHOWN_COLUMNS:
        if name not in present:
            connection.execute(text(f"ALTER TABLE {TABLE} ADD COLUMN {name} TEXT"))


def _open_log(uri: str):
    from sqlalchemy import MetaData, inspect

    engine = open_engine(uri, "URI")
    with database_errors(uri, "URI"):
        if TABLE not in inspect(engine).get_table_names():
            engine.dispose()
            raise UserError(f"URI: {redact(uri)} has no generation log yet; generate with --log {redact(uri)} first")
        with engine.begin() as connection:
            add_missing_columns(connection)
    return engine, log_table(MetaData())


def rate(uri: str, request_id: int, rating: str, fix: str | None = None) -> dict:
    """Store a person's judgement of logged answer `request_id` (and a corrected answer)."""
    rating = rating.lower()
    if rating not in RATINGS:
        raise UserError(f"RATING: '{rating}' must be good or bad")
    if fix is not None and not fix.strip():
        raise UserError("--fix is empty; give the corrected answer")
    engine, table = _open_log(uri)
    try:
        with database_errors(uri, "URI"), engine.begin() as connection:
            done = connection.execute(table.update().where(table.c.id == request_id).values(
                rating=rating, correction=fix.strip() if fix else None, rated_at=_now()))
            if done.rowcount == 0:
                raise UserError(f"ID: no logged answer #{request_id} in {redact(uri)}")
            row = connection.execute(table.select().where(table.c.id == request_id)).mappings().one()
    finally:
        engine.dispose()
    return {"id": row["id"], "prompt": row["prompt"], "answer": row["answer"], "rating": row["rating"],
            "correction": row["correction"]}


def judged_answers(uri: str, min_rating: str = "good") -> list[dict]:
    """One QA row per rated question: the newest judgement, its correction preferred over the logged answer.

    `good` keeps answers rated good and every corrected answer; `bad` also keeps uncorrected bad answers.
    """
    if min_rating not in RATINGS:
        raise UserError(f"--min-rating: '{min_rating}' must be good or bad")
    rows = _rated_rows(uri)
    latest: dict[str, dict] = {}
    for row in rows:  # later judgements of the same question replace earlier ones
        if row["correction"] or row["rating"] == "good" or min_rating == "bad":
            latest[row["prompt"]] = {"question": row["prompt"], "answer": row["correction"] or row["answer"],
                                     "rating": row["rating"], "corrected": bool(row["correction"]),
                                     "log_id": row["id"]}
    return list(latest.values())


def _rated_rows(uri: str) -> list:
    engine, table = _open_log(uri)
    try:
        with database_errors(uri, "URI"), engine.connect() as connection:
            return connection.execute(table.select().where(table.c.rating.is_not(None))
                                      .order_by(table.c.id)).mappings().all()
    finally:
        engine.dispose()


def preference_rows(uri: str, as_: str) -> list[dict]:
    """Rated answers as preference pairs (a bad answer and its correction: chosen = correction, rejected = the
    answer) or as rated rows (every judged answer with label true/false, a correction as one more true row).
    The prompt is the user message as the model saw it, passages included; `system` the prompt it had."""
    rows, seen = [], set()
    for row in _rated_rows(uri):
        prompt, system = row["shown_prompt"] or row["prompt"], row["system"]
        base = {"prompt": prompt, **({"system": system} if system else {})}
        if as_ == "preference":
            pair = (prompt, row["correction"], row["answer"])
            if row["rating"] == "bad" and row["correction"] and row["correction"] != row["answer"] and pair not in seen:
                seen.add(pair)
                rows.append({**base, "chosen": row["correction"], "rejected": row["answer"], "log_id": row["id"]})
            continue
        judged = [(row["answer"], row["rating"] == "good")]
        if row["correction"] and row["correction"] != row["answer"]:
            judged.append((row["correction"], True))
        for completion, label in judged:
            if (prompt, completion, label) not in seen:
                seen.add((prompt, completion, label))
                rows.append({**base, "completion": completion, "label": label, "log_id": row["id"]})
    return rows


def export_answers(uri: str, out: str, min_rating: str = defaults.EXPORT_MIN_RATING,
                   as_: str = defaults.EXPORT_AS) -> int:
    """Write judged answers as JSON Lines: QA rows (question, answer) that `cars_qa`-style recipes read, or with
    `as_` preference pairs (DPO) or rated rows (KTO)."""
    if as_ not in EXPORT_AS:
        raise UserError(f"--as: '{as_}' must be one of {', '.join(EXPORT_AS)}")
    require_new_file(out, "--out")  # before the database is read
    rows = judged_answers(uri, min_rating) if as_ == "qa" else preference_rows(uri, as_)
    if not rows:
        wanted = {"qa": "rated answers", "preference": "answers rated bad with a correction (`data rate URI ID bad "
                  "--fix ...`)", "rated": "rated answers"}[as_]
        raise UserError(f"no {wanted} in {redact(uri)} to export; rate some with `hftoolkit data rate`")

    def write(staging: Path) -> None:
        with open(staging, "w", encoding="utf-8") as file:
            for row in rows:
                file.write(json.dumps(row, ensure_ascii=False) + "\n")

    write_new_file(out, write, "--out")
    return len(rows)
