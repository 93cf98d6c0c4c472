"""Split a document into overlapping, sentence-aligned chunks with their character offsets.

Chunks hold whole sentences up to `chunk_tokens` tokens of the embedder's
tokenizer; the next chunk repeats the last sentences of the previous one (up to
`overlap_tokens`) so a fact that straddles a boundary is whole in one chunk. A
paragraph break ends a chunk that is already half full, so chunks follow the
document's own topic breaks where they can.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable

_SENTENCE = re.compile(r"\S.*?(?:[.!?](?=\s)|$)", re.S)
_PARAGRAPH = re.compile(r"\n\s*\n")


@dataclass(frozen=True)
class Span:
    start: int  # character offset in the document
    end: int
    tokens: int
    paragraph: int


def sentence_spans(text: str, count_tokens: Callable[[list[str]], list[int]]) -> list[Span]:
    """Every sentence of `text` with its offsets, token count and paragraph number."""
    raw: list[tuple[int, int, int]] = []
    start = 0
    for number, match in enumerate([*_PARAGRAPH.finditer(text), None]):
        end = match.start() if match else len(text)
        for sentence in _SENTENCE.finditer(text, start, end):
            raw.append((sentence.start(), sentence.end(), number))
        start = match.end() if match else len(text)
    counts = count_tokens([text[s:e] for s, e, _ in raw]) if raw else []
    return [Span(s, e, n, p) for (s, e, p), n in zip(raw, counts)]


def chunk_spans(sentences: list[Span], chunk_tokens: int, overlap_tokens: int) -> list[tuple[int, int]]:
    """(start, end) character offsets of each chunk, in document order."""
    chunks: list[tuple[int, int]] = []
    current: list[Span] = []
    for sentence in sentences:
        size = sum(s.tokens for s in current)
        new_paragraph = bool(current) and sentence.paragraph != current[-1].paragraph
        if current and (size + sentence.tokens > chunk_tokens or (new_paragraph and size >= chunk_tokens // 2)):
            chunks.append((current[0].start, current[-1].end))
            current = [] if new_paragraph else _overlap(current, overlap_tokens)
        current.append(sentence)
    if current:
        chunks.append((current[0].start, current[-1].end))
    return chunks


def _overlap(sentences: list[Span], overlap_tokens: int) -> list[Span]:
    """The trailing sentences of a chunk that fit in the overlap budget (never the whole chunk)."""
    kept: list[Span] = []
    total = 0
    for sentence in reversed(sentences[1:]):
        if total + sentence.tokens > overlap_tokens:
            break
        kept.insert(0, sentence)
        total += sentence.tokens
    return kept
