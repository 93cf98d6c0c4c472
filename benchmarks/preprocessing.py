"""Preprocessing at scale: tokenize + pack a 25, 50 and 100 MB corpus, cold and warm cache, peak memory.

The corpus is the car text, its paragraphs shuffled anew for every ~1 MB file, so no two files are equal.
Each measurement runs in a fresh process (`preprocess_one`): cold with empty hftoolkit and datasets
caches, warm with the caches the cold run left. Time should grow linearly with size and peak memory
stay nearly flat: datasets keep the corpus in Arrow files on disk and map in batches. Peak RSS also
counts the memory-mapped pages of those files the process read; the heap is reported beside it.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import tempfile
from pathlib import Path

SIZES_MB = (25, 50, 100)
FILE_MB = 1


def build_corpus(folder: Path, megabytes: int, seed: int = 0) -> Path:
    """`megabytes` of car text in ~1 MB files of shuffled paragraphs."""
    from hftoolkit.paths import resolve_data_path

    source = Path(resolve_data_path("bundled://corpora/cars/text/train"))
    paragraphs = [p.strip() for f in sorted(source.glob("*.txt")) for p in f.read_text().split("\n\n") if p.strip()]
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for index in range(megabytes // FILE_MB):
        chunks, size = [], 0
        while size < FILE_MB * 2 ** 20:
            rng.shuffle(paragraphs)
            for paragraph in paragraphs:
                chunks.append(paragraph)
                size += len(paragraph) + 2
        (folder / f"part{index:04d}.txt").write_text("\n\n".join(chunks) + "\n")
    return folder


def run_one(corpus: Path, caches: Path, num_proc: int) -> dict:
    from hftoolkit.models.load import resolve_model_path

    tokenizer = resolve_model_path("smollm2-135m-instruct", lambda m: None)
    env = dict(os.environ, HFTOOLKIT_CACHE=str(caches / "hftoolkit"), HF_DATASETS_CACHE=str(caches / "datasets"))
    done = subprocess.run([sys.executable, "-m", "benchmarks.preprocess_one", str(corpus), str(num_proc),
                           str(tokenizer)],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                          cwd=Path(__file__).resolve().parent.parent)
    if done.returncode != 0:
        raise RuntimeError(f"preprocessing {corpus} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def benchmark(work: Path, sizes=SIZES_MB, num_procs=(1, 2), log=print) -> list[dict]:
    rows = []
    for megabytes in sizes:
        corpus = build_corpus(work / f"corpus-{megabytes}mb", megabytes)
        for num_proc in num_procs if megabytes == max(sizes) else (1,):
            with tempfile.TemporaryDirectory(dir=work) as caches:
                cold = run_one(corpus, Path(caches), num_proc)
                warm = run_one(corpus, Path(caches), num_proc)
            assert not cold["cache_hit"] and warm["cache_hit"] and warm["tokens"] == cold["tokens"]
            row = {"megabytes": megabytes, "num_proc": num_proc, "tokens": cold["tokens"],
                   "cold_seconds": cold["seconds"], "warm_seconds": warm["seconds"],
                   "warm_speedup": round(cold["seconds"] / warm["seconds"], 1),
                   "cold_tokens_per_second": round(cold["tokens"] / cold["seconds"]),
                   "cold_peak_rss_mb": cold["peak_rss_mb"], "warm_peak_rss_mb": warm["peak_rss_mb"],
                   "cold_peak_heap_mb": cold["peak_heap_mb"]}
            rows.append(row)
            log(f"  preprocessing {megabytes} MB, num_proc {num_proc}: cold {row['cold_seconds']} s, "
                f"warm {row['warm_seconds']} s, peak RSS {row['cold_peak_rss_mb']} MB, "
                f"heap {row['cold_peak_heap_mb']} MB")
    return rows
