"""The run's TensorBoard events: one file in logs/, the final evaluation included, no local path or host name."""

from __future__ import annotations

from pathlib import Path

from hftoolkit.checkpoint.portable import portable_text


def tensorboard_callback(log_dir: Path):
    """One TensorBoard event file in the run's logs/ for the whole run, the final evaluation included.

    transformers' callback closes its writer when training ends; the final `evaluate()` then opened a new one
    under the Trainer's default folder (checkpoints/runs/DATE_HOST/), so that evaluation missed logs/. Here the
    writer stays open until `close()`, after the final evaluation. The logs are published with the checkpoint,
    so the texts it logs (arguments, model config) show no local path and the file name no host name."""
    import socket

    from torch.utils.tensorboard import SummaryWriter
    from transformers.integrations import TensorBoardCallback

    class RunTensorBoard(TensorBoardCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            add_text = self.tb_writer.add_text
            self.tb_writer.add_text = lambda tag, text, *a, **k: add_text(
                tag, portable_text(text, log_dir.parent) if isinstance(text, str) else text, *a, **k)
            super().on_train_begin(args, state, control, **kwargs)

        def on_train_end(self, args, state, control, **kwargs):
            if self.tb_writer is not None:
                self.tb_writer.flush()

        def close(self):
            if self.tb_writer is not None:
                self.tb_writer.close()
                self.tb_writer = None
                host = f".{socket.gethostname()}."
                for event_file in log_dir.glob(f"events.out.tfevents.*{host}*"):
                    event_file.rename(event_file.with_name(event_file.name.replace(host, ".hftoolkit.")))

    return RunTensorBoard(tb_writer=SummaryWriter(log_dir=str(log_dir)))
