"""A streamed run's data position in every checkpoint, so `--resume` goes on from it without replaying data.

Each process writes its own `data-state-rank{N}.json` into the checkpoint folder, then all wait for each other
before `SafeCheckpoints` marks the folder complete: a complete checkpoint always holds every rank's position.
The Trainer's own resume would skip the consumed batches by reading them again (`ignore_data_skip` turns that
off for streamed runs); `train.run` restores the stream from the state instead (`data.stream_position`).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from transformers import TrainerCallback

from hftoolkit.data.stream_position import STATE_FILE
from hftoolkit.train import distributed


class StreamPositions(TrainerCallback):
    def __init__(self, dataset):
        self.dataset = dataset

    def on_save(self, args, state, control, **kwargs):
        folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        folder.mkdir(parents=True, exist_ok=True)
        target = folder / STATE_FILE.format(rank=self.dataset.rank)
        staging = target.with_suffix(".json.tmp")
        staging.write_text(json.dumps(self.dataset.state_dict()))
        os.replace(staging, target)
        distributed.wait_for_everyone()
        return control
