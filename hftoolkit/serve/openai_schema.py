"""The OpenAI-compatible request bodies the server accepts, and the response bodies it sends.

Fields a client sends that hftoolkit does not use (`frequency_penalty`, `user`, `logprobs`, ...) are ignored,
not refused, so any OpenAI client works; a field of the wrong type is a 400 naming it.
"""

from __future__ import annotations

import time
import uuid
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from hftoolkit.generate.engine import Completion


class Message(BaseModel):
    model_config = ConfigDict(extra="ignore")
    role: Literal["system", "user", "assistant", "developer"]
    content: str | list[dict]

    def text(self) -> str:
        """Plain text; content parts (`[{"type": "text", "text": ...}]`) are joined."""
        if isinstance(self.content, str):
            return self.content
        return "".join(str(part.get("text", "")) for part in self.content if part.get("type") == "text")


class Sampling(BaseModel):
    model_config = ConfigDict(extra="ignore")
    model: str
    max_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    seed: int | None = None
    stop: str | list[str] | None = None
    stream: bool = False
    n: int = Field(1, ge=1, le=1)

    def stops(self) -> list[str]:
        return [self.stop] if isinstance(self.stop, str) else list(self.stop or [])


class ChatRequest(Sampling):
    messages: list[Message] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1)

    def chat_messages(self) -> list[dict]:
        return [{"role": "system" if m.role == "developer" else m.role, "content": m.text()} for m in self.messages]


class CompletionRequest(Sampling):
    prompt: str | list[str]

    def prompt_text(self) -> str:
        if isinstance(self.prompt, list):
            if len(self.prompt) != 1:
                raise ValueError("prompt: give one prompt per request")
            return self.prompt[0]
        return self.prompt


class RatingRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")
    log_id: int = Field(ge=1)
    rating: Literal["good", "bad"]
    fix: str | None = None


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:24]}"


def finish_reason(done: Completion, max_new_tokens: int) -> str:
    return "length" if done.tokens >= max_new_tokens and not done.cached else "stop"


def usage(prompt_tokens: int, done: Completion) -> dict:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": done.tokens,
            "total_tokens": prompt_tokens + done.tokens}


def extras(done: Completion) -> dict:
    """hftoolkit's additions to an answer: where its passages came from, and its generation-log row."""
    return {"sources": done.sources, "log_id": done.log_id, "cached": done.cached}


def chat_body(model: str, done: Completion, prompt_tokens: int, max_new_tokens: int) -> dict:
    return {"id": new_id("chatcmpl"), "object": "chat.completion", "created": int(time.time()), "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": done.completion.strip()},
                         "finish_reason": finish_reason(done, max_new_tokens)}],
            "usage": usage(prompt_tokens, done), **extras(done)}


def completion_body(model: str, done: Completion, prompt_tokens: int, max_new_tokens: int) -> dict:
    return {"id": new_id("cmpl"), "object": "text_completion", "created": int(time.time()), "model": model,
            "choices": [{"index": 0, "text": done.completion, "logprobs": None,
                         "finish_reason": finish_reason(done, max_new_tokens)}],
            "usage": usage(prompt_tokens, done), **extras(done)}


def chat_chunk(base: dict, delta: dict, finish: str | None = None) -> dict:
    return {**base, "object": "chat.completion.chunk",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}


def completion_chunk(base: dict, text: str, finish: str | None = None) -> dict:
    return {**base, "object": "text_completion",
            "choices": [{"index": 0, "text": text, "logprobs": None, "finish_reason": finish}]}


def error_body(message: str, kind: str = "invalid_request_error", param: str | None = None,
               code: str | None = None) -> dict:
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}
