"""`hftoolkit eval`: the metric set that fits a checkpoint's head, on a data file."""

from __future__ import annotations

from hftoolkit import defaults
from hftoolkit.data.qa_rows import scoring_rows
from hftoolkit.data.sources import load_split
from hftoolkit.errors import UserError
from hftoolkit.evaluation.perplexity import text_perplexity
from hftoolkit.evaluation.qa_accuracy import qa_accuracy
from hftoolkit.generate.api import TextGenerator
from hftoolkit.generate.engine import Generator, context_length


def evaluate_causal_lm(checkpoint: str, data: str, system: str | None = None, batch_size: int = defaults.EVAL_GENERATION_BATCH,
                       text_column: str = "text", block_size: int = 256, context: str | None = defaults.CONTEXT,
                       top_k: int | None = None, context_tokens: int | None = None, log=print,
                       sentences: int | None = None, precision: str = defaults.GENERATE_PRECISION) -> dict:
    """QA files (a `question` column) get answer accuracy, with retrieval as `context` says; text files
    get perplexity. `precision`: fp32 or bf16 weights."""
    rows = load_split(data, "--data")
    if "question" in rows.column_names:
        questions = scoring_rows(rows, "--data", data)  # before any weights load
        generator = TextGenerator(checkpoint, cache="off", system=system, log=log, context=context, top_k=top_k,
                                  context_tokens=context_tokens, sentences=sentences, precision=precision)
        result = qa_accuracy(generator, questions, batch_size)
        result["retrieval"] = generator.context.retriever.path if generator.context else None
        return result
    if text_column not in rows.column_names:
        raise UserError(f"--data: '{data}' has neither a 'question' nor a '{text_column}' column "
                        f"(columns: {', '.join(rows.column_names)})")

    generator = Generator.load(checkpoint, precision)
    block_size = min(block_size, context_length(checkpoint))  # a small model's window may be shorter
    texts = [t for t in rows[text_column] if isinstance(t, str) and t.strip()]
    return text_perplexity(generator.model, generator.tokenizer, texts, block_size=block_size)
