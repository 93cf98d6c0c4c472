"""Memory for the first training steps, written ahead (train/warm_memory.py): tcmalloc keeps the pages it was
given back for the tensors that follow, trainable weights leave the file mapping they were loaded into, the
estimate follows the recipe, and `hftoolkit train` does all of it under tcmalloc told to keep freed memory."""

import os
import subprocess
import sys

import yaml
from conftest import REPO, run_cli

from hftoolkit.allocator import RELEASE_RATE, preload_env
from hftoolkit.recipe.load import load_recipe
from hftoolkit.train.warm_memory import model_config, needed_bytes, own_trainable_weights

SMOLLM2_SHAPE = {"hidden_size": 576, "num_hidden_layers": 30, "intermediate_size": 1536, "vocab_size": 49152}

# In a process under tcmalloc: page faults of filling 256 MiB of new tensors, with or without 320 MiB written ahead
# by WarmUp (which must have freed it all again: the tensors reuse those pages).
PROBE = """
import resource, sys, torch
from hftoolkit.train.warm_memory import WarmUp
if sys.argv[1] == "warm":
    warm = WarmUp(320 << 20)
    warm.wait()
    assert warm.written == 320 << 20 and warm.seconds > 0
    assert warm.finish(torch.nn.Linear(2, 2)) == 0  # a module made in memory: nothing to copy
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
tensors = [torch.ones(32 << 20, dtype=torch.uint8) for _ in range(8)]
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def faults_filling_tensors(warm: bool, release_rate: str = "0") -> int:
    plain = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"} | {"PYTHONPATH": str(REPO)}
    env = preload_env(plain) | {RELEASE_RATE: release_rate}
    done = subprocess.run([sys.executable, "-c", PROBE, "warm" if warm else "cold"], capture_output=True, text=True,
                          env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    return int(done.stdout.split()[-1])


def test_pages_written_ahead_are_reused_by_the_tensors_that_follow():
    pages = (256 << 20) // 4096
    assert faults_filling_tensors(warm=False, release_rate="0") > 0.9 * pages  # every page new
    assert faults_filling_tensors(warm=True, release_rate="0") < 0.05 * pages  # the warmed ones, reused


def test_finish_stops_writing_where_training_is_ready():
    import time

    import torch

    from hftoolkit.train.warm_memory import WarmUp

    warm = WarmUp(4 << 30)  # ~5 s of writing on these machines
    time.sleep(0.3)
    started = time.perf_counter()
    warm.finish(torch.nn.Linear(2, 2))
    assert time.perf_counter() - started < 1.0  # training does not wait for the rest: its first step writes it
    assert 0 < warm.written < warm.size


def test_preload_env_keeps_freed_memory_for_training_only_and_respects_a_set_rate():
    assert RELEASE_RATE not in preload_env({"PATH": "/usr/bin"})
    assert preload_env({"PATH": "/usr/bin"}, keep_freed_memory=True)[RELEASE_RATE] == "0"
    assert preload_env({"PATH": "/usr/bin", RELEASE_RATE: "5"}, keep_freed_memory=True)[RELEASE_RATE] == "5"


def test_trainable_weights_leave_the_file_mapping_frozen_ones_stay(tiny_chat_model):
    import torch
    from transformers import AutoModelForCausalLM

    from hftoolkit.train.warm_memory import file_mappings

    model = AutoModelForCausalLM.from_pretrained(str(tiny_chat_model))
    ranges = file_mappings()

    def mapped(parameter):
        return any(start <= parameter.data_ptr() < end for start, end in ranges)

    parameters = dict(model.named_parameters())
    assert all(mapped(p) for p in parameters.values())  # transformers maps the safetensors file
    frozen = parameters["model.layers.0.mlp.down_proj.weight"]
    frozen.requires_grad_(False)
    before = {name: p.detach().clone() for name, p in parameters.items()}
    copied = own_trainable_weights(model)
    trainable = [p for p in parameters.values() if p.requires_grad]
    assert copied == sum(p.numel() * p.element_size() for p in trainable)
    assert not any(mapped(p) for p in trainable) and mapped(frozen)
    assert all(torch.equal(p, before[name]) for name, p in model.named_parameters())  # same values
    assert model.lm_head.weight is model.model.embed_tokens.weight  # tied weights stay one tensor
    assert own_trainable_weights(model) == 0  # nothing left to copy


def test_estimate_follows_the_recipe():
    text = load_recipe("cars_lm")
    qa = load_recipe("cars_qa")
    full = needed_bytes(SMOLLM2_SHAPE, text)
    # SmolLM2 text, 8 x 256 per step: 2.4 GB of weights' copy, gradients and moments, 0.3 GB of bf16 weights,
    # 0.8 GB of activations and 1.4 GB of logits (the 5.0 GB its first steps touched, measured, give or take 5%)
    assert 4.75e9 < full < 5.25e9
    fp32 = needed_bytes(SMOLLM2_SHAPE, load_recipe("cars_lm", ["training.precision=fp32"]))
    assert 0.25e9 < full - fp32 < 0.35e9  # no bf16 copies of the weights in an fp32 run
    lora = needed_bytes(SMOLLM2_SHAPE, load_recipe("cars_lm", ["training.lora.enabled=true"]))
    assert lora < full - 2e9  # no trainable weights' copy, gradients or moments to speak of
    assert qa.training.lora.enabled and needed_bytes(SMOLLM2_SHAPE, qa) < 1e9  # LoRA: no optimizer state to speak of
    # QA rows are padded per batch: once preprocessing knows the longest row, the micro-batch is sized by it
    rows = [needed_bytes(SMOLLM2_SHAPE, qa, longest) for longest in (0, 80, None)]
    assert rows[0] < rows[1] < rows[2] and rows[2] - rows[0] == 4 * (rows[1] - rows[0])  # block_size 320 = 4 x 80
    assert needed_bytes({"n_embd": 576, "n_layer": 30, "vocab_size": 49152}, text) > 0  # GPT-2's names
    assert needed_bytes({"hidden_size": 576}, text) == 0  # a shape it cannot tell: nothing warmed


def test_training_command_writes_memory_ahead_and_copies_mapped_weights(tmp_path, tiny_chat_model):
    recipe = {"description": "tiny pretrained Llama on car text",
              "model": {"name": str(tiny_chat_model), "task": "causal_lm"},
              "data": {"train": "bundled://corpora/cars/text/train/06_brakes.txt",
                       "validation": "bundled://corpora/cars/text/heldout.txt"},
              "preprocess": {"block_size": 64},
              "training": {"max_steps": 2, "batch_size": 8, "eval_steps": 2, "save_steps": 2, "precision": "fp32"},
              "output": {"dir": str(tmp_path / "run")}}
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    done = run_cli("train", path)
    assert done.returncode == 0, done.stderr
    output = done.stdout + done.stderr
    assert "keeping freed memory" in next(line for line in output.splitlines() if line.startswith("memory allocator"))
    written = next(line for line in output.splitlines() if line.startswith("memory: writing "))
    assert float(written.split()[2]) > 0.1  # GB: the 49,152-entry vocabulary's logits for 8 x 64 tokens
    done_line = next(line for line in output.splitlines() if " GB written ahead in " in line)
    weights = sum(os.path.getsize(tiny_chat_model / f) for f in os.listdir(tiny_chat_model)
                  if f.endswith(".safetensors"))
    copied = int(done_line.split("; ")[1].split(" MB")[0])
    assert abs(copied - weights / 1e6) < 1  # every weight is trainable: all of them copied out of the file


def test_qa_training_sizes_the_micro_batch_by_its_longest_row(tmp_path):
    recipe = {"description": "SmolLM2 full fine-tune on car QA, one step",
              "model": {"name": "smollm2-135m-instruct", "task": "causal_lm"},
              "data": {"train": "bundled://corpora/cars/qa/train.jsonl",
                       "validation": "bundled://corpora/cars/qa/validation.jsonl", "format": "qa",
                       "question_column": "question", "answer_column": "answer"},
              "preprocess": {"block_size": 256},
              # auto: bf16 where the CPU has it, fp32 on AVX2 (forced bf16 there took 5 minutes); the estimate
              # counts bf16 weight copies for auto either way
              "training": {"max_steps": 1, "batch_size": 16, "eval_steps": 1, "save_steps": 1, "precision": "auto",
                           "eval_on_start": False},
              "output": {"dir": str(tmp_path / "run")}}
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    done = run_cli("train", path)
    assert done.returncode == 0, done.stderr
    lines = (done.stdout + done.stderr).splitlines()
    longest = int(next(line for line in lines if line.startswith("  train: ")).split("max_length=")[1].split(",")[0])
    assert 10 < longest < 200  # short questions and answers: far from the block
    config = load_recipe(str(path))
    shape = model_config(config)
    weights_share, rows = needed_bytes(shape, config, 0), needed_bytes(shape, config, longest)
    assert 2e9 < weights_share < rows < needed_bytes(shape, config)  # rows sized by the longest row, not the block
    # the weights' share while loading, the rows' once preprocessing told their length; every weight copied
    writing = next(line for line in lines if line.startswith("memory: writing "))
    assert abs(float(writing.split()[2]) - weights_share / 1e9) < 0.15  # in whole 64 MiB chunks
    written = next(line for line in lines if " GB written ahead in " in line).split()
    assert abs(float(written[3]) - rows / 1e9) < 0.15 and "538 MB of trainable weights" in " ".join(written)
    assert float(written[3]) > weights_share / 1e9 + 0.3  # 16 rows' activations added once preprocessed
    assert 0 < float(written[1]) <= float(written[3])  # as much as loading left time for
