"""Training-step benchmark: the model's own loss vs the loss at labelled positions only, side by side.

    python benchmarks/sft_loss.py [CHECKPOINT] [--length 430] [--answer-tokens 24] [--steps 4]

Both variants run full training steps (forward, backward, AdamW) of SmolLM2-135M
(by default) on the same batch of 8 sequences whose labels cover only the last
`answer-tokens` positions, as in answer-only SFT with retrieved passages. They
alternate step by step on one model; the table gives median seconds per step and
the ratio, which is the claim (absolute times depend on the machine). Prints the
CPU model and its bf16/AMX flags first.
"""

from __future__ import annotations

import argparse
import statistics
import time

from benchmarks.machine import cpu_line


def main() -> None:
    import torch
    from transformers import AutoModelForCausalLM

    from hftoolkit.models.registry import pull
    from hftoolkit.train.loss import labelled_positions_loss

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", nargs="?")
    parser.add_argument("--length", type=int, default=430)
    parser.add_argument("--answer-tokens", type=int, default=24)
    parser.add_argument("--steps", type=int, default=4)
    args = parser.parse_args()
    path = args.checkpoint or str(pull("smollm2-135m-instruct", log=lambda m: None))
    print(f"# {cpu_line()}; torch threads: {torch.get_num_threads()}")
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-6)
    ids = torch.randint(0, model.config.vocab_size, (8, args.length))
    labels = torch.full_like(ids, -100)
    labels[:, -args.answer_tokens:] = ids[:, -args.answer_tokens:]
    inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels}
    variants = {"model's own loss (all positions through the output layer)": lambda: model(**inputs).loss,
                "labelled positions only (hftoolkit)": lambda: labelled_positions_loss(model, inputs)}
    times = {name: [] for name in variants}
    for step in range(args.steps + 1):  # step 0 warms up both
        for name, loss_of in variants.items():
            started = time.perf_counter()
            loss = loss_of()
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
            if step:
                times[name].append(time.perf_counter() - started)
    medians = {name: statistics.median(t) for name, t in times.items()}
    baseline = next(iter(medians.values()))
    print(f"\n| training step, batch 8 x {args.length} tokens, {args.answer_tokens} labelled per row | "
          "median s/step | speed-up |\n|---|---|---|")
    for name, seconds in medians.items():
        print(f"| {name} | {seconds:.2f} | {baseline / seconds:.2f}x |")


if __name__ == "__main__":
    main()
