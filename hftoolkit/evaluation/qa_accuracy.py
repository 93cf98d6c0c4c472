"""Answer accuracy on question/answer data, by the normalised key-fact rule (`answer_match`).

Rows may carry a `group` (the bundled held-out set has `corpus_only` and
`paraphrase`); accuracy is reported overall and per group. With retrieval, it
also reports how often the passages put into the prompt held a key fact, which
separates "retrieval missed" from "the model misread".
"""

from __future__ import annotations

from collections import defaultdict

from hftoolkit.data.answer_match import contains, is_correct
from hftoolkit.generate.engine import Completion, GenerationSettings


def score_answers(rows: list[dict], completions: list[Completion]) -> dict:
    """Per-answer verdicts plus totals, overall and per group."""
    answers = []
    for row, done in zip(rows, completions):
        facts = row.get("key_facts") or [row["answer"]]
        answer = {"question": row["question"], "answer": done.completion.strip(), "key_facts": facts,
                  "group": row.get("group") or "all", "correct": is_correct(done.completion, facts)}
        if done.passages:
            answer["sources"] = done.sources
            answer["fact_in_passages"] = any(contains(h.text, f) for h in done.passages for f in facts)
        answers.append(answer)
    result = _totals(answers)
    groups = defaultdict(list)
    for answer in answers:
        groups[answer["group"]].append(answer)
    if len(groups) > 1:
        result["groups"] = {name: _totals(items) for name, items in sorted(groups.items())}
    result["answers"] = answers
    return result


def _totals(answers: list[dict]) -> dict:
    correct = sum(a["correct"] for a in answers)
    totals = {"accuracy": correct / len(answers) if answers else 0.0, "correct": correct, "total": len(answers)}
    with_passages = [a for a in answers if "fact_in_passages" in a]
    if with_passages:
        totals["fact_in_passages"] = sum(a["fact_in_passages"] for a in with_passages) / len(with_passages)
    return totals


def qa_accuracy(generator, rows: list[dict], batch_size: int = 16, max_new_tokens: int = 48) -> dict:
    """Unsampled chat answers (greedy, or the checkpoint's beam search) from a `TextGenerator` (retrieval as it is
    set up) to every question, scored."""
    settings = GenerationSettings(max_new_tokens=max_new_tokens, greedy=True)
    completions = generator.generate([row["question"] for row in rows], chat=True, settings=settings,
                                     batch_size=batch_size)
    return score_answers(rows, completions)


def summary_lines(result: dict) -> list[str]:
    """Human-readable accuracy lines: overall, then each group."""
    def line(name: str, totals: dict) -> str:
        text = f"{name}: {totals['correct']}/{totals['total']} = {totals['accuracy']:.3f}"
        if "fact_in_passages" in totals:
            text += f" (key fact in the retrieved passages for {totals['fact_in_passages']:.3f})"
        return text
    lines = [line("answer accuracy", result)]
    lines += [line(f"  {name}", totals) for name, totals in result.get("groups", {}).items()]
    lines.append("(correct = the answer states a key fact, after normalising case, punctuation and numbers)")
    return lines
