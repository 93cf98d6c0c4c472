"""The per-step recorder of `benchmarks.step_profile`: one record per optimizer step, with its own time and page
faults, and the profiler's table over the two steps asked for."""

import torch
from transformers import GPT2Config, GPT2LMHeadModel, Trainer, TrainingArguments

from benchmarks.step_profile import OTHER, RecordingMeter, op_kinds, step_recorder


def tiny_trainer(tmp_path, steps: int = 4) -> Trainer:
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=100, n_positions=32))
    rows = [{"input_ids": torch.randint(0, 100, (16,)).tolist()} for _ in range(8)]
    for row in rows:
        row["labels"] = row["input_ids"]
    args = TrainingArguments(output_dir=str(tmp_path), per_device_train_batch_size=2, max_steps=steps, use_cpu=True,
                             report_to="none", save_strategy="no", logging_strategy="no", disable_tqdm=True)
    return Trainer(model=model, args=args, train_dataset=rows,
                   data_collator=lambda batch: {k: torch.tensor([r[k] for r in batch]) for k in batch[0]})


def test_records_every_step_and_profiles_the_two_asked_for(tmp_path, capsys):
    records, kinds = [], {}
    trainer = tiny_trainer(tmp_path)
    trainer.add_callback(step_recorder(records, profile_from=1, kinds=kinds))
    trainer.train()
    assert [r["step"] for r in records] == [1, 2, 3, 4]
    assert all(r["seconds"] > 0 and r["page_faults"] >= 0 and r["system_cpu_s"] >= 0 for r in records)
    table = capsys.readouterr().out
    assert "Self CPU time total" in table and "aten::mm" in table  # the profiled steps' matmuls, by name
    # the profiled steps' self CPU time, per step, split into kinds of work: a GPT-2 step multiplies and runs AdamW
    assert kinds["matmuls"] > 0 and kinds["optimizer"] > 0 and kinds["attention softmax and mask"] >= 0
    assert kinds["output layer log-softmax"] > 0 and kinds[OTHER] > 0


def test_op_kinds_sums_self_time_per_step_by_name():
    class Event:
        def __init__(self, key, microseconds):
            self.key, self.self_cpu_time_total = key, microseconds

    events = [Event("aten::mm", 3e6), Event("aten::bmm", 1e6), Event("aten::_to_copy", 2e6),
              Event("aten::normal_", 4e6), Event("aten::_fused_adamw_", 0.5e6)]
    kinds = op_kinds(events, steps=2)
    assert kinds["matmuls"] == 2.0 and kinds["dtype casts and copies"] == 1.0 and kinds["optimizer"] == 0.25
    assert kinds[OTHER] == 2.0 and kinds["gradient norm (clipping)"] == 0.0  # normal_ (dropout draws) is no norm


def test_the_meter_records_the_steps_of_whichever_trainer_it_watches(tmp_path):
    """hftoolkit's run and the baseline's both call the benchmark meter's `watch`: the recorder rides on it, so
    `--variant baseline` profiles the plain Trainer's steps the same way."""
    records = []
    trainer = tiny_trainer(tmp_path, steps=3)
    meter = RecordingMeter(step_recorder(records, profile_from=None))
    meter.watch(trainer)
    trainer.train()
    assert [r["step"] for r in records] == [1, 2, 3]


def test_matmuls_by_layout_tell_shapes_and_strides_apart(tmp_path):
    """GPT-2's projections multiply [tokens, width] by [width, out]; its backward multiplies transposed views.
    The rows group the profiled steps' matmuls by shapes and strides, per step, slowest first."""
    records, layouts = [], []
    trainer = tiny_trainer(tmp_path)
    trainer.add_callback(step_recorder(records, profile_from=1, layouts=layouts))
    trainer.train()
    assert layouts and all(row["op"] in {"aten::mm", "aten::bmm", "aten::addmm", "aten::baddbmm"} for row in layouts)
    seconds = [row["self_seconds_per_step"] for row in layouts]
    assert seconds == sorted(seconds, reverse=True) and seconds[0] > 0
    rows = {(row["op"], row["shapes"], row["strides"]): row["calls_per_step"] for row in layouts}
    # the output layer, forward: 2 x 16 tokens of width 32 times the 100-word embedding, read transposed in place
    assert rows[("aten::mm", "[[32, 32], [32, 100]]", "[[32, 1], [1, 32]]")] == 1.0
    # the same shapes on other strides are other rows: the attention output projection's forward and backward
    assert {strides for (op, shapes, strides) in rows if op == "aten::mm" and shapes == "[[32, 32], [32, 32]]"} == \
        {"[[32, 1], [1, 32]]", "[[1, 32], [32, 1]]"}
