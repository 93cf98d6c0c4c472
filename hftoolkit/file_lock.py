"""Advisory file locks (flock) so runs that share a cache folder take turns on the same entry.

Ours, not `filelock`'s: the preprocessing cache needs shared locks (every run reading an entry holds one, so
pruning can never delete it under them) and a non-blocking try. `filelock.FileLock` is exclusive only, and its
`ReadWriteLock` keeps an SQLite database per lock whose holders may not change mode; flock is a few lines and
the kernel releases it when a killed run's process ends."""

from __future__ import annotations

import fcntl
import os
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def file_lock(path: Path, shared: bool = False, wait: bool = True):
    """Hold a lock on `path` (created if missing). Yields False, holding nothing, when `wait` is False and
    another process holds it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        flags = (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | (0 if wait else fcntl.LOCK_NB)
        try:
            fcntl.flock(handle, flags)
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(handle)  # closing releases the lock
