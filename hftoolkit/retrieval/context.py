"""Put retrieved passages into a question, within a token budget. Training and generation share it.

The passages go into the user's message (so any chat template carries them):

    Passages:
    [1] first chunk ...
    [2] second chunk ...

    Question: the user's question

Passages are added best first while the whole prompt fits; the first one that
does not fit is cut at a word boundary, and the rest are left out. A prompt is
never made longer than the limit it is given.
"""

from __future__ import annotations

import re
from dataclasses import replace
from typing import Callable

from hftoolkit.retrieval.store import Hit

MIN_PASSAGE_WORDS = 8  # a cut passage shorter than this is left out


def format_passages(texts: list[str]) -> str:
    return "\n".join(f"[{i}] {' '.join(text.split())}" for i, text in enumerate(texts, 1))


def question_with_context(question: str, passages: str) -> str:
    return f"Passages:\n{passages}\n\nQuestion: {question}" if passages else question


def fit_passages(hits: list[Hit], fits: Callable[[str], bool]) -> tuple[str, list[Hit]]:
    """The longest passages block, built from `hits` in order, for which `fits(block)` holds.

    Returns the block and the hits it uses (a cut hit has its `end` and `text` shortened).
    """
    used: list[Hit] = []
    for hit in hits:
        if fits(format_passages([h.text for h in used] + [hit.text])):
            used.append(hit)
            continue
        cut = _longest_prefix(hit, lambda h: fits(format_passages([u.text for u in used] + [h.text])))
        if cut is not None:
            used.append(cut)
        break
    return format_passages([h.text for h in used]), used


def _longest_prefix(hit: Hit, fits: Callable[[Hit], bool]) -> Hit | None:
    """Binary search over word boundaries for the longest prefix of `hit` that fits."""
    ends = [m.end() for m in re.finditer(r"\S+", hit.text)]
    low, high, best = MIN_PASSAGE_WORDS, len(ends) - 1, None
    while low <= high:
        middle = (low + high) // 2
        candidate = replace(hit, text=hit.text[:ends[middle - 1]], end=hit.start + ends[middle - 1])
        if fits(candidate):
            best, low = candidate, middle + 1
        else:
            high = middle - 1
    return best


def token_budget_check(count_tokens: Callable[[str], int], build: Callable[[str], str], limit: int,
                       passage_tokens: int) -> Callable[[str], bool]:
    """fits(block): the block is at most `passage_tokens` tokens and the built prompt at most `limit`."""
    def fits(block: str) -> bool:
        return count_tokens(block) <= passage_tokens and count_tokens(build(block)) <= limit
    return fits


def question_of(prompt: str | list[dict]) -> str:
    """The text to retrieve for: the prompt itself, or the last user message."""
    if isinstance(prompt, str):
        return prompt
    users = [m for m in prompt if m.get("role") == "user"]
    return str(users[-1].get("content", "")) if users else ""


def with_passages(prompt: str | list[dict], block: str) -> str | list[dict]:
    """The same prompt with the passages block put before its (last) question."""
    if isinstance(prompt, str):
        return question_with_context(prompt, block)
    messages = [dict(m) for m in prompt]
    last_user = max((i for i, m in enumerate(messages) if m.get("role") == "user"), default=None)
    if last_user is not None:
        messages[last_user]["content"] = question_with_context(str(messages[last_user]["content"]), block)
    return messages


def augment(prompt: str | list[dict], hits: list[Hit], render: Callable[[object], str],
            count_tokens: Callable[[str], int], limit: int, passage_tokens: int) -> tuple[object, list[Hit]]:
    """`prompt` with as many of `hits` as fit: rendered, it stays within `limit` tokens."""
    fits = token_budget_check(count_tokens, lambda block: render(with_passages(prompt, block)), limit,
                              passage_tokens)
    block, used = fit_passages(hits, fits)
    return (with_passages(prompt, block) if used else prompt), used
