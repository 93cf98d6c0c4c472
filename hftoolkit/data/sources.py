"""Step 1 of the flow: find the data files a recipe names and load them as a DatasetDict.

Local .txt/.csv/.json/.jsonl/.parquet files, globs and folders of them, a hub
dataset id, or a database table/query (`db.source`). Text files are split into
documents on blank lines (paragraphs), or kept whole (`data.text_documents: file`).
"""

from __future__ import annotations

import csv
import glob
import hashlib
import json
import os
from pathlib import Path

from hftoolkit.data import batch_size as batching
from hftoolkit.data.compressed import BUILDERS, data_suffix, is_data_file, open_binary, open_text
from hftoolkit.db.source import describe as describe_sql
from hftoolkit.db.source import load_sql, sql_columns, sql_fingerprint
from hftoolkit.db.uri import is_database_uri, redact
from hftoolkit.errors import UserError
from hftoolkit.hub.endpoint import check_hub_dataset
from hftoolkit.paths import resolve_data_path

KINDS = "/".join(BUILDERS) + " (.gz/.zst too)"


def expand_files(spec: str, field: str) -> list[Path] | None:
    """Local files for `spec`, or None when it can only be a hub dataset id."""
    if is_database_uri(spec):
        raise UserError(f"{field}: a database source needs a table or query; write {field}: "
                        f"{{uri: {redact(spec)}, table: NAME}} (or query: SELECT ...)")
    path = Path(resolve_data_path(spec))
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if is_data_file(p) and p.is_file())
        if not files:
            raise UserError(f"{field}: folder '{spec}' holds no {KINDS} files")
        return files
    if path.is_file():
        if not is_data_file(path):
            raise UserError(f"{field}: '{spec}' has an unsupported extension; use one of {', '.join(BUILDERS)}, "
                            "optionally compressed as .gz or .zst")
        return [path]
    if glob.has_magic(str(path)):
        files = sorted(Path(p) for p in glob.glob(str(path), recursive=True) if is_data_file(Path(p)))
        if not files:
            raise UserError(f"{field}: glob '{spec}' matches no {KINDS} files")
        return files
    if looks_like_hub_id(spec):
        return None
    raise UserError(f"{field}: file '{spec}' does not exist; give a file, folder, glob or hub dataset id")


def check_text_file(path: Path, field: str, chunk: int = 1 << 20) -> None:
    """An empty, binary or non-UTF-8 file gets its own message (datasets would only say that generating
    the split failed). Read in 1 MB pieces, so a large file costs time, not memory."""
    import codecs

    decoder = codecs.getincrementaldecoder("utf-8")()
    size = 0
    try:
        with open_binary(path) as handle:
            while piece := handle.read(chunk):
                size += len(piece)
                if b"\0" in piece:
                    raise UserError(f"{field}: '{path}' looks binary (it holds NUL bytes), not text; give a text file")
                decoder.decode(piece)
            decoder.decode(b"", final=True)
    except UnicodeDecodeError as exc:
        raise UserError(f"{field}: '{path}' is not UTF-8 text ({exc.reason}); convert it, e.g. iconv -f latin1 "
                        "-t utf-8") from None
    except OSError as exc:
        raise UserError(f"{field}: cannot read '{path}' ({exc.strerror})") from None
    if size == 0:
        raise UserError(f"{field}: '{path}' is empty; give a file with text in it")


def looks_like_hub_id(spec: str) -> bool:
    parts = spec.split("/")
    return (not spec.startswith((".", "/", "~", "bundled://")) and len(parts) <= 2
            and not Path(spec).suffix and all(parts))


def load_split(spec, field: str, text_documents: str = "paragraph"):
    """Load one split (all its files, or its database rows) as a `datasets.Dataset`."""
    import datasets

    datasets.disable_progress_bars()  # "Generating split" bars say nothing useful for local files
    if not isinstance(spec, str):
        return load_sql(spec, field)
    files = expand_files(spec, field)
    if files is None:
        return _load_from_hub(spec, field)
    kinds = {BUILDERS[data_suffix(f)] for f in files}
    if len(kinds) > 1:
        raise UserError(f"{field}: '{spec}' mixes file types ({', '.join(sorted(kinds))}); use one type per split")
    builder = kinds.pop()
    if builder in ("text", "json", "csv"):
        for file in files:
            check_text_file(file, field)
    sample_by = {"paragraph": "paragraph", "file": "document"}[text_documents]
    options = {"sample_by": sample_by} if builder == "text" else {}
    if sample_by == "document" and builder == "text":
        # one row per file: datasets buffers 1000 single-row tables before writing, the whole corpus at once
        average = sum(f.stat().st_size for f in files) / len(files)
        options["writer_batch_size"] = batching.rows_for(average, batching.BATCH_CHARACTERS)  # read when called
    try:
        loaded = datasets.load_dataset(builder, data_files=[str(f) for f in files], split="train", **options)
    except Exception as exc:  # datasets raises many types for unparsable files
        raise UserError(f"{field}: could not read '{spec}' as {builder} ({type(exc).__name__}: "
                        f"{str(exc).splitlines()[0][:160]}); check the file's format") from None
    return loaded


def _load_from_hub(dataset_id: str, field: str):
    import datasets

    datasets.utils.logging.set_verbosity_error()  # its retry warnings would bury our one-line error
    try:
        return datasets.load_dataset(dataset_id, split="train")
    except Exception as exc:  # offline, unknown id, gated: all mean the same to the user
        raise UserError(f"{field}: '{dataset_id}' is not a local file and the hub dataset could not be loaded "
                        f"({type(exc).__name__}); use a local file or check HF_ENDPOINT/network") from None


def describe(spec) -> str:
    """A split's source for messages and model cards: the path, or the database (password masked) and table."""
    if isinstance(spec, str):
        return spec

    return describe_sql(spec)


def require_columns(available: list[str], columns: list[tuple[str, str]], spec) -> None:
    """Each (recipe field, column name) must be among the `available` columns."""
    for field, column in columns:
        if column not in available:
            raise UserError(f"{field}: column '{column}' is not in '{describe(spec)}' (columns: "
                            f"{', '.join(available)}); set {field} to one of them")


def peek_columns(spec, field: str) -> list[str] | None:
    """Column names of local data without loading it (None for hub ids): lets recipe checks stay instant."""
    if not isinstance(spec, str):
        return sql_columns(spec, field)
    files = expand_files(spec, field)
    if files is None:
        check_hub_dataset(spec, field)  # here, in the recipe check: before any model loads or data is read
        return None
    first = files[0]
    kind = BUILDERS[data_suffix(first)]
    try:
        if kind == "text":
            return ["text"]
        if kind == "csv":
            with open_text(first) as handle:
                return next(csv.reader(handle), [])
        if kind == "parquet":
            import pyarrow.parquet as pq

            return list(pq.read_schema(first).names)
        return _json_columns(first)
    except (OSError, ValueError, UnicodeDecodeError, EOFError) as exc:
        raise UserError(f"{field}: could not read '{first}' ({exc}); check the file's format") from None


def _json_columns(path: Path) -> list[str]:
    """Keys of the first record of a JSON Lines file or a JSON array of objects."""
    with open_text(path) as handle:
        head = handle.read(1 << 16).lstrip()
    if head.startswith("["):
        with open_text(path) as handle:
            records = json.load(handle)
        return list(records[0]) if records and isinstance(records[0], dict) else []
    first_line = head.splitlines()[0] if head else "{}"
    record = json.loads(first_line)
    return list(record) if isinstance(record, dict) else []


def fingerprint(spec, dataset) -> str:
    """Content hash of the files behind `spec` (the rows of a database split, the hub dataset's fingerprint)."""
    if not isinstance(spec, str):
        return sql_fingerprint(spec, dataset)
    files = expand_files(spec, "data")
    digest = hashlib.sha256()
    if files is None:
        digest.update(f"hub:{spec}:{dataset._fingerprint}".encode())
        return digest.hexdigest()
    for file in files:
        digest.update(os.path.basename(file).encode())
        with open(file, "rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()
