"""Several processes, one run: the same recipe under torchrun or `accelerate launch` (or `train --nproc N`).

accelerate's PartialState reads the launcher's environment (RANK, WORLD_SIZE, ...)
and joins the process group (gloo on CPU); a plain single process is world size 1
and nothing changes. Rank 0 does everything that writes: index, preprocessing
cache, checkpoint folder, logs, card, push. The other ranks wait for it and then
read what it wrote, so the corpus is tokenised once, not N times.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
from contextlib import contextmanager

from hftoolkit.errors import UserError


def _state():
    import torch
    from accelerate import PartialState

    return PartialState(cpu=not torch.cuda.is_available())  # as TrainingArguments(use_cpu=...) will ask


def world_size() -> int:
    return _state().num_processes if "WORLD_SIZE" in os.environ else 1


def rank() -> int:
    return _state().process_index if "WORLD_SIZE" in os.environ else 0


def is_main() -> bool:
    return "WORLD_SIZE" not in os.environ or _state().is_main_process


def wait_for_everyone() -> None:
    if world_size() > 1:
        _state().wait_for_everyone()


@contextmanager
def main_first():
    """Rank 0 runs the block first (and fills caches); the others run it after, as cache hits."""
    if world_size() == 1:
        yield
        return
    with _state().main_process_first():
        yield


def finish() -> None:
    """End of a multi-process job: wait for every rank, then leave the process group. A rank that exits with
    the group still open can die in gloo's teardown ("terminate called without an active exception"), and
    torchrun then fails the whole job after it has finished."""
    if world_size() > 1:
        import torch.distributed as dist

        wait_for_everyone()
        if dist.is_initialized():
            dist.destroy_process_group()


def rank0_flag(flag: bool) -> bool:
    """Rank 0's value of a flag that each process measured for itself (a timing), so all make one choice."""
    if world_size() == 1:
        return flag
    import torch
    import torch.distributed as dist

    value = torch.tensor([int(flag)])
    dist.broadcast(value, src=0)
    return bool(value.item())


def global_batch(batch: int, field: str) -> int:
    """The recipe's batch is global: N processes take batch / N of each one, so 1 or N processes follow the
    same optimisation trajectory. It must divide evenly."""
    processes = world_size()
    if batch % processes:
        raise UserError(f"{field}: {batch} is the global batch and must divide evenly among {processes} "
                        f"processes; use a multiple of {processes}")
    return batch


def all_reduce_sum(values: list[float]) -> list[float]:
    """Element-wise sums over all ranks (values unchanged in one process)."""
    if world_size() == 1:
        return values
    import torch
    import torch.distributed as dist

    tensor = torch.tensor(values, dtype=torch.float64)
    dist.all_reduce(tensor)
    return tensor.tolist()


def launch(argv: list[str], nproc: int) -> int:
    """`hftoolkit train ... --nproc N`: the same command under torchrun, CPU threads split between the ranks.
    torchrun stops every rank when one fails, so a crash ends the whole job instead of hanging it."""
    if nproc < 1:
        raise UserError(f"--nproc: {nproc} must be at least 1")
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc)))
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
               "--monitor_interval=1", "-m", "hftoolkit", *argv]
    done = subprocess.run(command, env=env)
    if done.returncode != 0:
        print(f"hftoolkit: error: --nproc {nproc}: a training process failed (exit status {done.returncode}); "
              "torchrun stopped the others. The failing rank's message is above", file=sys.stderr)
    return done.returncode


def check_full_weights(folder, model) -> None:
    """After the final save: the safetensors must hold every parameter. Sharded FSDP or ZeRO-3 saves without
    gathering write a few placeholder tensors (transformers#30491, DeepSpeed#3841); fail loudly instead."""
    from pathlib import Path

    from safetensors import safe_open

    saved = 0
    for file in sorted(Path(folder).glob("*.safetensors")):
        with safe_open(str(file), framework="pt") as tensors:
            saved += sum(math.prod(tensors.get_slice(name).get_shape()) for name in tensors.keys())
    expected = sum(p.numel() for p in model.parameters())
    if saved < expected:
        raise UserError(f"the checkpoint in '{folder}' holds {saved:,} of the model's {expected:,} parameters: the "
                        "save is incomplete (sharded state dict or ZeRO-3 without 16-bit gathering); save a full "
                        "state dict")

