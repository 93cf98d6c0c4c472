"""Step 1b for qa data with `data.retrieval`: give every question the passages a reader would see.

Training questions get RAFT-style context (Zhang et al. 2024): most see the
passage that holds the answer among retrieved distractors, in shuffled order;
`distractor_percent` of them see only passages without the answer, and must
answer from what the weights learned. Validation questions see exactly what
generation would retrieve (the top_k passages, best first). A passage "holds
the answer" when it states one of the row's key facts (or, without key_facts,
is the best hit). Each example is fitted to `preprocess.block_size` with the
same budget rule generation uses, so nothing is cut off at training time.
"""

from __future__ import annotations

import random

from hftoolkit.evaluation.answer_match import contains
from hftoolkit.retrieval.context import augment, format_passages
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


def add_passages(split, retriever, tokenizer, recipe, training: bool):
    """`split` with a `passages` column (the formatted block put before each question) and stats."""
    from hftoolkit.data.chat_format import to_messages

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
    return split.add_column(PASSAGES_COLUMN, blocks), stats


def attach_passages(loaded, recipe, tokenizer, log=print):
    """(loaded data with passages in both splits, the Retriever): builds or updates the index first when
    data.retrieval.corpus is set. The preprocessing cache key gains the index's fingerprint."""
    from dataclasses import replace

    from hftoolkit.retrieval.index import IndexSettings, Retriever, build_index

    settings = recipe.data.retrieval
    if settings.corpus:
        build_index(settings.corpus, settings.index,
                    IndexSettings(settings.embedder, settings.chunk_tokens, settings.chunk_tokens // 4), log=log)
    retriever = Retriever(settings.index, log=log)
    train, train_stats = add_passages(loaded.train, retriever, tokenizer, recipe, training=True)
    validation, validation_stats = add_passages(loaded.validation, retriever, tokenizer, recipe, training=False)
    log(f"retrieval: index {settings.index} ({retriever.store.count()} chunks); key fact in the passages of "
        f"{train_stats['passages_hold_a_key_fact']:.0%} of training and "
        f"{validation_stats['passages_hold_a_key_fact']:.0%} of validation questions")
    return replace(loaded, train=train, validation=validation,
                   content_hash=f"{loaded.content_hash}-index:{retriever.fingerprint}"), retriever
