"""The `train` and `quickstart` verbs: a recipe by name or path, overrides, an output folder, one or N processes."""

from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path

from hftoolkit import defaults
from hftoolkit.checkpoint.output_dir import check_output_dir, record_written
from hftoolkit.errors import UserError
from hftoolkit.evaluation.run import evaluate_causal_lm
from hftoolkit.models.registry import pull
from hftoolkit.recipe.load import load_recipe
from hftoolkit.recipe.schema import Recipe
from hftoolkit.train import distributed
from hftoolkit.train.checks import check_before_training
from hftoolkit.train.run import train as run_training

QUICKSTART_RECIPE = "cars_qa"
HELD_OUT_QA = "bundled://corpora/cars/qa/heldout.jsonl"
GROUPS = ("corpus_only", "paraphrase")


def prepare_recipe(recipe: str, overrides: list[str] | tuple[str, ...] = (), output_dir: str | None = None) -> Recipe:
    """The typed recipe with overrides and the output folder applied (output_dir wins over output.dir)."""
    loaded = load_recipe(recipe, list(overrides))
    return replace(loaded, output=replace(loaded.output, dir=output_dir)) if output_dir else loaded


def check_process_count(recipe: Recipe, nproc: int) -> None:
    if nproc < 1 or recipe.training.batch_size % nproc:
        raise UserError(f"--nproc {nproc}: training.batch_size {recipe.training.batch_size} is the global "
                        "batch and must divide evenly among the processes; choose N that divides it")


def train(recipe: str, overrides: list[str] | tuple[str, ...] = (), output_dir: str | None = None,
          resume: bool = False, overwrite: bool = False, force: bool = False, nproc: int | None = None,
          log=print) -> dict | None:
    """Train a recipe (a bundled name or a YAML path) into its output folder; returns the final metrics
    (None when `nproc` ran it in N processes, whose rank 0 wrote them to metrics.json)."""
    typed = prepare_recipe(recipe, overrides, output_dir)
    if nproc is None:
        try:
            return run_training(typed, resume=resume, overwrite=overwrite, force=force, log=log)
        finally:
            distributed.finish()
    check_before_training(typed)  # the N processes check again; this says what is wrong once, before they start
    check_output_dir(typed.output.dir, resume, overwrite)
    check_process_count(typed, nproc)
    argv = ["train", recipe, *overrides, *(["--output-dir", output_dir] if output_dir else []),
            *(["--resume"] if resume else []), *(["--overwrite"] if overwrite else []), *(["--force"] if force else [])]
    code = distributed.launch(argv, nproc)
    if code:
        raise SystemExit(code)
    return None


def measure(checkpoint: str, context: str | None, system: str | None = None) -> dict:
    """Held-out answer accuracy of one checkpoint, overall and per group."""
    return evaluate_causal_lm(checkpoint, HELD_OUT_QA, system=system, context=context, log=lambda m: None)


def quickstart(output_dir: str = defaults.QUICKSTART_DIR, overrides: list[str] | tuple[str, ...] = (), show: int = 6,
               log=print) -> dict:
    """The car demo end to end: pull SmolLM2, measure the base model on the honest held-out questions, train
    `cars_qa` (it builds the corpus index, then fine-tunes retrieval-aware), measure the fine-tuned model
    with the index it was trained with, and print both with some answers."""
    started = time.time()
    recipe = load_recipe(QUICKSTART_RECIPE, [f"output.dir={output_dir}", *overrides])
    check_before_training(recipe)
    check_output_dir(output_dir, resume=False, overwrite=True)  # only an earlier hftoolkit run is replaced
    system = recipe.data.system_prompt
    base = str(pull(recipe.model.name, log=log))
    index = recipe.data.retrieval.index if recipe.data.retrieval else None
    results = {}
    log("\n== base model on the held-out car questions ==")
    results["base"] = measure(base, "off", system)
    log(f"\n== fine-tuning (recipe {QUICKSTART_RECIPE}) ==")
    run_training(recipe, overwrite=True, log=log)
    log("\n== fine-tuned model on the same questions ==")
    name = "fine-tuned + retrieval" if index else "fine-tuned"
    results[name] = measure(output_dir, "auto")
    for line in quickstart_report(results, name, show):
        log(line)
    summary = {"results": results, "seconds": round(time.time() - started, 1)}
    results_file = Path(output_dir, "quickstart_results.json")
    results_file.write_text(json.dumps(summary, indent=2))
    record_written(Path(output_dir), [results_file])
    log(f"\ntotal {summary['seconds']:.0f}s; details in {output_dir}/quickstart_results.json")
    log(f"serve it: hftoolkit serve {output_dir}   (OpenAI-compatible API at "
        f"http://{defaults.SERVE_HOST}:{defaults.SERVE_PORT}/v1, chat page at "
        f"http://{defaults.SERVE_HOST}:{defaults.SERVE_PORT}/)")
    return summary


def quickstart_report(results: dict, name: str, show: int) -> list[str]:
    lines = [f"\nheld-out car questions: {results['base']['total']} (correct = the answer states a key fact)",
             f"{'':26}{'all':>16}" + "".join(f"{g:>18}" for g in GROUPS)]
    for label, result in results.items():
        cells = [_cell(result)] + [_cell(result.get("groups", {}).get(g, {})) for g in GROUPS]
        lines.append(f"{label:26}{cells[0]:>16}" + "".join(f"{c:>18}" for c in cells[1:]))
    lines.append("\nsome held-out answers, base -> fine-tuned:")
    for old, new in list(zip(results["base"]["answers"], results[name]["answers"]))[:show]:
        source = f"  [from {new['sources'][0]['file']}]" if new.get("sources") else ""
        lines.append(f"Q: {new['question']}\n  base:       {old['answer'][:140]}\n"
                     f"  fine-tuned: {new['answer'][:140]}  [{'correct' if new['correct'] else 'miss'}]{source}")
    return lines


def _cell(totals: dict) -> str:
    if not totals:
        return "-"
    return f"{totals['correct']}/{totals['total']} = {totals['accuracy']:.2f}"
