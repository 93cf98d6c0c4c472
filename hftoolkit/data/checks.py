"""The recipe's data files, tables and hub datasets hold the columns its format needs: checked by peeking
(a few rows, no download of the whole set) before training loads anything."""

from __future__ import annotations

from hftoolkit.data.sources import peek_columns, require_columns
from hftoolkit.data.splits import required_columns
from hftoolkit.data.stream_documents import check_streamable
from hftoolkit.data.stream_splits import stream_source
from hftoolkit.recipe.schema import Recipe


def check_data(recipe: Recipe) -> None:
    data = recipe.data
    for field in ("train", "validation"):
        spec = getattr(data, field)
        if spec:
            columns = peek_columns(spec, f"data.{field}")
            if columns is not None:
                require_columns(columns, required_columns(data, recipe.model.task), spec)
    if data.streaming:
        check_streamable(stream_source(data))
    if data.extra_text:
        columns = peek_columns(data.extra_text, "data.extra_text")
        if columns is not None:
            require_columns(columns, [("data.text_column", data.text_column)], data.extra_text)
