"""Cheap fingerprints for `datasets.map` steps that close over a tokenizer.

Without one, datasets hashes the step's closure with dill, tokenizer and all: for Gemma's 262,144-entry
vocabulary that took ~15 s per split, longer than the tokenizing itself. The content of the fingerprint is
what changes the output: the input dataset's fingerprint, the tokenizer's (vocabulary, special tokens, chat
template), the step's settings and hftoolkit's version (the step's code).
"""

from __future__ import annotations

import hashlib
import json

from hftoolkit.data.cache import tokenizer_fingerprint


def step_fingerprint(dataset, tokenizer, step: str, **settings) -> str:
    digest = hashlib.sha256()
    for part in (getattr(dataset, "_fingerprint", ""), tokenizer_fingerprint(tokenizer), step, _version(),
                 json.dumps(settings, sort_keys=True, default=str)):
        digest.update(str(part).encode() + b"\0")
    return digest.hexdigest()[:32]


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("hftoolkit")
    except PackageNotFoundError:  # a source tree that was never installed
        return "source"
