"""What attention costs per layer in the passes of one greedy answer: torch's sdpa against hftoolkit's row attention.

After the prompt, plain decoding runs passes of one row and prompt-lookup decoding passes of one row plus its
proposals. hftoolkit's generation layers compute those rows with `row_attention` (each row alike in any pass);
this times it against one sdpa call over the whole pass (what transformers runs, each row rounded by the pass's
length) at SmolLM2-135M's attention shapes in bf16, random numbers, for passes of 1 to 11 rows after a prompt,
both given the pass's causal mask as transformers gives it.

    python -m benchmarks.decode_attention [--keys 180] [--out FILE.json]
"""

from __future__ import annotations

import argparse
import time

from benchmarks.machine import cpu_line
from benchmarks.report import write_json

SMOLLM2_ATTENTION = {"heads": 9, "key_heads": 3, "head_dim": 64}
PASS_ROWS = (1, 3, 6, 11)  # one decode row; prompt lookup's checks of 2, 5 and 10 proposals


def call_seconds(call, repeats: int = 5, calls: int = 100) -> float:
    """Best mean seconds per call over `repeats` runs of `calls` calls (after one warm-up call)."""
    call()
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        for _ in range(calls):
            call()
        best = min(best, (time.perf_counter() - started) / calls)
    return best


def measure(keys: int = 180, pass_rows=PASS_ROWS) -> dict:
    import torch

    from hftoolkit.generate.row_attention import row_attention

    torch.manual_seed(0)
    heads, key_heads, dim = SMOLLM2_ATTENTION["heads"], SMOLLM2_ATTENTION["key_heads"], SMOLLM2_ATTENTION["head_dim"]
    key = torch.randn(1, key_heads, keys, dim, dtype=torch.bfloat16)
    value = torch.randn(1, key_heads, keys, dim, dtype=torch.bfloat16)
    results = {"cpu": cpu_line(), "keys": keys, **SMOLLM2_ATTENTION, "passes": {}}
    with torch.inference_mode():
        for rows in pass_rows:
            query = torch.randn(1, heads, rows, dim, dtype=torch.bfloat16)
            # the causal mask transformers builds once per pass and hands every layer (batch, 1, rows, keys)
            causal = (torch.arange(keys) <= torch.arange(keys - rows, keys)[:, None])[None, None]

            def whole():
                return torch.nn.functional.scaled_dot_product_attention(
                    query, key, value, attn_mask=causal, scale=dim ** -0.5, enable_gqa=True)

            def rows_alike():
                return row_attention(None, query, key, value, causal, dim ** -0.5)

            expected = whole().transpose(1, 2)
            got = rows_alike()[0]
            sdpa_us, rows_us = call_seconds(whole) * 1e6, call_seconds(rows_alike) * 1e6
            results["passes"][rows] = {"sdpa_whole_pass_us": round(sdpa_us, 1), "row_attention_us": round(rows_us, 1),
                                       "ratio": round(rows_us / sdpa_us, 2),
                                       "max_difference": float((got.float() - expected.float()).abs().max())}
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys", type=int, default=180, help="positions in the cache after the pass (prompt + rows)")
    parser.add_argument("--out")
    args = parser.parse_args()
    results = measure(args.keys)
    print(f"{results['cpu']}; {args.keys} keys, bf16, per layer")
    for rows, row in results["passes"].items():
        print(f"{rows:3d} rows: sdpa over the whole pass {row['sdpa_whole_pass_us']:7.1f} us, row attention "
              f"{row['row_attention_us']:7.1f} us ({row['ratio']}x), largest difference {row['max_difference']:.3g}")
    write_json(args.out, results)


if __name__ == "__main__":
    main()
