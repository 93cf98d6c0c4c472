"""`hftoolkit eval`: the metric set that fits a checkpoint's head, on a data file."""

from __future__ import annotations

from hftoolkit.checkpoint.saved import saved_system_prompt
from hftoolkit.data.sources import load_split
from hftoolkit.errors import UserError


def evaluate_causal_lm(checkpoint: str, data: str, system: str | None = None, batch_size: int = 16,
                       text_column: str = "text", block_size: int = 256) -> dict:
    """QA files (a `question` column) get answer accuracy; text files get perplexity."""
    from hftoolkit.evaluation.perplexity import text_perplexity
    from hftoolkit.evaluation.qa_accuracy import qa_accuracy
    from hftoolkit.generate.engine import Generator

    rows = load_split(data, "--data")
    generator = Generator.load(checkpoint)
    if "question" in rows.column_names:
        return qa_accuracy(generator, list(rows), system or saved_system_prompt(checkpoint), batch_size)
    if text_column not in rows.column_names:
        raise UserError(f"--data: '{data}' has neither a 'question' nor a '{text_column}' column "
                        f"(columns: {', '.join(rows.column_names)})")
    texts = [t for t in rows[text_column] if isinstance(t, str) and t.strip()]
    return text_perplexity(generator.model, generator.tokenizer, texts, block_size=block_size)
