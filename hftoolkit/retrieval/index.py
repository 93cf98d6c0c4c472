"""`hftoolkit index build/search`: a corpus of text files -> searchable chunks, rebuilt incrementally.

Each file is keyed by the sha256 of its bytes; a rebuild re-chunks and re-embeds
only files that are new or changed, and drops files that are gone. Changing the
embedder or the chunk sizes changes every key, so everything is re-embedded.
"""

from __future__ import annotations

import glob
import hashlib
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from hftoolkit import defaults
from hftoolkit.errors import UserError
from hftoolkit.paths import resolve_data_path
from hftoolkit.retrieval.chunking import chunk_spans, sentence_spans
from hftoolkit.retrieval.embedder import SentenceEmbedder
from hftoolkit.retrieval.store import Hit, VectorStore, is_index
from hftoolkit.safe_write import write_new_folder

TEXT_SUFFIXES = (".txt", ".md")
DEFAULT_EMBEDDER = defaults.EMBEDDER


@dataclass(frozen=True)
class IndexSettings:
    embedder: str = DEFAULT_EMBEDDER
    chunk_tokens: int = defaults.CHUNK_TOKENS
    overlap_tokens: int = defaults.OVERLAP_TOKENS

    def check(self) -> None:
        if self.chunk_tokens < 16:
            raise UserError(f"--chunk-tokens: {self.chunk_tokens} is too small; use 16 or more (128 is typical)")
        if not 0 <= self.overlap_tokens < self.chunk_tokens:
            raise UserError(f"--overlap-tokens: {self.overlap_tokens} must be >= 0 and below --chunk-tokens "
                            f"({self.chunk_tokens})")


def corpus_files(spec: str, field: str = "corpus") -> tuple[Path, list[Path]]:
    """(root, text files) for a folder, a file or a glob; paths in the index are relative to root."""
    path = Path(resolve_data_path(spec))
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.suffix in TEXT_SUFFIXES and p.is_file())
        root = path
    elif path.is_file():
        if path.suffix not in TEXT_SUFFIXES:
            raise UserError(f"{field}: '{spec}' is not a {'/'.join(TEXT_SUFFIXES)} file; index plain text")
        files, root = [path], path.parent
    elif glob.has_magic(str(path)):
        files = sorted(Path(p) for p in glob.glob(str(path), recursive=True) if Path(p).suffix in TEXT_SUFFIXES)
        root = Path(os.path.commonpath([str(f.parent) for f in files])) if files else path.parent
    else:
        raise UserError(f"{field}: '{spec}' does not exist; give a folder, file or glob of text files")
    if not files:
        raise UserError(f"{field}: '{spec}' holds no {'/'.join(TEXT_SUFFIXES)} files")
    return root, files


def build_index(corpus: str, out: str, settings: IndexSettings = IndexSettings(), log=print) -> dict:
    """Create or update the index at `out`; returns counts of what was embedded, kept and removed."""
    settings.check()
    root, files = corpus_files(corpus)
    target = Path(out)
    if target.exists() and not target.is_dir():
        raise UserError(f"--out: '{out}' is a file; give a folder for the index")
    if target.is_dir() and any(target.iterdir()) and not is_index(target):
        raise UserError(f"--out: '{out}' is a non-empty folder that is not an index; choose a new folder")
    texts = {}
    for file in files:
        try:
            texts[file.relative_to(root).as_posix()] = file.read_bytes().decode("utf-8")
        except OSError as exc:
            raise UserError(f"corpus: cannot read '{file}' ({exc.strerror})") from None
        except UnicodeDecodeError:
            raise UserError(f"corpus: '{file}' is not UTF-8 text; convert it (e.g. iconv -t utf-8)") from None
    if not is_index(target):  # a new index is written aside and renamed into place when complete

        stats = {}
        write_new_folder(target, lambda staging: stats.update(_update(VectorStore(staging, create=True), texts,
                                                                      root, settings, log)))
    else:
        stats = _update(VectorStore(target), texts, root, settings, log)
    log(f"index {out}: {stats['chunks']} chunks from {stats['files']} files ({stats['embedded_files']} embedded, "
        f"{stats['unchanged_files']} unchanged, {stats['removed_files']} removed)")
    return stats


def _update(store: VectorStore, texts: dict[str, str], root: Path, settings: IndexSettings, log) -> dict:
    """Re-chunk and re-embed new or changed files, drop missing ones; one transaction."""
    settings_key = hashlib.sha256(repr(settings).encode()).hexdigest()[:16]
    keys = {path: hashlib.sha256(text.encode()).hexdigest() + ":" + settings_key for path, text in texts.items()}
    known = store.file_hashes()
    changed = [p for p in texts if known.get(p) != keys[p]]
    removed = [p for p in known if p not in texts]
    stats = {"files": len(texts), "embedded_files": len(changed), "unchanged_files": len(texts) - len(changed),
             "removed_files": len(removed)}
    if not changed and not removed and store.count():
        stats["chunks"] = store.count()
        return stats
    embedder = SentenceEmbedder(settings.embedder, log=log)
    replaced, pieces = {}, []
    for path in changed:
        text = texts[path]
        spans = chunk_spans(sentence_spans(text, embedder.count_tokens), settings.chunk_tokens,
                            settings.overlap_tokens)
        replaced[path] = [(s, e, text[s:e]) for s, e in spans]
        pieces += [t for _, _, t in replaced[path]]
    vectors = embedder.encode(pieces, progress=_progress(len(pieces), log))
    offset, payload = 0, {}
    for path, chunks in replaced.items():
        payload[path] = (keys[path], chunks, vectors[offset:offset + len(chunks)])
        offset += len(chunks)
    meta = {"embedder": settings.embedder, "chunk_tokens": settings.chunk_tokens,
            "overlap_tokens": settings.overlap_tokens, "dimensions": embedder.dimensions,
            "corpus_root": str(root.resolve())}
    store.write(meta, payload, removed)
    stats["chunks"] = store.count()
    return stats


def _progress(total: int, log):
    """A progress line for builds that take a while (over 256 chunks), printed to stderr."""
    if total <= 256:
        return None

    def show(done: int):
        end = "\n" if done >= total else "\r"
        print(f"embedding chunks: {done}/{total}", end=end, file=sys.stderr, flush=True)
    return show


class Retriever:
    """An opened index and its embedder: question in, best chunks out."""

    def __init__(self, index: str, log=print):
        self.path = str(Path(index).resolve())
        self.store = VectorStore(index)
        meta = self.store.meta()
        if not meta.get("embedder"):
            raise UserError(f"index '{index}' is empty or unfinished; run `hftoolkit index build` again")

        self.embedder = SentenceEmbedder(meta["embedder"], log=log)
        self.fingerprint = self.store.fingerprint()
        self._sentence_vectors: dict = {}  # (file, start, end) -> vector; sentences recur across questions

    def search(self, query: str, top_k: int = defaults.SEARCH_TOP_K, sentences: int = 0) -> list[Hit]:
        return self.search_many([query], top_k, sentences)[0]

    def search_many(self, queries: list[str], top_k: int = defaults.SEARCH_TOP_K, sentences: int = 0) -> list[list[Hit]]:
        """The best `top_k` chunks per query; with `sentences`, the best that many sentences of those
        chunks instead (each its own hit, best first)."""
        vectors = self.embedder.encode(queries)
        found = [self.store.search(vector, top_k) for vector in vectors]
        if sentences:
            pieces = [self._sentences(hits) for hits in found]
            self._embed_sentences([p for some in pieces for p in some])  # one pass for all the queries
            found = [self._ranked(vector, some)[:sentences] for vector, some in zip(vectors, pieces)]
        return found

    def rank_sentences(self, query_vector, hits: list[Hit]) -> list[Hit]:
        """Every sentence of `hits` (once, though chunks overlap) as a hit of its own, most similar to the
        query first. A small reader answers better from the few sentences that matter than from whole
        chunks, where it tends to take a number from the wrong sentence."""
        pieces = self._sentences(hits)
        self._embed_sentences(pieces)
        return self._ranked(query_vector, pieces)

    @staticmethod
    def _sentences(hits: list[Hit]) -> list[Hit]:
        from dataclasses import replace

        pieces, seen = [], set()
        for hit in hits:
            for span in sentence_spans(hit.text, lambda texts: [0] * len(texts)):  # sizes are not needed here
                start = hit.start + span.start
                if (hit.file, start) not in seen:
                    seen.add((hit.file, start))
                    pieces.append(replace(hit, start=start, end=hit.start + span.end,
                                          text=hit.text[span.start:span.end]))
        return pieces

    def _embed_sentences(self, pieces: list[Hit]) -> None:
        """Vectors for the sentences not seen before, kept: sentences recur across questions."""
        new = {(p.file, p.start, p.end): p.text for p in pieces}
        new = {key: text for key, text in new.items() if key not in self._sentence_vectors}
        if new:
            self._sentence_vectors.update(zip(new, self.embedder.encode(list(new.values()))))

    def _ranked(self, query_vector, pieces: list[Hit]) -> list[Hit]:
        from dataclasses import replace

        scores = [float(self._sentence_vectors[(p.file, p.start, p.end)] @ query_vector) for p in pieces]
        ranked = sorted(range(len(pieces)), key=lambda i: -scores[i])
        return [replace(pieces[i], score=scores[i]) for i in ranked]
