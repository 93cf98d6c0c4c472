"""Generation benchmark: batch-size throughput and cache-hit latency, side by side in one run.

    python benchmarks/generation.py CHECKPOINT [--new-tokens 32] [--prompts 16]

Prints a Markdown table. Throughput counts generated tokens per second of wall
time for the same 16 chat prompts at batch 1, 8 and 16 (greedy, fixed length).
Latency compares one fresh generation with a hit in the embedded (disk) cache and
in Redis (a redis-server started here on a free loopback port, if installed).
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
    settings = GenerationSettings(max_new_tokens=new_tokens)
    kwargs = gen.generator._generate_kwargs(settings)
    kwargs["min_new_tokens"] = new_tokens  # same work per prompt whatever the model says
    texts = [gen.render(p, chat=True) for p in prompts]
    import torch

    started = time.perf_counter()
    for start in range(0, len(texts), batch):
        inputs = gen.generator._encode(texts[start:start + batch], new_tokens, log=lambda m: None)
        with torch.inference_mode():
            gen.generator.model.generate(**inputs, **kwargs)
    return len(texts) * new_tokens / (time.perf_counter() - started)


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


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("checkpoint")
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--prompts", type=int, default=16)
    args = parser.parse_args()
    prompts = QUESTIONS[:args.prompts]

    gen = TextGenerator(args.checkpoint, cache="off", log=lambda m: None)
    throughput(gen, prompts[:2], 2, 4)  # warm-up
    rows = [(f"batch {b}", throughput(gen, prompts, b, args.new_tokens)) for b in (1, 8, 16)]
    print(f"| generation ({args.prompts} prompts x {args.new_tokens} new tokens) | tokens/s | vs batch 1 |")
    print("|---|---|---|")
    for name, rate in rows:
        print(f"| {name} | {rate:.1f} | {rate / rows[0][1]:.2f}x |")

    settings = GenerationSettings(max_new_tokens=32)
    fresh = []
    for prompt in prompts[:5]:
        started = time.perf_counter()
        gen.generate([prompt], chat=True, settings=settings)
        fresh.append(time.perf_counter() - started)
    fresh_s = statistics.median(fresh)
    latencies = [("fresh generation (greedy, up to 32 new tokens)", fresh_s)]
    with tempfile.TemporaryDirectory() as folder:
        latencies.append(("cache hit, embedded (diskcache)", hit_latency(
            TextGenerator(args.checkpoint, cache=folder, log=lambda m: None), prompts[0])))
    latencies.append(("cache hit, in-memory", hit_latency(
        TextGenerator(args.checkpoint, cache="memory", log=lambda m: None), prompts[0])))
    redis = start_redis()
    if redis:
        proc, url = redis
        try:
            latencies.append(("cache hit, Redis (loopback)", hit_latency(
                TextGenerator(args.checkpoint, cache=url, log=lambda m: None), prompts[0])))
        finally:
            proc.kill()
    else:
        print("redis-server not installed: Redis row skipped", file=sys.stderr)
    print()
    print("| request | median latency | speed-up vs fresh |")
    print("|---|---|---|")
    for name, seconds in latencies:
        print(f"| {name} | {seconds * 1000:.3f} ms | {fresh_s / seconds:,.0f}x |")


if __name__ == "__main__":
    main()
