"""One inference thread for the server: it takes what is queued (up to `max_batch` requests) and generates it
together, through the same `TextGenerator` the command line uses (cache, retrieval, generation log included).

The HTTP handlers run on asyncio; the model runs here, on a thread, so a long generation never blocks the
event loop. Requests that share their decoding settings form one batch; a streamed batch hands each request its
own pieces, and a request whose client went away stops alone.
"""

from __future__ import annotations

import asyncio
import queue
import threading
import time
import traceback
from collections import deque
from dataclasses import dataclass, field, replace

from hftoolkit.errors import UserError
from hftoolkit.generate.api import TextGenerator
from hftoolkit.generate.engine import Completion, GenerationSettings

GATHER_SECONDS = 0.01  # how long the worker waits for requests arriving together before it starts a batch


@dataclass
class Refusal:
    """Why a request cannot be answered: the HTTP status, one message, and the request field at fault."""

    status: int
    message: str
    param: str | None = None
    code: str | None = None


@dataclass
class Job:
    """One request on its way through the worker; events go back to the handler's event loop."""

    prompt: object  # text, or chat messages
    chat: bool
    settings: GenerationSettings
    stream: bool
    loop: asyncio.AbstractEventLoop
    events: asyncio.Queue = field(default_factory=asyncio.Queue)
    cancelled: bool = False
    fit_to_window: bool = False  # no max_tokens asked: shorten the default to what the window leaves
    admitted: bool = False  # checked against the model's window already
    prompt_tokens: int = 0  # the prompt as the model saw it (template and passages included), for `usage`

    def emit(self, kind: str, value) -> None:
        self.loop.call_soon_threadsafe(self.events.put_nowait, (kind, value))

    def batch_key(self) -> tuple:
        settings = self.settings.as_dict()
        settings["stop"] = tuple(settings["stop"])
        alone = id(self) if self.settings.sampling and self.settings.seed is not None else None  # as in generate()
        return self.stream, self.chat, alone, tuple(sorted(settings.items()))


@dataclass
class WorkerStats:
    batches: int = 0
    requests: int = 0
    largest_batch: int = 0
    cancelled: int = 0  # requests whose client went away before their answer was finished
    cached_while_busy: int = 0  # cache hits answered between two tokens of a running batch

    def as_dict(self) -> dict:
        return {"batches": self.batches, "requests": self.requests, "largest_batch": self.largest_batch,
                "cancelled": self.cancelled, "cached_while_busy": self.cached_while_busy}


class BatchWorker:
    def __init__(self, generator: TextGenerator, max_batch: int, log=print):
        if max_batch < 1:
            raise UserError(f"--max-batch: {max_batch} must be at least 1")
        self.generator, self.max_batch, self.log = generator, max_batch, log
        self.queue: queue.Queue = queue.Queue()
        self.waiting: deque[Job] = deque()  # taken from the queue during a batch, not in the cache: next batch
        self.ready = threading.Event()
        self.failed: str | None = None
        self.stats = WorkerStats()
        self.thread = threading.Thread(target=self._run, name="hftoolkit-inference", daemon=True)

    def start(self) -> None:
        """Run on a thread of its own (an app mounted in someone else's service)."""
        self.thread.start()

    def run_here(self) -> None:
        """Run on the calling thread until `stop()`. `hftoolkit serve` runs it on the main thread: torch's OpenMP
        threads belong to the thread that first computes, and a second thread doing the model's work got a team
        of its own that shared the cores with the first (bf16 decoding at 0.6x speed on a 2-core CPU)."""
        self._run()

    def stop(self) -> None:
        self.queue.put(None)

    def submit(self, job: Job) -> None:
        self.queue.put(job)

    def _run(self) -> None:
        try:
            self.generator.generator  # load the weights once, before the first request
        except Exception as exc:  # the server answers 503 with the reason
            self.failed = f"the model did not load: {exc}"
            self.log(f"hftoolkit: error: {self.failed}")
            return
        self.ready.set()
        while True:
            batch = self._next_batch()
            if batch is None:
                return
            groups: dict[tuple, list[Job]] = {}
            for job in [job for job in batch if not job.cancelled and self._admit(job)]:  # admitting may shorten
                groups.setdefault(job.batch_key(), []).append(job)
            for jobs in groups.values():
                self._run_group(jobs)

    def _next_batch(self) -> list[Job] | None:
        first = self.waiting.popleft() if self.waiting else self.queue.get()
        if first is None:
            return None
        batch, deadline = [first], time.monotonic() + GATHER_SECONDS
        while self.waiting and len(batch) < self.max_batch:
            batch.append(self.waiting.popleft())
        while len(batch) < self.max_batch:
            try:
                job = self.queue.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                break
            if job is None:
                self.queue.put(None)
                break
            batch.append(job)
        return batch

    def _between_steps(self) -> None:
        """While a batch generates: answer newly queued requests that are in the response cache at once (a
        cached answer does not wait for the batch), keep the others for the next batch."""
        while True:
            try:
                job = self.queue.get_nowait()
            except queue.Empty:
                return
            if job is None:  # stop: after this batch
                self.queue.put(None)
                return
            if job.cancelled or not self._admit(job):
                continue
            try:
                [hit] = self.generator.stream_batch([job.prompt], job.chat, job.settings, cached_only=True,
                                                    on_piece=lambda row, text: job.emit("piece", text)
                                                    if job.stream else None)
            except UserError as exc:
                job.emit("error", Refusal(400, str(exc), "messages" if job.chat else "prompt"))
                continue
            except Exception:  # never fail the running batch: the next batch takes this request the usual way
                self.log(traceback.format_exc())
                hit = None
            if hit is None:
                self.waiting.append(job)
                continue
            self.stats.cached_while_busy += 1
            job.prompt_tokens = self.count(hit.prompt)
            job.emit("done", hit)

    def _admit(self, job: Job) -> bool:
        """Refuse a request before it joins a batch: an empty or unrenderable prompt, or one that does not fit
        the model's window with its max_tokens. The tokenizer is only ever used on this thread."""
        if job.admitted:
            return True
        job.admitted = True
        param = "messages" if job.chat else "prompt"
        try:
            prompt_tokens = self.count(self.generator.render(job.prompt, job.chat))
        except UserError as exc:
            job.emit("error", Refusal(400, str(exc), param))
            return False
        window, wanted = self.generator.context_length, job.settings.max_new_tokens
        if job.fit_to_window and prompt_tokens < window and prompt_tokens + wanted > window:
            job.settings = replace(job.settings, max_new_tokens=min(wanted, window - prompt_tokens))
            wanted = job.settings.max_new_tokens
        if prompt_tokens + wanted > window:
            job.emit("error", Refusal(400, f"the prompt is {prompt_tokens} tokens and max_tokens {wanted}: "
                                           f"{prompt_tokens + wanted - window} tokens over the model's {window}-token "
                                           "window; shorten the messages or lower max_tokens",
                                      "max_tokens", "context_length_exceeded"))
            return False
        return True

    def count(self, text: str) -> int:
        return len(self.generator._renderer.tokenizer(text, add_special_tokens=False)["input_ids"])

    def _run_group(self, jobs: list[Job]) -> None:
        live = [job for job in jobs if not job.cancelled and self._admit(job)]
        if not live:
            return
        self.stats.batches += 1
        self.stats.requests += len(live)
        self.stats.largest_batch = max(self.stats.largest_batch, len(live))
        try:
            results = self._generate(live)
        except UserError as exc:
            if len(live) > 1:  # one bad request must not fail the others: run each alone to find it
                self.stats.batches -= 1  # this attempt does not count; each rerun does
                self.stats.requests -= len(live)
                for job in live:
                    self._run_group([job])
                return
            live[0].emit("error", Refusal(400, str(exc), "messages" if live[0].chat else "prompt"))
            return
        except Exception as exc:
            self.log(traceback.format_exc())
            for job in live:
                job.emit("error", Refusal(500, f"internal error while generating: {type(exc).__name__}"))
            return
        self.stats.cancelled += sum(job.cancelled for job in live)
        for job, result in zip(live, results):
            job.prompt_tokens = self.count(result.prompt)
            job.emit("done", result)

    def _generate(self, jobs: list[Job]) -> list[Completion]:
        """Streamed or not, requests go through `stream_batch` (so a client that leaves stops its row), unless
        the checkpoint asks for beam search, which only `generate` does (the answers `hftoolkit generate` gives)."""
        first = jobs[0]
        prompts = [job.prompt for job in jobs]
        beams = first.settings.num_beams or self.generator.generator.model.generation_config.num_beams or 1
        if first.stream or beams == 1:
            on_piece = (lambda row, text: jobs[row].emit("piece", text)) if first.stream else (lambda row, text: None)
            return self.generator.stream_batch(prompts, first.chat, first.settings, on_piece=on_piece,
                                               cancelled=lambda row: jobs[row].cancelled,
                                               between_steps=self._between_steps)
        return self.generator.generate(prompts, first.chat, first.settings, batch_size=len(jobs))
