"""Rows into a database table a recipe can train from (`data import`), and a look at a table (`data show`).

Files are read (by `data.db_import`) with the same readers recipes use (a .txt becomes one row per
paragraph), so a recipe reading the table sees exactly the documents it would
read from the files. Every row carries a hash of its content: importing the
same files again adds nothing. All files are read and checked before the
database is touched, and the rows go in one transaction.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

from hftoolkit import defaults
from hftoolkit.db.uri import database_errors, open_engine, redact
from hftoolkit.errors import UserError

FORMAT_COLUMNS = {"text": ["text"], "qa": ["question", "answer"], "chat": ["messages"],
                  "classification": ["text", "label"]}
OPTIONAL_COLUMNS = {"qa": ["key_facts", "group"]}  # kept when the files have them: scoring and retrieval read them
JSON_COLUMNS = ("messages", "key_facts")  # lists, stored as JSON text (`data.splits` decodes them)
BATCH_ROWS = 1_000


@dataclass
class ImportResult:
    files: int
    rows_read: int
    rows_added: int
    rows_in_table: int
    left_out: tuple[str, ...] = ()  # optional columns the files have and an older table lacks

    @property
    def duplicates(self) -> int:
        return self.rows_read - self.rows_added


def row_values(row: dict) -> dict:
    """A row as stored: lists as JSON text; a content hash over all of it (a file without the optional columns
    hashes as before they were kept)."""
    values = {k: json.dumps(v, ensure_ascii=False) if k in JSON_COLUMNS and v is not None else v
              for k, v in row.items()}
    values["content_hash"] = hashlib.sha256(json.dumps(values, sort_keys=True, default=str).encode()).hexdigest()
    return values


def table_for(metadata, name: str, names: list[str], label_type):
    from sqlalchemy import Column, Integer, String, Table, Text

    columns = [Column(c, label_type if c == "label" else Text, nullable=True) for c in names]
    return Table(name, metadata, Column("id", Integer, primary_key=True, autoincrement=True), *columns,
                 Column("content_hash", String(64), nullable=False, unique=True))


def check_import(table: str, data_format: str) -> None:
    """The table name and format, checked before any file is read."""
    if data_format not in FORMAT_COLUMNS:
        raise UserError(f"--format: '{data_format}' is not one of {', '.join(FORMAT_COLUMNS)}")
    if not table or not table.replace("_", "").isalnum():
        raise UserError(f"--table: '{table}' must be letters, digits and underscores")


def import_rows(splits: list, files: int, uri: str, table: str, data_format: str) -> ImportResult:
    """Add the rows of `splits` (Datasets with the format's columns, read from `files` files) to `table`
    (created if missing) in one transaction, skipping rows already there."""
    from sqlalchemy import Float, MetaData, Text, func, inspect, select

    check_import(table, data_format)
    numeric = data_format == "classification" and splits[0].features["label"].dtype in ("int64", "float64")
    engine = open_engine(uri, "--to", create=True)
    try:
        with database_errors(uri, "--to"):
            existing = inspect(engine).get_table_names()
            have = {c["name"] for c in inspect(engine).get_columns(table)} if table in existing else None
            optional = OPTIONAL_COLUMNS.get(data_format, [])
            names = [c for c in FORMAT_COLUMNS[data_format] + optional if any(c in s.column_names for s in splits)]
            # a table made before the optional columns were kept: its rows hash without them, so they stay out
            left_out = tuple(c for c in names if c in optional and have is not None and c not in have)
            splits = [split.remove_columns([c for c in left_out if c in split.column_names]) for split in splits]
            target = table_for(MetaData(), table, [c for c in names if c not in left_out], Float if numeric else Text)
            missing = [c.name for c in target.columns if have is not None and c.name not in have]
            if missing:
                raise UserError(f"--table: '{table}' exists in {redact(uri)} without column(s) "
                                f"{', '.join(missing)}; choose another --table or --format")
            read = added = 0
            with engine.begin() as connection:  # one transaction: all rows or none
                target.create(connection, checkfirst=True)
                before = connection.execute(select(func.count()).select_from(target)).scalar_one()
                insert = _insert_skipping_duplicates(engine, target)
                for split in splits:
                    for start in range(0, len(split), BATCH_ROWS):
                        rows = [row_values(r) for r in split.select(
                            range(start, min(start + BATCH_ROWS, len(split))))]
                        connection.execute(insert, rows)
                        read += len(rows)
                total = connection.execute(select(func.count()).select_from(target)).scalar_one()
                added = total - before
    finally:
        engine.dispose()
    return ImportResult(files, read, added, total, left_out)


def _insert_skipping_duplicates(engine, table):
    """INSERT that leaves rows whose content hash is already in the table."""
    if engine.dialect.name == "sqlite":
        from sqlalchemy.dialects.sqlite import insert
    else:
        from sqlalchemy.dialects.postgresql import insert
    return insert(table).on_conflict_do_nothing(index_elements=["content_hash"])


def show_table(uri: str, table: str, rows: int = defaults.SHOW_ROWS) -> dict:
    """Row count, columns and the first `rows` rows of a table."""
    from sqlalchemy import MetaData, Table, func, inspect, select

    engine = open_engine(uri, "URI")
    try:
        with database_errors(uri, "URI"):
            tables = inspect(engine).get_table_names()
            if table not in tables:
                raise UserError(f"--table: '{table}' is not a table in {redact(uri)} (tables: "
                                f"{', '.join(tables) or 'none'})")
            target = Table(table, MetaData(), autoload_with=engine)
            with engine.connect() as connection:
                count = connection.execute(select(func.count()).select_from(target)).scalar_one()
                order = [target.c.id] if "id" in target.c else []
                first = connection.execute(select(target).order_by(*order).limit(rows)).mappings().all()
    finally:
        engine.dispose()
    return {"table": table, "rows": count, "columns": [c.name for c in target.columns],
            "first": [dict(r) for r in first]}
