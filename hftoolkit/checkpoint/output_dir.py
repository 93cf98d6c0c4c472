"""Guard the output folder: a finished run is never overwritten by accident."""

from __future__ import annotations

from pathlib import Path

from hftoolkit.errors import UserError

FINISHED_MARKER = "metrics.json"  # written last, so its presence means the run finished
TRAINER_DIR = "checkpoints"  # resumable Trainer checkpoints live here


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
        return out
    if resume:
        if last_trainer_checkpoint(out) is None:
            raise UserError(f"--resume: '{path}' has no checkpoint under {TRAINER_DIR}/; "
                            "use --overwrite to start again there")
        return out
    if (out / FINISHED_MARKER).is_file():
        raise UserError(f"output dir '{path}' holds a finished run; pass --overwrite to replace it, "
                        "--resume to continue it, or choose another --output-dir")
    raise UserError(f"output dir '{path}' is not empty; pass --resume to continue an interrupted run, "
                    "--overwrite to replace it, or choose another --output-dir")


def last_trainer_checkpoint(out: Path) -> str | None:
    steps = [(int(p.name.split("-")[-1]), p) for p in (out / TRAINER_DIR).glob("checkpoint-*")
             if p.name.split("-")[-1].isdigit() and (p / "trainer_state.json").is_file()]
    return str(max(steps)[1]) if steps else None
