"""Retrieval in generation and training: token budget, sources, cache keys, RAFT examples, checkpoint record.

A one-layer Llama with SmolLM2's real tokenizer and chat template (256 positions)
and a real MiniLM index of two corpus chapters keep these fast.
"""

import json
import shutil
from pathlib import Path

import pytest
import yaml

from conftest import run_cli
from hftoolkit.data.chat_format import encode_conversation, show_loss_mask, to_messages
from hftoolkit.data.answer_match import contains
from hftoolkit.generate.api import TextGenerator
from hftoolkit.retrieval.index import Retriever

QUIET = lambda message: None  # noqa: E731
QA_ROWS = [
    {"question": "How often should brake fluid be replaced?", "answer": "Every two years.",
     "key_facts": ["two years"]},
    {"question": "What is the legal minimum tread depth in the UK?", "answer": "1.6 millimetres.",
     "key_facts": ["1.6"]},
    {"question": "At what thickness are brake pads usually replaced?", "answer": "At about 3 millimetres.",
     "key_facts": ["3 millimetres"]},
    {"question": "What does a tyre's load index of 91 mean?", "answer": "It can carry 615 kilograms.",
     "key_facts": ["615"]},
    {"question": "Why is brake fluid changed regularly?", "answer": "It absorbs water, which lowers its boiling point.",
     "key_facts": ["boiling point"]},
    {"question": "How is aquaplaning caused?", "answer": "The tyre rides up on a film of water.",
     "key_facts": ["film of water"]},
]


@pytest.fixture
def qa_file(tmp_path) -> Path:
    path = tmp_path / "qa.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in QA_ROWS))
    return path


def token_count(generator: TextGenerator, text: str) -> int:
    return len(generator._renderer.tokenizer(text, add_special_tokens=False)["input_ids"])


def test_passages_never_overflow_the_window(tiny_chat_model, brakes_tyres_index):
    generator = TextGenerator(str(tiny_chat_model), cache="off", context=str(brakes_tyres_index), top_k=5,
                              context_tokens=10_000, log=QUIET)
    assert generator.context_length == 256
    question = "How often should brake fluid be replaced?"
    for new_tokens in (16, 120, 200):
        [(text, used)] = generator.prepare([question], chat=True, max_new_tokens=new_tokens)
        assert token_count(generator, text) <= 256 - new_tokens
        assert question in text
    [(roomy, used_roomy)] = generator.prepare([question], chat=True, max_new_tokens=16)
    assert used_roomy and "Passages:" in roomy
    cut = used_roomy[-1]
    whole = generator.context.retriever.store.chunks()
    original = next(h for h in whole if h.chunk_id == cut.chunk_id)
    assert cut.end < original.end and original.text.startswith(cut.text)  # the last passage was cut to fit
    [(tight, used_tight)] = generator.prepare([question], chat=True, max_new_tokens=230)
    assert not used_tight and "Passages:" not in tight  # no room: the question alone, never an overflow


def test_budget_limits_passage_tokens(tiny_chat_model, brakes_tyres_index):
    generator = TextGenerator(str(tiny_chat_model), cache="off", context=str(brakes_tyres_index), top_k=3,
                              context_tokens=40, log=QUIET)
    [(text, used)] = generator.prepare(["What is aquaplaning?"], chat=True, max_new_tokens=8)
    block = text[text.index("Passages:") + len("Passages:\n"):text.index("\n\nQuestion:")]
    assert used and token_count(generator, block) <= 40


def test_cli_generate_lists_sources_and_the_cache_follows_the_chunks(tiny_chat_model, brakes_tyres_index, tmp_path):
    cache = tmp_path / "cache"
    ask = ["generate", tiny_chat_model, "How deep must tyre tread be?", "--chat", "--json", "--max-new-tokens", "4",
           "--cache", cache, "--sentences", "0"]  # whole chunks: each source is one chunk
    first = run_cli(*ask, "--context", brakes_tyres_index)
    assert first.returncode == 0, first.stderr[-1500:]
    first = json.loads(first.stdout)
    assert first["cached"] is False and first["sources"]
    assert {s["file"] for s in first["sources"]} <= {"06_brakes.txt", "07_tyres.txt"}
    assert first["sources"][0]["file"] == "07_tyres.txt" and first["sources"][0]["score"] > 0.3
    again = json.loads(run_cli(*ask, "--context", brakes_tyres_index).stdout)
    assert again["cached"] is True and again["sources"] == first["sources"]

    fewer = json.loads(run_cli(*ask, "--context", brakes_tyres_index, "--top-k", "1").stdout)
    assert fewer["cached"] is False and fewer["sources"] == first["sources"][:1]  # other chunks, other key

    plain = json.loads(run_cli(*ask, "--no-context").stdout)
    assert plain["cached"] is False and plain["sources"] == []


def test_cache_key_changes_when_the_index_changes(tiny_chat_model, brakes_tyres_index, tmp_path):
    from hftoolkit.retrieval.index import build_index

    copy = tmp_path / "index"
    shutil.copytree(brakes_tyres_index, copy)
    before = TextGenerator(str(tiny_chat_model), cache="memory", context=str(copy), log=QUIET)
    [(text, used)] = before.prepare(["What do tread wear indicators show?"], chat=True, max_new_tokens=4)
    key_before = before._context_key(used)
    corpus = Path(Retriever(str(copy), log=QUIET).store.meta()["corpus_root"])
    moved = tmp_path / "corpus"
    shutil.copytree(corpus, moved)
    (moved / "06_brakes.txt").write_text("Brake pads are checked at every service.\n")
    build_index(str(moved), str(copy), log=QUIET)
    after = TextGenerator(str(tiny_chat_model), cache="memory", context=str(copy), log=QUIET)
    [(_, used_after)] = after.prepare(["What do tread wear indicators show?"], chat=True, max_new_tokens=4)
    assert after._context_key(used_after)["context"]["index"] != key_before["context"]["index"]


def recipe_file(tmp_path: Path, model: Path, qa: Path, index: Path, **training) -> Path:
    recipe = {
        "model": {"name": str(model)},
        "data": {"train": str(qa), "validation": str(qa), "format": "qa", "system_prompt": "Answer briefly.",
                 "retrieval": {"index": str(index), "top_k": 2, "context_tokens": 200, "distractor_percent": 0}},
        "preprocess": {"block_size": 330},
        "training": {"max_steps": 3, "batch_size": 4, "learning_rate": 1e-3, "eval_steps": 3, "save_steps": 3,
                     "logging_steps": 1, "precision": "fp32", **training},
        "output": {"dir": str(tmp_path / "run")},
    }
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def test_raft_examples_render_passages_and_mask_all_but_the_answer(tiny_chat_model, brakes_tyres_index, qa_file,
                                                                     tmp_path):
    from transformers import AutoTokenizer

    from hftoolkit.data.retrieval_examples import add_passages
    from hftoolkit.data.sources import load_split
    from hftoolkit.recipe.load import load_recipe

    tokenizer = AutoTokenizer.from_pretrained(str(tiny_chat_model))
    retriever = Retriever(str(brakes_tyres_index), log=QUIET)
    rows = load_split(str(qa_file), "data.train")
    recipe = load_recipe(str(recipe_file(tmp_path, tiny_chat_model, qa_file, brakes_tyres_index)))
    with_answer, stats = add_passages(rows, retriever, tokenizer, recipe, training=True)
    assert stats["passages_hold_a_key_fact"] == 1.0  # distractor_percent 0: every question sees its answer
    for row in with_answer:
        assert any(contains(row["passages"], fact) for fact in row["key_facts"])
    example = encode_conversation(to_messages(with_answer[0], recipe.data), tokenizer, 330)
    assert example["truncated"] == 0 and len(example["input_ids"]) <= 330
    shown = show_loss_mask(example, tokenizer)
    learned = shown[shown.index("[["):]
    assert "Passages:\n[1]" in shown and "Question: How often should brake fluid be replaced?" in shown
    assert learned.startswith("[[Every two years.") and learned.count("[[") == 1  # only the answer is learned

    only_distractors = load_recipe(str(recipe_file(tmp_path, tiny_chat_model, qa_file, brakes_tyres_index)),
                                   ["data.retrieval.distractor_percent=100"])
    shown_wrong, stats = add_passages(rows, retriever, tokenizer, only_distractors, training=True)
    assert stats["passages_hold_a_key_fact"] == 0.0
    assert all(row["passages"].count("\n[") == 1 for row in shown_wrong)  # still top_k=2 passages each

    validation, _ = add_passages(rows, retriever, tokenizer, recipe, training=False)
    top = retriever.search(QA_ROWS[1]["question"], 2)
    assert validation[1]["passages"].startswith("[1] " + " ".join(top[0].text.split())[:60])  # ranked as at use

    sentences = load_recipe(str(recipe_file(tmp_path, tiny_chat_model, qa_file, brakes_tyres_index)),
                            ["data.retrieval.sentences=3"])
    shown_sentences, stats = add_passages(rows, retriever, tokenizer, sentences, training=True)
    assert stats["passages_hold_a_key_fact"] == 1.0
    for row in shown_sentences:
        lines = row["passages"].split("\n")
        assert [line[:4] for line in lines] == ["[1] ", "[2] ", "[3] "]
        assert all(line.count(". ") == 0 for line in lines)  # one sentence each
    copied = load_recipe(str(recipe_file(tmp_path, tiny_chat_model, qa_file, brakes_tyres_index)),
                         ["data.retrieval.sentences=3", "data.retrieval.counterfactual_percent=100"])
    with_copies, stats = add_passages(rows, retriever, tokenizer, copied, training=True)
    assert len(with_copies) == len(rows) + stats["counterfactual_copies"] and stats["counterfactual_copies"] >= 4
    assert list(with_copies)[:len(rows)] == list(shown_sentences)  # the originals, unchanged
    originals = {row["question"]: row for row in shown_sentences}
    for copy in list(with_copies)[len(rows):]:
        original = originals[copy["question"]]
        assert copy["answer"] != original["answer"] and copy["passages"] != original["passages"]
        assert not any(contains(copy["answer"], fact) for fact in original["key_facts"])  # the value changed...
        new_words = set(copy["answer"].lower().split()) - set(original["answer"].lower().split())
        assert new_words and all(word.strip(".,") in copy["passages"].lower() for word in new_words)  # ...in both

    validation, _ = add_passages(rows, retriever, tokenizer, sentences, training=False)
    best = retriever.search(QA_ROWS[0]["question"], 2, sentences=3)
    assert validation[0]["passages"] == "\n".join(f"[{i}] {' '.join(h.text.split())}" for i, h in enumerate(best, 1))


def test_sentence_context_keeps_retrieval_order_and_adds_the_answer_when_missed():
    import random

    from hftoolkit.data.retrieval_examples import choose_sentences
    from hftoolkit.retrieval.store import Hit

    ranked = [Hit(i, "a.txt", 10 * i, 10 * i + 9, text, 1.0 - i / 10) for i, text in enumerate(
        ["Pads wear.", "Discs warp.", "Fluid boils.", "Fluid is changed every two years.", "Tyres age."])]
    rng = random.Random(0)
    assert choose_sentences(ranked, ["two years"], 4, False, rng, None) == ranked[:4]  # found: as ranked
    picked = choose_sentences(ranked, ["two years"], 3, False, rng, None)
    assert len(picked) == 3 and ranked[3] in picked  # missed by the top 3: put in
    assert [h for h in picked if h is not ranked[3]] == ranked[:2]  # the rest keep their order
    oracle = Hit(99, "b.txt", 0, 30, "Replace brake fluid every two years.", 0.0)
    assert oracle in choose_sentences(ranked[:3], ["two years"], 2, False, rng, oracle)  # from the whole index
    assert choose_sentences(ranked, ["two years"], 4, True, rng, None) == [ranked[i] for i in (0, 1, 2, 4)]
    assert choose_sentences(ranked, [], 2, False, rng, None) == ranked[:2]


def test_counterfactual_copy_changes_the_value_alike_in_answer_and_passages():
    import random

    from hftoolkit.data.retrieval_examples import NUMBER, counterfactual

    rng = random.Random(0)
    passages = "[1] A diesel runs between 15:1 and 20:1.\n[2] A petrol engine runs 10:1 to 12:1 on 95 RON."
    answer, shown = counterfactual("Between 15:1 and 20:1.", passages, ["15:1"], [], rng)
    new = [n for n in NUMBER.findall(answer) if n != "1"]
    assert len(new) == 2 and not {"15", "20"} & set(new)  # both values changed...
    assert f"between {new[0]}:1 and {new[1]}:1." in shown  # ...alike in the passages
    assert not {"10", "12", "95"} & set(new)  # never to a value the passages already state
    assert "10:1 to 12:1 on 95 RON" in shown and "15:1" not in shown  # the rest is untouched
    assert NUMBER.findall("about 5,000 miles, 14.7:1, 2319") == ["5,000", "14.7", "1", "2319"]

    answer, shown = counterfactual("The brake servo multiplies it.", "[1] The force is multiplied by the brake "
                                   "servo. Servos use vacuum.", ["servo"], ["caliper", "servo"], rng)
    assert answer == "The brake caliper multiplies it."  # a term no text holds; a stem's word swapped whole
    assert shown == "[1] The force is multiplied by the brake caliper. Caliper use vacuum."
    assert counterfactual("Every two years.", "[1] Pads wear.", ["two years"], ["caliper"], rng) is None
    assert counterfactual("About 48 volts.", "[1] It uses 12 volts.", ["48"], ["caliper"], rng) is None

def test_training_records_the_index_and_generate_uses_it(tiny_chat_model, brakes_tyres_index, qa_file, tmp_path):
    index = tmp_path / "index"
    shutil.copytree(brakes_tyres_index, index)
    recipe = recipe_file(tmp_path, tiny_chat_model, qa_file, index, answer_accuracy=True,
                         early_stopping_patience=2, best_metric="answer_accuracy")
    done = run_cli("train", recipe, "data.retrieval.sentences=3")
    assert done.returncode == 0, done.stderr[-3000:]
    run = tmp_path / "run"
    record = json.loads((run / "retrieval.json").read_text())
    assert record["index"] == "../index" and (run / record["index"]).resolve() == index.resolve()  # no local path
    assert record["top_k"] == 2 and record["passage_tokens"] == 200
    assert record["sentences"] == 3
    metrics = json.loads((run / "metrics.json").read_text())
    assert 0.0 <= metrics["eval_answer_accuracy"] <= 1.0 and "eval_answer_accuracy_start" in metrics
    history = json.loads((run / "trainer_log.json").read_text())
    assert [h["step"] for h in history if "eval_answer_accuracy" in h][:2] == [0, 3]

    asked = run_cli("generate", run, "How often should brake fluid be replaced?", "--chat", "--json", "--cache",
                    "off", "--max-new-tokens", "4")
    assert asked.returncode == 0, asked.stderr[-1500:]
    sources = json.loads(asked.stdout)["sources"]  # the recorded index and sentence count, by default
    assert len(sources) == 3 and all(s["end"] - s["start"] < 300 for s in sources)
    whole = run_cli("generate", run, "How often should brake fluid be replaced?", "--chat", "--json", "--cache",
                    "off", "--max-new-tokens", "4", "--sentences", "0")
    assert len(json.loads(whole.stdout)["sources"]) == 2  # top_k whole chunks
    off = run_cli("generate", run, "How often should brake fluid be replaced?", "--json", "--cache",
                  "off", "--max-new-tokens", "4", "--no-context")
    assert json.loads(off.stdout)["sources"] == []
    plain = run_cli("generate", run, "How often should brake fluid be replaced?", "--cache", "off",
                    "--max-new-tokens", "4")
    assert plain.returncode == 0 and not plain.stdout.startswith("How often")  # a chat model answers by default
    raw = run_cli("generate", run, "How often should brake fluid be replaced?", "--cache", "off", "--raw",
                  "--max-new-tokens", "4", "--no-context")
    assert raw.stdout.startswith("How often should brake fluid be replaced?")
    shutil.rmtree(index)
    gone = run_cli("generate", run, "How often should brake fluid be replaced?", "--chat", "--json", "--cache",
                   "off", "--max-new-tokens", "4")
    assert gone.returncode == 0 and json.loads(gone.stdout)["sources"] == []
    assert "which is gone" in gone.stderr


def test_eval_reports_groups_and_retrieval(tiny_chat_model, brakes_tyres_index, tmp_path):
    rows = [dict(row, group="a" if i % 2 else "b") for i, row in enumerate(QA_ROWS)]
    data = tmp_path / "grouped.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    done = run_cli("eval", tiny_chat_model, "--data", data, "--json", "--context", brakes_tyres_index)
    assert done.returncode == 0, done.stderr[-1500:]
    result = json.loads(done.stdout)
    assert result["total"] == 6 and set(result["groups"]) == {"a", "b"}
    assert result["groups"]["a"]["total"] == 3
    assert result["fact_in_passages"] == 1.0  # MiniLM finds the passage for every one of these questions
    assert all(a["sources"] for a in result["answers"])


def test_labelled_positions_loss_equals_the_model_loss():
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

    from hftoolkit.train.loss import labelled_positions_loss, matches_model_loss

    torch.manual_seed(0)
    models = [LlamaForCausalLM(LlamaConfig(vocab_size=300, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                           num_attention_heads=2, num_key_value_heads=2)),
              GPT2LMHeadModel(GPT2Config(vocab_size=300, n_embd=32, n_layer=2, n_head=2))]
    ids = torch.randint(0, 300, (3, 20))
    labels = ids.clone()
    labels[:, :12] = -100  # answer-only labels
    labels[2, :] = -100
    labels[2, 15:17] = ids[2, 15:17]
    mask = torch.ones_like(ids)
    mask[1, 17:] = 0
    labels[1, 17:] = -100
    for model in models:
        model.eval()
        inputs = {"input_ids": ids, "attention_mask": mask, "labels": labels}
        assert matches_model_loss(model, inputs)
        own_sum = model(**inputs, num_items_in_batch=torch.tensor(7)).loss
        ours = labelled_positions_loss(model, inputs, num_items_in_batch=torch.tensor(7))
        assert torch.allclose(own_sum, ours, atol=1e-5)
        assert torch.allclose(model(**inputs).loss, labelled_positions_loss(model, inputs), atol=1e-5)
        unlabelled_first = dict(inputs, labels=torch.cat([torch.full_like(labels[:1], -100), labels[1:]]))
        assert matches_model_loss(model, unlabelled_first)  # checked on a row that has labels
    from transformers import Gemma2Config, Gemma2ForCausalLM

    capped = Gemma2ForCausalLM(Gemma2Config(vocab_size=300, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                            num_attention_heads=2, num_key_value_heads=2, head_dim=16,
                                            final_logit_softcapping=1.0)).eval()  # its forward caps the logits
    with torch.no_grad():
        capped.lm_head.weight *= 100  # logits far beyond the cap
    assert not matches_model_loss(capped, {"input_ids": ids, "attention_mask": mask, "labels": labels})


def test_bad_retrieval_settings_are_one_line(tiny_chat_model, brakes_tyres_index, qa_file, tmp_path):
    recipe = recipe_file(tmp_path, tiny_chat_model, qa_file, brakes_tyres_index)
    for override, message in [("data.retrieval.index=/nonexistent/index", "is not an index"),
                              ("data.retrieval.context_tokens=400", "below preprocess.block_size"),
                              ("data.format=text", "data.retrieval works with data.format: qa"),
                              ("training.best_metric=answer_accuracy", "needs training.answer_accuracy"),
                              ("data.retrieval.sentences=-1", "data.retrieval.sentences: -1 must be 0"),
                              ("data.retrieval.counterfactual_percent=150",
                               "data.retrieval.counterfactual_percent: 150.0 must be 0 to 100")]:
        done = run_cli("train", recipe, override)
        assert done.returncode == 2 and message in done.stderr, (override, done.stderr[-800:])
        assert len(done.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists()
    generated = run_cli("generate", tiny_chat_model, "hi", "--chat", "--context", tmp_path)
    assert generated.returncode == 2 and "not a corpus index" in generated.stderr
    negative = run_cli("generate", tiny_chat_model, "hi", "--chat", "--context", brakes_tyres_index,
                       "--sentences", "-2")
    assert negative.returncode == 2 and negative.stderr.strip() == "hftoolkit: error: --sentences: -2 must be 0 (whole " \
        "passages) or more"
