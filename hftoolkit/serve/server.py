"""The HTTP server: OpenAI-compatible routes and a chat page over one `TextGenerator`.

    from hftoolkit import app
    from hftoolkit.serve import create_app
    asgi = create_app(app.open_generator("runs/cars_qa", request_log="sqlite:///answers.db"),
                      log_uri="sqlite:///answers.db")   # mount it in your own service, or run it with uvicorn

Answers come from the same generator as `hftoolkit generate` (retrieval with sources, the response cache, the
generation log), batched by `BatchWorker`. Every answer carries `sources` and its `log_id`; `POST /v1/ratings`
writes a person's judgement into the generation log, where `hftoolkit data export-log` finds it.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import time
import uuid
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from hftoolkit import app as verbs
from hftoolkit import defaults
from hftoolkit.errors import UserError
from hftoolkit.generate.api import TextGenerator
from hftoolkit.serve.openai_schema import (
    ChatRequest,
    CompletionRequest,
    RatingRequest,
    chat_body,
    chat_chunk,
    completion_body,
    completion_chunk,
    error_body,
    extras,
    finish_reason,
    new_id,
    usage,
)
from hftoolkit.serve.worker import BatchWorker, Job, Refusal

PAGE = Path(__file__).parent / "page" / "chat.html"
MAX_BODY_BYTES = 1 << 20  # a chat request is a few KB; anything past 1 MB is refused before it is read
DISCONNECT_POLL_SECONDS = 0.25


class RequestError(Exception):
    """A request the server refuses with `status` and one message (OpenAI's error body)."""

    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code


def create_app(generator: TextGenerator, model_name: str | None = None, max_batch: int = defaults.SERVE_MAX_BATCH,
               api_key: str | None = None, log_uri: str | None = None, log=print,
               start_worker: bool = True) -> FastAPI:
    """The ASGI app serving `generator`; its inference worker starts on a thread of its own (and loads the
    weights) with the app, unless `start_worker` is False: then the caller runs `app.state.worker.run_here()`."""
    name = model_name or Path(generator.checkpoint).resolve().name
    worker = BatchWorker(generator, max_batch, log=log)

    @asynccontextmanager
    async def lifespan(_):
        if start_worker:
            worker.start()
        yield
        worker.stop()

    server = FastAPI(title="hftoolkit", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    server.state.worker = worker

    @server.middleware("http")
    async def guard(request: Request, call_next):
        request_id = request.headers.get("x-request-id") or uuid.uuid4().hex
        response = _refuse_early(request, api_key)
        if response is None:
            response = await call_next(request)
        response.headers["x-request-id"] = request_id
        return response

    @server.exception_handler(RequestError)
    async def refused(_, exc: RequestError):
        return JSONResponse(error_body(exc.message, param=exc.param, code=exc.code), status_code=exc.status)

    @server.exception_handler(RequestValidationError)
    async def invalid(_, exc: RequestValidationError):
        message, param = _validation_message(exc)
        return JSONResponse(error_body(message, param=param), status_code=400)

    @server.exception_handler(StarletteHTTPException)
    async def http_error(_, exc: StarletteHTTPException):
        return JSONResponse(error_body(str(exc.detail)), status_code=exc.status_code)

    @server.get("/", response_class=HTMLResponse)
    async def page():
        return HTMLResponse(PAGE.read_text(encoding="utf-8"))

    @server.get("/health")
    async def health():
        if worker.failed:
            return JSONResponse({"status": "failed", "error": worker.failed}, status_code=503)
        if not worker.ready.is_set():
            return JSONResponse({"status": "loading"}, status_code=503)
        return {"status": "ok", "model": name, "precision": generator.precision}

    @server.get("/v1/models")
    async def models():
        return {"object": "list", "data": [{"id": name, "object": "model", "created": 0, "owned_by": "hftoolkit"}]}

    @server.get("/v1/stats")
    async def stats():
        """How the worker batched: a test reads it instead of timing requests."""
        return {**worker.stats.as_dict(), "queued": worker.queue.qsize(), "max_batch": worker.max_batch}

    @server.post("/v1/chat/completions")
    async def chat_completions(body: ChatRequest, request: Request):
        _check_model(body.model, name)
        asked = body.max_completion_tokens or body.max_tokens
        job = _job(body.chat_messages(), True, body, asked, defaults.CHAT_MAX_NEW_TOKENS, worker)
        base = {"id": new_id("chatcmpl"), "created": int(time.time()), "model": name}
        if not body.stream:
            done = await _result(job, request)
            return chat_body(name, done, job.prompt_tokens, job.settings.max_new_tokens)
        first = await _first_event(job)
        pieces = _sse(job, first, lambda text: chat_chunk(base, {"content": text}),
                      lambda done: {**chat_chunk(base, {}, finish_reason(done, job.settings.max_new_tokens)),
                                    "usage": usage(job.prompt_tokens, done), **extras(done)},
                      opening=chat_chunk(base, {"role": "assistant", "content": ""}))
        return StreamingResponse(pieces, media_type="text/event-stream", headers={"cache-control": "no-cache"})

    @server.post("/v1/completions")
    async def completions(body: CompletionRequest, request: Request):
        _check_model(body.model, name)
        try:
            prompt = body.prompt_text()
        except ValueError as exc:
            raise RequestError(400, str(exc), param="prompt") from None
        job = _job(prompt, False, body, body.max_tokens, defaults.MAX_NEW_TOKENS, worker)
        base = {"id": new_id("cmpl"), "created": int(time.time()), "model": name}
        if not body.stream:
            done = await _result(job, request)
            return completion_body(name, done, job.prompt_tokens, job.settings.max_new_tokens)
        first = await _first_event(job)
        pieces = _sse(job, first, lambda text: completion_chunk(base, text),
                      lambda done: {**completion_chunk(base, "", finish_reason(done, job.settings.max_new_tokens)),
                                    "usage": usage(job.prompt_tokens, done), **extras(done)})
        return StreamingResponse(pieces, media_type="text/event-stream", headers={"cache-control": "no-cache"})

    @server.post("/v1/ratings")
    async def ratings(body: RatingRequest):
        if not log_uri:
            raise RequestError(400, "this server keeps no generation log: start it with --log URI to rate answers")
        try:
            return await run_in_threadpool(verbs.rate, log_uri, body.log_id, body.rating, body.fix)
        except UserError as exc:
            raise RequestError(404 if "no logged answer" in str(exc) else 400, str(exc), param="log_id") from None

    return server


def _refuse_early(request: Request, api_key: str | None) -> JSONResponse | None:
    """The key and the body size are checked before a body is read or a handler runs."""
    if api_key and request.url.path.startswith("/v1/"):
        given = request.headers.get("authorization", "")
        expected = f"Bearer {api_key}"
        if not hmac.compare_digest(given.encode(), expected.encode()):
            return JSONResponse(error_body("missing or wrong API key: send the header 'Authorization: Bearer <key>'",
                                           kind="authentication_error", code="invalid_api_key"), status_code=401)
    size = request.headers.get("content-length")
    if size and size.isdigit() and int(size) > MAX_BODY_BYTES:
        return JSONResponse(error_body(f"request body of {int(size):,} bytes is over the {MAX_BODY_BYTES:,}-byte "
                                       "limit; send shorter messages"), status_code=413)
    return None


def _validation_message(exc: RequestValidationError) -> tuple[str, str | None]:
    first = exc.errors()[0]
    if first.get("type") == "json_invalid":
        return f"request body is not valid JSON ({first.get('ctx', {}).get('error', 'parse error')})", None
    where = ".".join(str(part) for part in first.get("loc", ()) if part != "body") or "body"
    return f"{where}: {first.get('msg', 'invalid')}", where


def _check_model(requested: str, served: str) -> None:
    if requested != served:
        raise RequestError(404, f"model '{requested}' is not served here; this server serves '{served}' "
                                "(GET /v1/models)", param="model", code="model_not_found")


def _job(prompt, chat: bool, body, asked: int | None, default_new: int, worker: BatchWorker) -> Job:
    """Queue a request for the worker, with the same settings the command line builds (`app.request_settings`):
    temperature 0 is greedy; no temperature keeps the checkpoint's suggested sampling. Without max_tokens the
    answer gets the verb's default length, or what is left of the model's window when that is less."""
    if worker.failed:
        raise RequestError(503, worker.failed)
    greedy = body.temperature == 0
    settings = verbs.request_settings(max_new_tokens=asked or default_new, temperature=None if greedy else body.temperature,
                                      top_p=None if greedy else body.top_p, stop=body.stops(), seed=body.seed,
                                      greedy=greedy)
    job = Job(prompt, chat, settings, bool(body.stream), asyncio.get_running_loop(), fit_to_window=asked is None)
    worker.submit(job)
    return job


def _refused(refusal: Refusal) -> RequestError:
    return RequestError(refusal.status, refusal.message, refusal.param, refusal.code)


async def _result(job: Job, request: Request):
    """Wait for a non-streamed answer; a client that goes away cancels its request."""
    while True:
        try:
            kind, value = await asyncio.wait_for(job.events.get(), DISCONNECT_POLL_SECONDS)
        except asyncio.TimeoutError:
            if await request.is_disconnected():
                job.cancelled = True
                raise RequestError(499, "client went away") from None
            continue
        if kind == "done":
            return value
        if kind == "error":
            raise _refused(value)


async def _first_event(job: Job) -> tuple[str, object]:
    """A stream starts only once the request is known to be good, so a bad one still gets a 4xx."""
    kind, value = await job.events.get()
    if kind == "error":
        raise _refused(value)
    return kind, value


async def _sse(job: Job, first, piece_chunk, last_chunk, opening: dict | None = None):
    finished = False
    try:
        if opening is not None:
            yield _event(opening)
        kind, value = first
        while True:
            if kind == "piece":
                yield _event(piece_chunk(value))
            elif kind == "done":
                yield _event(last_chunk(value))
                yield "data: [DONE]\n\n"
                finished = True
                return
            else:
                yield _event(error_body(value.message, param=value.param, code=value.code))
                yield "data: [DONE]\n\n"
                finished = True
                return
            kind, value = await job.events.get()
    finally:
        if not finished:  # the client disconnected: stop this request's generation
            job.cancelled = True


def _event(payload: dict) -> str:
    return f"data: {json.dumps(payload, ensure_ascii=False)}\n\n"
