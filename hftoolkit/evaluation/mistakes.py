"""A checkpoint's own mistakes as preference pairs: what it answered wrongly (rejected) against the reference
(chosen), on questions it was trained on.

    hftoolkit data mistakes runs/cars_qa --data bundled://corpora/cars/qa/train.jsonl --out mistakes.jsonl

Each question is answered as `eval` answers it (retrieval as trained, the checkpoint's decoding) and scored by
the same key-fact rule; each miss becomes one row whose prompt is the user message exactly as the model saw it,
passages included, with the system prompt it had, so a DPO recipe trains on the prompt that went wrong.
"""

from __future__ import annotations

from hftoolkit.evaluation.qa_accuracy import score_answers
from hftoolkit.generate.api import TextGenerator, shown_prompt
from hftoolkit.generate.engine import GenerationSettings

MAX_NEW_TOKENS = 48  # as eval


def mistake_pairs(generator: TextGenerator, rows: list[dict], batch_size: int) -> tuple[list[dict], dict]:
    """(one preference row per wrong answer, the accuracy totals over all rows)."""
    completions = generator.generate([row["question"] for row in rows], chat=True, batch_size=batch_size,
                                     settings=GenerationSettings(max_new_tokens=MAX_NEW_TOKENS, greedy=True))
    scored = score_answers(rows, completions)
    pairs = []
    for row, done, verdict in zip(rows, completions, scored["answers"]):
        rejected, chosen = done.completion.strip(), row["answer"].strip()
        if verdict["correct"] or not rejected or rejected == chosen:
            continue
        pairs.append({"prompt": shown_prompt(row["question"], done),
                      **({"system": generator.system} if generator.system else {}),
                      "chosen": chosen, "rejected": rejected, "question": row["question"]})
    totals = {key: scored[key] for key in ("accuracy", "correct", "total", "fact_in_passages") if key in scored}
    return pairs, totals
