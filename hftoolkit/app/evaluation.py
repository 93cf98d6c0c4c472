"""The `eval` verb: the metric set that fits the checkpoint's head, on a data file."""

from __future__ import annotations

from hftoolkit import defaults
from hftoolkit.app.generation import resolve_generation_precision
from hftoolkit.evaluation.encoder import evaluate_encoder, head_of
from hftoolkit.evaluation.run import evaluate_causal_lm


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
