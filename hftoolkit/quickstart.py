"""`hftoolkit quickstart`: the car demo end to end, base model vs fine-tuned, on held-out data.

pull SmolLM2 → measure the base model → train the `cars_qa` recipe → measure the
fine-tuned model → print the comparison and some held-out answers.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

HELD_OUT_QA = "bundled://corpora/cars/qa/test.jsonl"
HELD_OUT_TEXT = "bundled://corpora/cars/text/heldout.txt"


def measure(checkpoint: str, system: str | None) -> dict:
    """Held-out answer accuracy and held-out car-text perplexity of one checkpoint."""
    from hftoolkit.evaluation.run import evaluate_causal_lm

    qa = evaluate_causal_lm(checkpoint, HELD_OUT_QA, system=system)
    text = evaluate_causal_lm(checkpoint, HELD_OUT_TEXT)
    return {"accuracy": qa["accuracy"], "correct": qa["correct"], "total": qa["total"],
            "perplexity": text["perplexity"], "answers": qa["answers"]}


def run_quickstart(output_dir: str, overrides: list[str], show: int = 8) -> dict:
    from hftoolkit.models.registry import pull
    from hftoolkit.recipe.load import load_recipe
    from hftoolkit.train.run import train

    started = time.time()
    recipe = load_recipe("cars_qa", [f"output.dir={output_dir}", *overrides])
    system = recipe.data.system_prompt
    base = str(pull(recipe.model.name))
    print("\n== base model on held-out car questions and text ==")
    before = measure(base, system)
    print("\n== fine-tuning (recipe cars_qa) ==")
    train(recipe, overwrite=True)
    print("\n== fine-tuned model on the same held-out data ==")
    after = measure(output_dir, system)

    print(f"\nheld-out car questions ({before['total']}; correct = answer contains the key fact):")
    print(f"{'':12}{'answer accuracy':>18}{'perplexity on held-out car text':>34}")
    for name, result in (("base", before), ("fine-tuned", after)):
        print(f"{name:12}{result['correct']:>7}/{result['total']} = {result['accuracy']:.3f}"
              f"{result['perplexity']:>34.2f}")
    print("\nsome held-out answers, base -> fine-tuned:")
    for old, new in list(zip(before["answers"], after["answers"]))[:show]:
        print(f"Q: {new['question']}\n  base:       {old['answer'][:140]}\n"
              f"  fine-tuned: {new['answer'][:140]}  [{'correct' if new['correct'] else 'miss'}]")
    summary = {"base": before, "fine_tuned": after, "seconds": round(time.time() - started, 1)}
    Path(output_dir, "quickstart_results.json").write_text(json.dumps(summary, indent=2))
    print(f"\ntotal {summary['seconds']:.0f}s; details in {output_dir}/quickstart_results.json")
    return summary

