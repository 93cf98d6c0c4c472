"""Guard the output folder: a finished run is never overwritten by accident, and nothing hftoolkit did not
write is ever deleted. Only folders carrying the run marker can be replaced with --overwrite, and then only
the files the run recorded in its manifest (next to the marker) go: a notebook or a note the user saved into
the run folder stays where it is."""

from __future__ import annotations

import fnmatch
import json
import shutil
import time
from pathlib import Path

from hftoolkit.errors import UserError

FINISHED_MARKER = "metrics.json"  # written last, so its presence means the run finished
TRAINER_DIR = "checkpoints"  # resumable Trainer checkpoints live here
RUN_MARKER = f"{TRAINER_DIR}/.hftoolkit_run"  # written before training writes anything: "this folder is ours"
MANIFEST = f"{TRAINER_DIR}/.hftoolkit_files"  # every file the run wrote, relative to the run folder
# written as training goes, by the Trainer (resumable state) and TensorBoard, so named by pattern
# (and our own staging, which a crash mid-save can leave behind)
LIBRARY_WRITTEN = (f"{TRAINER_DIR}/checkpoint-*", "logs/events.out.tfevents.*", ".staging", f"{MANIFEST}.tmp")
# a run from before the manifest: the names its checkpoint writer used (files at the top, adapter/ below)
LEGACY_WRITTEN = ("config.json", "generation_config.json", "*.safetensors", "model.safetensors.index.json",
                  "tokenizer*", "special_tokens_map.json", "added_tokens.json", "chat_template.jinja", "vocab.*",
                  "merges.txt", "spiece.model", "recipe.yaml", "README.md", "loss_curve.png", "trainer_log.json",
                  "metrics.json", "retrieval.json", "quickstart_results.json", "adapter/*", f"{TRAINER_DIR}/*")
COMPLETE_MARKER = ".complete"  # inside a Trainer checkpoint-N folder, written when its save finished


def check_output_dir(path: str, resume: bool, overwrite: bool) -> Path:
    """Check the folder's state against the flags. Changes nothing: with --overwrite the
    caller clears it only once the model and data have loaded."""
    out = Path(path)
    if out.exists() and not out.is_dir():
        raise UserError(f"output dir '{path}' is a file; choose a folder path with --output-dir")
    if not out.exists() or not any(out.iterdir()):
        if resume:
            raise UserError(f"--resume: '{path}' holds no run to resume; drop --resume to start fresh")
        return out
    if overwrite:
        if not is_ours(out):
            raise UserError(f"--overwrite: '{path}' holds files hftoolkit did not write (no {RUN_MARKER}), so it "
                            "is never deleted; choose another --output-dir, or empty the folder yourself")
        return out
    if resume:
        if last_trainer_checkpoint(out) is None:
            raise UserError(f"--resume: '{path}' has no complete checkpoint under {TRAINER_DIR}/ (the run stopped "
                            "before its first save finished); use --overwrite to start again there")
        return out
    if (out / FINISHED_MARKER).is_file():
        raise UserError(f"output dir '{path}' holds a finished run; pass --overwrite to replace it, "
                        "--resume to continue it, or choose another --output-dir")
    raise UserError(f"output dir '{path}' is not empty; pass --resume to continue an interrupted run, "
                    "--overwrite to replace it, or choose another --output-dir")


def is_complete(checkpoint: Path) -> bool:
    """A Trainer checkpoint whose save finished (SafeCheckpoints writes the marker last)."""
    return (checkpoint / COMPLETE_MARKER).is_file()


def last_trainer_checkpoint(out: Path) -> str | None:
    """The newest checkpoint whose save finished (a kill mid-save leaves one without the marker)."""
    steps = [(int(p.name.split("-")[-1]), p) for p in (out / TRAINER_DIR).glob("checkpoint-*")
             if p.name.split("-")[-1].isdigit() and is_complete(p)]
    return str(max(steps)[1]) if steps else None


def is_ours(out: Path) -> bool:
    return (out / RUN_MARKER).is_file()


def claim_output_dir(out: Path, recipe: dict | None = None, data_hash: str | None = None) -> None:
    """Mark the folder as an hftoolkit run before anything is written into it; the marker also keeps
    the recipe (secrets masked) and the data's content hash, which --resume checks against."""
    marker = out / RUN_MARKER
    marker.parent.mkdir(parents=True, exist_ok=True)
    if not marker.is_file():
        marker.write_text(json.dumps({"started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "recipe": recipe,
                                      "data": data_hash}))
    if _read_manifest(out) is None:
        record_written(out, [])


def check_resume_matches(out: Path, recipe: dict, data_hash: str | None) -> None:
    """--resume continues a run only with the recipe and data it started with: anything else would
    silently mix two trainings in one checkpoint. Names what changed; --force skips this check. `data_hash`
    None checks the recipe alone (before the data is read)."""
    try:
        started = json.loads((out / RUN_MARKER).read_text())
    except (OSError, ValueError):
        return  # a run from before the marker kept its recipe: nothing to compare
    changed = [key for key in _changed_keys(started.get("recipe"), recipe) if not key.startswith("output.")]
    if started.get("recipe") is not None and changed:
        shown = ", ".join(changed[:4]) + (f" and {len(changed) - 4} more" if len(changed) > 4 else "")
        raise UserError(f"--resume: the recipe changed since this run started ({shown}); undo the change, "
                        "start a new run with --overwrite, or pass --force to resume anyway")
    if data_hash is not None and started.get("data") is not None and started["data"] != data_hash:
        raise UserError("--resume: the training data changed since this run started; restore it, start a new run "
                        "with --overwrite, or pass --force to resume anyway")


def _changed_keys(before, after, prefix: str = "") -> list[str]:
    if isinstance(before, dict) and isinstance(after, dict):
        return [key for name in sorted(set(before) | set(after))
                for key in _changed_keys(before.get(name), after.get(name), f"{prefix}{name}.")]
    return [] if before == after else [prefix.rstrip(".")]


def record_written(out: Path, paths, staged_in: Path | None = None) -> None:
    """Add files (or folders: every file below them) to the run's manifest, so --overwrite can remove exactly
    them. `staged_in`: the paths lie in this staging folder now and will be moved to the same place in `out`."""
    manifest = out / MANIFEST
    recorded = set(_read_manifest(out) or [])
    for path in map(Path, paths):
        files = [p for p in path.rglob("*") if p.is_file()] if path.is_dir() else [path]
        recorded.update(p.relative_to(staged_in or out).as_posix() for p in files)
    manifest.parent.mkdir(parents=True, exist_ok=True)
    staged = manifest.with_name(manifest.name + ".tmp")
    staged.write_text(json.dumps(sorted(recorded), indent=0))
    staged.replace(manifest)


def _read_manifest(out: Path) -> list[str] | None:
    try:
        return json.loads((out / MANIFEST).read_text())
    except (OSError, ValueError):
        return None


def written_by_us(out: Path) -> tuple[list[Path], list[Path]]:
    """(the run's files, everything else) under `out`: the manifest and the library patterns decide."""
    recorded = _read_manifest(out)
    patterns = LIBRARY_WRITTEN if recorded is not None else LIBRARY_WRITTEN + LEGACY_WRITTEN
    recorded = set(recorded or []) | {RUN_MARKER, MANIFEST}
    ours, theirs = [], []
    for path in sorted(p for p in out.rglob("*") if p.is_file() or p.is_symlink()):
        relative = path.relative_to(out).as_posix()
        prefixes = ["/".join(relative.split("/")[:n]) for n in range(1, relative.count("/") + 2)]
        mine = relative in recorded or any(fnmatch.fnmatchcase(prefix, pattern) for pattern in patterns
                                           for prefix in prefixes)
        (ours if mine else theirs).append(path)
    return ours, theirs


def clear_run(out: Path, log=print) -> list[str]:
    """Delete an earlier run's files (for --overwrite), keep everything else and name it in one line.
    Refuses any folder without the run marker. Returns the kept paths, relative to `out`."""
    if not is_ours(out):
        raise UserError(f"--overwrite: '{out}' holds files hftoolkit did not write (no {RUN_MARKER}); not deleting it")
    ours, theirs = written_by_us(out)
    emptied = set()
    for path in ours:
        path.unlink()
        emptied.update(parent for parent in path.parents if out in parent.parents)
    for folder in sorted(emptied, key=lambda p: len(p.parts), reverse=True):
        if not any(folder.iterdir()):
            folder.rmdir()  # only folders our files left empty: an empty folder of the user's stays
    kept = [p.relative_to(out).as_posix() for p in theirs]
    if kept:
        shown = ", ".join(kept[:5]) + (f" and {len(kept) - 5} more" if len(kept) > 5 else "")
        log(f"--overwrite: removed the earlier run's {len(ours)} files; kept {len(kept)} that hftoolkit did not "
            f"write: {shown}")
    return kept


def check_disk_space(out: Path, model, resumable_copies: int = 2) -> None:
    """Fail before training, not hours later at a save: the final weights plus `resumable_copies` Trainer
    checkpoints (weights and two AdamW moments each) must fit on the output folder's disk."""
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    needed = weights * (1 + 3 * resumable_copies) + (64 << 20)
    free = shutil.disk_usage(out if out.exists() else out.parent).free
    if free < needed:
        raise UserError(f"not enough disk space for '{out}': {free / 1e9:.2f} GB free, about {needed / 1e9:.2f} GB "
                        "needed for the checkpoint and resumable state; free some space or choose another "
                        "--output-dir")
