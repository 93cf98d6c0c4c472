"""Serving: `hftoolkit serve` against itself one request at a time and against `transformers serve
--continuous-batching`, on the same checkpoint, from the official async openai client on loopback.

    python -m benchmarks --only serving            # or: python -m benchmarks.serving CHECKPOINT

Each server is started here as a user would start it, in its own process, and measured alone: streamed chat
requests (temperature 0, up to `new_tokens` new tokens) at concurrency 1, 2, 4 and 8. Per request: time to the
first streamed text (TTFT) and to the end; per level: total generated tokens per second of wall time. Tokens are
counted by one evaluator for every server (the checkpoint's tokenizer over the streamed text), so no server's
own usage report is trusted. `transformers serve` runs at its best for the CPU: continuous batching, bf16 where
the CPU has bf16 instructions. The cached rows ask questions the server has answered once already.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parent.parent
QUESTIONS = [json.loads(line)["question"] for line in
             (REPO / "hftoolkit/corpora/cars/qa/validation.jsonl").read_text().splitlines()]
LEVELS = (1, 2, 4, 8)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """A server process on a free loopback port, stopped on exit; its output goes to a file (shown on failure)."""

    def __init__(self, name: str, command: list[str], port: int, work: Path, env: dict | None = None):
        self.name, self.port, self.base = name, port, f"http://127.0.0.1:{port}"
        self.output = work / f"{name.replace(' ', '_')}.log"
        self.started = time.perf_counter()
        with open(self.output, "w") as out:
            self.process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, cwd=work,
                                            env={**os.environ, **(env or {})})

    def wait_healthy(self, timeout: float = 300) -> float:
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited: {self.output.read_text()[-2000:]}")
            try:
                if httpx.get(self.base + "/health", timeout=2).status_code == 200:
                    return time.perf_counter() - self.started
            except httpx.TransportError:
                pass
            if time.perf_counter() - self.started > timeout:
                raise RuntimeError(f"{self.name} not healthy after {timeout} s: {self.output.read_text()[-2000:]}")
            time.sleep(0.2)

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()


async def one_request(client, model: str, question: str, new_tokens: int) -> dict:
    started = time.perf_counter()
    first, text = None, ""
    stream = await client.chat.completions.create(model=model, messages=[{"role": "user", "content": question}],
                                                  max_tokens=new_tokens, temperature=0, stream=True)
    async for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            if first is None:
                first = time.perf_counter() - started
            text += chunk.choices[0].delta.content
    return {"ttft": first if first is not None else time.perf_counter() - started,
            "latency": time.perf_counter() - started, "text": text}


async def load(base: str, model: str, questions: list[str], concurrency: int, new_tokens: int) -> tuple[list, float]:
    """`questions` sent with at most `concurrency` in flight; (per-request results, wall seconds)."""
    import openai

    limit = asyncio.Semaphore(concurrency)
    async with openai.AsyncOpenAI(base_url=base + "/v1", api_key="unused", max_retries=0, timeout=600) as client:
        async def bounded(question):
            async with limit:
                return await one_request(client, model, question, new_tokens)
        started = time.perf_counter()
        results = await asyncio.gather(*(bounded(q) for q in questions))
    return results, time.perf_counter() - started


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


def measure(server: Server, model: str, tokenizer, new_tokens: int, log, cached: bool = False,
            levels=LEVELS) -> list[dict]:
    rows = []
    asyncio.run(load(server.base, model, QUESTIONS[:1], 1, 4))  # warm-up: first-call costs are not serving
    for concurrency in levels:
        questions = QUESTIONS[:max(8, 2 * concurrency)]
        if cached:  # answered once already: the rows measure the cache, not the model
            asyncio.run(load(server.base, model, questions, concurrency, new_tokens))
        results, wall = asyncio.run(load(server.base, model, questions, concurrency, new_tokens))
        tokens = sum(len(tokenizer(r["text"], add_special_tokens=False)["input_ids"]) for r in results)
        row = {"server": server.name, "cached": cached, "concurrency": concurrency, "requests": len(questions),
               "tokens": tokens, "tokens_per_second": round(tokens / wall, 1),
               "ttft_p50_ms": round(1000 * statistics.median(r["ttft"] for r in results), 1),
               "latency_p50_ms": round(1000 * statistics.median(r["latency"] for r in results), 1),
               "latency_p95_ms": round(1000 * percentile([r["latency"] for r in results], 0.95), 1),
               "answers": [r["text"] for r in results]}
        log(f"  serving {server.name}{' (cached)' if cached else ''}, concurrency {concurrency}: "
            f"{row['tokens_per_second']} tokens/s, TTFT p50 {row['ttft_p50_ms']} ms, "
            f"latency p50 {row['latency_p50_ms']} ms p95 {row['latency_p95_ms']} ms")
        rows.append(row)
    return rows


def benchmark(checkpoint: str, work: Path, new_tokens: int = 48, log=print) -> dict:
    from transformers import AutoTokenizer

    from hftoolkit.train.precision import cpu_has_bf16_instructions

    tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    model = Path(checkpoint).name
    ours = [sys.executable, "-m", "hftoolkit", "serve", checkpoint, "--context", "off"]
    env = {"PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    bf16 = cpu_has_bf16_instructions()
    theirs_dtype = "bfloat16" if bf16 else "float32"
    transformers_cli = shutil.which("transformers") or str(Path(sys.executable).parent / "transformers")
    plans = [
        ("hftoolkit serve", ours + ["--cache", "off"], False),
        ("hftoolkit serve --max-batch 1", ours + ["--cache", "off", "--max-batch", "1"], False),
        (f"transformers serve --continuous-batching --dtype {theirs_dtype}",
         [transformers_cli, "serve", checkpoint, "--continuous-batching", "--dtype", theirs_dtype,
          "--host", "127.0.0.1"], False),
        ("hftoolkit serve", ours + ["--cache", str(work / "serve-cache")], True),
    ]
    rows, startup = [], {}
    for name, command, cached in plans:
        port = free_port()
        server = Server(name, command + ["--port", str(port)], port, work, env)
        try:
            startup[name + (" (cached)" if cached else "")] = round(server.wait_healthy(), 1)
            rows += measure(server, checkpoint if name.startswith("transformers") else model, tokenizer,
                            new_tokens, log, cached)
        finally:
            server.stop()
    return {"checkpoint": model, "new_tokens": new_tokens, "bf16_cpu": bf16, "seconds_to_healthy": startup,
            "versions": versions(), "rows": rows, "claims": claims(rows)}


def versions() -> dict:
    from importlib.metadata import version

    return {name: version(name) for name in ("transformers", "torch", "fastapi", "uvicorn", "openai")}


def claims(rows: list[dict]) -> dict:
    """The ratios the issue asks about, at concurrency 8, uncached."""
    def at(server, concurrency=8, cached=False):
        return next(r for r in rows if r["server"] == server and r["concurrency"] == concurrency
                    and r["cached"] == cached)
    theirs_name = next(r["server"] for r in rows if r["server"].startswith("transformers serve"))
    ours, alone, theirs = at("hftoolkit serve"), at("hftoolkit serve --max-batch 1"), at(theirs_name)
    cached = [r for r in rows if r["cached"]]
    return {"tokens_per_second_vs_transformers_serve": round(ours["tokens_per_second"] / theirs["tokens_per_second"], 2),
            "tokens_per_second_vs_one_at_a_time": round(ours["tokens_per_second"] / alone["tokens_per_second"], 2),
            "ttft_p50_ms_ours_vs_transformers_serve": [ours["ttft_p50_ms"], theirs["ttft_p50_ms"]],
            "cached_ttft_p50_ms_worst_level": max(r["ttft_p50_ms"] for r in cached) if cached else None}


def markdown(result: dict) -> str:
    lines = [f"Serving {result['checkpoint']}, streamed chat, temperature 0, up to {result['new_tokens']} new tokens "
             "per request, official async openai client on loopback.", "",
             "| server | cached | concurrency | requests | tokens/s | TTFT p50 ms | latency p50 ms | latency p95 ms |",
             "|---|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        lines.append(f"| {r['server']} | {'yes' if r['cached'] else 'no'} | {r['concurrency']} | {r['requests']} | "
                     f"{r['tokens_per_second']} | {r['ttft_p50_ms']} | {r['latency_p50_ms']} | "
                     f"{r['latency_p95_ms']} |")
    c = result["claims"]
    lines += ["", f"At concurrency 8, uncached: {c['tokens_per_second_vs_transformers_serve']}x the tokens/s of "
              f"transformers serve, {c['tokens_per_second_vs_one_at_a_time']}x our own one-at-a-time serving; "
              f"TTFT p50 {c['ttft_p50_ms_ours_vs_transformers_serve'][0]} ms against "
              f"{c['ttft_p50_ms_ours_vs_transformers_serve'][1]} ms. Cached answers: TTFT p50 at most "
              f"{c['cached_ttft_p50_ms_worst_level']} ms.", "",
              "Seconds from start to a healthy server: " +
              ", ".join(f"{k} {v}" for k, v in result["seconds_to_healthy"].items()) + ".", "",
              "Versions: " + ", ".join(f"{k} {v}" for k, v in result.get("versions", {}).items()) + "."]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.serving")
    parser.add_argument("checkpoint")
    parser.add_argument("--new-tokens", type=int, default=48)
    parser.add_argument("--out", help="write serving.json and serving.md into this folder")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="hftoolkit-serving-") as work:
        result = benchmark(args.checkpoint, Path(work), args.new_tokens)
    print(markdown(result))
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "serving.json").write_text(json.dumps(result, indent=2))
        (out / "serving.md").write_text(markdown(result))


if __name__ == "__main__":
    main()
