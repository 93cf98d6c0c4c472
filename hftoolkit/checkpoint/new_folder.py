"""Write a new checkpoint folder all at once: under a temporary name, renamed into place at the end."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Callable

from hftoolkit.errors import UserError


def require_new(dest: str | Path, flag: str = "destination") -> Path:
    """`dest` must not exist, or be an empty folder: hftoolkit never writes over a checkpoint."""
    target = Path(dest)
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise UserError(f"{flag} '{dest}' exists and is not empty; choose a new folder")
    return target


def write_new_folder(dest: str | Path, write: Callable[[Path], None]) -> Path:
    """Run `write(staging)` then rename staging to `dest`; a failure leaves no partial `dest`."""
    target = require_new(dest)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    staging.chmod(0o755)
    try:
        write(staging)
        if target.exists():
            target.rmdir()
        staging.rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target
