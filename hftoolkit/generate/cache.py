"""Response cache for generation: embedded (diskcache, default), in-memory, or Redis (shared).

Key = content hash of the model (weights + tokenizer + chat template), the exact
prompt after templating, and every generation parameter. Only reproducible
requests are cached (greedy, or sampled with an explicit seed). A failing cache
never fails generation: it warns once and steps aside.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import os
import sys
from pathlib import Path

from hftoolkit.circuit import CircuitBreaker
from hftoolkit.errors import UserError
from hftoolkit.file_hash import sha256_file
from hftoolkit.file_lock import file_lock
from hftoolkit.paths import cache_dir
from hftoolkit.redact import redact, remember_uri, with_encoded_password

MODEL_FILES = ("*.safetensors", "*.bin", "config.json", "tokenizer.json", "tokenizer_config.json",
               "chat_template.jinja", "special_tokens_map.json", "generation_config.json", "vocab.txt", "*.model")
DEFAULT_TTL = 7 * 24 * 3600


def model_fingerprint(path: str) -> str:
    """sha256 over the checkpoint's weight, config and tokenizer files.

    Hashing half a gigabyte takes a second, so each file's hash is remembered by
    (size, mtime, inode): a retrained checkpoint rewrites its files and is re-hashed.
    """
    memo_file = cache_dir("fingerprints") / "files.json"
    digest = hashlib.sha256()
    files = sorted({p for pattern in MODEL_FILES for p in Path(path).glob(pattern) if p.is_file()})
    with file_lock(memo_file.with_suffix(".lock")):  # concurrent runs must not drop each other's entries
        memo = _read_memo(memo_file)
        known = len(memo)
        for file in files:
            stamp = _stamp(file)
            if stamp not in memo:
                memo[stamp] = sha256_file(file)
            digest.update(file.name.encode() + memo[stamp].encode())
        if len(memo) != known:  # a file was hashed anew: write, dropping entries for files changed or gone
            memo = {stamp: sha for stamp, sha in memo.items() if _still_current(stamp)}
            tmp = memo_file.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(json.dumps(memo))
            tmp.replace(memo_file)
    return digest.hexdigest()


def _stamp(file: Path) -> str:
    info = file.stat()
    return f"{file.resolve()}:{info.st_size}:{info.st_mtime_ns}:{info.st_ino}"


def _still_current(stamp: str) -> bool:
    path = Path(stamp.rsplit(":", 3)[0])
    try:
        return _stamp(path) == stamp
    except OSError:
        return False


def _read_memo(memo_file: Path) -> dict:
    try:
        return json.loads(memo_file.read_text())
    except (OSError, ValueError):
        return {}


def request_key(model_hash: str, rendered_prompt: str, settings: dict) -> str:
    payload = json.dumps({"model": model_hash, "prompt": rendered_prompt, "settings": settings}, sort_keys=True)
    return "hftoolkit:gen:" + hashlib.sha256(payload.encode()).hexdigest()


class MemoryBackend:
    name = "memory"

    def __init__(self):
        self.store: dict[str, dict] = {}

    def get(self, key):
        return self.store.get(key)

    def set(self, key, value):
        self.store[key] = value

    def stats(self) -> dict:
        return {"backend": self.name, "entries": len(self.store)}

    def clear(self) -> int:
        count = len(self.store)
        self.store.clear()
        return count


class DiskBackend:
    """Embedded persistent cache (diskcache: SQLite + files, safe across processes)."""

    name = "disk"

    def __init__(self, folder: str | None = None, ttl: int | None = None):
        import diskcache

        self.folder = folder or str(cache_dir("responses"))
        if Path(self.folder).exists() and not Path(self.folder).is_dir():
            raise UserError(f"--cache: '{self.folder}' is a file; give a folder for the disk cache")
        self.cache = diskcache.Cache(self.folder, disk=json_only_disk())
        self.ttl = ttl

    def get(self, key):
        try:
            return self.cache.get(key)
        except UnsafeEntry:  # a pickled value someone planted: never unpickled, treated as a miss
            return None

    def set(self, key, value):
        self.cache.set(key, value, expire=self.ttl)

    def stats(self) -> dict:
        return {"backend": self.name, "location": self.folder, "entries": len(self.cache),
                "bytes": self.cache.volume()}

    def clear(self) -> int:
        return self.cache.clear()


class UnsafeEntry(Exception):
    """A cache entry stored as a pickle: hftoolkit never writes one and never reads one."""


def json_only_disk():
    """diskcache's JSONDisk (values stored as compressed JSON), refusing entries stored in pickle mode: anyone
    who can write to a shared cache folder could otherwise run code in every process that reads it."""
    import diskcache
    from diskcache.core import MODE_PICKLE

    class JSONOnlyDisk(diskcache.JSONDisk):
        def fetch(self, mode, filename, value, read):
            if mode == MODE_PICKLE:
                raise UnsafeEntry("pickled cache entry refused")
            return super().fetch(mode, filename, value, read)

        def get(self, key, raw):
            if not raw:
                raise UnsafeEntry("pickled cache key refused")
            return super().get(key, raw)

    return JSONOnlyDisk


class RedisBackend:
    """Shared cache in Redis; entries expire after `ttl` seconds."""

    name = "redis"

    def __init__(self, url: str, ttl: int = DEFAULT_TTL):
        import redis

        remember_uri(url)
        self.url, self.ttl = url, ttl
        self.client = redis.Redis.from_url(with_encoded_password(url), socket_connect_timeout=1, socket_timeout=2)

    def get(self, key):
        raw = self.client.get(key)
        return json.loads(raw) if raw is not None else None

    def set(self, key, value):
        self.client.set(key, json.dumps(value), ex=self.ttl)

    def stats(self) -> dict:
        keys = sum(1 for _ in self.client.scan_iter("hftoolkit:gen:*", count=1000))
        return {"backend": self.name, "location": redact(self.url), "entries": keys, "ttl_seconds": self.ttl}

    def clear(self) -> int:
        keys = list(self.client.scan_iter("hftoolkit:gen:*", count=1000))
        return self.client.delete(*keys) if keys else 0


def open_backend(spec: str | None, ttl: int | None = None):
    """'off'/None → no cache; 'disk' (default) or a folder path; 'memory'; 'redis://host:port/db'."""
    if spec in (None, "off", "none"):
        return None
    if spec == "memory":
        return MemoryBackend()
    if spec.startswith(("redis://", "rediss://", "unix://")):
        try:
            return RedisBackend(spec, ttl or DEFAULT_TTL)
        except ValueError as exc:  # bad port, bad db number: redis-py's URL parser
            raise UserError(f"--cache: '{redact(spec)}' is not a valid Redis URL ({redact(exc)}); use "
                            "redis://[:password@]host:port/db") from None
    if spec == "disk":
        return DiskBackend(ttl=ttl)
    if spec.startswith(("http://", "https://")) or "://" in spec:
        raise UserError(f"--cache: '{redact(spec)}' is not a cache; use off, memory, disk, a folder, or "
                        "redis://host:port/db")
    if os.sep not in spec and not Path(spec).exists():  # `memroy` must not quietly become a folder
        close = difflib.get_close_matches(spec, ["off", "memory", "disk"], n=1)
        hint = f"did you mean '{close[0]}'? " if close else ""
        raise UserError(f"--cache: '{spec}' is not off, memory, disk or a Redis URL; {hint}for a new cache "
                        f"folder write a path, e.g. ./{spec}")
    return DiskBackend(spec, ttl=ttl)


class ResponseCache:
    """A backend wrapped so that its failures are never fatal: the first failure warns, the cache is skipped
    for `retry_seconds`, then tried again; recovery is announced, and a new outage warns again."""

    def __init__(self, backend, warn=lambda msg: print(msg, file=sys.stderr), retry_seconds: float = 10.0):
        self.backend, self.warn, self.retry_seconds = backend, warn, retry_seconds
        name = backend.name if backend is not None else "off"
        self.breaker = CircuitBreaker(
            warn, lambda exc: f"warning: response cache unavailable ({name}: {type(exc).__name__}: "
                              f"{redact(exc)[:120]}); generating without it, retrying every {retry_seconds:g} s",
            f"response cache {name} is available again", retry_seconds)

    def _guard(self, action, *args):
        """Any backend failure (Redis down, disk full) must not stop generation."""
        return None if self.backend is None else self.breaker.call(action, *args)

    def get(self, key: str) -> dict | None:
        return self._guard(lambda k: self.backend.get(k), key)

    def set(self, key: str, value: dict) -> None:
        self._guard(lambda k, v: self.backend.set(k, v), key, value)
