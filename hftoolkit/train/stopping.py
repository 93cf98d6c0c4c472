"""Runs that survive being killed: complete-checkpoint markers, and Ctrl-C/SIGTERM as save-and-stop.

The Trainer writes a checkpoint file by file; a SIGKILL in the middle leaves a
folder that looks like a checkpoint but is not one. Once a save has finished,
`SafeCheckpoints` writes `.complete` into it (by rename, so the marker itself is
never half-written) and only then removes older checkpoints, so a complete one
exists at every moment. `--resume` takes the newest complete checkpoint only.

SIGINT and SIGTERM do not kill the run: the current step finishes, a checkpoint
is saved, and training stops with a message that says how to resume. A second
Ctrl-C stops at once.
"""

from __future__ import annotations

import os
import shutil
import signal
import threading
from pathlib import Path

from transformers import TrainerCallback

from hftoolkit.checkpoint.output_dir import COMPLETE_MARKER, is_complete

SIGNAL_NAMES = {signal.SIGINT: "Ctrl-C (SIGINT)", signal.SIGTERM: "SIGTERM"}


class SafeCheckpoints(TrainerCallback):
    def __init__(self, keep: int = 2, final_save: bool = True):
        self.keep = keep
        self.final_save = final_save  # False: no checkpoint after the last step (the finished model is saved)
        self.stop_signal: int | None = None
        self._previous: dict = {}

    # -- signals ----------------------------------------------------------------------------------
    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for signum in SIGNAL_NAMES:
                self._previous[signum] = signal.signal(signum, self._on_signal)
        return self

    def __exit__(self, *exc) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()

    def _on_signal(self, signum, frame) -> None:
        if self.stop_signal is not None:  # asked twice: stop now, without a save
            raise KeyboardInterrupt
        self.stop_signal = signum
        print(f"\n{SIGNAL_NAMES[signum]}: finishing this step and saving a checkpoint; press Ctrl-C again to "
              "stop at once", flush=True)

    def on_step_end(self, args, state, control, **kwargs):
        if self.stop_signal is not None:
            control.should_save = True
            control.should_training_stop = True
        elif not self.final_save and state.global_step >= state.max_steps and not args.load_best_model_at_end:
            control.should_save = False  # the Trainer saves after the last step; the checkpoint folder follows
        return control

    # -- checkpoints ------------------------------------------------------------------------------
    def on_save(self, args, state, control, **kwargs):
        root = Path(args.output_dir)
        folder = root / f"checkpoint-{state.global_step}"
        if args.should_save and folder.is_dir():
            staging = folder / f"{COMPLETE_MARKER}.tmp"
            staging.write_text(str(state.global_step))
            os.replace(staging, folder / COMPLETE_MARKER)
            self._rotate(root, state.best_model_checkpoint)
        return control

    @staticmethod
    def remove_all(root: Path) -> None:
        """Drop every checkpoint of a finished run (the run marker beside them stays)."""
        for folder in root.glob("checkpoint-*"):
            shutil.rmtree(folder, ignore_errors=True)

    def _rotate(self, root: Path, best: str | None) -> None:
        """Keep the newest `keep` complete checkpoints (and the best one); drop the rest and any
        half-written folder an earlier kill left behind."""
        folders = sorted((int(p.name.split("-")[-1]), p) for p in root.glob("checkpoint-*")
                         if p.name.split("-")[-1].isdigit())
        complete = [p for _, p in folders if is_complete(p)]
        keep = set(complete[-self.keep:]) | ({Path(best)} if best else set())
        for _, folder in folders:
            if folder not in keep:
                shutil.rmtree(folder, ignore_errors=True)
