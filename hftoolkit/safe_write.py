"""The one way hftoolkit writes a folder or file: build it under a temporary name beside its destination, then
rename it into place, so a crash or an error never leaves something half-written that looks finished.

Every writer uses these: `pull`, `models pull`, `convert`, `index build` (new folders), the preprocessing and
tokenizer caches (`replace_cached`), checkpoint saves (`write_into_folder`, merging into a run folder that may
hold the user's files), and single files (`write_new_file`: HDF5 exports, exported logs).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable

from hftoolkit.errors import UserError

STAGING = ".staging"  # inside a run folder: a save in progress (or one that crashed)


def require_new(dest: str | Path, flag: str = "destination") -> Path:
    """`dest` must not exist, or be an empty folder: hftoolkit never writes over a checkpoint."""
    target = Path(dest)
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise UserError(f"{flag} '{dest}' exists and is not empty; choose a new folder")
    return target


def _staging_beside(target: Path) -> Path:
    target.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))


def process_umask() -> int:
    """The umask, read where Linux shows it: setting it to read it (os.umask) would change it for every thread."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def open_modes(path: Path) -> None:
    """Give `path` (and all under it) the modes a plain `open` or `mkdir` would: temporary names (mkstemp,
    mkdtemp, and safetensors' own writer) are created owner-only, which would keep a checkpoint's weights from
    a colleague or a server's account while its other files are readable."""
    mask = process_umask()
    for item in [path, *(path.rglob("*") if path.is_dir() else ())]:
        if not item.is_symlink():
            item.chmod((0o777 if item.is_dir() else 0o666) & ~mask)


def write_new_folder(dest: str | Path, write: Callable[[Path], None]) -> Path:
    """Run `write(staging)` then rename staging to `dest`; a failure leaves no partial `dest`."""
    target = require_new(dest)
    staging = _staging_beside(target)
    try:
        write(staging)
        open_modes(staging)
        if target.exists():
            target.rmdir()
        staging.rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def replace_cached(dest: Path, write: Callable[[Path], None]) -> Path:
    """For cache entries hftoolkit owns (callers hold the entry's lock): build, then swap in for any old copy."""
    staging = _staging_beside(dest)
    try:
        write(staging)
        open_modes(staging)
        shutil.rmtree(dest, ignore_errors=True)
        staging.rename(dest)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return dest


def write_into_folder(out: Path, write: Callable[[Path], None], last: str,
                      before_move: Callable[[list[Path], Path], None] = lambda items, staging: None) -> None:
    """Run `write(staging)` in `out/.staging`, then move each item into `out`, merging folders file by file, so
    files the user keeps there survive; the item named `last` (the finished marker) lands last.
    `before_move(items, staging)` runs first: record what is ours before it lands, so a crash mid-move stays ours."""
    staging = out / STAGING
    shutil.rmtree(staging, ignore_errors=True)  # a crashed save of ours, by its reserved name
    staging.mkdir(parents=True)
    write(staging)
    open_modes(staging)
    items = sorted(staging.iterdir(), key=lambda p: p.name == last)
    before_move(items, staging)
    for item in items:
        move_into(item, out / item.name)
    staging.rmdir()


def move_into(item: Path, target: Path) -> None:
    """Move a staged file or folder into place; a folder is merged file by file, so a file the user put in,
    say, adapter/ survives a new save."""
    if item.is_dir() and not item.is_symlink():
        if target.exists() and not target.is_dir():
            raise in_the_way(target, item)
        target.mkdir(exist_ok=True)
        for child in item.iterdir():
            move_into(child, target / child.name)
        item.rmdir()
    else:
        if target.is_dir():
            raise in_the_way(target, item)
        item.replace(target)


def in_the_way(target: Path, staged: Path) -> UserError:
    """Something of another kind sits where the checkpoint puts a file or folder: it is not ours to delete."""
    return UserError(f"'{target}' is in the way of the checkpoint's {'folder' if staged.is_dir() else 'file'} of "
                     "that name and was not written over; move it elsewhere and train again (this run's files "
                     "wait in the run folder's .staging/ until then)")


def require_new_file(dest: str | Path, flag: str) -> Path:
    """`dest` must not exist and its folder must: checked before any expensive work."""
    target = Path(dest)
    if target.exists():
        raise UserError(f"{flag}: '{dest}' already exists; choose a new file (nothing is overwritten)")
    if not target.parent.is_dir():
        raise UserError(f"{flag}: folder '{target.parent}' does not exist; create it first")
    return target


def write_new_file(dest: str | Path, write: Callable[[Path], None], flag: str) -> Path:
    """Run `write(staging_file)` then rename it to `dest`, which must not exist (nothing is overwritten)."""
    target = require_new_file(dest, flag)
    handle, staging = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    os.close(handle)
    try:
        write(Path(staging))
        open_modes(Path(staging))
        os.replace(staging, target)
    finally:
        Path(staging).unlink(missing_ok=True)
    return target
