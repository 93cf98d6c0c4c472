"""Several processes (torchrun, gloo on CPU): the same recipe and global batch give the same model as one
process; rank 0 alone writes; a killed rank ends the job."""

import json
import os
import signal
import subprocess
import sys
import time

import psutil
import pytest
import torch
from safetensors.torch import load_file

from conftest import REPO, run_cli, tiny_recipe


def test_two_processes_train_the_same_model_as_one(tmp_path):
    # 36 training blocks: 4 full global batches of 8 per epoch (a last, shorter batch is padded with repeated
    # examples by accelerate on the ranks that run short, which one process would not do)
    recipe = tiny_recipe(tmp_path, training={"max_steps": 4, "batch_size": 8, "eval_steps": 2, "save_steps": 2},
                         model={"task": "causal_lm", "from_scratch": {  # no dropout: no per-rank random masks
                             "architecture": "gpt2", "vocab_size": 400, "config": {
                                 "n_layer": 1, "n_head": 2, "n_embd": 32, "resid_pdrop": 0.0, "embd_pdrop": 0.0,
                                 "attn_pdrop": 0.0}}})
    runs = {}
    for nproc in (1, 2):
        cache = tmp_path / f"cache{nproc}"
        cache.mkdir()
        out = tmp_path / f"run{nproc}"
        done = run_cli("train", recipe, "--output-dir", out, "--nproc", nproc, env={"HFTOOLKIT_CACHE": str(cache)})
        assert done.returncode == 0, done.stderr[-3000:]
        runs[nproc] = out
        assert len(list((cache / "preprocessed").iterdir())) == 1  # tokenised once, by rank 0
    # the shipped multi-GPU DDP accelerate config, launched for real (no GPU here: two gloo processes on the CPU);
    # the DeepSpeed and FSDP configs need GPUs, and accelerate's own loader checks them below
    config = REPO / "hftoolkit" / "recipes" / "accelerate" / "multi_gpu_ddp.yaml"
    launched = subprocess.run([sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(config),
                               "--num_processes", "2", "--mixed_precision", "no", "-m", "hftoolkit", "train",
                               str(recipe), "--output-dir", str(tmp_path / "ddp")],
                              capture_output=True, text=True, timeout=300, cwd=REPO,
                              env={**os.environ, "PYTHONPATH": str(REPO)})
    assert launched.returncode == 0, launched.stderr[-3000:]
    runs["ddp"] = tmp_path / "ddp"
    one = load_file(runs[1] / "model.safetensors")
    for other in (2, "ddp"):
        weights = load_file(runs[other] / "model.safetensors")
        assert one.keys() == weights.keys()
        for name in one:
            assert torch.allclose(one[name], weights[name], atol=1e-5, rtol=1e-4), (other, name)
    metrics = {n: json.loads((runs[n] / "metrics.json").read_text()) for n in (1, 2, "ddp")}
    assert [metrics[n]["processes"] for n in (1, 2, "ddp")] == [1, 2, 2]
    for other in (2, "ddp"):
        assert metrics[other]["eval_loss"] == pytest.approx(metrics[1]["eval_loss"], rel=1e-4)
    assert metrics[2]["train_steps"] == metrics[1]["train_steps"] == metrics["ddp"]["train_steps"] == 4
    assert metrics[1]["preprocessing"]["train"]["blocks"] == 36
    assert sorted(p.name for p in runs[2].iterdir()) == sorted(p.name for p in runs[1].iterdir())
    assert len(list((runs[2] / "logs").iterdir())) == 1  # one TensorBoard file, from rank 0
    assert not list(tmp_path.glob("run2?*")) and not list(tmp_path.glob("ddp?*"))  # no second output folder


def test_global_batch_must_divide_among_processes(tmp_path):
    recipe = tiny_recipe(tmp_path, training={"batch_size": 7})
    done = run_cli("train", recipe, "--nproc", 2)
    assert done.returncode == 2 and done.stderr.strip() == (
        "hftoolkit: error: --nproc 2: training.batch_size 7 is the global batch and must divide evenly among the "
        "processes; choose N that divides it")
    assert not (tmp_path / "run").exists()


def test_a_killed_rank_ends_the_whole_job(tmp_path):
    recipe = tiny_recipe(tmp_path, training={"max_steps": 100000, "eval_steps": 100000, "save_steps": 100000,
                                             "logging_steps": 1000})
    job = subprocess.Popen([sys.executable, "-m", "hftoolkit", "train", str(recipe), "--nproc", "2"], cwd=REPO,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                           env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        deadline = time.time() + 300
        while not (tmp_path / "run" / "checkpoints" / ".hftoolkit_run").exists():  # training under way
            assert job.poll() is None and time.time() < deadline, job.stderr.read()[-3000:] if job.poll() else ""
            time.sleep(0.5)
        time.sleep(3)
        workers = [p for p in psutil.Process(job.pid).children(recursive=True)
                   if "hftoolkit" in " ".join(p.cmdline()) and "torch.distributed.run" not in " ".join(p.cmdline())]
        assert len(workers) == 2, [p.cmdline() for p in workers]
        workers[1].send_signal(signal.SIGKILL)
        killed_at = time.time()
        _, stderr = job.communicate(timeout=120)
        assert time.time() - killed_at < 120
    finally:
        if job.poll() is None:
            job.kill()
    assert job.returncode != 0
    assert "hftoolkit: error: --nproc 2: a training process failed" in stderr


def test_full_weights_check_catches_an_incomplete_save(tmp_path):
    from safetensors.torch import save_file
    from transformers import GPT2Config, GPT2LMHeadModel

    from hftoolkit.errors import UserError
    from hftoolkit.train.distributed import check_full_weights

    model = GPT2LMHeadModel(GPT2Config(n_layer=1, n_head=2, n_embd=16, vocab_size=50, n_positions=32))
    model.save_pretrained(tmp_path / "full")
    check_full_weights(tmp_path / "full", model)
    (tmp_path / "sharded").mkdir()
    save_file({"placeholder": torch.zeros(1)}, str(tmp_path / "sharded" / "model.safetensors"))  # ZeRO-3 style
    with pytest.raises(UserError, match=r"holds 1 of the model's [\d,]+ parameters: the save is incomplete"):
        check_full_weights(tmp_path / "sharded", model)


@pytest.mark.parametrize("path", sorted((REPO / "hftoolkit" / "recipes" / "accelerate").glob("*.yaml")), ids=lambda p: p.name)
def test_accelerate_launch_configs_parse(path):
    from accelerate.commands.config.config_args import load_config_from_file

    config = load_config_from_file(str(path))  # accelerate's own loader checks names, enums and types
    assert path.read_text().startswith("# accelerate launch --config_file hftoolkit/recipes/accelerate/") or \
        "two_nodes" in path.name
    assert config.num_processes >= 1
    if config.distributed_type.value == "FSDP":
        assert config.fsdp_config["fsdp_state_dict_type"] == "FULL_STATE_DICT"
        assert config.fsdp_config["fsdp_version"] == 2
    if config.distributed_type.value == "DEEPSPEED" and config.deepspeed_config["zero_stage"] == 3:
        assert config.deepspeed_config["zero3_save_16bit_model"] is True


def test_there_are_the_six_launch_configs():
    assert sorted(p.stem for p in (REPO / "hftoolkit" / "recipes" / "accelerate").glob("*.yaml")) == [
        "deepspeed_zero2", "deepspeed_zero3", "fsdp2_full_shard", "multi_gpu_ddp", "one_gpu", "two_nodes"]



def test_every_rank_takes_rank_0s_measured_choice(tmp_path):
    """Precision `auto` is timed in each process, and timings differ; all ranks must train alike, so each takes
    rank 0's answer."""
    script = tmp_path / "flag.py"
    script.write_text("import os, pathlib\n"
                      "from hftoolkit.train.distributed import finish, rank0_flag\n"
                      "rank = int(os.environ['RANK'])\n"
                      f"pathlib.Path({str(tmp_path)!r}, f'rank{{rank}}.txt').write_text("
                      "f'{rank0_flag(rank == 0)} {rank0_flag(rank == 1)}')\n"
                      "finish()  # as `hftoolkit train` ends: no rank leaves with the process group open\n")
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                           str(script)], capture_output=True, text=True, timeout=180, cwd=REPO)
    assert done.returncode == 0, done.stderr[-3000:]
    answers = [(tmp_path / f"rank{rank}.txt").read_text() for rank in (0, 1)]
    assert answers == ["True False", "True False"]  # each rank measured the opposite of the other
