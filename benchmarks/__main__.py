"""Run every benchmark, alone, and write `results.json` and `results.md`.

    python -m benchmarks [--out benchmarks/results] [--only training,preprocessing,generation,serving,streaming]
                         [--rounds 2] [--cases smollm2_full_text,...] [--stream-gb 2]

Prints the CPU model and its bf16/AMX flags first, then each benchmark's rows as they finish. Every
benchmark runs hftoolkit and its baseline in the same run, alternating; the ratios are the claims,
absolute times depend on the machine (and on anything else running: run nothing else meanwhile).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from benchmarks import machine
from benchmarks.report import markdown

SECTIONS = ("training", "preprocessing", "generation", "serving", "streaming")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks")
    parser.add_argument("--out", default="benchmarks/results", help="folder for results.json and results.md")
    parser.add_argument("--only", default=",".join(SECTIONS), help="comma-separated subset of " + ", ".join(SECTIONS))
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds per training case")
    parser.add_argument("--cases", default=None, help="comma-separated training cases (default: all)")
    parser.add_argument("--sizes", default="25,50,100", help="preprocessing corpus sizes in MB")
    parser.add_argument("--stream-gb", type=float, default=2.0, help="streaming: GiB of JSON Lines in the corpus")
    parser.add_argument("--stream-variants", default="streamed,map", help="streaming: streamed, map or both")
    args = parser.parse_args()
    wanted = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = sorted(set(wanted) - set(SECTIONS))
    if unknown:
        parser.error(f"--only: unknown {', '.join(unknown)}; choose from {', '.join(SECTIONS)}")
    from benchmarks.train_one import CASES

    cases = [c.strip() for c in args.cases.split(",") if c.strip()] if args.cases else list(CASES)
    unknown = sorted(set(cases) - set(CASES))
    if unknown:
        parser.error(f"--cases: unknown {', '.join(unknown)}; choose from {', '.join(CASES)}")

    print(f"# {machine.cpu_line()}", flush=True)
    result = {"machine": machine.machine(), "started": time.strftime("%Y-%m-%d %H:%M:%S")}
    ceilings = result["machine"]["matmul_gflops"]
    print(f"# matmul 2048²: fp32 {ceilings['float32']} GFLOP/s; {result['machine']['bf16_matmul_size']}²: "
          f"bf16 {ceilings['bfloat16']} GFLOP/s; "
          f"{result['machine']['case']}", flush=True)
    log = lambda message: print(message, flush=True)  # noqa: E731
    with tempfile.TemporaryDirectory(prefix="hftoolkit-bench-") as work:
        work = Path(work)
        if "training" in wanted:
            from benchmarks import training

            result["training"] = training.benchmark(work, ceilings, rounds=args.rounds, cases=cases, log=log)
        if "preprocessing" in wanted:
            from benchmarks import preprocessing

            sizes = tuple(int(s) for s in args.sizes.split(","))
            result["preprocessing"] = preprocessing.benchmark(work, sizes=sizes, log=log)
        if "generation" in wanted:
            from benchmarks import generation
            from hftoolkit.models.load import resolve_model_path

            checkpoint = str(resolve_model_path("smollm2-135m-instruct", lambda m: None))
            result["generation"] = generation.benchmark(checkpoint, log=log)
        if "serving" in wanted:
            from benchmarks import serving
            from hftoolkit.models.load import resolve_model_path

            checkpoint = str(resolve_model_path("smollm2-135m-instruct", lambda m: None))
            result["serving"] = serving.benchmark(checkpoint, work, log=log)
        if "streaming" in wanted:
            from benchmarks import streaming

            variants = tuple(v.strip() for v in args.stream_variants.split(",") if v.strip())
            result["streaming"] = streaming.benchmark(work, gigabytes=args.stream_gb, variants=variants, log=log)
    result["finished"] = time.strftime("%Y-%m-%d %H:%M:%S")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(result, indent=2))
    (out / "results.md").write_text(markdown(result))
    print(markdown(result))
    print(f"written: {out / 'results.json'}, {out / 'results.md'}")


if __name__ == "__main__":
    main()
