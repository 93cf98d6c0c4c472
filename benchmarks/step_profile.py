"""Where one training run (hftoolkit's, or the baseline's) spends each step: seconds, page faults and system
CPU per step, and optionally torch's profiler over two steps, with its self CPU time summed into kinds of work
(matmuls, casts, the optimizer, ...) per step.

The training benchmark reports a run's steady rate and its first step; this shows each step on its own, so a
change to a step's work can be compared step by step (run it before and after, alone), and the first steps'
system CPU (memory touched for the first time) can be told from the steady ones.

    python -m benchmarks.step_profile [CASE] [--variant hftoolkit|baseline] [--steps 10] [--profile-from STEP]
        [--set KEY=VALUE] [--out FILE.json]

CASE is one of the training benchmark's cases (default smollm2_full_text). Run it under the allocator the
`hftoolkit train` command uses (`LD_PRELOAD=` tcmalloc and `TCMALLOC_RELEASE_RATE=0`, as `python -m benchmarks`
runs every variant).
"""

from __future__ import annotations

import argparse
import resource
import statistics
import tempfile
import time
from pathlib import Path

from benchmarks.baseline import best_precision
from benchmarks.machine import cpu_line
from benchmarks.report import write_json
from benchmarks.train_one import CASES, VARIANTS, Meter, case_recipe, run_baseline, run_hftoolkit

# kinds of work in a step, by aten op name; the rest is "other element-wise and bookkeeping"
OP_KINDS = {
    "matmuls": {"aten::mm", "aten::bmm", "aten::addmm", "aten::baddbmm"},
    "dtype casts and copies": {"aten::copy_", "aten::_to_copy", "aten::clone"},
    "gradient norm (clipping)": {"aten::linalg_vector_norm", "aten::_foreach_norm", "aten::norm"},
    "optimizer": {"aten::_fused_adamw_", "aten::_foreach_mul_", "aten::_foreach_add_", "aten::_foreach_lerp_",
                  "aten::_foreach_addcmul_", "aten::_foreach_addcdiv_", "aten::_foreach_sqrt"},
    "output layer log-softmax": {"aten::_log_softmax", "aten::_log_softmax_backward_data", "aten::nll_loss_forward",
                                 "aten::nll_loss_backward"},
    "attention softmax and mask": {"aten::_softmax", "aten::_softmax_backward_data", "aten::masked_fill_",
                                   "aten::_scaled_dot_product_flash_attention_for_cpu",
                                   "aten::_scaled_dot_product_flash_attention_for_cpu_backward"},
}
OTHER = "other element-wise and bookkeeping"


def op_kinds(events, steps: int) -> dict:
    """Self CPU seconds per step of each kind of work in OP_KINDS, from a profiler's `key_averages()`."""
    seconds = dict.fromkeys([*OP_KINDS, OTHER], 0.0)
    for event in events:
        kind = next((kind for kind, names in OP_KINDS.items() if event.key in names), OTHER)
        seconds[kind] += event.self_cpu_time_total / 1e6
    return {kind: s / steps for kind, s in seconds.items()}


def matmuls_by_layout(events, steps: int) -> list[dict]:
    """Self CPU seconds per step of each matmul op by its inputs' shapes and strides (the same product on
    transposed or strided operands takes other kernels), slowest first, from a profiler's `events()`."""
    rows = {}
    for event in events:
        if event.name not in OP_KINDS["matmuls"]:
            continue
        key = (event.name, str(event.input_shapes), str(getattr(event, "structured_input_strides", None)))
        calls, seconds = rows.get(key, (0, 0.0))
        rows[key] = (calls + 1, seconds + event.self_cpu_time_total / 1e6)
    return sorted(({"op": op, "shapes": shapes, "strides": strides, "calls_per_step": calls / steps,
                    "self_seconds_per_step": round(seconds / steps, 6)}
                   for (op, shapes, strides), (calls, seconds) in rows.items()),
                  key=lambda row: -row["self_seconds_per_step"])


def step_recorder(steps: list, profile_from: int | None, top: int = 30, kinds: dict | None = None,
                  layouts: list | None = None):
    """A Trainer callback appending one record per optimizer step; it prints the profiler's table when asked,
    and fills `kinds` with the profiled steps' seconds per kind of work and `layouts` (when given) with their
    matmuls by shapes and strides."""
    import torch
    from transformers import TrainerCallback

    class StepRecorder(TrainerCallback):
        started = usage = profiler = None

        def on_step_begin(self, args, state, control, **kwargs):
            if profile_from is not None and state.global_step == profile_from:
                self.profiler = torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU],
                                                       record_shapes=layouts is not None)
                self.profiler.__enter__()
            self.usage, self.started = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            seconds, usage = time.perf_counter() - self.started, resource.getrusage(resource.RUSAGE_SELF)
            steps.append({"step": state.global_step, "seconds": round(seconds, 3),
                          "page_faults": usage.ru_minflt - self.usage.ru_minflt,
                          "system_cpu_s": round(usage.ru_stime - self.usage.ru_stime, 2),
                          "user_cpu_s": round(usage.ru_utime - self.usage.ru_utime, 2)})
            if self.profiler is not None and state.global_step == profile_from + 2:
                self.profiler.__exit__(None, None, None)
                events = self.profiler.key_averages()
                print(events.table(sort_by="self_cpu_time_total", row_limit=top, max_name_column_width=50),
                      flush=True)
                if kinds is not None:
                    kinds.update(op_kinds(events, steps=2))
                if layouts is not None:
                    layouts.extend(matmuls_by_layout(self.profiler.events(), steps=2))
                self.profiler = None

    return StepRecorder()


class RecordingMeter(Meter):
    """The benchmark's meter, which also attaches the step recorder to whichever Trainer it watches: the same
    hook for hftoolkit's trainer and the baseline's."""

    def __init__(self, recorder):
        super().__init__()
        self.recorder = recorder

    def watch(self, trainer):
        super().watch(trainer)
        trainer.add_callback(self.recorder)


def profile(case: str, steps: int, profile_from: int | None = None, overrides: tuple[str, ...] = (),
            variant: str = "hftoolkit", by_layout: bool = False) -> dict:
    records, kinds, layouts = [], {}, ([] if by_layout else None)
    meter = RecordingMeter(step_recorder(records, profile_from, kinds=kinds, layouts=layouts))
    with tempfile.TemporaryDirectory() as work:
        recipe = case_recipe(case, variant, Path(work) / "run", steps, overrides)
        started = time.perf_counter()
        if variant == "hftoolkit":
            _, _, _, precision = run_hftoolkit(recipe, meter)
        else:
            precision = "fp32" if variant == "baseline_fp32" else best_precision()
            _, _, _, precision = run_baseline(recipe, CASES[case][1], Path(work) / "run", meter, None, precision)
        wall = time.perf_counter() - started
    full = [r["seconds"] for r in records[1:]]
    return {"cpu": cpu_line(), "case": case, "variant": variant, "overrides": list(overrides),
            "precision": precision, "wall_seconds": round(wall, 1),
            "median_step_after_first_s": round(statistics.median(full), 3) if full else None,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024, "steps": records,
            "profiled_steps": [profile_from + 1, profile_from + 2] if kinds else None,
            "profiled_seconds_per_step_by_kind": {kind: round(s, 3) for kind, s in kinds.items()} or None,
            "profiled_matmuls_by_layout": layouts}


def main() -> None:
    parser = argparse.ArgumentParser(description="Seconds per step of one training run (hftoolkit's or the baseline's), "
                                                 "optionally profiled by kind of work")
    parser.add_argument("case", nargs="?", default="smollm2_full_text", choices=sorted(CASES))
    parser.add_argument("--variant", default="hftoolkit", choices=VARIANTS,
                        help="hftoolkit's run or the benchmark's plain-Trainer baseline (same case and steps)")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--profile-from", type=int, help="print torch's profiler table over steps N+1 and N+2")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="a recipe override on top of the case's (repeatable)")
    parser.add_argument("--by-layout", action="store_true",
                        help="also record the profiled matmuls by their inputs' shapes and strides (into --out)")
    parser.add_argument("--out")
    args = parser.parse_args()
    result = profile(args.case, args.steps, args.profile_from, tuple(args.set), args.variant, args.by_layout)
    for record in result["steps"]:
        print(f"step {record['step']:3d}  {record['seconds']:6.3f} s  page faults {record['page_faults']:8d}  "
              f"system CPU {record['system_cpu_s']:5.2f} s")
    print(f"{result['case']}, {result['variant']} ({result['precision']}): median step after the first "
          f"{result['median_step_after_first_s']} s, whole run {result['wall_seconds']} s, "
          f"peak RSS {result['peak_rss_mb']} MB")
    if result["profiled_seconds_per_step_by_kind"]:
        profiled = [r["seconds"] for r in result["steps"] if r["step"] in result["profiled_steps"]]
        print(f"steps {result['profiled_steps']} ({sum(profiled) / len(profiled):.3f} s each, profiled), "
              "self CPU seconds per step:")
        for kind, seconds in result["profiled_seconds_per_step_by_kind"].items():
            print(f"  {kind:40s} {seconds:6.3f}")
    write_json(args.out, result)


if __name__ == "__main__":
    main()
