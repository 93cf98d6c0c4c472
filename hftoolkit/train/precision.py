"""Precision `auto`: bf16 only where this machine's bf16 matmuls are measurably faster than fp32.

CPU flags alone cannot decide. With AMX a bf16 matmul runs several times faster than fp32; on an AVX2-only
CPU it ran ~100x slower; and on an AVX-512 BF16 CPU without AMX it ran at 0.6x fp32, which made a SmolLM2
training step under bf16 autocast 1.5x slower. So a CPU with bf16 instructions gets a short matmul probe.
"""

from __future__ import annotations

import functools
import statistics
import time

from hftoolkit.train.distributed import rank0_flag

# bf16 must beat fp32 by this much: autocast adds casts and keeps some operations in fp32
BF16_MIN_SPEEDUP = 1.25
PROBE_SIZE = 1024


def matmul_seconds(dtype_name: str, size: int = PROBE_SIZE, repeats: int = 5) -> float:
    """Median seconds of one size x size matmul in float32 or bfloat16, after a warm-up (a CPU without bf16
    units can take seconds per call: then one more call is enough)."""
    import torch

    dtype = getattr(torch, dtype_name)
    a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
    started = time.perf_counter()
    a @ b
    if time.perf_counter() - started > 1.0:
        repeats = 1
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def cpu_has_bf16_instructions() -> bool:
    import torch

    return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())


def prefer_bf16(fp32_seconds: float, bf16_seconds: float) -> bool:
    return fp32_seconds / bf16_seconds >= BF16_MIN_SPEEDUP


@functools.cache
def auto_precision() -> tuple[str, str]:
    """(precision, why) for this machine; measured once per process."""
    import torch

    if torch.cuda.is_available():
        if torch.cuda.is_bf16_supported():
            return "bf16", "the GPU supports bf16"
        return "fp32", "the GPU has no bf16"
    if not cpu_has_bf16_instructions():
        return "fp32", "this CPU has no bf16 instructions (AVX-512 BF16 or AMX)"
    fp32, bf16 = matmul_seconds("float32"), matmul_seconds("bfloat16")
    ratio = f"a bf16 matmul runs at {fp32 / bf16:.2f}x fp32 speed on this CPU"
    return ("bf16", ratio) if prefer_bf16(fp32, bf16) else ("fp32", ratio)


def resolve_precision(choice: str) -> tuple[str, str]:
    """(precision, why). Several processes all take rank 0's measurement, so they train alike."""
    if choice != "auto":
        return choice, "set in the recipe"

    precision, why = auto_precision()
    agreed = "bf16" if rank0_flag(precision == "bf16") else "fp32"
    return agreed, why if agreed == precision else "as measured by rank 0"


def fp32_forward(model):
    """The model's own forward, past the autocast that accelerate wraps around it in a bf16 run: the one-time
    checks call it under `torch.autocast(enabled=False)` to compare in fp32."""
    return getattr(model, "_original_forward", None) or model
