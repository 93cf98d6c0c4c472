"""One run at a time per output folder.

A second run into a folder that a run is still writing (a colleague's, or a `--resume` or `--overwrite` of a run
still going) would clear or save over the first's files under it. The second is refused at once, before it reads
anything. The lock is a file in hftoolkit's cache keyed by the folder's absolute path, so nothing lands in the
user's folder before a run's checks pass; the kernel releases it when the run's process ends, killed or not.
"""

from __future__ import annotations

import hashlib
from contextlib import contextmanager
from pathlib import Path

from hftoolkit.errors import UserError
from hftoolkit.file_lock import file_lock
from hftoolkit.paths import cache_dir
from hftoolkit.train.distributed import is_main


@contextmanager
def output_lock(path: str):
    """Hold the folder's lock for the run (rank 0 holds it for all ranks); refuse when another run holds it."""
    if not is_main():
        yield
        return
    key = hashlib.sha256(str(Path(path).resolve()).encode()).hexdigest()[:32]
    with file_lock(cache_dir("runs") / f"{key}.lock", wait=False) as held:
        if not held:
            raise UserError(f"output dir '{path}' is being written by another hftoolkit run; wait for it to end, "
                            "or choose another --output-dir")
        yield
