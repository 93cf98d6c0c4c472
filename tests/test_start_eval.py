"""The evaluation on start is measured once per (model files, validation blocks, precision, eval batch) and
reused by the next run that would measure the same thing; anything that changes it measures it again."""

import json
import os
import shutil
from pathlib import Path

import pytest
from conftest import tiny_recipe

from hftoolkit.recipe.load import load_recipe
from hftoolkit.train.run import train
from hftoolkit.train.start_eval import tokens_digest


def run(tmp_path, model, name: str, *overrides: str) -> tuple[dict, list[str]]:
    """(the step-0 entry of the run's log history, its log lines)."""
    recipe = tiny_recipe(tmp_path, model={"name": str(model), "from_scratch": None},
                         training={"max_steps": 2, "eval_steps": 10, "save_steps": 10})
    lines = []
    train(load_recipe(str(recipe), [f"output.dir={tmp_path / name}", *overrides]), log=lines.append)
    history = json.loads((tmp_path / name / "trainer_log.json").read_text())
    first = next(h for h in history if "eval_loss" in h)
    assert first["step"] == 0
    return first, lines


def test_a_second_run_reuses_the_start_evaluation_and_a_change_measures_it_again(tmp_path, tiny_chat_model,
                                                                                  monkeypatch):
    # a cache of its own: other tests of the session train the same files (a copy keeps names, sizes and times,
    # so it rightly shares their key) on the same validation text
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "models").symlink_to(Path(os.environ["HFTOOLKIT_CACHE"]) / "models", target_is_directory=True)
    monkeypatch.setenv("HFTOOLKIT_CACHE", str(cache))
    model = tmp_path / "model"
    shutil.copytree(tiny_chat_model, model)
    measured, lines = run(tmp_path, model, "a")
    assert "eval_runtime" in measured and not any("reused" in line for line in lines)

    reused, lines = run(tmp_path, model, "b", "training.learning_rate=1e-2")  # what training changes: reused
    assert "eval_runtime" not in reused and reused["start_eval_reused"] == 1
    assert reused["eval_loss"] == measured["eval_loss"]
    assert any(line.startswith("evaluation on start: reused (loss ") for line in lines)
    metrics = json.loads((tmp_path / "b" / "metrics.json").read_text())
    assert metrics["eval_loss_start"] == measured["eval_loss"]  # the run's summary starts from it

    asked, _ = run(tmp_path, model, "c", "training.reuse_start_eval=false")
    assert "eval_runtime" in asked

    other_blocks, _ = run(tmp_path, model, "d", "preprocess.block_size=32")  # other validation blocks
    assert "eval_runtime" in other_blocks and other_blocks["eval_loss"] != measured["eval_loss"]

    config = json.loads((model / "config.json").read_text())
    config["rms_norm_eps"] = 0.5  # the model folder changed: measured again, and the loss is the new model's
    (model / "config.json").write_text(json.dumps(config))
    changed, _ = run(tmp_path, model, "e")
    assert "eval_runtime" in changed and changed["eval_loss"] != pytest.approx(measured["eval_loss"], abs=1e-6)


def test_the_tokens_digest_follows_content_and_order():
    from datasets import Dataset

    rows = Dataset.from_dict({"input_ids": [[1, 2, 3], [4, 5]], "labels": [[1, 2, 3], [4, 5]]})
    same = Dataset.from_dict({"input_ids": [[1, 2, 3], [4, 5]], "labels": [[1, 2, 3], [4, 5]]})
    split = Dataset.from_dict({"input_ids": [[1, 2], [3, 4, 5]], "labels": [[1, 2], [3, 4, 5]]})
    assert tokens_digest(rows) == tokens_digest(same)
    assert tokens_digest(rows) != tokens_digest(split)  # the same tokens cut into other rows
    assert tokens_digest(rows) != tokens_digest(rows.select([1, 0]))  # another order, past the indices mapping
    assert tokens_digest(rows.select([1, 0]).select([1, 0])) == tokens_digest(rows)
