"""Generation: tokens/s at batch 1, 8 and 16, with continuous batching, in bf16 where the CPU has bf16
units, and cache-hit latency, side by side in one run.

    python -m benchmarks.generation CHECKPOINT [--new-tokens 32] [--prompts 16]

Throughput counts generated tokens per second of wall time for the same chat prompts (greedy, a fixed
number of new tokens per prompt). Latency compares one fresh generation with a hit in the embedded
(disk) cache, the in-memory cache and Redis (a redis-server started on a free loopback port, if installed).
"""

from __future__ import annotations

import argparse
import json
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from hftoolkit.generate.api import TextGenerator
from hftoolkit.generate.engine import GenerationSettings

QUESTIONS = [json.loads(line)["question"] for line in
             (Path(__file__).resolve().parent.parent / "hftoolkit/corpora/cars/qa/validation.jsonl").read_text().splitlines()]


def throughput(gen: TextGenerator, prompts: list[str], batch: int, new_tokens: int) -> float:
    import torch

    settings = GenerationSettings(max_new_tokens=new_tokens)
    kwargs = gen.generator._generate_kwargs(settings)
    kwargs["min_new_tokens"] = new_tokens  # same work per prompt whatever the model says
    texts = [gen.render(p, chat=True) for p in prompts]
    started = time.perf_counter()
    for start in range(0, len(texts), batch):
        inputs = gen.generator._encode(texts[start:start + batch], new_tokens, log=lambda m: None)
        with torch.inference_mode():
            gen.generator.model.generate(**inputs, **kwargs)
    return len(texts) * new_tokens / (time.perf_counter() - started)


def continuous_throughput(gen: TextGenerator, prompts: list[str], new_tokens: int) -> tuple[float, float]:
    """transformers' continuous batching (`generate_batch`): tokens/s and the share of answers equal to
    one-prompt-at-a-time greedy decoding."""
    import torch
    from transformers import GenerationConfig

    model, tokenizer = gen.generator.model, gen.generator.tokenizer
    ids = [tokenizer(gen.render(p, chat=True), add_special_tokens=False)["input_ids"] for p in prompts]
    config = GenerationConfig(max_new_tokens=new_tokens, do_sample=False, eos_token_id=tokenizer.eos_token_id,
                              pad_token_id=tokenizer.pad_token_id)
    started = time.perf_counter()
    with torch.inference_mode():
        outputs = model.generate_batch(inputs=ids, generation_config=config, progress_bar=False)
    seconds = time.perf_counter() - started
    generated = [out.generated_tokens for out in outputs.values()]
    same = 0
    for prompt_ids, tokens in zip(ids, generated):
        with torch.inference_mode():
            alone = model.generate(torch.tensor([prompt_ids]), generation_config=config)[0, len(prompt_ids):]
        same += alone.tolist()[:len(tokens)] == tokens
    return sum(len(t) for t in generated) / seconds, same / len(prompts)


def hit_latency(gen: TextGenerator, prompt: str, repeats: int = 20) -> float:
    settings = GenerationSettings(max_new_tokens=32)
    gen.generate([prompt], chat=True, settings=settings)  # fill
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        assert gen.generate([prompt], chat=True, settings=settings)[0].cached
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def start_redis() -> tuple[subprocess.Popen, str] | None:
    binary = shutil.which("redis-server")
    if not binary:
        return None
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    proc = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", ""],
                            stdout=subprocess.DEVNULL)
    time.sleep(0.5)
    return proc, f"redis://127.0.0.1:{port}/0"


def benchmark(checkpoint: str, prompts: int = 16, new_tokens: int = 32, log=print) -> dict:
    from hftoolkit.train.precision import cpu_has_bf16_instructions

    chosen = QUESTIONS[:prompts]
    gen = TextGenerator(checkpoint, cache="off", log=lambda m: None)
    throughput(gen, chosen[:2], 2, 4)  # warm-up
    rows = [{"setting": f"fp32, batch {b}", "tokens_per_second": throughput(gen, chosen, b, new_tokens)}
            for b in (1, 8, 16)]
    rate, same = continuous_throughput(gen, chosen, new_tokens)
    rows.append({"setting": f"fp32, continuous batching ({same:.0%} equal to one at a time)",
                 "tokens_per_second": rate})
    if cpu_has_bf16_instructions():
        import torch

        gen.generator.model.to(torch.bfloat16)
        throughput(gen, chosen[:2], 2, 4)
        rows += [{"setting": f"bf16, batch {b}", "tokens_per_second": throughput(gen, chosen, b, new_tokens)}
                 for b in (1, 16)]
        gen.generator.model.to(torch.float32)
    else:
        log("  generation: no bf16 units on this CPU, bf16 not measured")
    for row in rows:
        row["vs_batch_1"] = round(row["tokens_per_second"] / rows[0]["tokens_per_second"], 2)
        row["tokens_per_second"] = round(row["tokens_per_second"], 1)
        log(f"  generation {row['setting']}: {row['tokens_per_second']} tokens/s")

    settings = GenerationSettings(max_new_tokens=32)
    fresh = []
    for prompt in chosen[:5]:
        started = time.perf_counter()
        gen.generate([prompt], chat=True, settings=settings)
        fresh.append(time.perf_counter() - started)
    latencies = {"fresh generation (greedy, up to 32 new tokens)": statistics.median(fresh)}
    with tempfile.TemporaryDirectory() as folder:
        latencies["cache hit, embedded (diskcache)"] = hit_latency(
            TextGenerator(checkpoint, cache=folder, log=lambda m: None), chosen[0])
    latencies["cache hit, in-memory"] = hit_latency(TextGenerator(checkpoint, cache="memory", log=lambda m: None),
                                                    chosen[0])
    redis = start_redis()
    if redis:
        proc, url = redis
        try:
            latencies["cache hit, Redis (loopback)"] = hit_latency(
                TextGenerator(checkpoint, cache=url, log=lambda m: None), chosen[0])
        finally:
            proc.kill()
    else:
        log("  generation: redis-server not installed, Redis row skipped")
    fresh_s = latencies["fresh generation (greedy, up to 32 new tokens)"]
    latency_rows = [{"request": name, "median_ms": round(s * 1000, 3), "speedup": round(fresh_s / s)}
                    for name, s in latencies.items()]
    return {"prompts": prompts, "new_tokens": new_tokens, "throughput": rows, "latency": latency_rows}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("checkpoint")
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--prompts", type=int, default=16)
    args = parser.parse_args()
    result = benchmark(args.checkpoint, args.prompts, args.new_tokens, log=lambda m: print(m, file=sys.stderr))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
