"""Data files that may be compressed: `notes.jsonl.gz` is a JSON Lines file, read through gzip.

The kind of a file is the suffix before `.gz` or `.zst`; opening one gives the decompressed bytes.
"""

from __future__ import annotations

from pathlib import Path

BUILDERS = {".txt": "text", ".csv": "csv", ".json": "json", ".jsonl": "json", ".parquet": "parquet"}
COMPRESSIONS = (".gz", ".zst")


def data_suffix(path: Path) -> str:
    """`.jsonl` for both `a.jsonl` and `a.jsonl.gz`; '' for a compressed file of no known kind."""
    path = Path(path)
    if path.suffix in COMPRESSIONS:
        inner = Path(path.stem).suffix
        return inner if inner in BUILDERS and inner != ".parquet" else ""  # parquet compresses inside
    return path.suffix


def is_data_file(path: Path) -> bool:
    return data_suffix(path) in BUILDERS


def open_binary(path: Path):
    """The file's decompressed bytes as a readable binary stream."""
    path = Path(path)
    if path.suffix == ".gz":
        import gzip

        return gzip.open(path, "rb")
    if path.suffix == ".zst":
        import io

        import zstandard

        return io.BufferedReader(zstandard.ZstdDecompressor().stream_reader(open(path, "rb"), closefd=True))
    return open(path, "rb")


def skip_bytes(handle, count: int) -> None:
    """Move `count` bytes into a stream: a seek, or for a stream that cannot seek (zstd), reading past them."""
    if handle.seekable():
        handle.seek(count)
        return
    while count > 0:
        piece = handle.read(min(count, 1 << 20))
        if not piece:
            return
        count -= len(piece)


def open_text(path: Path):
    """The file's decompressed text, UTF-8, newlines as written (for the csv module)."""
    import io

    return io.TextIOWrapper(open_binary(path), encoding="utf-8", newline="")
