"""The machine a benchmark ran on: CPU model, its bf16/AMX flags, and measured matmul ceilings.

Ratios within one run are the claims; the ceilings turn throughput into model FLOPs
utilisation (MFU) against what this CPU's matmul reaches in each precision.
"""

from __future__ import annotations


FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")


def cpu_info() -> dict:
    model, flags = "unknown CPU", set()
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name") and model == "unknown CPU":
                model = line.split(":", 1)[1].strip()
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    import os

    return {"model": model, "flags": [f for f in FLAGS if f in flags], "cores": os.cpu_count()}


def cpu_line() -> str:
    info = cpu_info()
    return f"{info['model']}; {info['cores']} cores; flags: {' '.join(info['flags']) or 'none of avx2/avx512/amx'}"


def matmul_gflops(dtype_name: str, size: int = 2048, repeats: int = 5) -> float:
    """Median GFLOP/s of a size x size matmul (2·size³ FLOPs) in float32 or bfloat16."""
    from hftoolkit.train.precision import matmul_seconds

    return 2 * size ** 3 / matmul_seconds(dtype_name, size, repeats) / 1e9


def machine() -> dict:
    from hftoolkit.train.precision import auto_precision, cpu_has_bf16_instructions

    info = cpu_info()
    # without bf16 instructions one 2048² bf16 matmul took 86 s (0.2 GFLOP/s): 512² tells the same in a second
    info["bf16_matmul_size"] = 2048 if cpu_has_bf16_instructions() else 512
    info["matmul_gflops"] = {"float32": round(matmul_gflops("float32"), 1),
                             "bfloat16": round(matmul_gflops("bfloat16", info["bf16_matmul_size"]), 1)}
    info["auto_precision"], why = auto_precision()
    info["case"] = f"precision auto trains in {info['auto_precision']}: {why}"
    return info


def flops_per_token(parameters: int, layers: int, hidden: int, sequence: int, trainable: int | None = None) -> float:
    """Training FLOPs per token, as nanoGPT/PaLM count them: 6·N plus the attention term 12·L·H·T.

    With adapters (LoRA) frozen weights need no weight gradients: 4·N for the frozen part plus 6·N for the
    trainable part, so MFU is not inflated by work that is never done.
    """
    attention = 12 * layers * hidden * sequence
    if trainable is None or trainable >= parameters:
        return 6 * parameters + attention
    return 4 * parameters + 2 * trainable + attention
