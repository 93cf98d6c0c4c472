"""`hftoolkit data import`: files read as recipes read them, into a database table (`db.importer`)."""

from __future__ import annotations

from hftoolkit import defaults
from hftoolkit.data.qa_rows import checked_key_facts
from hftoolkit.data.sources import load_split, require_columns
from hftoolkit.db.importer import FORMAT_COLUMNS, OPTIONAL_COLUMNS, ImportResult, check_import, import_rows
from hftoolkit.errors import UserError


def import_files(files: list[str], uri: str, table: str, data_format: str = defaults.IMPORT_FORMAT) -> ImportResult:
    """Add the rows of `files` to `table` (created if missing), skipping rows already there. All files are read
    and checked before the database is touched."""
    check_import(table, data_format)
    return import_rows(read_rows(files, data_format), len(files), uri, table, data_format)


def read_rows(files: list[str], data_format: str) -> list:
    """Each file as a Dataset with the format's columns (and its optional ones the file has), checked before
    anything is written."""
    columns = FORMAT_COLUMNS[data_format]
    splits = []
    for file in files:
        split = load_split(file, "FILES")
        require_columns(split.column_names, [("--format " + data_format, c) for c in columns], file)
        if data_format == "classification" and split.features["label"].dtype not in ("string", "large_string", "int64", "float64"):
            raise UserError(f"FILES: '{file}' has list labels (multi-label); import one label per row, or keep "
                            "multi-label data in JSONL files")
        if data_format == "qa":
            split = checked_key_facts(split, "FILES", file)
        optional = [c for c in OPTIONAL_COLUMNS.get(data_format, []) if c in split.column_names]
        splits.append(split.select_columns(columns + optional))
    return splits
