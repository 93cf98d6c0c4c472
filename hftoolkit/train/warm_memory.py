"""Touch the memory a CPU training run is about to need while its data and model load, not in its first steps.

Memory a process writes for the first time costs a page fault per 4 KiB, and on the virtual machines measured here
several times more when the host has taken it back (`benchmarks.memory_touch`). A training step needs gigabytes
at once (gradients, AdamW's two moments, bf16 copies of the weights, activations, logits), so on a 2-core Xeon
with AMX the first two steps of a SmolLM2 full fine-tune took 6-9 s and 6 s against 3.4 s for the later ones,
most of it in the kernel (docs/performance.md). Two things make the first step a steady one:

- a background thread asks the allocator for the estimated need, writes every page and frees it again while the
  main thread loads data and model; tcmalloc then hands those pages to the training tensors. This pays only where
  the allocator keeps what is freed: tcmalloc with TCMALLOC_RELEASE_RATE=0, as `hftoolkit train` runs
  (`allocator.py`); elsewhere nothing is started;
- transformers maps a safetensors file's weights into memory as they lie in the file (a private file mapping),
  so the first optimizer step writes every trainable weight and the kernel copies each page there and then.
  `WarmUp.finish` copies them once, into the warmed memory, before the first step.

The estimate errs low for fp32 runs and high for short QA examples (it counts every row at block_size); pages it
warms past the run's need stay with the process until it exits, at most half of the memory available.
"""

from __future__ import annotations

import ctypes
import json
import os
import threading
import time
from pathlib import Path

from hftoolkit.allocator import keeps_freed_memory
from hftoolkit.models.registry import known_model, pulled_folder

CHUNK = 64 << 20  # bytes asked for at a time
SHARE_OF_AVAILABLE = 0.5  # never warm more than this share of the memory available at the start
ACTIVATION_BYTES_PER_WIDTH = {"full": 24, "lora": 8}  # saved for the backward, per token, layer and hidden unit
LOGIT_BYTES = 10  # per text position and vocabulary entry: bf16 logits, their fp32 copy and its gradient


def model_config(recipe) -> dict | None:
    """config.json of the recipe's pretrained model when it is already on this machine, read without loading
    anything heavy; None for models built from scratch, hub ids and models not pulled yet."""
    if recipe.model.from_scratch is not None:
        return None
    folder = Path(recipe.model.name).expanduser()
    if not folder.is_dir():
        known = known_model(recipe.model.name)
        folder = pulled_folder(known) if known else None
    if folder is None or not (folder / "config.json").is_file():
        return None
    try:
        return json.loads((folder / "config.json").read_text())
    except (OSError, ValueError):
        return None


def needed_bytes(config: dict, recipe) -> int:
    """What one process's training steps will allocate beyond the loaded model, estimated from the model's shape
    and the recipe: the trainable weights' own copy, gradients and AdamW's two moments (16 bytes per trainable
    weight), bf16 weight copies, activations of one micro-batch and, for text, its logits. 0 when the config
    lacks a shape it needs."""
    text = config.get("text_config") or {}  # multimodal configs nest the language model's
    shape = {**text, **config}
    width = shape.get("hidden_size") or shape.get("n_embd") or shape.get("d_model")
    layers = shape.get("num_hidden_layers") or shape.get("n_layer")
    vocab = shape.get("vocab_size")
    if not (width and layers and vocab):
        return 0
    inner = shape.get("intermediate_size") or shape.get("n_inner") or 4 * width
    weights = vocab * width + layers * (4 * width * width + 3 * width * inner)  # an upper bound (no grouped heads)
    lora = recipe.training.lora.enabled
    trainable = 0 if lora else weights
    bf16_copies = 0 if recipe.training.precision == "fp32" else 2 * weights
    tokens = recipe.training.batch_size * recipe.preprocess.block_size
    activations = tokens * layers * width * ACTIVATION_BYTES_PER_WIDTH["lora" if lora else "full"]
    logits = tokens * vocab * LOGIT_BYTES if recipe.data.format == "text" else 0
    return 16 * trainable + bf16_copies + activations + logits


def available_bytes() -> int:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


class WarmUp:
    """Pages written on a background thread, then freed to the allocator for the training tensors."""

    def __init__(self, size: int):
        self.size, self.seconds = size, None
        self._thread = threading.Thread(target=self._touch, name="hftoolkit-warm-memory", daemon=True)
        self._thread.start()

    def _touch(self) -> None:
        libc = ctypes.CDLL(None)  # malloc as the process resolves it: tcmalloc's, preloaded
        libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
        libc.free.argtypes = [ctypes.c_void_p]
        started, blocks = time.perf_counter(), []
        try:
            for _ in range(-(-self.size // CHUNK)):
                block = libc.malloc(CHUNK)
                if not block:
                    break
                ctypes.memset(block, 0, CHUNK)  # ctypes lets go of the GIL: loading goes on meanwhile
                blocks.append(block)
        finally:
            for block in blocks:
                libc.free(block)
        self.seconds = time.perf_counter() - started

    def finish(self, model) -> int:
        """Wait for the pages, then copy the trainable weights that still lie in a file mapping into them;
        returns the bytes copied."""
        self._thread.join()
        return own_trainable_weights(model)


def file_mappings() -> list[tuple[int, int]]:
    """Address ranges of this process's file-backed mappings."""
    ranges = []
    try:
        with open("/proc/self/maps") as maps:
            for line in maps:
                fields = line.split()
                if len(fields) >= 6 and fields[5].startswith("/"):
                    start, end = (int(address, 16) for address in fields[0].split("-"))
                    ranges.append((start, end))
    except OSError:
        pass
    return ranges


def own_trainable_weights(model) -> int:
    """Copy each trainable parameter that lies in a file mapping into the process's own memory, so the first
    optimizer step does not copy it a page at a time. Returns the bytes copied."""
    import torch  # heavy: called once the model is loaded

    ranges, copied = file_mappings(), 0
    with torch.no_grad():
        for parameter in model.parameters():
            address = parameter.data_ptr()
            if parameter.requires_grad and any(start <= address < end for start, end in ranges):
                parameter.data = parameter.data.clone()
                copied += parameter.numel() * parameter.element_size()
    return copied


def start(recipe, log) -> WarmUp | None:
    """A WarmUp sized for this run, or None where it would not pay (no allocator that keeps freed memory, a GPU,
    several processes, a model whose shape is not known yet)."""
    if not keeps_freed_memory() or Path("/dev/nvidiactl").exists() or int(os.environ.get("WORLD_SIZE", "1")) > 1:
        return None
    config = model_config(recipe)
    size = min(needed_bytes(config, recipe), int(available_bytes() * SHARE_OF_AVAILABLE)) if config else 0
    if size < CHUNK:
        return None
    log(f"memory: writing {size / 1e9:.1f} GB in the background for the first training steps")
    return WarmUp(size)
