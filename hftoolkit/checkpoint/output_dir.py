"""Guard the output folder: a finished run is never overwritten by accident, and a folder hftoolkit did not
create is never deleted (only folders carrying the run marker can be replaced with --overwrite)."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

from hftoolkit.errors import UserError

FINISHED_MARKER = "metrics.json"  # written last, so its presence means the run finished
TRAINER_DIR = "checkpoints"  # resumable Trainer checkpoints live here
RUN_MARKER = f"{TRAINER_DIR}/.hftoolkit_run"  # written before training writes anything: "this folder is ours"


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


def last_trainer_checkpoint(out: Path) -> str | None:
    """The newest checkpoint whose save finished (a kill mid-save leaves one without the marker)."""
    from hftoolkit.train.stopping import is_complete

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


def check_resume_matches(out: Path, recipe: dict, data_hash: str) -> None:
    """--resume continues a run only with the recipe and data it started with: anything else would
    silently mix two trainings in one checkpoint. Names what changed; --force skips this check."""
    try:
        started = json.loads((out / RUN_MARKER).read_text())
    except (OSError, ValueError):
        return  # a run from before the marker kept its recipe: nothing to compare
    changed = [key for key in _changed_keys(started.get("recipe"), recipe) if not key.startswith("output.")]
    if started.get("recipe") is not None and changed:
        shown = ", ".join(changed[:4]) + (f" and {len(changed) - 4} more" if len(changed) > 4 else "")
        raise UserError(f"--resume: the recipe changed since this run started ({shown}); undo the change, "
                        "start a new run with --overwrite, or pass --force to resume anyway")
    if started.get("data") is not None and started["data"] != data_hash:
        raise UserError("--resume: the training data changed since this run started; restore it, start a new run "
                        "with --overwrite, or pass --force to resume anyway")


def _changed_keys(before, after, prefix: str = "") -> list[str]:
    if isinstance(before, dict) and isinstance(after, dict):
        return [key for name in sorted(set(before) | set(after))
                for key in _changed_keys(before.get(name), after.get(name), f"{prefix}{name}.")]
    return [] if before == after else [prefix.rstrip(".")]


def clear_run(out: Path) -> None:
    """Delete an earlier run (for --overwrite); refuses any folder without the run marker."""
    if not is_ours(out):
        raise UserError(f"--overwrite: '{out}' holds files hftoolkit did not write (no {RUN_MARKER}); not deleting it")
    shutil.rmtree(out)


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
