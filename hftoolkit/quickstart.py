"""`hftoolkit quickstart`: the car demo end to end, on the honest held-out questions.

pull SmolLM2 → measure the base model → train the `cars_qa` recipe (it builds
the corpus index, then fine-tunes retrieval-aware) → measure the fine-tuned model,
which answers from the index it was trained with → print both and some answers.
The README's table adds the other combinations (base + retrieval, the older
recipe with and without retrieval), each from one `hftoolkit eval` command.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from hftoolkit.checkpoint.output_dir import check_output_dir, record_written

HELD_OUT_QA = "bundled://corpora/cars/qa/heldout.jsonl"
GROUPS = ("corpus_only", "paraphrase")


def measure(checkpoint: str, context: str | None, system: str | None = None) -> dict:
    """Held-out answer accuracy of one checkpoint, overall and per group."""
    from hftoolkit.evaluation.run import evaluate_causal_lm

    return evaluate_causal_lm(checkpoint, HELD_OUT_QA, system=system, context=context, log=lambda m: None)


def run_quickstart(output_dir: str, overrides: list[str], show: int = 6) -> dict:
    from hftoolkit.models.registry import pull
    from hftoolkit.recipe.load import load_recipe
    from hftoolkit.recipe.validate import validate
    from hftoolkit.train.run import train

    started = time.time()
    recipe = load_recipe("cars_qa", [f"output.dir={output_dir}", *overrides])
    validate(recipe)
    check_output_dir(output_dir, resume=False, overwrite=True)  # only an earlier hftoolkit run is replaced
    system = recipe.data.system_prompt
    base = str(pull(recipe.model.name))
    index = recipe.data.retrieval.index if recipe.data.retrieval else None
    results = {}
    print("\n== base model on the held-out car questions ==")
    results["base"] = measure(base, "off", system)
    print("\n== fine-tuning (recipe cars_qa) ==")
    train(recipe, overwrite=True)
    print("\n== fine-tuned model on the same questions ==")
    name = "fine-tuned + retrieval" if index else "fine-tuned"
    results[name] = measure(output_dir, "auto")

    print(f"\nheld-out car questions: {results['base']['total']} (correct = the answer states a key fact)")
    print(f"{'':26}{'all':>16}" + "".join(f"{g:>18}" for g in GROUPS))
    for label, result in results.items():
        cells = [_cell(result)] + [_cell(result.get("groups", {}).get(g, {})) for g in GROUPS]
        print(f"{label:26}{cells[0]:>16}" + "".join(f"{c:>18}" for c in cells[1:]))
    print("\nsome held-out answers, base -> fine-tuned:")
    for old, new in list(zip(results["base"]["answers"], results[name]["answers"]))[:show]:
        source = f"  [from {new['sources'][0]['file']}]" if new.get("sources") else ""
        print(f"Q: {new['question']}\n  base:       {old['answer'][:140]}\n"
              f"  fine-tuned: {new['answer'][:140]}  [{'correct' if new['correct'] else 'miss'}]{source}")
    summary = {"results": results, "seconds": round(time.time() - started, 1)}
    results_file = Path(output_dir, "quickstart_results.json")
    results_file.write_text(json.dumps(summary, indent=2))
    record_written(Path(output_dir), [results_file])
    print(f"\ntotal {summary['seconds']:.0f}s; details in {output_dir}/quickstart_results.json")
    return summary


def _cell(totals: dict) -> str:
    if not totals:
        return "-"
    return f"{totals['correct']}/{totals['total']} = {totals['accuracy']:.2f}"
