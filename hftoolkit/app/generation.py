"""The `generate` and `chat` verbs, and the response cache's `cache stats|clear`.

Generator options (cache, system, request_log, context, top_k, context_tokens, sentences) are
`TextGenerator`'s, with its defaults; `chat=None` everywhere means "the chat template when the checkpoint has
one", so a chat model answers questions whichever entry point asks.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator

from hftoolkit import defaults
from hftoolkit.errors import UserError
from hftoolkit.generate.api import TextGenerator
from hftoolkit.generate.cache import open_backend
from hftoolkit.generate.engine import Completion, GenerationSettings
from hftoolkit.redact import redact
from hftoolkit.train.precision import auto_precision


def read_prompts(prompts: list | tuple = (), file: str | None = None) -> list:
    """Prompts as given and/or from a .txt (one per line) or .jsonl file (prompt, question, messages or text)."""
    items = list(prompts)
    if file:
        path = Path(file)
        if not path.is_file():
            raise UserError(f"--file: '{file}' does not exist")
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            raise UserError(f"--file: '{file}' is not UTF-8 text; save it as UTF-8") from None
        items += _jsonl_prompts(text, file) if path.suffix == ".jsonl" else [s for s in text.splitlines() if s.strip()]
    if not items and file:
        raise UserError(f"--file: '{file}' holds no prompts; write one prompt per line (or JSON lines)")
    if not items:
        raise UserError("no prompts: give PROMPT arguments or --file")
    return items


def _jsonl_prompts(text: str, file: str) -> list:
    items = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError:
            raise UserError(f"--file: line {number} of '{file}' is not JSON") from None
        value = (row.get("messages") or row.get("prompt") or row.get("question") or row.get("text")
                 if isinstance(row, dict) else row)
        if value is None:
            raise UserError(f"--file: line {number} of '{file}' has no prompt/question/messages field")
        items.append(value)
    return items


def generate(checkpoint: str, prompts: list | tuple = (), file: str | None = None, chat: bool | None = None,
             batch_size: int = defaults.GENERATE_BATCH, settings: GenerationSettings | None = None, log=print,
             **options) -> list[Completion]:
    """Completions for `prompts` (and the prompts in `file`), in order; cached ones come back without running
    the model. `options` go to `TextGenerator` (cache, system, request_log, context, top_k, ...)."""
    texts = read_prompts(prompts, file)
    return open_generator(checkpoint, log=log, **options).generate(texts, chat, settings, batch_size)


def stream(checkpoint: str, prompts: list | tuple = (), file: str | None = None, chat: bool | None = None,
           settings: GenerationSettings | None = None, log=print, **options) -> Iterator[Iterator[str]]:
    """Per prompt, an iterator of text pieces as the model makes them (not cached; the model loads once)."""
    texts = read_prompts(prompts, file)
    generator = open_generator(checkpoint, log=log, **options)
    for text in texts:
        yield generator.stream(text, chat, settings)


def open_generator(checkpoint: str, log=print, precision: str = defaults.GENERATE_PRECISION,
                   **options) -> TextGenerator:
    """The generator behind `generate`, `chat` and the HTTP server: checks the checkpoint and opens its
    tokenizer, cache, index and log now; the weights load on first need. `options` as for `generate`;
    `precision` fp32, bf16 or auto (bf16 where this machine's bf16 matmuls are measurably faster)."""
    return TextGenerator(checkpoint, log=log, precision=resolve_generation_precision(precision, log), **options)


def resolve_generation_precision(precision: str, log=print) -> str:
    """fp32 or bf16 as given; auto: bf16 where this machine's bf16 matmuls are measurably faster (as training)."""
    if precision != "auto":
        return precision
    precision, why = auto_precision()
    log(f"precision auto: {precision} ({why})")
    return precision


class Chat:
    """A conversation with a checkpoint: each `send` streams the reply and adds both turns to the history."""

    def __init__(self, checkpoint: str, settings: GenerationSettings | None = None, log=print, **options):
        self.generator = open_generator(checkpoint, log=log, **{"cache": "off", **options})
        self.settings = settings or GenerationSettings(max_new_tokens=defaults.CHAT_MAX_NEW_TOKENS)
        self.history: list[dict] = []

    def send(self, message: str) -> Iterator[str]:
        self.history.append({"role": "user", "content": message})
        reply = ""
        for piece in self.generator.stream(self.history, chat=True, settings=self.settings):
            reply += piece
            yield piece
        self.history.append({"role": "assistant", "content": reply.strip()})

    def reset(self) -> None:
        self.history = []

    @property
    def last_log_id(self) -> int | None:
        return self.generator.last_log_id


def cache_stats(cache: str = defaults.CACHE) -> dict:
    return _on_cache(cache, lambda backend: backend.stats())


def cache_clear(cache: str = defaults.CACHE) -> dict:
    """Remove every cached response: {"removed": how many, "cache": which}."""
    return _on_cache(cache, lambda backend: {"removed": backend.clear(), "cache": backend.name})


def _on_cache(cache: str, action):
    backend = open_backend(cache)
    if backend is None:
        raise UserError("--cache off has nothing to show; name disk, a folder or redis://host:port/db")
    try:
        return action(backend)
    except Exception as exc:  # an unreachable Redis is a user-facing condition here
        raise UserError(f"cache {redact(cache)} is unavailable ({type(exc).__name__}: "
                        f"{redact(exc)[:120]})") from None


def request_settings(max_new_tokens: int = defaults.MAX_NEW_TOKENS, temperature: float | None = None,
                     top_p: float | None = None, top_k: int | None = None, repetition_penalty: float | None = None,
                     stop: list[str] | tuple[str, ...] = (), seed: int | None = None,
                     greedy: bool = False) -> GenerationSettings:
    """Settings for one request from the CLI or HTTP: `greedy` means the most likely token each step, so it
    also turns off the beam search a checkpoint may ask for (evaluation's `greedy` only turns off sampling)."""
    return GenerationSettings(max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p, top_k=top_k,
                              repetition_penalty=repetition_penalty, stop=list(stop or []), seed=seed, greedy=greedy,
                              num_beams=1 if greedy else None)
