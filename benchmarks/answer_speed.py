"""Answers at batch 1, as `generate --chat` and `ask` produce them: greedy tokens/s with each speed-up, the
token ids compared with plain greedy decoding, and the memory-bandwidth limit of this machine.

Each precision runs twice: with transformers' own layers (hftoolkit before) and with hftoolkit's generation
layers as `Generator.load` sets them up (`Generator.speed_up`: bf16 linears packed for oneDNN and row-consistent
attention; fp32 linears packed for oneDNN on a CPU without bf16 instructions; elsewhere fp32 keeps transformers'
layers and its second run is left out).

    python -m benchmarks.answer_speed CHECKPOINT [--questions 24] [--out FILE.json]

Questions are the held-out car questions with the passages the checkpoint's own retrieval puts in the prompt
(answers copy spans of them, which is what prompt-lookup decoding exploits). Each variant answers every
question once, after one warm-up answer; tokens/s is generated tokens (up to the end of each answer) per
second of wall time. The bandwidth limit is weight bytes read per token divided by the copy bandwidth
measured here: decode at batch 1 reads every weight once per token. The prompt pass (fp32, transformers' layers)
times one forward pass over each prompt alone: answers can be no faster than their tokens over that time, however
fast decoding gets. Each variant's answers are also graded by the quickstart's rule (a key fact stated), since bf16
rounding changes some answers' ids.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from benchmarks.machine import cpu_line
from benchmarks.report import write_json
from hftoolkit.data.answer_match import is_correct
from hftoolkit.generate.api import TextGenerator
from hftoolkit.generate.engine import GenerationSettings, Generator
from hftoolkit.generate.packed_linear import can_pack
from hftoolkit.train.precision import cpu_has_bf16_instructions

HELDOUT = Path(__file__).resolve().parent.parent / "hftoolkit/corpora/cars/qa/heldout.jsonl"
LOOKUPS = (3, 5, 10)


def copy_bandwidth_gb_s(megabytes: int = 512, repeats: int = 5) -> float:
    """Bytes read plus written per second by a large tensor copy (the best of `repeats`)."""
    import torch

    source = torch.ones(megabytes * 2 ** 20 // 4)
    target = torch.empty_like(source)
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        target.copy_(source)
        best = min(best, time.perf_counter() - started)
    return 2 * source.numel() * 4 / best / 1e9


def weight_bytes(model) -> int:
    return sum(p.numel() * p.element_size() for p in model.parameters())  # tied embeddings count once


def timed_after_warmup(generator, texts: list[str], settings: GenerationSettings, step) -> list[tuple]:
    """(inputs, what `step(inputs)` returned, seconds) for each prompt, after one untimed warm-up on the first."""
    import torch

    timed = []
    for i, text in enumerate([texts[0]] + texts):
        inputs = generator._encode([text], settings.max_new_tokens, log=lambda m: None)
        started = time.perf_counter()
        with torch.inference_mode():
            out = step(inputs)
        if i:
            timed.append((inputs, out, time.perf_counter() - started))
    return timed


def answer_all(gen: TextGenerator, texts: list[str], settings: GenerationSettings, extra: dict) -> dict:
    generator = gen.generator
    kwargs = {**generator._generate_kwargs(settings), **extra}
    ids, seconds = [], []
    for inputs, out, elapsed in timed_after_warmup(generator, texts, settings,
                                                   lambda inputs: generator.run_generate(inputs, kwargs)):
        new = [int(t) for t in out[0, inputs["input_ids"].shape[1]:]]
        ids.append(new[:generator._count_generated(new)])
        seconds.append(elapsed)
    tokens = sum(len(row) for row in ids)
    return {"tokens": tokens, "seconds": round(sum(seconds), 2), "tokens_per_second": round(tokens / sum(seconds), 2),
            "median_latency_s": round(statistics.median(seconds), 3), "ids": ids}


def correct_answers(tokenizer, ids: list[list[int]], rows: list[dict]) -> int:
    """How many answers state a key fact, by the rule the quickstart's accuracy uses (`answer_match`)."""
    return sum(is_correct(tokenizer.decode(answer, skip_special_tokens=True), row.get("key_facts") or [row["answer"]])
               for answer, row in zip(ids, rows))


def prompt_pass_bound(gen: TextGenerator, texts: list[str], settings: GenerationSettings, tokens: int) -> dict:
    """Seconds of one forward pass over each prompt (the first thing every answer computes, whatever decodes
    after it), and the tokens/s the answers would reach if decoding their tokens cost nothing."""
    generator = gen.generator

    def prompt_pass(inputs) -> None:  # the output is dropped: only the time counts
        generator.model(**inputs, logits_to_keep=1)

    seconds = sum(elapsed for _, _, elapsed in timed_after_warmup(generator, texts, settings, prompt_pass))
    return {"prompt_seconds": round(seconds, 2), "tokens_per_second_if_decoding_were_free": round(tokens / seconds, 1)}


def benchmark(checkpoint: str, questions: int = 24, log=print) -> dict:
    rows = [json.loads(line) for line in HELDOUT.read_text().splitlines()][:questions]
    settings = GenerationSettings(max_new_tokens=64, num_beams=1)  # greedy, whatever the checkpoint suggests
    bandwidth = copy_bandwidth_gb_s()
    results = {"cpu": cpu_line(), "checkpoint": checkpoint, "questions": len(rows),
               "copy_bandwidth_gb_s": round(bandwidth, 1), "variants": {}}
    reference = None  # fp32 greedy with transformers' own layers: the answers hftoolkit gave before
    for precision in ("fp32", "bf16") if cpu_has_bf16_instructions() else ("fp32",):
        gen = TextGenerator(checkpoint, cache="off", log=lambda m: None, precision=precision)
        texts = [text for text, _ in gen.prepare([r["question"] for r in rows], True, settings.max_new_tokens)]
        variants = {}
        for layers in ("transformers' layers", "hftoolkit's layers"):
            gen._generator = Generator.load(checkpoint, precision, speed_up=layers.startswith("hftoolkit"))
            if not layers.startswith("hftoolkit"):  # packed weights are buffers: count the plain parameters
                limit = bandwidth * 1e9 / weight_bytes(gen.generator.model)
            elif not can_pack(gen.generator.model):  # the same layers as the run before
                continue
            plain = answer_all(gen, texts, settings, {})
            if reference is None:  # what the prompts alone cost, at the answers' own token count
                results["prompt_pass"] = prompt_pass_bound(gen, texts, settings, plain["tokens"])
                log(f"prompt passes alone {results['prompt_pass']}")
            reference = reference or plain
            found = {f"{precision} greedy, {layers}": plain}
            for n in LOOKUPS:
                found[f"{precision} prompt lookup {n}, {layers}"] = answer_all(gen, texts, settings,
                                                                                {"prompt_lookup_num_tokens": n})
            for run in found.values():
                run["answers_with_other_ids_than_plain_greedy"] = sum(a != b for a, b in zip(run["ids"], plain["ids"]))
                run["correct_answers"] = correct_answers(gen.generator.tokenizer, run["ids"], rows)
            variants.update(found)
        bf16_before = variants.get("bf16 greedy, transformers' layers")  # the bf16 answers hftoolkit gave before
        for name, run in variants.items():
            run["answers_with_other_ids_than_fp32_before"] = sum(a != b for a, b in zip(run["ids"], reference["ids"]))
            if bf16_before is not None:
                run["answers_with_other_ids_than_bf16_before"] = sum(a != b for a, b in zip(run["ids"],
                                                                                            bf16_before["ids"]))
            run["speedup_over_fp32_before"] = round(run["tokens_per_second"] / reference["tokens_per_second"], 2)
            run["bandwidth_limit_tokens_per_second"] = round(limit, 1)
            log(f"{name:48s} {run['tokens_per_second']:6.2f} tok/s  x{run['speedup_over_fp32_before']:.2f}  median "
                f"{run['median_latency_s']:.3f} s  other ids than plain greedy: "
                f"{run['answers_with_other_ids_than_plain_greedy']}, than fp32 before: "
                f"{run['answers_with_other_ids_than_fp32_before']}, than bf16 before: "
                f"{run.get('answers_with_other_ids_than_bf16_before', '-')}  correct {run['correct_answers']}  "
                f"limit {limit:.1f} tok/s")
            results["variants"][name] = {k: v for k, v in run.items() if k != "ids"}
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint")
    parser.add_argument("--questions", type=int, default=24)
    parser.add_argument("--out")
    args = parser.parse_args()
    print(cpu_line())
    results = benchmark(args.checkpoint, args.questions)
    write_json(args.out, results)


if __name__ == "__main__":
    main()
