"""A run killed at any moment resumes to the same weights; Ctrl-C/SIGTERM save a checkpoint and say how to
resume. Real processes, real signals, the tiny from-scratch GPT."""

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch
from safetensors.torch import load_file

from conftest import REPO, run_cli, tiny_recipe


def start_training(recipe: Path, out: Path, *flags: str) -> subprocess.Popen:
    path = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    return subprocess.Popen([sys.executable, "-m", "hftoolkit", "train", str(recipe), "--output-dir", str(out),
                             *flags], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": path})


def complete_steps(out: Path) -> list[int]:
    return sorted(int(p.parent.name.split("-")[1]) for p in (out / "checkpoints").glob("checkpoint-*/.complete"))


def wait_for_training(process: subprocess.Popen, out: Path, timeout: float = 120) -> None:
    """Until the Trainer writes its first checkpoint folder (or the process ends)."""
    deadline = time.time() + timeout
    while time.time() < deadline and process.poll() is None:
        if list((out / "checkpoints").glob("checkpoint-*")):
            return
        time.sleep(0.05)


def test_sigkill_at_random_moments_then_resume_gives_the_same_weights(tmp_path):
    recipe = tiny_recipe(tmp_path, training={"max_steps": 40, "save_steps": 2, "eval_steps": 1000,
                                             "logging_steps": 1})
    reference = tmp_path / "reference"
    assert run_cli("train", recipe, "--output-dir", reference).returncode == 0
    expected = load_file(reference / "model.safetensors")

    out, rng, kills, flags = tmp_path / "killed", random.Random(17), 0, ()
    for _ in range(5):
        process = start_training(recipe, out, *flags)
        wait_for_training(process, out)
        time.sleep(rng.uniform(0.0, 1.0))  # mid-step, mid-save or between: wherever it lands
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
            kills += 1
        process.communicate()
        assert not (out / "model.safetensors").exists() or process.returncode == 0
        flags = ("--resume",) if complete_steps(out) else ("--overwrite",)
        for partial in (out / "checkpoints").glob("checkpoint-*"):  # a kill mid-save leaves no marker...
            if not (partial / ".complete").exists():
                assert int(partial.name.split("-")[1]) > max(complete_steps(out), default=0)  # ...and is newest
    assert kills >= 3, "the runs finished before they could be killed; make the recipe longer"
    finished = run_cli("train", recipe, "--output-dir", out, *flags)
    assert finished.returncode == 0, finished.stderr[-3000:]
    resumed = load_file(out / "model.safetensors")
    assert resumed.keys() == expected.keys()
    assert all(torch.equal(resumed[k], expected[k]) for k in expected)  # bit-identical to never being killed
    assert len(complete_steps(out)) <= 2  # rotation keeps the newest two


def test_sigterm_saves_a_checkpoint_and_says_how_to_resume(tmp_path):
    recipe = tiny_recipe(tmp_path, training={"max_steps": 3000, "save_steps": 10000, "eval_steps": 10000,
                                             "logging_steps": 1})
    out = tmp_path / "run"
    process = start_training(recipe, out)
    deadline = time.time() + 120
    while time.time() < deadline and not list((out / "logs").glob("events.*")):
        time.sleep(0.05)  # TensorBoard's event file appears when training starts
    time.sleep(1.0)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 128 + signal.SIGTERM, stderr[-2000:]
    last = stderr.strip().splitlines()[-1]
    [step] = complete_steps(out)
    assert 0 < step < 3000
    assert last == (f"hftoolkit: stopped at step {step}; the checkpoint {out}/checkpoints/checkpoint-{step} is "
                    "saved: run the same command with --resume to continue")
    assert not (out / "model.safetensors").exists() and not (out / "metrics.json").exists()  # not a finished run
    shorter = run_cli("train", recipe, "--output-dir", out, "--resume", f"training.max_steps={step + 3}")
    assert shorter.returncode == 2 and "recipe changed since this run started (training.max_steps)" in shorter.stderr
    resumed = run_cli("train", recipe, "--output-dir", out, "--resume", "--force", f"training.max_steps={step + 3}")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    log = json.loads((out / "trainer_log.json").read_text())
    assert [h["step"] for h in log if "loss" in h][-3:] == [step + 1, step + 2, step + 3]  # on from the save
