"""Documents read one at a time, each with the position just after it, for `data.streaming: true`.

A position is a small dict (file, byte offset or row, the unfinished paragraph) from which reading goes on
without reading what came before: plain files seek to the offset, parquet opens the row group, a database
query starts at OFFSET n (the server skips those rows; none are sent). A `.gz`/`.zst` file cannot seek, so
its bytes up to the offset are decompressed again, but no row is parsed or tokenized.

Documents are split as the map-style path splits them (datasets' text builder cuts paragraphs at blank
lines after translating \\r\\n and \\r; blank and null documents are dropped), so both paths see the same
documents. Under several processes each rank reads its own share: whole files when their number divides
evenly among the ranks, else every N-th document.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from hftoolkit.data.compressed import BUILDERS, data_suffix, open_binary, skip_bytes
from hftoolkit.data.splits import is_empty
from hftoolkit.db.source import ROWS_PER_BATCH, check_source, select_sql
from hftoolkit.db.uri import database_errors, open_engine
from hftoolkit.errors import UserError

START = {"file": 0, "offset": 0, "row": 0, "carry": "", "index": 0}


@dataclass
class DocumentSource:
    """Where a streamed split's documents come from: local files, or a database table/query."""
    files: list[Path] = field(default_factory=list)
    sql: object = None  # SqlSource
    text_column: str = "text"
    text_documents: str = "paragraph"
    skip: int = 0  # documents at the start held out (the validation split when none is given)
    field_name: str = "data.train"
    columns: tuple = ()  # qa/chat: whole rows, with text in each of these columns; empty: text_column's text

    def documents(self, skip: int | None = None) -> Iterator:
        """Every training document (or row) once, in order (a from-scratch tokenizer learns from them);
        `skip=0` also gives the held-out head."""
        for text, _ in read_documents(self, dict(START), rank=0, world=1, skip=skip):
            yield text


def read_documents(source: DocumentSource, position: dict, rank: int = 0, world: int = 1,
                   skip: int | None = None) -> Iterator[tuple[str, dict]]:
    """(document, position after it) from `position` on. `index` counts the documents of every rank (blank
    ones are not documents), so the same stream cut into N shares gives each document to exactly one rank."""
    skip = source.skip if skip is None else skip
    by_file = world > 1 and not skip and len(source.files) % world == 0 and len(source.files) >= world
    units = [source.sql] if source.sql is not None else (source.files[rank::world] if by_file else source.files)
    position = dict(position)
    for number in range(position["file"], len(units)):
        start = position if number == position["file"] else START
        rows = _sql_rows(source, start) if source.sql is not None else _file_documents(units[number], source, start)
        for record, offset, row, carry in rows:
            position.update(file=number, offset=offset, row=row, carry=carry)
            text = _usable(record, source)
            if text is None:
                continue
            index = position["index"]
            position["index"] = index + 1
            if index < skip or (not by_file and index % world != rank):
                continue
            yield text, dict(position)
        position.update(file=number + 1, offset=0, row=0, carry="")


def check_streamable(source: DocumentSource) -> None:
    """A JSON array cannot be read one record at a time: say so before anything loads."""
    for path in source.files:
        if BUILDERS[data_suffix(path)] == "json":
            with open_binary(path) as handle:
                if handle.read(4096).lstrip().startswith(b"["):
                    raise UserError(f"{source.field_name}: '{path}' is one JSON array; streaming reads JSON Lines "
                                    "(one object per line): convert it, e.g. jq -c '.[]' file.json > file.jsonl")


def _usable(record: dict, source: DocumentSource):
    """The document (text_column's text) or the row (qa/chat), or None when a needed column is blank or null:
    such rows are dropped, as `data.splits.drop_empty_rows` drops them."""
    if not source.columns:
        text = record.get(source.text_column)
        return text if isinstance(text, str) and text.strip() else None
    return None if any(is_empty(record.get(column)) for column in source.columns) else record


def _file_documents(path: Path, source: DocumentSource, start: dict):
    """(text, byte offset after it, row, carry) of one file from `start`."""
    kind = BUILDERS[data_suffix(path)]
    if kind == "parquet":
        yield from _parquet_rows(path, list(source.columns) or [source.text_column], start)
    elif kind == "text" and source.text_documents == "file":
        if start["offset"] == 0:
            with open_binary(path) as handle:
                yield {source.text_column: _newlines(handle.read().decode("utf-8"))}, -1, 0, ""
    elif kind == "text":
        for text, offset, row, carry in _paragraphs(path, start):
            yield {source.text_column: text}, offset, row, carry
    elif kind == "csv":
        yield from _csv_rows(path, start)
    else:
        yield from _json_lines(path, start, source.field_name)


def _newlines(text: str) -> str:
    return text.replace("\r\n", "\n").replace("\r", "\n")


def _lines(path: Path, offset: int):
    """(bytes after the line, the line) from byte `offset` of the decompressed file."""
    with open_binary(path) as handle:
        if offset:
            skip_bytes(handle, offset)
        for line in handle:
            offset += len(line)
            yield offset, line


def _paragraphs(path: Path, start: dict):
    buffer = start["carry"]
    offset = start["offset"]
    for offset, line in _lines(path, start["offset"]):
        buffer += _newlines(line.decode("utf-8"))
        if "\n\n" in buffer:
            *done, buffer = buffer.split("\n\n")
            for i, text in enumerate(done):
                if text:
                    yield text, offset, 0, "\n\n".join(done[i + 1:] + [buffer])
    if buffer:
        yield buffer, offset, 0, ""


def _json_lines(path: Path, start: dict, field_name: str):
    for offset, line in _lines(path, start["offset"]):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError as exc:
            raise UserError(f"{field_name}: '{path}' has a line that is not JSON ({exc}); fix that line") from None
        yield (record if isinstance(record, dict) else {}), offset, 0, ""


def _csv_rows(path: Path, start: dict):
    header_lines = _lines(path, 0)
    consumed = [0]

    def text_lines(lines):
        for offset, line in lines:
            consumed[0] = offset
            yield line.decode("utf-8")

    header = next(csv.reader(text_lines(header_lines)), [])
    header_lines.close()
    for row in csv.reader(text_lines(_lines(path, max(start["offset"], consumed[0])))):
        yield dict(zip(header, row)), consumed[0], 0, ""


def _parquet_rows(path: Path, columns: list[str], start: dict):
    import pyarrow.parquet as pq

    parquet = pq.ParquetFile(path)
    present = [c for c in columns if c in parquet.schema_arrow.names]
    for group in range(start["offset"], parquet.num_row_groups):
        values = parquet.read_row_group(group, columns=present).to_pylist()
        first = start["row"] if group == start["offset"] else 0
        for row in range(first, len(values)):
            done = row + 1 == len(values)
            yield values[row], group + 1 if done else group, 0 if done else row + 1, ""


def _sql_rows(source: DocumentSource, start: dict):
    """Rows from a server-side cursor, starting OFFSET rows in (the database skips them)."""
    from sqlalchemy import select, text

    sql_source = source.sql
    check_source(sql_source, source.field_name)
    engine = open_engine(sql_source.uri, f"{source.field_name}.uri")
    try:
        with database_errors(sql_source.uri, source.field_name):
            query = select(text("*")).select_from(text(f"({select_sql(sql_source, engine, source.field_name)}) "
                                                       "AS hftoolkit_stream"))
            if start["offset"]:
                query = query.offset(start["offset"])
            with engine.connect().execution_options(stream_results=True, max_row_buffer=ROWS_PER_BATCH) as conn:
                offset = start["offset"]
                for row in conn.execute(query).mappings():
                    offset += 1
                    yield dict(row), offset, 0, ""
    finally:
        engine.dispose()
