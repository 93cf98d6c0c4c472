"""Preference tuning through TRL's real trainers (training.method: dpo / kto) on a tiny chat model.

The measure is the model's own log-probability of an answer after its prompt, rendered with the checkpoint's
chat template as generation renders it: DPO must raise chosen over rejected, KTO good over bad."""

import json
from pathlib import Path

import pytest
import torch
import yaml
from transformers import AutoModelForCausalLM, AutoTokenizer

from conftest import run_cli
from hftoolkit import app

SYSTEM = "Answer in one short sentence."
PAIRS = [("How often is brake fluid replaced?", "Every two years.", "Every ten thousand years."),
         ("What does a tyre tread do?", "It drains water from the contact patch.", "It makes the car purple."),
         ("Why check tyre pressure?", "Low pressure wears tyres and wastes fuel.", "Pressure changes the radio."),
         ("What do brake pads press on?", "On the brake disc.", "On the steering wheel."),
         ("When are wipers replaced?", "When they streak or judder.", "Only on Tuesdays."),
         ("What cools the engine?", "Coolant pumped through the radiator.", "The headlights."),
         ("What does the clutch do?", "It connects the engine to the gearbox.", "It plays music."),
         ("Why change engine oil?", "Old oil stops protecting the engine.", "Oil turns into glass.")]
quiet = lambda message: None  # noqa: E731


@pytest.fixture(autouse=True)
def fresh_accelerate_state():
    from accelerate.state import AcceleratorState

    yield
    AcceleratorState._reset_state(reset_partial_state=True)


def answer_logprob(folder: Path, prompt: str, answer: str, system: str = SYSTEM) -> float:
    """Sum of log p(answer tokens | prompt) under the checkpoint, prompt rendered by its chat template."""
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32).eval()
    messages = [{"role": "system", "content": system}, {"role": "user", "content": prompt}]
    head = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    full = tokenizer.apply_chat_template(messages + [{"role": "assistant", "content": answer}], tokenize=False)
    head_ids = tokenizer(head, add_special_tokens=False)["input_ids"]
    ids = torch.tensor([tokenizer(full, add_special_tokens=False)["input_ids"]])
    with torch.inference_mode():
        logprobs = model(ids).logits[0, :-1].float().log_softmax(-1)
    targets = ids[0, 1:]
    picked = logprobs[torch.arange(len(targets)), targets]
    return float(picked[len(head_ids) - 1:].sum())


def margin(folder: Path, rows: list[tuple[str, str, str]]) -> float:
    return sum(answer_logprob(folder, p, good) - answer_logprob(folder, p, bad) for p, good, bad in rows) / len(rows)


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def preference_recipe(tmp_path: Path, base: Path, data: dict, method: str, **training) -> Path:
    recipe = {"model": {"name": str(base), "task": "causal_lm"},
              "data": {"validation_percent": 25, "system_prompt": SYSTEM, **data},
              "preprocess": {"block_size": 128},
              "training": {"method": method, "max_steps": 12, "batch_size": 4, "learning_rate": 2e-2,
                           "warmup_ratio": 0.0, "eval_steps": 100, "save_steps": 100, "logging_steps": 1,
                           "precision": "fp32", "preference": {"beta": 0.1}, **training},
              "output": {"dir": str(tmp_path / f"{method}_run"), "keep_training_state": False}}
    path = tmp_path / f"{method}.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def test_dpo_raises_the_chosen_answers_over_the_rejected_and_writes_a_plain_checkpoint(tmp_path, tiny_chat_model):
    pairs = write_jsonl(tmp_path / "pairs.jsonl", [{"prompt": p, "chosen": c, "rejected": r} for p, c, r in PAIRS])
    recipe = preference_recipe(tmp_path, tiny_chat_model, {"train": str(pairs), "validation": str(pairs),
                                                           "format": "preference"}, "dpo",
                               lora={"enabled": True, "r": 8, "alpha": 16, "dropout": 0.0})
    before = margin(tiny_chat_model, PAIRS)

    metrics = app.train(str(recipe), log=quiet)

    out = tmp_path / "dpo_run"
    after = margin(out, PAIRS)
    assert after > before + 1.0, (before, after)
    assert metrics["method"] == "dpo" and metrics["train_steps"] == 12
    assert metrics["eval_rewards/margins"] > metrics["eval_rewards/margins_start"] + 0.05, metrics
    assert metrics["eval_rewards/accuracies"] >= 0.75
    for name in ("model.safetensors", "config.json", "tokenizer.json", "generation_config.json", "README.md",
                 "loss_curve.png", "metrics.json", "recipe.yaml"):
        assert (out / name).is_file(), name
    assert AutoTokenizer.from_pretrained(str(out)).chat_template  # the template it trained with travels along
    assert not list(out.glob("checkpoints/checkpoint-*"))  # no resumable state kept (keep_training_state: false)


def test_kto_raises_good_answers_over_bad_ones_from_rated_rows(tmp_path, tiny_chat_model):
    rated = [{"prompt": p, "completion": c, "label": True} for p, c, _ in PAIRS] + \
            [{"prompt": p, "completion": r, "label": "false"} for p, _, r in PAIRS]
    data = write_jsonl(tmp_path / "rated.jsonl", rated)
    recipe = preference_recipe(tmp_path, tiny_chat_model, {"train": str(data), "validation": str(data),
                                                           "format": "rated"}, "kto", batch_size=8)
    before = margin(tiny_chat_model, PAIRS)

    metrics = app.train(str(recipe), log=quiet)

    after = margin(tmp_path / "kto_run", PAIRS)
    assert after > before + 1.0, (before, after)
    assert metrics["method"] == "kto"


@pytest.mark.parametrize("case", ["same_answers", "empty_completion", "no_bad_answers", "bad_label", "sft_format"])
def test_bad_preference_data_fails_in_one_line_and_writes_nothing(tmp_path, tiny_chat_model, case):
    rows, data_format, method, expected = {
        "same_answers": ([{"prompt": "Why?", "chosen": "Because.", "rejected": "Because."}], "preference", "dpo",
                         "row 1 of"),
        "empty_completion": ([{"prompt": "Why?", "completion": "Because.", "label": True},
                              {"prompt": "How?", "completion": "  ", "label": False}], "rated", "kto", "row 2 of"),
        "no_bad_answers": ([{"prompt": "Why?", "completion": "Because.", "label": True},
                            {"prompt": "How?", "completion": "Slowly.", "label": "good"}], "rated", "kto",
                           "no answer labelled false (bad)"),
        "bad_label": ([{"prompt": "Why?", "completion": "Because.", "label": "maybe"}], "rated", "kto",
                      "'label' is 'maybe'"),
        "sft_format": ([{"prompt": "Why?", "chosen": "Because.", "rejected": "No."}], "preference", "sft",
                       "data.format: preference trains with training.method: dpo or kto"),
    }[case]
    data = write_jsonl(tmp_path / "data.jsonl", rows)
    recipe = preference_recipe(tmp_path, tiny_chat_model, {"train": str(data), "validation": str(data),
                                                           "format": data_format}, method)
    before = sorted(p.name for p in tmp_path.iterdir())

    done = run_cli("train", recipe)

    assert done.returncode == 2, done.stderr[-2000:]
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0], lines
    if case == "same_answers":
        assert "are the same answer" in lines[0]
    if case == "empty_completion":
        assert "'completion' is empty" in lines[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no run folder, nothing half-written


def test_the_flywheel_a_corrected_answer_becomes_a_pair_with_the_prompt_the_model_saw_and_dpo_moves_toward_it(
        tmp_path, tiny_chat_model, brakes_tyres_index):
    """generate --log with retrieved passages, rate the answer bad with a fix, export-log --as preference, train
    DPO on it: the pair's prompt renders token for token as generation rendered it, and the new checkpoint puts
    the fix above the logged answer by more than the old one did."""
    from trl.trainer.dpo_trainer import _tokenize

    from hftoolkit.generate.api import TextGenerator

    uri = f"sqlite:///{tmp_path / 'answers.db'}"
    question = "How often should brake fluid be replaced?"
    done = run_cli("generate", tiny_chat_model, question, "--log", uri, "--json", "--cache", "off",
                   "--context", brakes_tyres_index, "--max-new-tokens", "8", "--system", SYSTEM,
                   "--temperature", "1.0", "--seed", "3")  # sampled: the untrained model's greedy answer is blank
    assert done.returncode == 0, done.stderr[-3000:]
    logged = json.loads(done.stdout.splitlines()[0])
    assert logged["completion"].strip()
    fix = "Every two years, because the fluid absorbs water."
    assert run_cli("data", "rate", uri, str(logged["log_id"]), "bad", "--fix", fix).returncode == 0
    pairs = tmp_path / "pairs.jsonl"
    exported = run_cli("data", "export-log", uri, "--as", "preference", "--out", pairs)
    assert exported.returncode == 0, exported.stderr[-2000:]
    assert "1 preference pairs" in exported.stdout
    [row] = [json.loads(line) for line in pairs.read_text().splitlines()]
    assert row["chosen"] == fix and row["rejected"] == logged["completion"].strip() and row["system"] == SYSTEM
    assert row["prompt"].startswith("Passages:\n[1] ") and row["prompt"].endswith(f"Question: {question}")

    generator = TextGenerator(str(tiny_chat_model), cache="off", context=str(brakes_tyres_index), system=SYSTEM,
                              log=quiet)
    [(shown, passages)] = generator.prepare([question], chat=True, max_new_tokens=8)
    assert passages
    tokenizer = AutoTokenizer.from_pretrained(str(tiny_chat_model))
    training_prompt = [{"role": "system", "content": row["system"]}, {"role": "user", "content": row["prompt"]}]
    trained_ids = _tokenize(tokenizer, training_prompt, add_generation_prompt=True)["input_ids"]
    assert trained_ids == tokenizer(shown, add_special_tokens=False)["input_ids"]

    recipe = preference_recipe(tmp_path, tiny_chat_model, {"train": str(pairs), "validation": str(pairs),
                                                           "format": "preference", "system_prompt": None}, "dpo",
                               max_steps=8, batch_size=1, lora={"enabled": True, "r": 8, "alpha": 16,
                                                                "dropout": 0.0}, learning_rate=2e-2)
    too_short = run_cli("train", recipe)  # the prompt with its passages does not fit 128 tokens: said before training
    assert too_short.returncode == 2 and "preprocess.block_size: 128 tokens hold no training prompt" in too_short.stderr
    assert not (tmp_path / "dpo_run").exists()
    trained = run_cli("train", recipe, "preprocess.block_size=256")
    assert trained.returncode == 0, trained.stderr[-3000:]

    def lead(folder):
        return (answer_logprob(folder, row["prompt"], fix, row["system"])
                - answer_logprob(folder, row["prompt"], row["rejected"], row["system"]))

    assert lead(tmp_path / "dpo_run") > lead(tiny_chat_model) + 1.0


def test_data_mistakes_writes_exactly_the_answers_eval_scores_wrong_as_pairs_with_the_prompt_the_model_saw(
        tmp_path, brakes_tyres_index):
    """Real SmolLM2 with retrieval answers training questions; every miss of `eval` (and nothing else) becomes a
    pair: chosen = the reference, rejected = the answer eval gave, prompt = the user message as generation built
    it. An existing --out or a file without answers is one line, exit 2, before any answer is generated."""
    from hftoolkit.generate.api import TextGenerator
    from hftoolkit.models.registry import pull

    base = pull("smollm2-135m-instruct", log=quiet)
    rows = [{"question": "What is brake fade?", "answer": "Brakes lose power when they overheat.",
             "key_facts": ["overheat", "heat"]},
            {"question": "How deep must tyre tread be by law in Europe?", "answer": "1.6 millimetres.",
             "key_facts": ["1.6"]},
            {"question": "What is aquaplaning?", "answer": "The tyre rides up on a film of water and loses grip.",
             "key_facts": ["water", "grip"]},
            {"question": "What do brake pads press against?", "answer": "Zebra stripes.", "key_facts": ["zebra"]}]
    data = write_jsonl(tmp_path / "questions.jsonl", rows)
    flags = ("--context", str(brakes_tyres_index), "--system", SYSTEM, "--precision", "fp32")

    done = run_cli("data", "mistakes", base, "--data", data, "--out", tmp_path / "pairs.jsonl", *flags)
    assert done.returncode == 0, done.stderr[-3000:]
    scored = run_cli("eval", base, "--data", data, "--json", *flags)
    assert scored.returncode == 0, scored.stderr[-3000:]

    misses = [a for a in json.loads(scored.stdout)["answers"] if not a["correct"]]
    pairs = [json.loads(line) for line in (tmp_path / "pairs.jsonl").read_text().splitlines()]
    assert 1 <= len(pairs) == len(misses)  # the zebra answer at least
    assert f"wrote {len(pairs)} pairs" in done.stdout and f"{4 - len(misses)}/4 answered right" in done.stdout
    generator = TextGenerator(str(base), cache="off", context=str(brakes_tyres_index), system=SYSTEM, log=quiet)
    reference = {r["question"]: r["answer"] for r in rows}
    for pair, miss in zip(pairs, misses):
        assert pair["question"] == miss["question"] and pair["rejected"] == miss["answer"]
        assert pair["chosen"] == reference[miss["question"]] and pair["system"] == SYSTEM
        [(shown, _)] = generator.prepare([pair["question"]], chat=True, max_new_tokens=48)
        assert pair["prompt"].startswith("Passages:\n[1] ")
        assert generator.render([{"role": "system", "content": pair["system"]},
                                 {"role": "user", "content": pair["prompt"]}], chat=True) == shown

    again = run_cli("data", "mistakes", base, "--data", data, "--out", tmp_path / "pairs.jsonl", *flags)
    assert again.returncode == 2 and "--out: " in again.stderr and "already exists" in again.stderr
    no_answers = write_jsonl(tmp_path / "no_answers.jsonl", [{"question": "What is brake fade?"}])
    refused = run_cli("data", "mistakes", base, "--data", no_answers, "--out", tmp_path / "other.jsonl", *flags)
    assert refused.returncode == 2 and "needs 'question' and 'answer' columns" in refused.stderr
    assert not (tmp_path / "other.jsonl").exists()


def test_cars_dpo_before_its_pairs_exist_names_the_command_that_writes_them(tmp_path):
    done = run_cli("train", "cars_dpo", cwd=tmp_path)
    assert done.returncode == 2, done.stderr[-2000:]
    [line] = done.stderr.strip().splitlines()
    assert "data.train: 'runs/cars_qa_mistakes.jsonl' does not exist yet" in line
    assert "hftoolkit data mistakes CHECKPOINT --data QA.jsonl --out runs/cars_qa_mistakes.jsonl" in line
    assert list(tmp_path.iterdir()) == []
