"""Load + tokenize + pack one corpus as `hftoolkit train cars_lm` would, in a process of its own.

    python -m benchmarks.preprocess_one CORPUS NUM_PROC TOKENIZER   (caches: $HFTOOLKIT_CACHE, $HF_DATASETS_CACHE)

Prints one JSON line: seconds (data loading and preprocessing, tokenizer already loaded), cache hit,
real tokens, peak RSS.
"""

from __future__ import annotations

import json
import resource
import sys
import time


def main() -> None:
    from transformers import AutoTokenizer

    from hftoolkit.data.preprocess import preprocess
    from hftoolkit.data.splits import load_data
    from hftoolkit.recipe.load import load_recipe

    corpus, num_proc, tokenizer_path = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    recipe = load_recipe("cars_lm", [f"data.train={corpus}", f"preprocess.num_proc={num_proc}"])
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_path)  # from the usual model cache, not the fresh one
    started = time.perf_counter()
    loaded = load_data(recipe.data, recipe.training.seed, recipe.model.task)
    _, stats, hit = preprocess(recipe, loaded, tokenizer)
    seconds = time.perf_counter() - started
    print(json.dumps({"seconds": round(seconds, 2), "cache_hit": hit, "tokens": stats["train"]["tokens"],
                      "blocks": stats["train"]["blocks"],
                      "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)}))


if __name__ == "__main__":
    main()
