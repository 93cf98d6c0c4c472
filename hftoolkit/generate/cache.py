"""Response cache for generation: embedded (diskcache, default), in-memory, or Redis (shared).

Key = content hash of the model (weights + tokenizer + chat template), the exact
prompt after templating, and every generation parameter. Only reproducible
requests are cached (greedy, or sampled with an explicit seed). A failing cache
never fails generation: it warns once and steps aside.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path

from hftoolkit.errors import UserError
from hftoolkit.file_hash import sha256_file
from hftoolkit.paths import cache_dir

MODEL_FILES = ("*.safetensors", "*.bin", "config.json", "tokenizer.json", "tokenizer_config.json",
               "chat_template.jinja", "special_tokens_map.json", "generation_config.json", "vocab.txt", "*.model")
DEFAULT_TTL = 7 * 24 * 3600


def model_fingerprint(path: str) -> str:
    """sha256 over the checkpoint's weight, config and tokenizer files.

    Hashing half a gigabyte takes a second, so each file's hash is remembered by
    (size, mtime, inode): a retrained checkpoint rewrites its files and is re-hashed.
    """
    memo_file = cache_dir("fingerprints") / "files.json"
    try:
        memo = json.loads(memo_file.read_text())
    except (OSError, ValueError):
        memo = {}
    digest, known = hashlib.sha256(), len(memo)
    files = sorted({p for pattern in MODEL_FILES for p in Path(path).glob(pattern) if p.is_file()})
    for file in files:
        info = file.stat()
        stamp = f"{file.resolve()}:{info.st_size}:{info.st_mtime_ns}:{info.st_ino}"
        if stamp not in memo:
            memo[stamp] = sha256_file(file)
        digest.update(file.name.encode() + memo[stamp].encode())
    if len(memo) != known:  # write only when a file was hashed anew
        tmp = memo_file.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(memo))
        tmp.replace(memo_file)
    return digest.hexdigest()


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
        self.cache = diskcache.Cache(self.folder)
        self.ttl = ttl

    def get(self, key):
        return self.cache.get(key)

    def set(self, key, value):
        self.cache.set(key, value, expire=self.ttl)

    def stats(self) -> dict:
        return {"backend": self.name, "location": self.folder, "entries": len(self.cache),
                "bytes": self.cache.volume()}

    def clear(self) -> int:
        return self.cache.clear()


class RedisBackend:
    """Shared cache in Redis; entries expire after `ttl` seconds."""

    name = "redis"

    def __init__(self, url: str, ttl: int = DEFAULT_TTL):
        import redis

        self.url, self.ttl = url, ttl
        self.client = redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=2)

    def get(self, key):
        raw = self.client.get(key)
        return json.loads(raw) if raw is not None else None

    def set(self, key, value):
        self.client.set(key, json.dumps(value), ex=self.ttl)

    def stats(self) -> dict:
        keys = sum(1 for _ in self.client.scan_iter("hftoolkit:gen:*", count=1000))
        return {"backend": self.name, "location": self.url, "entries": keys, "ttl_seconds": self.ttl}

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
        return RedisBackend(spec, ttl or DEFAULT_TTL)
    if spec == "disk":
        return DiskBackend(ttl=ttl)
    if spec.startswith(("http://", "https://")) or "://" in spec:
        raise UserError(f"--cache: '{spec}' is not a cache; use off, memory, disk, a folder, or redis://host:port/db")
    return DiskBackend(spec, ttl=ttl)


class ResponseCache:
    """A backend wrapped so that its failures warn once and are never fatal."""

    def __init__(self, backend, warn=lambda msg: print(msg, file=sys.stderr)):
        self.backend, self.warn, self.broken = backend, warn, False

    def _guard(self, action, *args):
        if self.backend is None or self.broken:
            return None
        try:
            return action(*args)
        except Exception as exc:  # any backend failure (Redis down, disk full) must not stop generation
            self.broken = True
            self.warn(f"warning: response cache unavailable ({self.backend.name}: {type(exc).__name__}: "
                      f"{str(exc)[:120]}); generating without it")
            return None

    def get(self, key: str) -> dict | None:
        return self._guard(lambda k: self.backend.get(k), key)

    def set(self, key: str, value: dict) -> None:
        self._guard(lambda k, v: self.backend.set(k, v), key, value)
