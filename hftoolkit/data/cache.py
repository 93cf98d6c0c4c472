"""Content-keyed cache of preprocessed datasets.

The key hashes the data files' bytes, the tokenizer (vocabulary, special tokens,
chat template) and every preprocessing field of the recipe, so an identical run
reuses the blocks and any change re-tokenizes.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from pathlib import Path
from typing import Callable

from hftoolkit.data.saved_splits import load_splits, save_splits
from hftoolkit.file_lock import file_lock
from hftoolkit.paths import cache_dir
from hftoolkit.safe_write import replace_cached


def tokenizer_fingerprint(tokenizer) -> str:
    """Hash of everything about a tokenizer that changes the ids it produces."""
    digest = hashlib.sha256()
    backend = getattr(tokenizer, "backend_tokenizer", None)
    digest.update(backend.to_str().encode() if backend is not None else repr(tokenizer.get_vocab()).encode())
    digest.update(json.dumps(tokenizer.special_tokens_map, sort_keys=True, default=str).encode())
    digest.update(str(tokenizer.pad_token_id).encode())
    digest.update((tokenizer.chat_template or "").encode() if isinstance(tokenizer.chat_template, str)
                  else json.dumps(tokenizer.chat_template, sort_keys=True).encode())
    return digest.hexdigest()


def cache_key(parts: dict) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:24]


MAX_ENTRIES = 24  # preprocessed datasets kept; the least recently used go first
MAX_AGE_DAYS = 30  # and none unused for longer than this


def cached(parts: dict, build: Callable[[], tuple[object, dict]]) -> tuple[object, dict, bool, Path]:
    """Load the DatasetDict and stats for `parts`, or build, save and return them.

    Returns (datasets, stats, hit, folder). Two runs with the same key take turns
    (a lock per entry): the second finds what the first built. An entry is written
    under a temporary name and renamed, so a killed run never leaves a half-written
    one; old entries are pruned after each save.
    """
    root = cache_dir("preprocessed")
    folder = root / cache_key(parts)
    lock = entry_lock(root, folder.name)
    with file_lock(lock, shared=True):  # readers share; pruning needs the entry to itself
        if (folder / "stats.json").is_file():
            os.utime(folder / "stats.json")  # last use, for pruning
            return load_splits(folder / "data"), json.loads((folder / "stats.json").read_text()), True, folder
    with file_lock(lock):
        if not (folder / "stats.json").is_file():  # another run may have built it while this one waited
            datasets, stats = build()

            def write(staging: Path) -> None:
                save_splits(datasets, staging / "data")
                (staging / "key.json").write_text(json.dumps(parts, indent=2, sort_keys=True, default=str))
                (staging / "stats.json").write_text(json.dumps(stats, indent=2))

            replace_cached(folder, write)
            hit = False
        else:
            hit = True
        loaded = load_splits(folder / "data"), json.loads((folder / "stats.json").read_text())
    prune(root, keep=folder)
    return (*loaded, hit, folder)


def entry_lock(root: Path, name: str) -> Path:
    """The lock file of one entry, kept beside the cache folder so the folder holds only entries."""
    return root.parent / "locks" / f"{root.name}-{name}.lock"


def prune(root: Path, keep: Path) -> list[str]:
    """Remove entries beyond the newest MAX_ENTRIES or unused for MAX_AGE_DAYS (never `keep`, never one
    another run is using), and staging folders of runs killed over a day ago. Returns what was removed."""
    now = time.time()
    entries = sorted((p for p in root.iterdir() if p.is_dir() and (p / "stats.json").is_file()),
                     key=lambda p: (p / "stats.json").stat().st_mtime, reverse=True)
    old = [p for i, p in enumerate(entries)
           if p != keep and (i >= MAX_ENTRIES or now - (p / "stats.json").stat().st_mtime > MAX_AGE_DAYS * 86400)]
    staged = [*root.glob(".*.*"), *root.glob("*.tmp-*")]  # replace_cached staging; the older writer named it so
    old += [p for p in staged if p.is_dir() and now - p.stat().st_mtime > 86400]
    removed = []
    for entry in old:
        with file_lock(entry_lock(root, entry.name.lstrip(".").split(".")[0]), wait=False) as mine:
            if mine:
                shutil.rmtree(entry, ignore_errors=True)
                removed.append(entry.name)
    return removed
