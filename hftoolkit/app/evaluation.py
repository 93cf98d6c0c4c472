"""The `eval` verb: the metric set that fits the checkpoint's head, on a data file; and `data mistakes`, the
answers it gets wrong as preference pairs."""

from __future__ import annotations

import json

from hftoolkit import defaults
from hftoolkit.app.generation import resolve_generation_precision
from hftoolkit.data.qa_rows import scoring_rows
from hftoolkit.data.sources import load_split
from hftoolkit.errors import UserError
from hftoolkit.evaluation.encoder import evaluate_encoder, head_of
from hftoolkit.evaluation.mistakes import mistake_pairs
from hftoolkit.evaluation.run import evaluate_causal_lm
from hftoolkit.generate.api import TextGenerator
from hftoolkit.safe_write import require_new_file, write_new_file


def evaluate(checkpoint: str, data: str, system: str | None = None, batch_size: int | None = None,
             context: str | None = defaults.CONTEXT, top_k: int | None = None, context_tokens: int | None = None,
             sentences: int | None = None, precision: str = defaults.GENERATE_PRECISION, log=print) -> dict:
    """A causal LM gets answer accuracy on QA rows (with retrieval as `context` says) or perplexity on text;
    a classifier gets accuracy/F1 (or regression errors); a masked LM gets masked-token perplexity.
    `precision` (causal LMs): fp32, bf16, or auto as for `serve`."""
    head = head_of(checkpoint)
    if head != "causal_lm":
        return evaluate_encoder(checkpoint, data, head, batch_size=batch_size)
    return evaluate_causal_lm(checkpoint, data, system=system, batch_size=batch_size or defaults.EVAL_GENERATION_BATCH,
                              context=context, top_k=top_k, context_tokens=context_tokens, sentences=sentences,
                              precision=resolve_generation_precision(precision, log), log=log)


def find_mistakes(checkpoint: str, data: str, out: str, system: str | None = None, batch_size: int | None = None,
                  context: str | None = defaults.CONTEXT, top_k: int | None = None, context_tokens: int | None = None,
                  sentences: int | None = None, precision: str = defaults.GENERATE_PRECISION, log=print) -> dict:
    """Answer every question of a QA file as `evaluate` does and write each wrong answer to `out` (a new .jsonl)
    as a preference pair: prompt as shown (passages included), system, chosen = the reference answer, rejected =
    the model's. Returns the accuracy totals and the number of pairs written."""
    require_new_file(out, "--out")  # before any answer is generated
    if head_of(checkpoint) != "causal_lm":
        raise UserError(f"CHECKPOINT: '{checkpoint}' is not a causal LM; mistakes are a generating model's answers")
    rows = load_split(data, "--data")
    if "question" not in rows.column_names or "answer" not in rows.column_names:
        raise UserError(f"--data: '{data}' needs 'question' and 'answer' columns (columns: "
                        f"{', '.join(rows.column_names)})")
    questions = scoring_rows(rows, "--data", data, need_answer=True)
    generator = TextGenerator(checkpoint, cache="off", system=system, log=log, context=context, top_k=top_k,
                              context_tokens=context_tokens, sentences=sentences,
                              precision=resolve_generation_precision(precision, log))
    pairs, totals = mistake_pairs(generator, questions, batch_size or defaults.EVAL_GENERATION_BATCH)
    if not pairs:
        raise UserError(f"--data: the checkpoint answered all {totals['total']} questions right; there are no "
                        "mistakes to learn from")
    write_new_file(out, lambda staging: staging.write_text("".join(json.dumps(p) + "\n" for p in pairs)), "--out")
    return {**totals, "pairs": len(pairs), "out": out}
