"""Precision `auto` follows what this machine's matmuls measure, not CPU flags alone."""

import re

from hftoolkit.train.precision import (BF16_MIN_SPEEDUP, auto_precision, cpu_has_bf16_instructions,
                                       matmul_seconds, prefer_bf16, resolve_precision)


def test_bf16_only_when_clearly_faster():
    assert prefer_bf16(fp32_seconds=1.0, bf16_seconds=0.5)          # 2x: AMX-like
    assert not prefer_bf16(fp32_seconds=1.0, bf16_seconds=0.9)      # 1.11x: autocast overhead eats it
    assert not prefer_bf16(fp32_seconds=0.6, bf16_seconds=1.0)      # AVX-512 BF16 without AMX, measured 0.6x
    assert prefer_bf16(fp32_seconds=BF16_MIN_SPEEDUP, bf16_seconds=1.0)


def test_explicit_precision_is_kept():
    assert resolve_precision("fp32") == ("fp32", "set in the recipe")
    assert resolve_precision("bf16") == ("bf16", "set in the recipe")


def test_auto_matches_an_independent_measurement_on_this_cpu():
    """The choice agrees with a matmul timed here, independently of the probe: on every CPU, including one
    without bf16 instructions (where `auto` skips its probe), unless the measured ratio sits within 25% of the
    threshold, where either answer is defensible and timing noise decides."""
    import torch

    precision, why = auto_precision.__wrapped__()  # measure afresh, not the per-process cached answer
    if torch.cuda.is_available():
        assert precision == ("bf16" if torch.cuda.is_bf16_supported() else "fp32")
        return
    size = 2048 if cpu_has_bf16_instructions() else 256  # a 2048^2 bf16 matmul took 86 s on an AVX2-only CPU
    independent = matmul_seconds("float32", size, 3) / matmul_seconds("bfloat16", size, 3)
    if not cpu_has_bf16_instructions():
        assert why == "this CPU has no bf16 instructions (AVX-512 BF16 or AMX)", why
    else:
        probed = float(re.search(r"runs at ([0-9.]+)x fp32", why).group(1))
        assert precision == ("bf16" if probed >= BF16_MIN_SPEEDUP else "fp32")
    ambiguous = BF16_MIN_SPEEDUP / 1.25 < independent < BF16_MIN_SPEEDUP * 1.25
    assert ambiguous or precision == ("bf16" if independent >= BF16_MIN_SPEEDUP else "fp32"), (why, independent)
