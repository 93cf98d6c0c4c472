"""A recipe's data split read from a database table or query.

Rows stream through `datasets.Dataset.from_sql` in batches on a server-side
cursor (PostgreSQL) into Arrow files on disk, so a table larger than memory
loads in bounded memory. Each load gets a fresh Arrow folder: datasets would
otherwise key its cache on the query text alone and serve stale rows after the
table changed. The preprocessing cache keys the split on the masked URI, the
query and a digest of the rows returned.
"""

from __future__ import annotations

import atexit
import hashlib
import json
import shutil
import tempfile

from hftoolkit.db.uri import database_errors, error_line, open_engine, redact
from hftoolkit.errors import UserError
from hftoolkit.paths import cache_dir

ROWS_PER_BATCH = 2_000


def describe(source) -> str:
    """How a SQL split reads in messages and model cards (password masked)."""
    what = f"table {source.table}" if source.table else f"query {' '.join(source.query.split())[:80]!r}"
    return f"{redact(source.uri)} {what}"


def check_source(source, field: str) -> None:
    if not source.uri:
        raise UserError(f"{field}.uri is empty; {field} needs uri plus table or query")
    if bool(source.table) == bool(source.query):
        raise UserError(f"{field}: give exactly one of table or query (got {'both' if source.table else 'neither'})")


def select_sql(source, engine, field: str) -> str:
    """The SELECT to run: the query as given, or the whole table in id order."""
    from sqlalchemy import MetaData, Table, inspect, select

    if source.query:
        return source.query
    tables = inspect(engine).get_table_names()
    if source.table not in tables:
        raise UserError(f"{field}.table: '{source.table}' is not a table in {redact(source.uri)} (tables: "
                        f"{', '.join(tables) or 'none'}); import data with `hftoolkit data import`")
    table = Table(source.table, MetaData(), autoload_with=engine)
    statement = select(table)
    if "id" in table.c:
        statement = statement.order_by(table.c.id)
    return str(statement.compile(engine))


def sql_columns(source, field: str) -> list[str]:
    """Column names of a SQL split without reading its rows: recipe checks stay fast."""
    from sqlalchemy import text

    check_source(source, field)
    engine = open_engine(source.uri, f"{field}.uri")
    try:
        with database_errors(source.uri, field):
            sql = select_sql(source, engine, field)
            with engine.connect() as connection:
                return list(connection.execute(text(f"SELECT * FROM ({sql}) AS hftoolkit_peek LIMIT 0")).keys())
    finally:
        engine.dispose()


def load_sql(source, field: str):
    """The rows as a `datasets.Dataset`, streamed in batches into Arrow files."""
    import datasets

    check_source(source, field)
    engine = open_engine(source.uri, f"{field}.uri")
    folder = tempfile.mkdtemp(prefix="sql-", dir=cache_dir("sql"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    try:
        with database_errors(source.uri, field):
            sql = select_sql(source, engine, field)
            with engine.connect().execution_options(stream_results=True, max_row_buffer=ROWS_PER_BATCH) as conn:
                loaded = datasets.Dataset.from_sql(sql, con=conn, cache_dir=folder, chunksize=ROWS_PER_BATCH)
    except UserError:
        raise
    except Exception as exc:  # pandas wraps driver errors in its own DatabaseError
        raise UserError(f"{field}: reading {describe(source)} failed ({error_line(exc, source.uri)}); "
                        "check the table or query") from None
    finally:
        engine.dispose()
    if len(loaded) == 0:
        raise UserError(f"{field}: {describe(source)} returned no rows; check the table or query")
    return loaded


def sql_fingerprint(source, dataset) -> str:
    """Masked URI + query + a digest of every row returned, read batch by batch."""
    digest = hashlib.sha256(f"sql:{redact(source.uri)}:{source.table}:{source.query}".encode())
    for batch in dataset.with_format("arrow").iter(batch_size=ROWS_PER_BATCH):
        digest.update(json.dumps(batch.to_pydict(), sort_keys=True, default=str).encode())
    return digest.hexdigest()
