"""Step 1b for qa data with `data.retrieval`: give every question the passages a reader would see.

Training questions get RAFT-style context (Zhang et al. 2024): most see the
passage that holds the answer among retrieved distractors, in shuffled order;
`distractor_percent` of them see only passages without the answer, and must
answer from what the weights learned. Validation questions see exactly what
generation would retrieve (the top_k passages, best first). A passage "holds
the answer" when it states one of the row's key facts (or, without key_facts,
is the best hit). With `counterfactual_percent`, pairs whose answer restates
a value of their passages are also taught as a copy with that value changed
alike in both (Longpre et al. 2021), so the model learns to copy from the
passages instead of recalling what it memorised. Each example is fitted to
`preprocess.block_size` with the same budget rule generation uses, so nothing
is cut off at training time.
"""

from __future__ import annotations

import random
import re

from hftoolkit.data.answer_match import contains
from hftoolkit.data.chat_format import to_messages
from hftoolkit.retrieval.context import augment, format_passages
from hftoolkit.retrieval.index import IndexSettings, Retriever, build_index
from hftoolkit.retrieval.store import Hit

PASSAGES_COLUMN = "passages"


def choose_passages(hits: list[Hit], facts: list[str], top_k: int, distractor_only: bool, rng: random.Random,
                    fallback: list[Hit]) -> list[Hit]:
    """RAFT context for one training question, most important first: the answer passage plus
    distractors, or distractors only. The caller shuffles what fits its token budget."""
    bearing = [h for h in hits if any(contains(h.text, f) for f in facts)] if facts else hits[:1]
    if not bearing and facts:  # retrieval missed it: the oracle passage is known, as in RAFT
        bearing = [h for h in fallback if any(contains(h.text, f) for f in facts)][:1]
    bearing_ids = {h.chunk_id for h in bearing}
    distractors = [h for h in hits if h.chunk_id not in bearing_ids]
    if len(distractors) < top_k:  # too few hard negatives: add random passages that lack the answer
        spare = [h for h in fallback if h.chunk_id not in bearing_ids and h not in distractors
                 and not any(contains(h.text, f) for f in facts)]
        distractors += rng.sample(spare, min(len(spare), top_k - len(distractors)))
    if distractor_only or not bearing:
        return distractors[:top_k]
    return [bearing[0]] + distractors[:top_k - 1]


def choose_sentences(ranked: list[Hit], facts: list[str], count: int, distractor_only: bool, rng: random.Random,
                     oracle: Hit | None) -> list[Hit]:
    """RAFT context made of single sentences, in the order retrieval ranked them (as generation will
    see them): the best `count`, with a sentence that states the answer put in at a random place when
    retrieval ranked none high enough; or, for distractor-only questions, the best without the answer."""
    bears = lambda hit: any(contains(hit.text, f) for f in facts)  # noqa: E731
    if not facts:
        return ranked[:count]
    if distractor_only:
        return [h for h in ranked if not bears(h)][:count]
    if any(bears(h) for h in ranked[:count]):
        return ranked[:count]
    oracle = next((h for h in ranked if bears(h)), oracle)
    chosen = [h for h in ranked if not bears(h)][:count - 1]
    if oracle is not None:
        chosen.insert(rng.randint(0, len(chosen)), oracle)
    return chosen


def _oracle_sentence(retriever, everything: list[Hit], facts: list[str]) -> Hit | None:
    """A sentence anywhere in the index that states one of `facts` (retrieval missed it)."""
    for chunk in everything:
        if any(contains(chunk.text, f) for f in facts):
            for sentence in retriever.rank_sentences(retriever.embedder.encode([" ".join(facts)])[0], [chunk]):
                if any(contains(sentence.text, f) for f in facts):
                    return sentence
    return None


NUMBER = re.compile(r"(?<![\d.,])\d+(?:[.,]\d+)*(?!\d)")  # 48, 14.7, 5,000; not a piece of one


def _term_pattern(fact: str) -> re.Pattern:
    """Where a text states a word fact, to its word's end: a fact may be a stem ("lubricat")."""
    return re.compile(rf"\b{re.escape(fact)}\w*", re.IGNORECASE)


def counterfactual(answer: str, passages: str, facts: list[str], terms: list[str], rng: random.Random
                   ) -> tuple[str, str] | None:
    """(answer, passages) with the answer's value changed alike in both, or None when the passages do not
    state a value of the answer. A number gets another leading digit (5,000 -> 7,000) that neither text
    holds; otherwise a key-fact term becomes one of `terms` (other pairs' key facts) that neither holds."""
    numbers = set(NUMBER.findall(passages))
    present = numbers | set(NUMBER.findall(answer))
    mapping: dict[str, str] = {}
    for value in dict.fromkeys(NUMBER.findall(answer)):
        if value in numbers and value not in ("0", "1"):  # 1 and 0 occur everywhere ("15:1", "Type 1")
            options = [digit + value[1:] for digit in "123456789"
                       if digit != value[0] and digit + value[1:] not in present | set(mapping.values())]
            if options:
                mapping[value] = rng.choice(options)
    if mapping:
        swap = lambda text: NUMBER.sub(lambda m: mapping.get(m.group(0), m.group(0)), text)  # noqa: E731
        return swap(answer), swap(passages)
    for fact in facts:
        if NUMBER.search(fact):
            continue
        pattern = _term_pattern(fact)
        if pattern.search(answer) and pattern.search(passages):
            options = [t for t in terms if t.lower() not in answer.lower() and t.lower() not in passages.lower()]
            if options:
                new = rng.choice(options)
                keep_case = lambda m: new[:1].upper() + new[1:] if m.group(0)[:1].isupper() else new  # noqa: E731
                return pattern.sub(keep_case, answer), pattern.sub(keep_case, passages)
    return None


def key_fact_terms(split, answer_column: str) -> list[str]:
    """The words each training answer states its (non-numeric) key facts in: what counterfactual copies
    swap in."""
    terms = []
    for answer, facts in zip(split[answer_column], split["key_facts"]):
        for fact in facts or []:
            found = _term_pattern(fact).search(str(answer))
            if found and not NUMBER.search(fact):
                terms.append(found.group(0).lower())
    return sorted(set(terms))


def counterfactual_copies(split, blocks: list[str], recipe) -> list[dict]:
    """Extra training rows: for `counterfactual_percent` of the pairs, the pair with its value changed."""
    data = recipe.data
    if not data.retrieval.counterfactual_percent or "key_facts" not in split.column_names:
        return []
    terms, copies = key_fact_terms(split, data.answer_column), []
    for number, (row, block) in enumerate(zip(split, blocks)):
        rng = random.Random(f"counterfactual:{recipe.training.seed}:{number}")
        if rng.random() * 100 < data.retrieval.counterfactual_percent:
            changed = counterfactual(str(row[data.answer_column]), block, row["key_facts"] or [], terms, rng)
            if changed:
                copies.append({**row, data.answer_column: changed[0], PASSAGES_COLUMN: changed[1]})
    return copies


def add_passages(split, retriever, tokenizer, recipe, training: bool):
    """`split` with a `passages` column (the formatted block put before each question) and stats."""
    data, settings = recipe.data, recipe.data.retrieval
    questions = [str(q) for q in split[data.question_column]]
    facts_column = split["key_facts"] if "key_facts" in split.column_names else [None] * len(split)
    if settings.sentences:  # training ranks every sentence of the chunks; it picks from all of them
        found = retriever.search_many(questions, settings.top_k, 10**6 if training else settings.sentences)
    else:
        found = retriever.search_many(questions, settings.top_k * 2 if training else settings.top_k)
    everything = retriever.store.chunks() if training else []
    count = lambda text: len(tokenizer(text, add_special_tokens=False)["input_ids"])  # noqa: E731
    render = lambda messages: tokenizer.apply_chat_template(messages, tokenize=False)  # noqa: E731
    blocks, with_answer = [], 0
    for number, (row, hits, facts) in enumerate(zip(split, found, facts_column)):
        facts = [f for f in (facts or []) if f]
        if training:
            rng = random.Random(f"{recipe.training.seed}:{number}")
            distractor_only = rng.random() * 100 < settings.distractor_percent
            if settings.sentences:
                missed = facts and not any(contains(h.text, f) for h in hits for f in facts)
                oracle = _oracle_sentence(retriever, everything, facts) if missed else None
                hits = choose_sentences(hits, facts, settings.sentences, distractor_only, rng, oracle)
            else:
                hits = choose_passages(hits, facts, settings.top_k, distractor_only, rng, everything)
        conversation = to_messages({**row, PASSAGES_COLUMN: ""}, data)
        _, used = augment(conversation, hits, render, count, recipe.preprocess.block_size - 1,
                          settings.context_tokens)
        if training and not settings.sentences:  # the answer is not always first: read, not count
            rng.shuffle(used)
        blocks.append(format_passages([h.text for h in used]))
        with_answer += any(contains(h.text, f) for h in used for f in facts) if facts else bool(used)
    stats = {"questions": len(blocks), "passages_hold_a_key_fact": round(with_answer / max(1, len(blocks)), 3)}
    copies = counterfactual_copies(split, blocks, recipe) if training else []
    split = split.add_column(PASSAGES_COLUMN, blocks)
    if copies:
        from datasets import Dataset, concatenate_datasets

        split = concatenate_datasets([split, Dataset.from_list(copies, features=split.features)])
        stats["counterfactual_copies"] = len(copies)
    return split, stats


def attach_passages(loaded, recipe, tokenizer, log=print):
    """(loaded data with passages in both splits, the Retriever): builds or updates the index first when
    data.retrieval.corpus is set. The preprocessing cache key gains the index's fingerprint."""
    from dataclasses import replace

    settings = recipe.data.retrieval
    if settings.corpus:
        build_index(settings.corpus, settings.index,
                    IndexSettings(settings.embedder, settings.chunk_tokens, settings.chunk_tokens // 4), log=log)
    retriever = Retriever(settings.index, log=log)
    train, train_stats = add_passages(loaded.train, retriever, tokenizer, recipe, training=True)
    validation, validation_stats = add_passages(loaded.validation, retriever, tokenizer, recipe, training=False)
    log(f"retrieval: index {settings.index} ({retriever.store.count()} chunks); key fact in the passages of "
        f"{train_stats['passages_hold_a_key_fact']:.0%} of training and "
        f"{validation_stats['passages_hold_a_key_fact']:.0%} of validation questions"
        + (f"; {train_stats['counterfactual_copies']} counterfactual copies" if "counterfactual_copies" in train_stats
           else ""))
    return replace(loaded, train=train, validation=validation,
                   content_hash=f"{loaded.content_hash}-index:{retriever.fingerprint}"), retriever
