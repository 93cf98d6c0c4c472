"""The generation log: every answer a checkpoint gave, a person's rating of it, and the way back into training.

    log = GenerationLog("sqlite:///answers.db")    # or postgresql://...
    TextGenerator("runs/cars_qa", request_log=log)  # or `generate --log URI`
    rate(uri, 3, "bad", fix="Every two years.")      # `hftoolkit data rate`
    export_answers(uri, "fixes.jsonl", "good")       # `hftoolkit data export-log`: QA rows a recipe reads

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
                 Column("rated_at", String(32)))


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
               sources: list, seconds: float, cached: bool) -> int | None:
        """The new row's id, or None when the database could not be written."""
        row = {"created_at": _now(), "checkpoint": checkpoint, "model_fingerprint": fingerprint,
               "prompt": prompt, "answer": answer, "settings": json.dumps(settings, sort_keys=True),
               "sources": json.dumps(sources), "latency_ms": round(seconds * 1000, 3), "cached": cached}
        return self.breaker.call(self._insert, row)  # a database failure: the answer matters more than its log

    def _insert(self, row: dict) -> int:
        with self.engine.begin() as connection:
            if not self._ready:
                self.table.create(connection, checkfirst=True)
                self._ready = True
            return connection.execute(self.table.insert().values(**row)).inserted_primary_key[0]


def _open_log(uri: str):
    from sqlalchemy import MetaData, inspect

    engine = open_engine(uri, "URI")
    with database_errors(uri, "URI"):
        if TABLE not in inspect(engine).get_table_names():
            engine.dispose()
            raise UserError(f"URI: {redact(uri)} has no generation log yet; generate with --log {redact(uri)} first")
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
    engine, table = _open_log(uri)
    try:
        with database_errors(uri, "URI"), engine.connect() as connection:
            rows = connection.execute(table.select().where(table.c.rating.is_not(None))
                                      .order_by(table.c.id)).mappings().all()
    finally:
        engine.dispose()
    latest: dict[str, dict] = {}
    for row in rows:  # later judgements of the same question replace earlier ones
        if row["correction"] or row["rating"] == "good" or min_rating == "bad":
            latest[row["prompt"]] = {"question": row["prompt"], "answer": row["correction"] or row["answer"],
                                     "rating": row["rating"], "corrected": bool(row["correction"]),
                                     "log_id": row["id"]}
    return list(latest.values())


def export_answers(uri: str, out: str, min_rating: str = defaults.EXPORT_MIN_RATING) -> int:
    """Write judged answers as QA JSON Lines (question, answer) that `cars_qa`-style recipes read."""
    require_new_file(out, "--out")  # before the database is read
    rows = judged_answers(uri, min_rating)
    if not rows:
        raise UserError(f"no rated answers in {redact(uri)} to export; rate some with `hftoolkit data rate`")

    def write(staging: Path) -> None:
        with open(staging, "w", encoding="utf-8") as file:
            for row in rows:
                file.write(json.dumps(row, ensure_ascii=False) + "\n")

    write_new_file(out, write, "--out")
    return len(rows)
