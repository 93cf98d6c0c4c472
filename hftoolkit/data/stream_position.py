"""Where a streamed run's position lives in a checkpoint: one JSON file per process, read back on --resume.

Kept apart from the Trainer callback that writes it (`train.stream_state`) so that `--resume` can refuse a
different process count before anything heavy loads."""

from __future__ import annotations

import json
from pathlib import Path

from hftoolkit.errors import UserError

STATE_FILE = "data-state-rank{rank}.json"


def read_position(checkpoint: Path, rank: int, world: int) -> dict:
    """The saved stream state of process `rank`, checked against this run's process count."""
    path = Path(checkpoint) / STATE_FILE.format(rank=rank)
    if not path.is_file():
        raise UserError(f"--resume: {checkpoint} holds no streamed data position for process {rank} ({path.name}); "
                        "it was saved by a run that did not stream, or by fewer processes: resume with the recipe "
                        "and process count it started with")
    state = json.loads(path.read_text())
    if state["world"] != world:
        raise UserError(f"--resume: the stream was split among {state['world']} processes and this run has {world}; "
                        f"resume with --nproc {state['world']}")
    return state
