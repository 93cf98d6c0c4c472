"""Answer accuracy on question/answer data, by a stated rule.

Rule: an answer is correct when it contains at least one of the row's
`key_facts` (case-insensitive substring), e.g. "two years" for the brake fluid
interval. Rows without key_facts fall back to the reference answer's text.
"""

from __future__ import annotations

from hftoolkit.generate.engine import GenerationSettings, Generator


def is_correct(answer: str, key_facts: list[str]) -> bool:
    lowered = answer.lower()
    return any(fact.lower() in lowered for fact in key_facts if fact)


def qa_accuracy(generator: Generator, rows: list[dict], system: str | None = None, batch_size: int = 16,
                max_new_tokens: int = 48) -> dict:
    """Greedy answers to every question and the share that state a key fact."""
    prompts = [generator.render(row["question"], chat=True, system=system) for row in rows]
    settings = GenerationSettings(max_new_tokens=max_new_tokens)
    completions = generator.generate(prompts, settings, batch_size=batch_size)
    answers = []
    for row, done in zip(rows, completions):
        facts = row.get("key_facts") or [row["answer"]]
        answers.append({"question": row["question"], "answer": done.completion.strip(),
                        "key_facts": facts, "correct": is_correct(done.completion, facts)})
    correct = sum(a["correct"] for a in answers)
    return {"accuracy": correct / len(answers) if answers else 0.0, "correct": correct, "total": len(answers),
            "answers": answers}
