"""Which files of a checkpoint folder go to a hub, and sending them: a run folder sends what the run wrote."""

from __future__ import annotations

from pathlib import Path

from hftoolkit import defaults
from hftoolkit.checkpoint.output_dir import TRAINER_DIR, is_ours, written_by_us
from hftoolkit.errors import UserError
from hftoolkit.hub.share import PUSH_RECORD, push_files
from hftoolkit.safe_write import STAGING


def push_checkpoint(folder: str, repo_id: str, private: bool = False, revision: str = defaults.REVISION,
                    commit_message: str | None = None, endpoint: str | None = None,
                    include_training_state: bool = False, prune: bool = False, log=print) -> dict:
    """Upload a checkpoint folder as one commit (see `hub.share.push_files`); from a run folder only the files
    the run wrote, with resumable training state only on request."""
    source = Path(folder)
    if not (source / "config.json").is_file() or not list(source.glob("*.safetensors")):
        raise UserError(f"CHECKPOINT: '{folder}' is not a checkpoint folder (config.json and *.safetensors); "
                        "give a folder written by `hftoolkit train`")
    files, unsent = files_to_publish(source, include_training_state)
    if unsent:
        log(f"push: not sending {len(unsent)} files hftoolkit did not write in {source.name} "
            f"({', '.join(unsent[:5])}{' ...' if len(unsent) > 5 else ''}); upload them yourself if you mean to")
    return push_files(source, files, repo_id, private=private, revision=revision, commit_message=commit_message,
                      endpoint=endpoint, prune=prune, log=log)


def files_to_publish(source: Path, include_training_state: bool) -> tuple[list[str], list[str]]:
    """(files to send, files left out): a run folder sends what the run wrote, never a note or notebook the user
    saved beside it; any other folder (a merge, a conversion) is sent whole. Resumable state only on request."""
    every = [p for p in source.rglob("*") if p.is_file() and p.name != PUSH_RECORD
             and p.relative_to(source).parts[0] != STAGING]  # a save that crashed half-way
    ours = set(written_by_us(source)[0]) if is_ours(source) else set(every)
    state = [p for p in every if p.relative_to(source).parts[0] == TRAINER_DIR]
    chosen = [p for p in every if p in ours and p not in state or include_training_state and p in state
              and not p.name.startswith(".hftoolkit")]
    unsent = [p for p in every if p not in ours and p not in state]
    return ([p.relative_to(source).as_posix() for p in sorted(chosen)],
            [p.relative_to(source).as_posix() for p in sorted(unsent)])
