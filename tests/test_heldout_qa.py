"""The held-out car QA set is honest, and the answer-matching rule normalises as documented."""

import json
from collections import Counter
from pathlib import Path

import pytest

from hftoolkit.data.answer_match import contains, is_correct, normalize
from hftoolkit.paths import resolve_data_path

CARS = Path(resolve_data_path("bundled://corpora/cars"))
TRAIN = [json.loads(line) for line in (CARS / "qa/train.jsonl").read_text().splitlines()]
HELD_OUT = [json.loads(line) for line in (CARS / "qa/heldout.jsonl").read_text().splitlines()]
CORPUS = " ".join(p.read_text() for p in sorted((CARS / "text/train").glob("*.txt")))


def test_both_groups_are_there_and_large_enough():
    groups = Counter(row["group"] for row in HELD_OUT)
    assert set(groups) == {"corpus_only", "paraphrase"}
    assert groups["corpus_only"] >= 50 and groups["paraphrase"] >= 30


@pytest.mark.parametrize("row", HELD_OUT, ids=lambda r: r["question"][:40])
def test_held_out_row_is_honest(row):
    facts = row["key_facts"]
    # an echo of the question never scores
    assert not any(contains(row["question"], fact) for fact in facts), "a key fact is in its question"
    # the fact is stated in the corpus text, so a reader of the corpus can answer
    assert any(contains(CORPUS, fact) for fact in facts), "no key fact is stated in the corpus text"
    # the reference answer is new text, not a training answer
    assert not any(normalize(row["answer"]) == normalize(t["answer"]) or contains(t["answer"], row["answer"])
                   for t in TRAIN), "the reference answer is (part of) a training answer"
    assert is_correct(row["answer"], facts), "the reference answer does not pass its own rule"
    trained = [f for f in facts if any(contains(t["answer"], f) for t in TRAIN)]
    if row["group"] == "corpus_only":
        assert not trained, f"key facts {trained} are taught by a training answer"
    else:
        assert trained, "a paraphrase row must ask about a fact the training answers teach"


def test_no_held_out_question_is_a_training_question():
    train_questions = {tuple(normalize(t["question"])) for t in TRAIN}
    assert not [r["question"] for r in HELD_OUT if tuple(normalize(r["question"])) in train_questions]


@pytest.mark.parametrize("answer, fact, expected", [
    ("Every 2 years.", "two years", True),
    ("TWO YEARS!", "two years", True),
    ("Change it every sixty thousand miles", "60,000", False),  # only number words up to 99 become digits
    ("Commonly 60,000 miles", "60000", True),
    ("About 1.6mm of tread", "1.6 millimetres", True),
    ("It runs 15-20 kWh per 100 km", "15 to 20", True),
    ("between 91 and 93", "91 to 93", True),
    ("roughly 15 to 1", "15:1", True),
    ("Keep it at 80%", "80 percent", True),
    ("down to -35 degrees", "minus 35", True),
    ("twenty-five volts", "25 v", True),
    ("The tire center", "tyre centre", True),
    ("It is 180 kW", "80", False),  # whole words: 80 is not in 180
    ("Up to 80,000 miles", "80", False),
    ("It is 15:1", "5:1", False),
    ("The brake fluid", "", False),
    ("Cold water freezes in the pipes", "freeze", True),  # an inflection of the fact's word
    ("It lubricates moving parts", "lubricat", True),  # a fact written as a stem
    ("wheels turn at different speeds", "different speed", True),
    ("The tyre is worn", "tyres", False),  # the answer's word must begin with the whole fact word
    ("It uses 48 volts", "4", False),  # numbers match whole
    ("in Nmax mode", "nm", False),  # words under three letters match whole
    ("Apply the handbrake", "brake", False),  # a fact word matches the start of a word only
])
def test_answer_matching_normalises(answer, fact, expected):
    assert contains(answer, fact) is expected


@pytest.mark.parametrize("name", ["train", "validation", "heldout"])
def test_every_reference_answer_passes_its_own_key_facts(name):
    """Training uses the key facts to find the sentence that states the answer, and validation accuracy
    scores with them: a reference answer its own facts do not match would be a wrong label."""
    rows = [json.loads(line) for line in (CARS / f"qa/{name}.jsonl").read_text().splitlines()]
    failing = [row["question"] for row in rows if not is_correct(row["answer"], row["key_facts"])]
    assert not failing


def test_is_correct_needs_one_of_the_facts():
    assert is_correct("Use DOT 4 fluid.", ["dot 5", "dot 4"])
    assert not is_correct("Use DOT 5 fluid.", ["dot 4"])
