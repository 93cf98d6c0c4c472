"""`data.streaming: true`: the training split as a stream of documents (text) or rows (qa/chat), validation
loaded as usual.

Validation stays map-style (it is small and evaluated whole): `data.validation`, or else the first
`data.validation_documents` documents of the stream, which training then skips. The corpus is fingerprinted
by its files' names, sizes and modification times (or the database and query), not by reading it all.
"""

from __future__ import annotations

import hashlib
import os

from hftoolkit.data.sources import describe, expand_files, load_split, require_columns
from hftoolkit.data.splits import LoadedData, check_messages, decode_messages, drop_empty_rows, required_columns
from hftoolkit.data.stream_documents import DocumentSource
from hftoolkit.db.uri import redact
from hftoolkit.errors import UserError
from hftoolkit.recipe.schema import DataSection


def stream_source(data: DataSection) -> DocumentSource:
    columns = tuple(column for _, column in required_columns(data)) if data.format != "text" else ()
    if not isinstance(data.train, str):
        return DocumentSource(sql=data.train, text_column=data.text_column, field_name="data.train", columns=columns)
    files = expand_files(data.train, "data.train")
    if files is None:
        raise UserError(f"data.streaming: '{data.train}' is not a local file; streaming reads local files or a "
                        "database table (download the dataset, or set data.streaming: false)")
    return DocumentSource(files=files, text_column=data.text_column, text_documents=data.text_documents,
                          field_name="data.train", columns=columns)


def load_streamed(data: DataSection) -> LoadedData:
    """LoadedData whose `train` is a DocumentSource (nothing read yet) and whose validation is a Dataset."""
    from datasets import Dataset

    source = stream_source(data)
    columns = required_columns(data)
    if data.validation:
        validation = load_split(data.validation, "data.validation", data.text_documents)
        require_columns(validation.column_names, columns, data.validation)
        validation, _ = drop_empty_rows(decode_messages(validation, data), columns, "data.validation",
                                        data.validation)
        check_messages(validation, data, "data.validation", data.validation)
        hashes = [stream_fingerprint(data.train, source), stream_fingerprint(data.validation, None)]
    else:
        head = []
        for text in source.documents(skip=0):
            head.append(text)
            if len(head) == data.validation_documents:
                break
        if len(head) < data.validation_documents:
            raise UserError(f"data.validation_documents: {data.validation_documents}, but '{describe(data.train)}' "
                            f"has only {len(head)} documents; lower it or set data.validation")
        source.skip = len(head)
        validation = Dataset.from_list(head) if source.columns else Dataset.from_dict({data.text_column: head})
        validation = decode_messages(validation, data)
        check_messages(validation, data, "data.train", data.train)
        hashes = [stream_fingerprint(data.train, source), f"head{len(head)}"]
    return LoadedData(source, validation, "-".join(hashes))


def stream_fingerprint(spec, source: DocumentSource | None) -> str:
    """Names, sizes and modification times of the files (or the masked database URI and the query)."""
    digest = hashlib.sha256(b"stream")
    if not isinstance(spec, str):
        digest.update(f"sql:{redact(spec.uri)}:{spec.table}:{spec.query}".encode())
        return digest.hexdigest()
    for path in (source.files if source else expand_files(spec, "data.validation") or []):
        stat = os.stat(path)
        digest.update(f"{os.path.basename(path)}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    return digest.hexdigest()
