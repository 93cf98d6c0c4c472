"""Train a tiny GPT from a recipe through the real CLI, then load it with plain transformers."""

import json
import shutil
from pathlib import Path

import torch
import yaml

from conftest import run_cli, run_plain_python, tiny_recipe
from hftoolkit.paths import resolve_data_path

EXPECTED_FILES = {"model.safetensors", "config.json", "generation_config.json", "tokenizer.json",
                  "tokenizer_config.json", "recipe.yaml", "metrics.json", "README.md", "loss_curve.png",
                  "trainer_log.json", "checkpoints", "logs"}


def test_train_save_load_generate(tmp_path):
    recipe = tiny_recipe(tmp_path, training={"max_steps": 30, "eval_steps": 10, "save_steps": 10},
                         output={"num_beams": 3})
    out = tmp_path / "run"
    done = run_cli("train", recipe, "--output-dir", out)
    assert done.returncode == 0, done.stderr[-3000:]
    assert {p.name for p in out.iterdir()} == EXPECTED_FILES
    # GPT-2's dropout layers (embedding; the block's attention, residual and MLP ones) and its GELU, cheaper on a
    # CPU while training
    assert "CPU kernels: 4 dropout layers with a cheaper mask, 1 tanh GELUs fused, attention dropout with the " \
           "same mask" in done.stdout + done.stderr
    assert "hftoolkit_cpu_train" not in (out / "config.json").read_text()
    # every TensorBoard event of the run, the final evaluation's too, in one file in logs/
    assert [p.parent.name for p in out.rglob("events.out.tfevents.*")] == ["logs"]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["eval_perplexity"] < 0.5 * metrics["eval_perplexity_start"]
    assert metrics["tokens_seen"] > 0 and metrics["tokens_per_second"] > 0
    assert metrics["preprocessing"]["train"]["blocks"] > 0
    evals = [h for h in json.loads((out / "trainer_log.json").read_text()) if "eval_loss" in h]
    assert [h["step"] for h in evals] == [0, 10, 20, 30]  # the last step evaluated once, not again after training
    assert metrics["eval_loss"] == evals[-1]["eval_loss"]
    assert yaml.safe_load((out / "recipe.yaml").read_text())["output"]["dir"] == out.name  # no local path
    gen = json.loads((out / "generation_config.json").read_text())
    tok = json.loads((out / "tokenizer_config.json").read_text())
    assert gen["pad_token_id"] != gen["eos_token_id"] and tok["pad_token"] == "<|pad|>"
    assert gen["num_beams"] == 3 and gen["early_stopping"] is True  # output.num_beams, for any generate()
    assert not list(out.glob("*.bin")) and not list(out.glob("*.pt"))  # safetensors only

    plain = run_plain_python(f"""
from transformers import AutoModelForCausalLM, pipeline
model = AutoModelForCausalLM.from_pretrained({str(out)!r})
gen = pipeline("text-generation", model={str(out)!r})
text = gen("The brake pads", max_new_tokens=12, do_sample=False)[0]["generated_text"]
assert text.startswith("The brake pads") and len(text) > len("The brake pads"), text
print("OK", type(model).__name__)
""")
    assert plain.returncode == 0, plain.stderr[-3000:]
    assert "OK GPT2LMHeadModel" in plain.stdout


def test_finished_run_is_not_overwritten(tmp_path):
    recipe = tiny_recipe(tmp_path, training={"max_steps": 4})
    out = tmp_path / "run"
    assert run_cli("train", recipe, "--output-dir", out).returncode == 0
    assert (out / "checkpoints" / ".hftoolkit_run").is_file()  # what makes --overwrite allowed below
    before = (out / "model.safetensors").read_bytes()
    again = run_cli("train", recipe, "--output-dir", out, "training.seed=7")
    assert again.returncode == 2 and "holds a finished run; pass --overwrite" in again.stderr
    assert (out / "model.safetensors").read_bytes() == before
    # by default no training state once finished: the mid-run checkpoint is removed and no final one written
    assert not list((out / "checkpoints").glob("checkpoint-*"))
    forced = run_cli("train", recipe, "--output-dir", out, "--overwrite", "training.seed=7", "training.max_steps=4",
                     "training.save_steps=3", "output.keep_training_state=true")
    assert forced.returncode == 0, forced.stderr[-2000:]
    assert (out / "model.safetensors").read_bytes() != before
    # asked for: the mid-run checkpoint and the final one stay, for --resume
    assert sorted(p.name for p in (out / "checkpoints").glob("checkpoint-*")) == ["checkpoint-3", "checkpoint-4"]
    assert (out / "checkpoints" / ".hftoolkit_run").is_file()  # --overwrite still allowed
    assert json.loads((out / "trainer_log.json").read_text())[-1]["step"] == 4


def test_resume_continues_from_last_checkpoint(tmp_path):
    from safetensors.torch import load_file

    data = tmp_path / "brakes.txt"
    original = Path(resolve_data_path("bundled://corpora/cars/text/train/06_brakes.txt")).read_text()
    data.write_text(original)
    recipe = tiny_recipe(tmp_path, training={"max_steps": 6, "save_steps": 3, "eval_steps": 3},
                         data={"train": str(data)}, output={"keep_training_state": True})
    out = tmp_path / "run"
    assert run_cli("train", recipe, "--output-dir", out).returncode == 0
    uninterrupted = load_file(out / "model.safetensors")
    # simulate a crash after step 3: the final files and the step-6 checkpoint never got written
    for name in ("metrics.json", "model.safetensors", "trainer_log.json"):
        (out / name).unlink()
    shutil.rmtree(out / "checkpoints" / "checkpoint-6")
    state_file = out / "checkpoints" / "checkpoint-3" / "trainer_state.json"
    state = json.loads(state_file.read_text())
    state["log_history"].append({"step": 3, "resume_marker": True})  # survives only if state is restored
    state_file.write_text(json.dumps(state))

    fresh = run_cli("train", recipe, "--output-dir", out)
    assert fresh.returncode == 2 and "--resume" in fresh.stderr
    before = sorted(p.relative_to(out) for p in out.rglob("*"))
    changed = run_cli("train", recipe, "--output-dir", out, "--resume", "training.learning_rate=0.01")
    assert changed.returncode == 2 and len(changed.stderr.strip().splitlines()) == 1
    assert "--resume: the recipe changed since this run started (training.learning_rate)" in changed.stderr
    data.write_text(original + "\nOne more paragraph about brakes.\n")
    moved = run_cli("train", recipe, "--output-dir", out, "--resume")
    assert moved.returncode == 2 and "--resume: the training data changed since this run started" in moved.stderr
    assert sorted(p.relative_to(out) for p in out.rglob("*")) == before  # refused before writing anything
    forced_copy = tmp_path / "forced"
    shutil.copytree(out, forced_copy)
    forced = run_cli("train", recipe, "--output-dir", forced_copy, "--resume", "--force")
    assert forced.returncode == 0, forced.stderr[-2000:]
    data.write_text(original)
    resumed = run_cli("train", recipe, "--output-dir", out, "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    log = json.loads((out / "trainer_log.json").read_text())
    assert any(h.get("resume_marker") for h in log)
    assert [h["step"] for h in log if "loss" in h] == [1, 2, 3, 4, 5, 6]  # no step trained twice
    final = load_file(out / "model.safetensors")
    assert all(torch.equal(final[k], uninterrupted[k]) for k in uninterrupted)  # same as never stopping
    changed_lr = load_file(forced_copy / "model.safetensors")
    assert not all(torch.equal(changed_lr[k], uninterrupted[k]) for k in uninterrupted)  # --force trained on the changed data
