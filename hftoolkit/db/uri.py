"""Database URIs: open SQLAlchemy engines, and turn every driver error into one line without the password.

SQLite (`sqlite:///path.db`) is the embedded default; PostgreSQL
(`postgresql://user@host:port/db`) goes through psycopg 3, so libpq's own
PGPASSWORD/PGUSER/... variables and ~/.pgpass work when the URI has no password.
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

from hftoolkit.errors import UserError
from hftoolkit.redact import redact, remember_uri, with_encoded_password

SCHEMES = ("sqlite", "postgresql", "postgres")
HINT = "use sqlite:///path.db or postgresql://user@host:port/db"


def is_database_uri(text) -> bool:
    return isinstance(text, str) and "://" in text and text.split("://", 1)[0].split("+")[0] in SCHEMES


__all__ = ["redact", "open_engine", "error_line", "database_errors", "is_database_uri"]


def open_engine(uri: str, field: str, create: bool = False):
    """A SQLAlchemy engine for `uri`. A SQLite file must exist unless `create` (imports and logs make one)."""
    from sqlalchemy import create_engine
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    remember_uri(uri)
    uri = with_encoded_password(uri)
    if not is_database_uri(uri):
        raise UserError(f"{field}: '{redact(str(uri))}' is not a database URI; {HINT}")
    try:
        url = make_url(uri)
    except (ArgumentError, ValueError):
        raise UserError(f"{field}: '{redact(uri)}' is not a valid database URI; {HINT}") from None
    if url.get_backend_name() == "sqlite":
        if not url.database or url.database == ":memory:":
            raise UserError(f"{field}: '{redact(uri)}' names no database file; use sqlite:///path.db")
        path = Path(url.database)
        if not create and not path.is_file():
            raise UserError(f"{field}: SQLite file '{path}' does not exist; check the path (or create it with "
                            "`hftoolkit data import`)")
        if create and not path.parent.is_dir():
            raise UserError(f"{field}: folder '{path.parent}' for SQLite file '{path.name}' does not exist; create it")
        return create_engine(url)
    url = url.set(drivername="postgresql+psycopg")  # psycopg 3, not SQLAlchemy's psycopg2 default
    return create_engine(url, connect_args={"connect_timeout": 10}, pool_pre_ping=True)


def error_line(exc: BaseException, uri: str) -> str:
    """The first line of a driver error, without SQL echo, links or the password."""
    remember_uri(uri)
    original = getattr(exc, "orig", None) or exc
    text = redact(str(original).strip())  # before cutting: a secret split by the cut would escape the mask
    return (text.splitlines()[0] if text else type(original).__name__)[:200]


@contextmanager
def database_errors(uri: str, field: str, fix: str = "check the URI, that the server runs, and the credentials "
                                                  "(URI, PGPASSWORD or ~/.pgpass)"):
    """Raise UserError (one line, password masked) for any database failure inside the block."""
    from sqlalchemy.exc import SQLAlchemyError

    try:
        yield
    except SQLAlchemyError as exc:
        raise UserError(f"{field}: database {redact(uri)} failed ({error_line(exc, uri)}); {fix}") from None
