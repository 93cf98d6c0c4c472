"""Streaming against map-style on a corpus larger than a laptop would hold twice.

The corpus is the car text's paragraphs, shuffled anew on each pass, as JSON Lines in one gzip file, until
`gigabytes` of JSON Lines are written (the file itself is smaller). Both variants train SmolLM2-135M with LoRA
on it for the same steps (cars_lm's LoRA case), each in its own process with cold caches: map-style loads,
tokenizes and packs the whole corpus into Arrow files before its first step; streamed reads what it trains on.
Reported per variant: time to the first step, training tokens/s (steady and overall), peak RSS, the bytes
left in the cache folders afterwards and the run folder's size, the eval loss.
"""

from __future__ import annotations

import gzip
import json
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

from benchmarks.training import cold_caches
from hftoolkit.allocator import preload_env

STEPS = 30


def build_corpus(path: Path, gigabytes: float, seed: int = 0) -> dict:
    from hftoolkit.paths import resolve_data_path

    source = Path(resolve_data_path("bundled://corpora/cars/text/train"))
    paragraphs = [p.strip() for f in sorted(source.glob("*.txt")) for p in f.read_text().split("\n\n") if p.strip()]
    lines = [json.dumps({"text": p}) + "\n" for p in paragraphs]
    rng, size, documents = random.Random(seed), 0, 0
    with gzip.open(path, "wt", encoding="utf-8", compresslevel=1) as handle:
        while size < gigabytes * 2 ** 30:
            rng.shuffle(lines)
            text = "".join(lines)
            handle.write(text)
            size += len(text.encode())
            documents += len(lines)
    return {"json_lines_bytes": size, "file_bytes": path.stat().st_size, "documents": documents}


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file() and not p.is_symlink())


def run_one(variant: str, corpus: Path, work: Path, steps: int) -> dict:
    out = work / f"stream-{variant}"
    caches = work / f"stream-{variant}-caches"
    plain = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}
    env = {**(preload_env(plain) or plain), **cold_caches(caches), "TMPDIR": str(caches / "tmp")}
    (caches / "tmp").mkdir(parents=True, exist_ok=True)
    with open(work / f"stream-{variant}.log", "w") as log:
        done = subprocess.run([sys.executable, "-m", "benchmarks.stream_one", variant, str(corpus), str(out),
                               str(steps)], stdout=subprocess.PIPE, stderr=log, text=True, env=env,
                              cwd=Path(__file__).resolve().parent.parent)
    if done.returncode != 0:
        raise RuntimeError(f"streaming/{variant} failed: see {work / f'stream-{variant}.log'}")
    row = json.loads(done.stdout.strip().splitlines()[-1])
    row["caches_after_mb"] = round(folder_bytes(caches) / 2 ** 20, 1)  # models are a symlink, not counted
    shutil.rmtree(caches, ignore_errors=True)
    shutil.rmtree(out, ignore_errors=True)
    return row


def benchmark(work: Path, gigabytes: float = 2.0, steps: int = STEPS, variants=("streamed", "map"), log=print) -> dict:
    corpus = work / "big.jsonl.gz"
    built = build_corpus(corpus, gigabytes)
    log(f"  streaming corpus: {built['json_lines_bytes'] / 2 ** 30:.2f} GiB of JSON Lines, "
        f"{built['file_bytes'] / 2 ** 30:.2f} GiB gzip, {built['documents']:,} documents")
    rows = []
    for variant in variants:
        row = run_one(variant, corpus, work, steps)
        rows.append(row)
        log(f"  {variant}: first step after {row['before_first_step_seconds']} s, steady "
            f"{row['steady_tokens_per_second']} tokens/s, peak RSS {row['peak_rss_mb']} MB, caches "
            f"{row['caches_after_mb']} MB, wrote {row['written_by_process_mb']} MB (run folder "
            f"{row['run_folder_mb']} MB), eval loss {row['eval_loss']}")
    result = {"corpus": built, "steps": steps, "rows": rows}
    if len(rows) == 2:
        streamed, mapped = rows
        result["steady_ratio"] = round(streamed["steady_tokens_per_second"] / mapped["steady_tokens_per_second"], 3)
        result["train_ratio"] = round(streamed["tokens_per_second"] / mapped["tokens_per_second"], 3)
    return result


def markdown(result: dict) -> str:
    corpus = result["corpus"]
    lines = [f"Streaming ({corpus['json_lines_bytes'] / 2 ** 30:.2f} GiB of JSON Lines in a "
             f"{corpus['file_bytes'] / 2 ** 30:.2f} GiB .jsonl.gz, {corpus['documents']:,} documents; SmolLM2-135M "
             f"LoRA, {result['steps']} steps of 8 x 256 tokens)", "",
             "| variant | time to first step | steady tokens/s | train tokens/s | peak RSS | cache folders after | "
             "written by the process | run folder | eval loss |", "|---|---|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        lines.append(f"| {r['variant']} | {r['before_first_step_seconds']:.0f} s | {r['steady_tokens_per_second']:.0f} "
                     f"| {r['tokens_per_second']:.0f} | {r['peak_rss_mb']:,} MB | {r['caches_after_mb']:,.0f} MB "
                     f"| {r['written_by_process_mb']:,.0f} MB | {r['run_folder_mb']:,.0f} MB | {r['eval_loss']:.4f} |")
    if "steady_ratio" in result:
        lines += ["", f"streamed / map-style: steady tokens/s {result['steady_ratio']:.3f}x, train tokens/s "
                  f"{result['train_ratio']:.3f}x."]
    lines += ["", "Peak RSS includes map-style's tokenizer worker processes; 'written by "
              "the process' counts the main process only (the workers' Arrow files are in 'cache folders after')."]
    return "\n".join(lines)
