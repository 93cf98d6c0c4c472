"""The generation API for notebooks and services: a checkpoint plus a response cache.

    gen = TextGenerator("runs/cars_qa")                  # embedded disk cache by default
    gen.ask("How often is brake fluid replaced?")        # chat template applied
    gen.generate(["Brake pads", "Tyres"], chat=False)    # batch of raw prompts (chat=None: template if any)
    for piece in gen.stream("What is ABS?"): ...         # tokens as they come
    TextGenerator("runs/cars_qa", context="runs/cars_index")  # answer from retrieved passages
    TextGenerator("runs/cars_qa", request_log="sqlite:///answers.db")  # log every answer for rating

With `context` ("auto" by default: the index the checkpoint was trained with,
when it exists) each question is first searched in the corpus index and the best
passages go into the prompt, within the model's context window; completions
list the passages they used in `sources`. The tokenizer loads at once (prompts
must be rendered to build cache keys); the weights load only when something is
not in the cache.
"""

from __future__ import annotations

import threading
import time
from dataclasses import replace
from typing import Callable, Iterator

from hftoolkit import defaults
from hftoolkit.checkpoint.open import check_checkpoint, open_tokenizer
from hftoolkit.checkpoint.saved import saved_sampling, saved_system_prompt
from hftoolkit.db.generation_log import GenerationLog
from hftoolkit.errors import UserError
from hftoolkit.generate.cache import ResponseCache, model_fingerprint, open_backend, request_key
from hftoolkit.generate.engine import Completion, GenerationSettings, Generator, context_length, cut_at_stop
from hftoolkit.generate.streaming import RowStopper, RowStreamer, held_back
from hftoolkit.retrieval.checkpoint_index import open_context
from hftoolkit.retrieval.context import augment, format_passages, question_of, question_with_context


class _TokenizerOnly:
    """Renders prompts with the checkpoint's tokenizer before any weights are loaded."""

    def __init__(self, path: str):
        self.tokenizer = open_tokenizer(path)
        self.path = path

    render = Generator.render


class TextGenerator:
    def __init__(self, checkpoint: str, cache: str | None = defaults.CACHE, cache_ttl: int | None = None,
                 system: str | None = None, log=print, context: str | None = defaults.CONTEXT, top_k: int | None = None,
                 context_tokens: int | None = None, request_log=None, sentences: int | None = None,
                 precision: str = defaults.GENERATE_PRECISION):
        check_checkpoint(checkpoint)
        self.precision = precision
        self.checkpoint, self.log = checkpoint, log
        self.system = system if system is not None else saved_system_prompt(checkpoint)
        self.suggested_sampling = saved_sampling(checkpoint)  # used unless a request sets its own knobs
        self.cache = ResponseCache(open_backend(cache, cache_ttl), warn=log)
        self.request_log = _open_request_log(request_log, log)
        wants_hash = cache not in (None, "off", "none") or self.request_log is not None
        self.model_hash = model_fingerprint(checkpoint) if wants_hash else ""
        self._renderer = _TokenizerOnly(checkpoint)
        self._generator: Generator | None = None
        self.context = open_context(checkpoint, context, top_k, context_tokens, log, sentences)
        self.context_length = context_length(checkpoint)
        self.last_passages: list = []  # what the latest stream() put into its prompt
        self.last_log_id: int | None = None  # the generation-log row of the latest stream()

    @property
    def generator(self) -> Generator:
        """The loaded model, on first need."""
        if self._generator is None:
            self._generator = Generator.load(self.checkpoint, self.precision)
        return self._generator

    @property
    def has_chat_template(self) -> bool:
        return bool(self._renderer.tokenizer.chat_template)

    @property
    def weights_loaded(self) -> bool:
        return self._generator is not None

    def render(self, prompt, chat: bool) -> str:
        return self._renderer.render(prompt, chat, self.system)

    def prepare(self, prompts: list, chat: bool, max_new_tokens: int) -> list[tuple[str, list]]:
        """(rendered text, passages used) per prompt: retrieval and the token budget happen here."""
        if self.context is None:
            prepared = [(self.render(p, chat), []) for p in prompts]  # empty prompts, missing templates: first
            GenerationSettings(max_new_tokens=max_new_tokens).check_window(self.context_length)
            return prepared

        for prompt in prompts:
            if not question_of(prompt).strip():
                raise UserError("empty prompt: give a question or message")
        if prompts:
            self.render(prompts[0], chat)  # a chat request to a model without a chat template fails here
        GenerationSettings(max_new_tokens=max_new_tokens).check_window(self.context_length)
        found = self.context.retriever.search_many([question_of(p) for p in prompts], self.context.top_k,
                                                   self.context.sentences)
        tokenizer = self._renderer.tokenizer
        count = lambda text: len(tokenizer(text, add_special_tokens=False)["input_ids"])  # noqa: E731
        limit = max(1, self.context_length - max_new_tokens)
        prepared = []
        for prompt, hits in zip(prompts, found):
            augmented, used = augment(prompt, hits, lambda p: self.render(p, chat), count, limit,
                                      self.context.passage_tokens)
            prepared.append((self.render(augmented, chat), used))
        return prepared

    def chat_mode(self, chat: bool | None) -> bool:
        """None: the chat template when the checkpoint has one (a chat model answers questions)."""
        return self.has_chat_template if chat is None else chat

    def generate(self, prompts: list, chat: bool | None = None, settings: GenerationSettings | None = None,
                 batch_size: int = defaults.GENERATE_BATCH) -> list[Completion]:
        """Completions in prompt order; cached ones are returned without running the model."""
        chat = self.chat_mode(chat)
        if batch_size < 1:
            raise UserError(f"--batch-size: {batch_size} must be at least 1")  # before any weights load
        settings = (settings or GenerationSettings()).with_checkpoint_defaults(self.suggested_sampling)
        prepared = self.prepare(prompts, chat, settings.max_new_tokens)
        texts = [text for text, _ in prepared]
        cacheable, keys, results = self._cached(prepared, settings)
        missing = [i for i, r in enumerate(results) if r is None]
        if missing:
            fresh = self.generator.generate([texts[i] for i in missing], settings, batch_size, log=self.log)
            for i, done in zip(missing, fresh):
                results[i] = done
                if cacheable:
                    self.cache.set(keys[i], {"completion": done.completion, "tokens": done.tokens})
        for prompt, result, (_, used) in zip(prompts, results, prepared):
            result.passages, result.request, result.chat = used, prompt, chat
            result.log_id = self._log_request(prompt, result, settings)
        return results

    def stream_batch(self, prompts: list, chat: bool | None, settings: GenerationSettings | None,
                     on_piece: Callable[[int, str], None], cancelled: Callable[[int], bool] = lambda row: False,
                     between_steps: Callable[[], None] | None = None, cached_only: bool = False
                     ) -> list[Completion | None]:
        """Stream several prompts through one `generate()`: `on_piece(i, text)` gets prompt i's new text as it
        comes, `cancelled(i)` stops prompt i alone, `between_steps()` runs after each generated token. Greedy or
        sampled, never beams (as `stream`); answers come from and go to the response cache and the generation log
        as in `generate` (a cached one arrives whole). `cached_only`: answer from the cache alone (None for a
        miss, which is neither generated nor logged)."""
        chat = self.chat_mode(chat)
        settings = replace((settings or GenerationSettings()).with_checkpoint_defaults(self.suggested_sampling),
                           num_beams=1)
        prepared = self.prepare(prompts, chat, settings.max_new_tokens)
        cacheable, keys, results = self._cached(prepared, settings)
        for i, hit in enumerate(results):
            if hit is not None:
                on_piece(i, hit.completion)
        missing = [i for i, r in enumerate(results) if r is None]
        if missing and not cached_only:
            for i, done in zip(missing, self._stream_rows([prepared[i][0] for i in missing], settings,
                                                          lambda row, piece: on_piece(missing[row], piece),
                                                          lambda row: cancelled(missing[row]), between_steps)):
                results[i] = done
                if cacheable and not cancelled(i):
                    self.cache.set(keys[i], {"completion": done.completion, "tokens": done.tokens})
        for i, (prompt, result, (_, used)) in enumerate(zip(prompts, results, prepared)):
            if result is None:
                continue
            result.passages, result.request, result.chat = used, prompt, chat
            result.log_id = None if cancelled(i) else self._log_request(prompt, result, settings)
        return results

    def _cached(self, prepared: list[tuple[str, list]], settings: GenerationSettings
                ) -> tuple[bool, list[str], list[Completion | None]]:
        """(cacheable, cache key per prompt, the cached completion per prompt or None). Sampled answers are
        cached only when seeded; the key covers the rendered prompt, the settings and the passages used."""
        cacheable = not settings.sampling or settings.seed is not None
        keys = [request_key(self.model_hash, text, {**settings.as_dict(), **self._context_key(used)})
                for text, used in prepared]
        results: list[Completion | None] = [None] * len(prepared)
        for i, key in enumerate(keys if cacheable else []):
            started = time.perf_counter()
            hit = self.cache.get(key)
            if hit is not None:
                results[i] = Completion(prepared[i][0], hit["completion"], hit["tokens"],
                                        round(time.perf_counter() - started, 6), cached=True)
        return cacheable, keys, results

    def _stream_rows(self, texts: list[str], settings: GenerationSettings, on_piece, cancelled,
                     between_steps=None) -> list[Completion]:
        import torch
        from transformers import StoppingCriteriaList

        gen = self.generator
        started = time.perf_counter()
        inputs = gen._encode(texts, settings.max_new_tokens, self.log)
        eos = gen.model.generation_config.eos_token_id
        streamer = RowStreamer(gen.tokenizer, len(texts), settings.stop, set(eos if isinstance(eos, list) else [eos]),
                               on_piece)
        kwargs = {**gen._generate_kwargs(replace(settings, stop=[])),
                  "stopping_criteria": StoppingCriteriaList([RowStopper(streamer, cancelled, between_steps)])}
        if settings.seed is not None:
            torch.manual_seed(settings.seed)
        with torch.inference_mode():
            gen.run_generate(inputs, kwargs, streamer=streamer)
        elapsed = round((time.perf_counter() - started) / len(texts), 4)
        return [Completion(text, streamer.text(row), streamer.tokens(row), elapsed) for row, text in enumerate(texts)]

    def _log_request(self, prompt, result: Completion, settings: GenerationSettings) -> int | None:
        if self.request_log is None:
            return None
        system = system_of(prompt, self.system) if result.chat else None
        return self.request_log.record(self.checkpoint, self.model_hash, question_of(prompt),
                                       result.completion.strip(), settings.as_dict(), result.sources, result.seconds,
                                       result.cached, shown_prompt=shown_prompt(prompt, result), system=system)

    def _context_key(self, used: list) -> dict:
        """Cache-key part beyond the settings: the precision when not fp32 (a bf16 answer may differ), and for
        retrieval the index's content and the exact chunks used."""
        key = {} if self.precision == "fp32" else {"precision": self.precision}
        if self.context is None:
            return key
        return {**key, "context": {"index": self.context.retriever.fingerprint,
                                   "chunks": [[h.chunk_id, h.start, h.end] for h in used]}}

    def ask(self, question: str, **settings) -> str:
        """One chat turn, returning just the answer text."""
        return self.generate([question], chat=True, settings=GenerationSettings(**settings))[0].completion

    def stream(self, prompt, chat: bool | None = None, settings: GenerationSettings | None = None) -> Iterator[str]:
        """Yield text pieces as the model produces them (not cached)."""
        import torch
        from transformers import TextIteratorStreamer

        chat = self.chat_mode(chat)
        # a streamer takes one sequence: no beam search, whatever the checkpoint asks for
        settings = replace((settings or GenerationSettings()).with_checkpoint_defaults(self.suggested_sampling),
                           num_beams=1)
        started = time.perf_counter()
        gen = self.generator
        [(text, self.last_passages)] = self.prepare([prompt], chat, settings.max_new_tokens)
        inputs = gen._encode([text], settings.max_new_tokens, self.log)
        streamer = TextIteratorStreamer(gen.tokenizer, skip_prompt=True, skip_special_tokens=True)
        if settings.seed is not None:
            torch.manual_seed(settings.seed)
        errors: list[BaseException] = []

        def run():
            try:
                with torch.inference_mode():
                    gen.run_generate(inputs, gen._with_prompt_lookup(gen._generate_kwargs(settings), 1),
                                     streamer=streamer)
            except BaseException as exc:  # surfaced in the caller's thread below
                errors.append(exc)
                streamer.end()

        worker = threading.Thread(target=run, daemon=True)
        worker.start()
        produced, sent = "", 0  # text so far, and how much of it went out
        for piece in streamer:
            produced += piece
            cut = cut_at_stop(produced, settings.stop) if settings.stop else produced
            if len(cut) < len(produced):  # a stop string: nothing from it on goes out
                produced = cut
                break
            safe = len(produced) - held_back(produced, settings.stop)  # what may still become a stop string waits
            if safe > sent:
                yield produced[sent:safe]
                sent = safe
        if len(produced) > sent:
            yield produced[sent:]
        worker.join()
        if errors:
            raise errors[0]
        done = Completion(text, produced, 0, round(time.perf_counter() - started, 6), passages=self.last_passages)
        self.last_log_id = self._log_request(prompt, done, settings)


def _open_request_log(request_log, warn):
    """A GenerationLog from a URI (or one given ready-made), or None."""
    if request_log is None or not isinstance(request_log, str):
        return request_log

    return GenerationLog(request_log, warn=warn)


def shown_prompt(prompt, result: Completion) -> str:
    """The user message as the model saw it: the question with the passages put into its prompt."""
    return question_with_context(question_of(prompt), format_passages([hit.text for hit in result.passages]))


def system_of(prompt, default: str | None) -> str | None:
    """The system prompt a chat request was rendered with: its own system message, else the checkpoint's."""
    if isinstance(prompt, list) and prompt and prompt[0].get("role") == "system":
        return str(prompt[0].get("content", ""))
    return default
