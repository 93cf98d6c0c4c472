"""Training throughput: hftoolkit's shipped recipes against the plain-Trainer baseline, alternating.

Each round runs hftoolkit, then the baseline at its best (bf16 where the hardware has it, per-batch padding),
then the same baseline in fp32, each in its own process, all under the same allocator (tcmalloc where it is
installed) and with cold caches (a fresh hftoolkit cache, pulled models aside, and a fresh datasets cache), so
every run pays for its own tokenizing. Text baselines train for as many steps as give the real tokens hftoolkit's
run trained (its partial batches at epoch ends count), so eval losses compare after equal real tokens; QA runs
take equal steps of equal examples.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

from benchmarks.machine import flops_per_token
from benchmarks.train_one import CASES, VARIANTS
from hftoolkit.allocator import preload_env
from hftoolkit.paths import cache_dir

# enough steps that the steady state shows beside the first step (reported apart)
STEPS = {"smollm2_full_text": 12, "smollm2_lora_text": 12, "smollm2_lora_qa": 12, "smollm2_full_qa": 12,
         "gpt_scratch_text": 20}


def run_one(case: str, variant: str, steps: int, work: Path, reference: Path | None = None,
            round_number: int = 0) -> dict:
    out = work / f"{case}-{variant}-{round_number}"
    command = [sys.executable, "-m", "benchmarks.train_one", case, variant, str(out), str(steps)]
    if reference is not None:
        command.append(str(reference))
    # every variant under the same allocator and settings: tcmalloc where it is installed, keeping freed memory,
    # as `hftoolkit train` runs
    plain = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}  # also when this process runs under it
    env = preload_env(plain, keep_freed_memory=True) or plain
    env = {**env, **cold_caches(out.with_name(out.name + "-caches"))}
    with open(work / f"{case}-{variant}.log", "a") as log:
        done = subprocess.run(command, stdout=subprocess.PIPE, stderr=log, text=True, env=env,
                              cwd=Path(__file__).resolve().parent.parent)
    if done.returncode != 0:
        raise RuntimeError(f"{case}/{variant} failed: see {work / f'{case}-{variant}.log'}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def cold_caches(folder: Path) -> dict:
    """Environment for a run with empty preprocessing and datasets caches; pulled models are shared."""
    folder.mkdir(parents=True, exist_ok=True)
    if not (folder / "hftoolkit" / "models").exists():
        (folder / "hftoolkit").mkdir(exist_ok=True)
        (folder / "hftoolkit" / "models").symlink_to(cache_dir("models"))
    return {"HFTOOLKIT_CACHE": str(folder / "hftoolkit"), "HF_DATASETS_CACHE": str(folder / "datasets")}


def baseline_steps(case: str, hftoolkit_run: dict) -> int:
    from benchmarks.train_one import case_recipe

    if CASES[case][1] == "qa":
        return hftoolkit_run["steps"]
    training = case_recipe(case, "baseline", Path("unused"), 1)
    per_step = training.training.batch_size * training.training.gradient_accumulation * hftoolkit_run["sequence"]
    return max(1, round(hftoolkit_run["real_tokens"] / per_step))


def run_case(case: str, rounds: int, work: Path, log=print) -> list[dict]:
    runs = []
    for round_number in range(rounds):
        mine = run_one(case, "hftoolkit", STEPS[case], work, round_number=round_number) | {"round": round_number}
        runs.append(mine)
        log(f"  {case} hftoolkit: {mine['tokens_per_second']} real tokens/s, {mine['wall_seconds']} s end to end")
        reference = work / f"{case}-hftoolkit-{round_number}"
        for variant in VARIANTS[1:]:
            runs.append(run_one(case, variant, baseline_steps(case, mine), work, reference, round_number)
                        | {"round": round_number})
            log(f"  {case} {variant}: {runs[-1]['tokens_per_second']} real tokens/s, "
                f"{runs[-1]['wall_seconds']} s end to end")
    return runs


def summarise(runs: list[dict], ceilings: dict) -> list[dict]:
    """Per variant: medians over rounds, MFU against the measured ceiling, ratios against the baseline."""
    rows = []
    for variant in dict.fromkeys(r["variant"] for r in runs):
        mine = [r for r in runs if r["variant"] == variant]
        first = mine[0]
        per_token = flops_per_token(first["parameters"], first["layers"], first["hidden"], first["sequence"],
                                    first["trainable"])
        ceiling = ceilings["bfloat16" if first["precision"] == "bf16" else "float32"]
        row = {"case": first["case"], "variant": variant, "precision": first["precision"],
               "allocator": first.get("allocator", "libc"), "rounds": len(mine),
               "flops_per_token": per_token}
        for key in ("tokens_per_second", "steady_tokens_per_second", "tokens_per_second_without_eval",
                    "end_to_end_tokens_per_second", "before_first_step_seconds", "first_step_seconds",
                    "eval_seconds", "real_tokens", "padding_percent",
                    "peak_rss_mb", "disk_written_mb", "eval_loss", "eval_loss_run_clm", "eval_loss_run_clm_words",
                    "wall_seconds", "train_seconds"):
            if key in first:
                row[key] = statistics.median(r[key] for r in mine)
        row["mfu_percent"] = round(100 * row["tokens_per_second"] * per_token / 1e9 / ceiling, 1)
        row["steady_mfu_percent"] = round(100 * row["steady_tokens_per_second"] * per_token / 1e9 / ceiling, 1)
        rows.append(row)
    base = next(r for r in rows if r["variant"] == "baseline")
    for row in rows:
        row["speedup"] = round(row["tokens_per_second"] / base["tokens_per_second"], 2)
        row["steady_speedup"] = round(row["steady_tokens_per_second"] / base["steady_tokens_per_second"], 2)
        row["end_to_end_speedup"] = round(row["end_to_end_tokens_per_second"]
                                          / base["end_to_end_tokens_per_second"], 2)
        if "tokens_per_second_without_eval" in row and "tokens_per_second_without_eval" in base:
            row["speedup_without_eval"] = round(row["tokens_per_second_without_eval"]
                                                / base["tokens_per_second_without_eval"], 2)
        row["eval_loss_vs_baseline"] = round(row["eval_loss"] - base["eval_loss"], 4)
        for key in ("eval_loss_run_clm", "eval_loss_run_clm_words"):
            if key in row:
                row[f"{key}_vs_baseline"] = round(row[key] - base[key], 4)
    return rows


def benchmark(work: Path, ceilings: dict, rounds: int = 2, cases=tuple(CASES), log=print) -> list[dict]:
    rows = []
    for case in cases:
        log(f"training: {case} ({CASES[case][2]}), {rounds} rounds")
        rows += summarise(run_case(case, rounds, work, log), ceilings)
    return rows
