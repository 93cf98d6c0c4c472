"""How fast one decode step's linear layers read their weights, per precision and layer kind.

Decoding one answer multiplies a single row by every weight matrix, so its linear layers can go no faster than
the weights can be read. This times the linear layers of one decode token at a model's own shapes (random
weights, one row) in fp32, bf16 with torch's `nn.Linear` and `torch.mv`, and bf16 with hftoolkit's `PackedLinear`
(each matrix alone, and as generation packs them: siblings that read the same input joined into one weight), and
sets the bytes each reads per second beside the machine's read rate (a sum over a tensor larger than the caches).

    python -m benchmarks.decode_linears [--layers 30] [--out FILE.json]

The shapes are SmolLM2-135M's (q, k, v, o, gate, up, down per layer); the output layer is left out.
"""

from __future__ import annotations

import argparse
import time

from benchmarks.machine import cpu_line
from benchmarks.report import write_json

SMOLLM2_LAYER = ((576, 576), (576, 192), (576, 192), (576, 576), (576, 1536), (576, 1536), (1536, 576))  # (in, out)
SIBLINGS = ((0, 1, 2), (3,), (4, 5), (6,))  # q, k, v read one input; o; gate and up read one input; down


class MatrixVector:
    """A linear layer as `torch.mv`, for one row: PyTorch's other single-row kernel."""

    def __init__(self, linear):
        self.weight, self.in_features = linear.weight.detach(), linear.in_features

    def __call__(self, row):
        import torch

        return torch.mv(self.weight, row[0])[None]


def read_gb_s(megabytes: int = 512, repeats: int = 5) -> float:
    """Bytes read per second by an fp32 sum over a tensor of `megabytes` (the best of `repeats`)."""
    import torch

    data = torch.ones(megabytes * 2 ** 20 // 4)
    data.sum()
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        data.sum()
        best = min(best, time.perf_counter() - started)
    return data.numel() * 4 / best / 1e9


def token_seconds(layers: list, dtype, repeats: int = 5) -> float:
    """Best seconds over `repeats` of one row through every layer in turn (one decode token's linears)."""
    import torch

    rows = {layer.in_features: torch.randn(1, layer.in_features).to(dtype) for layer in layers}
    best = float("inf")
    with torch.inference_mode():
        for layer in layers:  # warm-up
            layer(rows[layer.in_features])
        for _ in range(repeats):
            started = time.perf_counter()
            for layer in layers:
                layer(rows[layer.in_features])
            best = min(best, time.perf_counter() - started)
    return best


def measure(layers: int = 30) -> dict:
    import torch

    from hftoolkit.generate.packed_linear import PackedLinear, joined
    from hftoolkit.train.precision import cpu_has_bf16_instructions

    torch.manual_seed(0)
    plain = [torch.nn.Linear(i, o, bias=False) for _ in range(layers) for i, o in SMOLLM2_LAYER]
    weights = sum(layer.weight.numel() for layer in plain)
    kinds = {"fp32, nn.Linear": (plain, torch.float32)}
    if cpu_has_bf16_instructions():  # elsewhere bf16 matmuls run ~100x slower: nothing to learn
        bf16 = [torch.nn.Linear(i, o, bias=False).to(torch.bfloat16) for _ in range(layers) for i, o in SMOLLM2_LAYER]
        kinds["bf16, nn.Linear"] = (bf16, torch.bfloat16)
        kinds["bf16, torch.mv"] = ([MatrixVector(layer) for layer in bf16], torch.bfloat16)
        kinds["bf16, hftoolkit's PackedLinear"] = ([PackedLinear(layer) for layer in bf16], torch.bfloat16)
        siblings = [joined([bf16[first + index] for index in group])
                    for first in range(0, len(bf16), len(SMOLLM2_LAYER)) for group in SIBLINGS]
        kinds["bf16, PackedLinear, siblings joined"] = ([PackedLinear(layer) for layer in siblings], torch.bfloat16)
    results = {"cpu": cpu_line(), "layers": layers, "weights": weights, "read_gb_s": round(read_gb_s(), 1),
               "kinds": {}}
    for name, (modules, dtype) in kinds.items():
        size = dtype.itemsize
        seconds = token_seconds(modules, dtype)
        results["kinds"][name] = {"ms_per_token": round(seconds * 1e3, 2),
                                  "weights_read_gb_s": round(weights * size / seconds / 1e9, 1),
                                  "bound_ms_at_read_rate": round(weights * size / results["read_gb_s"] / 1e6, 2)}
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=30)
    parser.add_argument("--out")
    args = parser.parse_args()
    results = measure(args.layers)
    print(f"{results['cpu']}; reading {results['read_gb_s']} GB/s (fp32 sum)")
    for name, row in results["kinds"].items():
        print(f"{name:36s} {row['ms_per_token']:6.2f} ms per token's linears, weights read at "
              f"{row['weights_read_gb_s']:5.1f} GB/s (at the read rate: {row['bound_ms_at_read_rate']} ms)")
    write_json(args.out, results)


if __name__ == "__main__":
    main()
