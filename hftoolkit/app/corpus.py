"""The `index build` and `index search` verbs: a corpus index for answering with sources."""

from __future__ import annotations

from hftoolkit import defaults
from hftoolkit.errors import UserError
from hftoolkit.retrieval.index import IndexSettings, Retriever
from hftoolkit.retrieval.index import build_index as build
from hftoolkit.retrieval.store import Hit


def build_index(corpus: str, out: str, embedder: str = defaults.EMBEDDER,
                chunk_tokens: int = defaults.CHUNK_TOKENS,
                overlap_tokens: int = defaults.OVERLAP_TOKENS,
                log=print) -> dict:
    """Chunk and embed `corpus` into the index folder `out` (created, or updated: unchanged files are kept)."""
    settings = IndexSettings(embedder=embedder, chunk_tokens=chunk_tokens, overlap_tokens=overlap_tokens)
    return build(corpus, out, settings, log=log)


def search_index(index: str, question: str, top_k: int = defaults.SEARCH_TOP_K, log=print) -> list[Hit]:
    """The `top_k` chunks closest to `question`, best first."""
    if top_k < 1:
        raise UserError(f"--top-k: {top_k} must be at least 1")
    return Retriever(index, log=log).search(question, top_k)
