"""One circuit breaker for services that are nice to have (the response cache, the generation log): their
failures never stop an answer.

Ours, not a library's: pybreaker and its kin raise `CircuitBreakerError` while open and count failures before
opening; here the first failure already skips the service (an answer must not wait on a dead Redis twice), the
caller gets None, and each outage is announced once, with its recovery.
"""

from __future__ import annotations

import time
from typing import Callable


class CircuitBreaker:
    def __init__(self, warn: Callable[[str], None], down_message: Callable[[Exception], str], up_message: str,
                 retry_seconds: float = 0.0):
        self.warn, self.down_message, self.up_message = warn, down_message, up_message
        self.retry_seconds = retry_seconds  # while open, calls are skipped this long after the last failure
        self.down_since: float | None = None
        self.retry_at = 0.0

    @property
    def is_open(self) -> bool:
        return self.down_since is not None

    def call(self, action: Callable, *args):
        """`action(*args)`, or None when it fails or the breaker is open and not yet due for a retry."""
        if self.down_since is not None and time.monotonic() < self.retry_at:
            return None
        try:
            result = action(*args)
        except Exception as exc:  # any failure of the service: the caller goes on without it
            if self.down_since is None:
                self.down_since = time.monotonic()
                self.warn(self.down_message(exc))
            self.retry_at = time.monotonic() + self.retry_seconds
            return None
        if self.down_since is not None:
            self.down_since = None
            self.warn(self.up_message)
        return result
