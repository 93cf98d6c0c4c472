"""Rows per datasets batch, bounded by characters or tokens rather than rows.

datasets' default of 1000 rows per batch held the whole corpus when documents are whole files
(`data.text_documents: file`): a 100 MB corpus of 1 MB files went through loading, tokenizing and packing
as one batch, and memory grew with the corpus. Lengths come from Arrow or the files' sizes, without
reading rows into Python.
"""

from __future__ import annotations

BATCH_TOKENS = 1 << 18  # per batch: its Python lists stay tens of MB, whatever the documents' size
BATCH_CHARACTERS = 4 * BATCH_TOKENS  # text per batch (a few characters per token)


def rows_for(mean_length: float, budget: int, most: int = 1000) -> int:
    """Rows of `mean_length` that fit `budget`, at least 1 and at most `most`."""
    return max(1, min(most, int(budget // max(1.0, mean_length))))


def rows_per_batch(dataset, column: str, budget: int, most: int = 1000) -> int:
    """Rows per `map` batch so that one batch holds about `budget` characters (text) or tokens (id lists)
    of `column`; `most` for any other column."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if len(dataset) == 0 or column not in dataset.column_names:
        return most
    values = dataset.data.column(column)
    if pa.types.is_string(values.type) or pa.types.is_large_string(values.type):
        lengths = pc.utf8_length(values)
    elif pa.types.is_list(values.type) or pa.types.is_large_list(values.type):
        lengths = pc.list_value_length(values)
    else:
        return most
    return rows_for((pc.sum(lengths).as_py() or 0) / max(1, len(values)), budget, most)
