"""Touch the memory a CPU training run is about to need while its data and model load, not in its first steps.

Memory a process writes for the first time costs a page fault per 4 KiB, and on the virtual machines measured here
several times more when the host has taken it back (`benchmarks.memory_touch`). A training step needs gigabytes
at once (gradients, AdamW's two moments, bf16 copies of the weights, activations, logits), so on a 2-core Xeon
with AMX the first two steps of a SmolLM2 full fine-tune took 6-9 s and 6 s against 3.4 s for the later ones,
most of it in the kernel (docs/performance.md). Two things take most of that out of the first step:

- a background thread asks the allocator for the estimated need, writes every page and frees it again while the
  main thread loads data and model, and stops where training is ready to start (writing ahead is only cheaper
  than faulting in the step where it overlaps with loading: memory new to the process took 1.4 s per GB on one
  thread here); tcmalloc then hands those pages to the training tensors. This pays only where the allocator
  keeps what is freed: tcmalloc with TCMALLOC_RELEASE_RATE=0, as `hftoolkit train` runs (`allocator.py`);
  elsewhere nothing is started;
- transformers maps a safetensors file's weights into memory as they lie in the file (a private file mapping),
  so the first optimizer step writes every trainable weight and the kernel copies each page there and then.
  `WarmUp.finish` copies them once, into the warmed memory, before the first step.

The estimate errs low for fp32 runs (activations in fp32) and high for runs with gradient checkpointing; pages
written past the run's need stay with the process until it exits, at most half of the memory available.
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
LOGIT_BYTES = 14  # per text position and vocabulary entry: bf16 logits, fp32 copy, log-softmax, gradient


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


def model_shape(config: dict) -> dict | None:
    """width, layers, vocab and inner width from a config.json, under GPT-2's names too; None when one is missing."""
    shape = {**(config.get("text_config") or {}), **config}  # multimodal configs nest the language model's
    width = shape.get("hidden_size") or shape.get("n_embd") or shape.get("d_model")
    layers = shape.get("num_hidden_layers") or shape.get("n_layer")
    vocab = shape.get("vocab_size")
    if not (width and layers and vocab):
        return None
    inner = shape.get("intermediate_size") or shape.get("n_inner") or 4 * width
    return {"width": width, "layers": layers, "vocab": vocab, "inner": inner}


def needed_bytes(config: dict, recipe, longest: int | None = None) -> int:
    """What one process's training steps will allocate beyond the loaded model, estimated from the model's shape
    and the recipe: the trainable weights' own copy, gradients and AdamW's two moments (16 bytes per trainable
    weight), bf16 weight copies, and a micro-batch's activations and, for text, logits. `longest`: the longest
    QA/chat row, once preprocessing has told (else block_size); 0 leaves the micro-batch out. 0 when the config
    lacks a shape it needs."""
    shape = model_shape(config)
    if shape is None:
        return 0
    width, layers, vocab = shape["width"], shape["layers"], shape["vocab"]
    weights = vocab * width + layers * (4 * width * width + 3 * width * shape["inner"])  # upper bound: no GQA
    lora = recipe.training.lora.enabled
    trainable = 0 if lora else weights
    bf16_copies = 0 if recipe.training.precision == "fp32" else 2 * weights
    tokens = recipe.training.batch_size * (recipe.preprocess.block_size if longest is None else longest)
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
    """Pages written on background threads, then freed to the allocator for the training tensors."""

    def __init__(self, size: int, config: dict | None = None):
        self.config, self.size, self.written, self.seconds, self._threads = config, 0, 0, 0.0, []
        self._stop = threading.Event()
        self.add(size)

    def add(self, size: int) -> None:
        """Write `size` bytes more, on a thread of their own (capped at the share of memory available now)."""
        size = min(size, int(available_bytes() * SHARE_OF_AVAILABLE)) // CHUNK * CHUNK  # whole chunks
        if size:
            self.size += size
            thread = threading.Thread(target=self._touch, args=(size,), name="hftoolkit-warm-memory", daemon=True)
            thread.start()
            self._threads.append(thread)

    def _touch(self, size: int) -> None:
        libc = ctypes.CDLL(None)  # malloc as the process resolves it: tcmalloc's, preloaded
        libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
        libc.free.argtypes = [ctypes.c_void_p]
        started, blocks = time.perf_counter(), []
        try:
            for _ in range(size // CHUNK):
                block = None if self._stop.is_set() else libc.malloc(CHUNK)
                if not block:
                    break
                ctypes.memset(block, 0, CHUNK)  # ctypes lets go of the GIL: loading goes on meanwhile
                blocks.append(block)
                self.written += CHUNK
        finally:
            for block in blocks:
                libc.free(block)
        self.seconds += time.perf_counter() - started

    def add_rows(self, recipe, longest: int | None) -> None:
        """QA/chat: the micro-batch's activations, now that preprocessing knows the longest row (rows are
        padded per batch, so block_size would count far more than most runs touch)."""
        if self.config is not None:
            self.add(needed_bytes(self.config, recipe, longest) - needed_bytes(self.config, recipe, 0))

    def wait(self) -> None:
        """Until every page asked for is written (and freed again)."""
        for thread in self._threads:
            thread.join()

    def finish(self, model) -> int:
        """Stop writing (training is ready: what is not written by now, its first step writes as before), free
        what was written, then copy the trainable weights that still lie in a file mapping into it; returns the
        bytes copied."""
        self._stop.set()
        self.wait()
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
    several processes, a model whose shape is not known yet, encoders). For QA/chat rows the micro-batch comes later
    (`WarmUp.add_rows`)."""
    if (not keeps_freed_memory() or recipe.model.task != "causal_lm" or Path("/dev/nvidiactl").exists()
            or int(os.environ.get("WORLD_SIZE", "1")) > 1):
        return None
    config = model_config(recipe)
    if config is None or model_shape(config) is None:
        return None
    warm = WarmUp(needed_bytes(config, recipe, None if recipe.data.format == "text" else 0), config)
    if warm.size:
        log(f"memory: writing {warm.size / 1e9:.1f} GB in the background for the first training steps")
    return warm
