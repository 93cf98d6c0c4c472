"""Which index a checkpoint was trained to read (its `retrieval.json`), and opening it for generation.

`context="auto"` (the default everywhere) uses the recorded index when it still
exists; a path uses that index; "off" or None uses none.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from hftoolkit import defaults
from hftoolkit.checkpoint.portable import portable_path
from hftoolkit.errors import UserError
from hftoolkit.retrieval.index import Retriever

RECORD_FILE = "retrieval.json"


@dataclass
class ContextSource:
    retriever: object  # retrieval.index.Retriever
    top_k: int
    passage_tokens: int
    sentences: int = 0  # > 0: only the best this many sentences of the top_k chunks


def recorded_index(checkpoint: str) -> dict | None:
    record = Path(checkpoint) / RECORD_FILE
    if not record.is_file():
        return None
    try:
        return json.loads(record.read_text())
    except ValueError:
        return None


def open_context(checkpoint: str, context: str | None, top_k: int | None, passage_tokens: int | None,
                 log=print, sentences: int | None = None) -> ContextSource | None:
    """The retriever and budget to answer with, or None for plain generation."""
    if context in (None, "off", "none"):
        return None
    record = recorded_index(checkpoint) or {}
    if context == "auto":
        if not record.get("index"):
            return None
        recorded = Path(checkpoint) / record["index"]  # relative to the checkpoint (an absolute one stays as is)
        if not recorded.is_dir():
            log(f"note: '{checkpoint}' was trained with the index {record['index']}, which is gone; answering "
                "without retrieval (pass --context INDEX to name one)")
            return None
        context = str(recorded)
    if top_k is not None and top_k < 1:
        raise UserError(f"--top-k: {top_k} must be at least 1")
    if passage_tokens is not None and passage_tokens < 16:
        raise UserError(f"--context-tokens: {passage_tokens} must be at least 16")
    if sentences is not None and sentences < 0:
        raise UserError(f"--sentences: {sentences} must be 0 (whole passages) or more")
    # a checkpoint trained with retrieval reads as it was trained (an older record without `sentences` trained
    # on whole passages); one trained without gets the settings measured best for such models (defaults.py)
    recorded_sentences = int(record.get("sentences") or 0) if record else defaults.CONTEXT_SENTENCES
    return ContextSource(Retriever(context, log=log), top_k or record.get("top_k") or defaults.CONTEXT_TOP_K,
                         passage_tokens or record.get("passage_tokens") or defaults.CONTEXT_TOKENS,
                         sentences if sentences is not None else recorded_sentences)


def inherited_index_record(base: str, log=print) -> dict | None:
    """The reading a checkpoint trained from `base` keeps when its recipe retrieves nothing itself (preference
    rows carry their passages already): `base`'s recorded index and budget, while that index exists."""
    record = recorded_index(base)
    if not record or not record.get("index") or not (Path(base) / record["index"]).is_dir():
        return None
    log(f"retrieval: as '{base}' was trained to read ({record['index']}, top_k {record.get('top_k')})")
    return {"retriever": Retriever(str(Path(base) / record["index"]), log=log), "top_k": record.get("top_k"),
            "passage_tokens": record.get("passage_tokens"), "sentences": int(record.get("sentences") or 0)}


def record_index(folder: Path, retriever, top_k: int, passage_tokens: int, sentences: int = 0,
                 checkpoint: Path | None = None) -> None:
    """Write retrieval.json into a checkpoint folder being saved (`folder`, staged for `checkpoint`): the index
    path relative to the checkpoint, so the record holds no local path and survives moving both together."""
    where = Path(checkpoint or folder)
    embedder = retriever.store.meta().get("embedder")
    (folder / RECORD_FILE).write_text(json.dumps({
        "index": portable_path(str(Path(retriever.path).resolve()), where), "fingerprint": retriever.fingerprint,
        "top_k": top_k, "passage_tokens": passage_tokens, "sentences": sentences,
        "embedder": portable_path(embedder, where) if isinstance(embedder, str) else embedder}, indent=2))
