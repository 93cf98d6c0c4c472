"""Content-keyed cache of preprocessed datasets.

The key hashes the data files' bytes, the tokenizer (vocabulary, special tokens,
chat template) and every preprocessing field of the recipe, so an identical run
reuses the blocks and any change re-tokenizes.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Callable

from hftoolkit.paths import cache_dir


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


def cached(parts: dict, build: Callable[[], tuple[object, dict]]) -> tuple[object, dict, bool, Path]:
    """Load the DatasetDict and stats for `parts`, or build, save and return them.

    Returns (datasets, stats, hit, folder). The folder is written under a temporary
    name and renamed, so an interrupted run never leaves a half-written entry.
    """
    from datasets import load_from_disk

    folder = cache_dir("preprocessed") / cache_key(parts)
    stats_file = folder / "stats.json"
    if stats_file.is_file():
        return load_from_disk(str(folder / "data")), json.loads(stats_file.read_text()), True, folder
    datasets, stats = build()
    staging = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(staging, ignore_errors=True)
    datasets.save_to_disk(str(staging / "data"))
    (staging / "key.json").write_text(json.dumps(parts, indent=2, sort_keys=True, default=str))
    (staging / "stats.json").write_text(json.dumps(stats, indent=2))
    shutil.rmtree(folder, ignore_errors=True)
    staging.rename(folder)
    return load_from_disk(str(folder / "data")), stats, False, folder
