"""The matmul ceiling of a model's own shapes: the most MFU a training step of it can reach on this CPU.

MFU is quoted against a 2048² matmul, but a training step multiplies the model's shapes: for SmolLM2-135M
a 2048 x 576 activation by a 576 x 576 weight, its transpose for the input gradient, and 576 x 2048 by
2048 x 576 for the weight gradient. Smaller inner dimensions run below the square's rate, so this times
every weight matmul of one step (forward, input gradient, weight gradient; each distinct shape once, then
counted as often as the model has it) plus the attention products, and reports their FLOP/s.

    python -m benchmarks.model_matmuls [MODEL] [--batch 8] [--sequence 256] [--dtype float32]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections import Counter


def weight_shapes(config) -> Counter:
    """(in_features, out_features) -> how many weight matrices of that shape the model has."""
    import torch
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    shapes = Counter()
    for module in model.modules():
        weight = getattr(module, "weight", None)
        if weight is None or weight.dim() != 2 or isinstance(module, torch.nn.Embedding):
            continue
        # nn.Linear stores (out, in); GPT-2's Conv1D stores (in, out)
        shape = tuple(weight.shape) if type(module).__name__ == "Conv1D" else tuple(weight.shape)[::-1]
        shapes[shape] += 1
    if not any(isinstance(m, torch.nn.Linear) and m.out_features == config.vocab_size for m in model.modules()):
        shapes[(config.hidden_size, config.vocab_size)] += 1  # a tied output layer reuses the embedding
    return shapes


def _seconds(run, repeats: int) -> float:
    run()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def step_matmuls(config, batch: int, sequence: int, dtype_name: str = "float32", repeats: int = 3) -> dict:
    """Seconds and FLOPs of one training step's matmuls, and their GFLOP/s."""
    import torch

    dtype, tokens = getattr(torch, dtype_name), batch * sequence
    seconds = flops = 0.0
    for (inner, outer), count in weight_shapes(config).items():
        x, w = torch.randn(tokens, inner, dtype=dtype), torch.randn(inner, outer, dtype=dtype)
        g = torch.randn(tokens, outer, dtype=dtype)
        for run in (lambda: x @ w, lambda: g @ w.T, lambda: x.T @ g):  # forward, input grad, weight grad
            seconds += count * _seconds(run, repeats)
            flops += count * 2 * tokens * inner * outer
    heads = config.num_attention_heads
    head_dim = config.hidden_size // heads
    q = torch.randn(batch * heads, sequence, head_dim, dtype=dtype)
    p = torch.randn(batch * heads, sequence, sequence, dtype=dtype)
    for run in (lambda: q @ q.transpose(1, 2), lambda: p @ q):  # scores and weighted values; x3 with backward
        seconds += 3 * config.num_hidden_layers * _seconds(run, repeats)
        flops += 3 * config.num_hidden_layers * 2 * batch * heads * sequence * sequence * head_dim
    return {"seconds": seconds, "gflop": flops / 1e9, "gflops": flops / seconds / 1e9}


def main() -> None:
    from transformers import AutoConfig

    from benchmarks.machine import cpu_line, matmul_gflops
    from hftoolkit.models.load import resolve_model_path

    parser = argparse.ArgumentParser(prog="python -m benchmarks.model_matmuls")
    parser.add_argument("model", nargs="?", default="smollm2-135m-instruct")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--sequence", type=int, default=256)
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    args = parser.parse_args()
    config = AutoConfig.from_pretrained(str(resolve_model_path(args.model, lambda m: None)))
    square = matmul_gflops(args.dtype)
    shapes = step_matmuls(config, args.batch, args.sequence, args.dtype)
    print(f"# {cpu_line()}")
    print(f"{args.model}, {args.batch} x {args.sequence} tokens, {args.dtype}: one step's matmuls "
          f"{shapes['gflop']:.0f} GFLOP in {shapes['seconds']:.2f} s = {shapes['gflops']:.0f} GFLOP/s; "
          f"2048² matmul {square:.0f} GFLOP/s; the model's shapes reach {shapes['gflops'] / square:.0%} of it")


if __name__ == "__main__":
    main()
