"""One run of the streaming benchmark in a process of its own: streamed or map-style, same corpus, same steps.

    python -m benchmarks.stream_one streamed|map CORPUS OUT_DIR STEPS

Prints one JSON line: time to the first step, real tokens, steady and overall train tokens/s, peak RSS (this
process and, for map-style, its tokenizer workers), bytes this process wrote, the eval loss.
"""

from __future__ import annotations

import json
import resource
import sys
import time
from pathlib import Path

from benchmarks.train_one import Meter, bytes_written, run_hftoolkit


def recipe_for(variant: str, corpus: Path, out: Path, steps: int):
    """cars_lm's LoRA case on the big corpus: SmolLM2-135M, block 256, 8 blocks per step, evaluation at start and
    end."""
    from hftoolkit.recipe.load import load_recipe

    return load_recipe("cars_lm", [f"data.train={corpus}", f"data.streaming={str(variant == 'streamed').lower()}",
                                   "data.text_documents=paragraph", f"output.dir={out}", f"training.max_steps={steps}",
                                   "training.lora.enabled=true", "training.learning_rate=1e-3",
                                   "training.eval_steps=100000", "training.save_steps=100000",
                                   # the same 8 blocks per step in 4 passes of 2: the model's own training
                                   # peaks near 4 GB at 4 x 256 tokens (49k-entry logits), whatever the data path
                                   "training.batch_size=2", "training.gradient_accumulation=4"])


def main() -> None:
    variant, corpus, out, steps = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3]), int(sys.argv[4])
    started, written = time.perf_counter(), bytes_written()
    meter = Meter()
    _, _, train_seconds, precision = run_hftoolkit(recipe_for(variant, corpus, out, steps), meter)
    wall = time.perf_counter() - started
    metrics = json.loads((out / "metrics.json").read_text())
    run_folder = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    peak = max(resource.getrusage(who).ru_maxrss for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))
    print(json.dumps({
        "variant": variant, "steps": len(meter.steps), "precision": precision, "real_tokens": meter.tokens(),
        "before_first_step_seconds": round(meter.first_step_began - started, 1),
        "train_seconds": round(train_seconds, 2), "tokens_per_second": round(meter.tokens() / train_seconds, 1),
        "steady_tokens_per_second": round(meter.steady_rate(), 1), "wall_seconds": round(wall, 1),
        "peak_rss_mb": round(peak / 1024), "written_by_process_mb": round((bytes_written() - written) / 2 ** 20, 1),
        "run_folder_mb": round(run_folder / 2 ** 20, 1), "eval_loss": round(metrics["eval_loss"], 4),
        "stream": metrics.get("stream")}))


if __name__ == "__main__":
    main()
