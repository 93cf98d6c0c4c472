"""Peak memory of one training step over a large vocabulary: the model's own loss against hftoolkit's.

    python -m benchmarks.loss_memory [--model gemma3-270m] [--batch 8] [--length 320] [--out FOLDER]

One forward + backward of Gemma 3 270M (262,144-entry vocabulary) in fp32 on a batch whose every position is
labelled, as in a text recipe: (a) the model's own loss, which materialises the whole batch's logits, (b)
hftoolkit's loss with the output layer and cross-entropy in one piece, (c) the same in checkpointed chunks of
`LOSS_CHUNK` positions (the default). Each variant runs in a fresh process, so its peak resident memory is its
own; the table gives the peak, the growth over the loaded model, and the loss (the same in all three). Prints
the CPU first; memory does not depend on the CPU, the seconds do.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

from benchmarks.machine import cpu_line
from benchmarks.report import write_table

VARIANTS = {"own": "the model's own loss (whole batch's logits)",
            "whole": "hftoolkit, output layer in one piece",
            "chunked": "hftoolkit, checkpointed chunks (default)"}


def one_step(model_name: str, variant: str, batch: int, length: int) -> dict:
    """Runs in its own process: load, one training step, report peak RSS and the loss."""
    import resource
    import time

    import torch
    from transformers import AutoModelForCausalLM

    from hftoolkit.models.registry import pull
    from hftoolkit.train import loss as losses

    model = AutoModelForCausalLM.from_pretrained(str(pull(model_name, log=lambda m: None)),
                                                 dtype=torch.float32).train()
    torch.manual_seed(0)
    ids = torch.randint(0, model.config.vocab_size, (batch, length))
    inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids.clone()}
    loaded = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    started = time.perf_counter()
    if variant == "own":
        loss = model(**inputs).loss
    else:  # "whole": one chunk as large as the batch
        chunk = batch * length if variant == "whole" else losses.LOSS_CHUNK
        loss = losses.labelled_positions_loss(model, inputs, chunk=chunk)
    loss.backward()
    seconds = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"variant": variant, "loaded_mb": round(loaded), "peak_mb": round(peak), "growth_mb": round(peak - loaded),
            "loss": round(float(loss), 5), "seconds": round(seconds, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="gemma3-270m")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--length", type=int, default=320)
    parser.add_argument("--out", default=None, help="folder for results.md and results.json")
    parser.add_argument("--variant", choices=VARIANTS, help=argparse.SUPPRESS)  # the child process
    args = parser.parse_args()
    if args.variant:
        print(json.dumps(one_step(args.model, args.variant, args.batch, args.length)))
        return
    print(f"# {cpu_line()}", flush=True)
    rows = []
    for variant in VARIANTS:
        done = subprocess.run([sys.executable, "-m", "benchmarks.loss_memory", "--model", args.model,
                               "--batch", str(args.batch), "--length", str(args.length), "--variant", variant],
                              capture_output=True, text=True, check=True)
        rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
        print(rows[-1], flush=True)
    table = [f"# {cpu_line()}", "",
             f"One training step (forward + backward, fp32) of {args.model}, batch {args.batch} x {args.length} "
             "tokens, every position labelled. Peak resident memory of a fresh process per row.", "",
             "| loss computed by | peak RSS (MB) | growth over the loaded model (MB) | loss | seconds |",
             "|---|---|---|---|---|"]
    table += [f"| {VARIANTS[r['variant']]} | {r['peak_mb']} | {r['growth_mb']} | {r['loss']} | {r['seconds']} |"
              for r in rows]
    write_table(args.out, table, f"python -m benchmarks.loss_memory --model {args.model} --batch {args.batch} "
                f"--length {args.length}", {"cpu": cpu_line(), "rows": rows})


if __name__ == "__main__":
    main()
