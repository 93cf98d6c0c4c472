"""The on-disk corpus index: chunks in SQLite, their vectors searched with usearch. No server.

    INDEX/index.sqlite      meta (embedder, chunking), files (path, sha256), chunks
                            (id, file, start, end, text, vector as float32 bytes)
    INDEX/vectors-N.usearch the search structure for generation N

SQLite is the source of truth and is changed in one transaction per build; the
usearch file is derived from it, written under a new generation number and
rebuilt from SQLite whenever it is missing, so an interrupted build never
leaves the two out of step. Nothing is pickled.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from hftoolkit.errors import UserError

DB_NAME = "index.sqlite"
SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS files (path TEXT PRIMARY KEY, sha256 TEXT NOT NULL, chunks INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS chunks (id INTEGER PRIMARY KEY, file TEXT NOT NULL, start INTEGER NOT NULL,
                                   end INTEGER NOT NULL, text TEXT NOT NULL, vector BLOB NOT NULL);
CREATE INDEX IF NOT EXISTS chunks_by_file ON chunks (file);
"""


@dataclass
class Hit:
    chunk_id: int
    file: str
    start: int
    end: int
    text: str
    score: float  # cosine similarity to the query

    def source(self) -> dict:
        return {"chunk_id": self.chunk_id, "file": self.file, "start": self.start, "end": self.end,
                "score": round(self.score, 4)}


def is_index(folder: str | Path) -> bool:
    return (Path(folder) / DB_NAME).is_file()


class VectorStore:
    def __init__(self, folder: str | Path, create: bool = False):
        self.folder = Path(folder)
        if not create and not is_index(self.folder):
            raise UserError(f"'{folder}' is not a corpus index (no {DB_NAME}); build one with "
                            "`hftoolkit index build CORPUS --out INDEX`")
        self.folder.mkdir(parents=True, exist_ok=True)
        try:
            # opened where the index is loaded, searched by the server's inference thread: one user at a time
            self.db = sqlite3.connect(self.folder / DB_NAME, check_same_thread=False)
            self.db.executescript(SCHEMA)
        except sqlite3.DatabaseError as exc:
            raise UserError(f"'{folder}/{DB_NAME}' is not a readable index ({exc}); rebuild it into a new "
                            "folder with `hftoolkit index build`") from None
        self._search_index = None

    # -- metadata -------------------------------------------------------------------------------
    def meta(self) -> dict:
        return {k: json.loads(v) for k, v in self.db.execute("SELECT key, value FROM meta")}

    def file_hashes(self) -> dict[str, str]:
        return dict(self.db.execute("SELECT path, sha256 FROM files"))

    def fingerprint(self) -> str:
        """Changes whenever any chunk, vector or setting changes: used in cache keys and checkpoints."""
        digest = hashlib.sha256(json.dumps(self.meta(), sort_keys=True).encode())
        for path, sha in sorted(self.file_hashes().items()):
            digest.update(f"{path}:{sha}".encode())
        return digest.hexdigest()[:24]

    def count(self) -> int:
        return self.db.execute("SELECT COUNT(*) FROM chunks").fetchone()[0]

    # -- writing (one transaction per build) -----------------------------------------------------
    def write(self, meta: dict, replaced: dict[str, tuple[str, list[tuple[int, int, str]], object]],
              removed: list[str]) -> None:
        """Set meta, replace the chunks of `replaced` files ({path: (sha, [(start, end, text)], vectors)})
        and drop `removed` files, atomically; then write a new search structure."""
        import numpy as np

        with self.db:
            for key, value in meta.items():
                self.db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, json.dumps(value)))
            for path in [*removed, *replaced]:
                self.db.execute("DELETE FROM chunks WHERE file = ?", (path,))
                self.db.execute("DELETE FROM files WHERE path = ?", (path,))
            for path, (sha, chunks, vectors) in replaced.items():
                vectors = np.asarray(vectors, dtype="float32")
                self.db.executemany("INSERT INTO chunks (file, start, end, text, vector) VALUES (?, ?, ?, ?, ?)",
                                    [(path, s, e, t, v.tobytes()) for (s, e, t), v in zip(chunks, vectors)])
                self.db.execute("INSERT INTO files VALUES (?, ?, ?)", (path, sha, len(chunks)))
            generation = int(self.meta().get("generation", 0)) + 1
            self.db.execute("INSERT OR REPLACE INTO meta VALUES ('generation', ?)", (json.dumps(generation),))
        self._search_index = None
        self._load_search_index()
        for old in self.folder.glob("vectors-*.usearch"):
            if old.name != self._vectors_file().name:
                old.unlink()

    # -- reading --------------------------------------------------------------------------------
    def search(self, vector, top_k: int) -> list[Hit]:
        if self.count() == 0 or top_k <= 0:
            return []
        index = self._load_search_index()
        found = index.search(vector, min(top_k, len(index)), exact=True)
        hits = []
        for key, distance in zip(found.keys.tolist(), found.distances.tolist()):
            row = self.db.execute("SELECT id, file, start, end, text FROM chunks WHERE id = ?", (key,)).fetchone()
            if row:
                hits.append(Hit(*row, score=1.0 - float(distance)))
        return hits

    def chunks(self) -> list[Hit]:
        """Every chunk, in insertion order (score 0: not a search result)."""
        rows = self.db.execute("SELECT id, file, start, end, text FROM chunks ORDER BY id").fetchall()
        return [Hit(*row, score=0.0) for row in rows]

    def _vectors_file(self) -> Path:
        return self.folder / f"vectors-{int(self.meta().get('generation', 0))}.usearch"

    def _load_search_index(self):
        """The usearch index of this generation, rebuilt from SQLite when its file is missing."""
        if self._search_index is not None:
            return self._search_index
        import numpy as np
        from usearch.index import Index

        meta, path = self.meta(), self._vectors_file()
        index = Index(ndim=int(meta["dimensions"]), metric="ip", dtype="f32")  # unit vectors: ip = cosine
        try:
            if path.is_file():
                index.load(str(path))
        except Exception:  # an unreadable search file is only a cache of the vectors in SQLite
            index = Index(ndim=int(meta["dimensions"]), metric="ip", dtype="f32")
        if len(index) != self.count():
            index = Index(ndim=int(meta["dimensions"]), metric="ip", dtype="f32")
            rows = self.db.execute("SELECT id, vector FROM chunks").fetchall()
            if rows:
                index.add(np.array([r[0] for r in rows], dtype="uint64"),
                          np.stack([np.frombuffer(r[1], dtype="float32") for r in rows]))
            staging = path.with_suffix(".tmp")
            index.save(str(staging))
            staging.replace(path)
        self._search_index = index
        return index
