"""The `hftoolkit` command restarts itself under tcmalloc (CI installs it through scripts/setup.sh), the
programs it starts keep their own malloc, and HFTOOLKIT_ALLOCATOR=system opts out."""

import json
import os
import subprocess
import sys

from conftest import REPO, run_cli, tiny_recipe

from hftoolkit.allocator import loaded_tcmalloc, preload_env


def allocator_line(output: str) -> str:
    return next(line for line in output.splitlines() if line.startswith("memory allocator: "))


def test_training_command_runs_under_tcmalloc(tmp_path):
    assert preload_env() is not None, "tcmalloc is not installed: scripts/setup.sh installs libtcmalloc-minimal4"
    assert loaded_tcmalloc() is None  # pytest itself runs with the C library's malloc
    recipe = tiny_recipe(tmp_path, training={"max_steps": 1, "eval_steps": 1, "save_steps": 1})
    done = run_cli("train", recipe)
    assert done.returncode == 0, done.stderr
    line = allocator_line(done.stdout + done.stderr)
    assert line.startswith("memory allocator: tcmalloc (/") and "libtcmalloc" in line
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["train_steps"] == 1


def test_opt_out_and_no_leak_into_child_processes(tmp_path):
    recipe = tiny_recipe(tmp_path, training={"max_steps": 1, "eval_steps": 1, "save_steps": 1})
    done = run_cli("train", recipe, "--overwrite", env={"HFTOOLKIT_ALLOCATOR": "system"})
    assert done.returncode == 0, done.stderr
    assert allocator_line(done.stdout + done.stderr) == "memory allocator: the C library's malloc " \
                                                        "(HFTOOLKIT_ALLOCATOR=system)"
    # the restarted process puts LD_PRELOAD back as it was, so the programs it starts keep their malloc
    probe = tmp_path / "probe.py"
    probe.write_text("import os, sys\nfrom hftoolkit.allocator import restart_with_tcmalloc, loaded_tcmalloc\n"
                     "restart_with_tcmalloc()\nprint(os.environ.get('LD_PRELOAD', '-'), bool(loaded_tcmalloc()))\n")
    plain = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"} | {"PYTHONPATH": str(REPO)}
    shown = subprocess.run([sys.executable, str(probe)], capture_output=True, text=True, env=preload_env(plain))
    assert shown.stdout.split() == ["-", "True"], shown.stderr
