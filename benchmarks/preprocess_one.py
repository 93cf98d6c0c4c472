"""Load + tokenize + pack one corpus as `hftoolkit train cars_lm` would, in a process of its own.

    python -m benchmarks.preprocess_one CORPUS NUM_PROC TOKENIZER   (caches: $HFTOOLKIT_CACHE, $HF_DATASETS_CACHE)

Prints one JSON line: seconds (data loading and preprocessing, tokenizer already loaded), cache hit,
real tokens, peak RSS and peak heap. Peak RSS counts the pages of memory-mapped Arrow files the process
read (page cache the kernel can drop at any time); the heap (anonymous memory, sampled every 20 ms) is
what the process itself holds.
"""

from __future__ import annotations

import json
import resource
import sys
import threading
import time


def watch_heap(peak: dict) -> None:
    """Keep the largest RssAnon seen in peak['kb'] (a daemon thread)."""
    def sample():
        while True:
            with open("/proc/self/status") as status:
                for line in status:
                    if line.startswith("RssAnon:"):
                        peak["kb"] = max(peak["kb"], int(line.split()[1]))
            time.sleep(0.02)

    threading.Thread(target=sample, daemon=True).start()


def main() -> None:
    from transformers import AutoTokenizer

    from hftoolkit.data.preprocess import preprocess
    from hftoolkit.data.splits import load_data
    from hftoolkit.recipe.load import load_recipe

    peak_heap = {"kb": 0}
    watch_heap(peak_heap)
    corpus, num_proc, tokenizer_path = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    recipe = load_recipe("cars_lm", [f"data.train={corpus}", f"preprocess.num_proc={num_proc}"])
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_path)  # from the usual model cache, not the fresh one
    started = time.perf_counter()
    loaded = load_data(recipe.data, recipe.training.seed, recipe.model.task)
    _, stats, hit = preprocess(recipe, loaded, tokenizer)
    seconds = time.perf_counter() - started
    print(json.dumps({"seconds": round(seconds, 2), "cache_hit": hit, "tokens": stats["train"]["tokens"],
                      "blocks": stats["train"]["blocks"],
                      "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
                      "peak_heap_mb": round(peak_heap["kb"] / 1024)}))


if __name__ == "__main__":
    main()
