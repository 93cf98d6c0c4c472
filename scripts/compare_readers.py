"""Held-out answers of two readers, two seeds each, and how they read a corpus they were never trained on.

    python scripts/compare_readers.py [--recipes cars_qa,cars_qa_gemma] [--seeds 42,7] [--out FOLDER]

For each recipe and seed: `hftoolkit train RECIPE training.seed=S` (wall time and peak resident memory of the whole
command), `hftoolkit eval` on the 101 honest held-out car questions (retrieval as trained), then the same checkpoint
on the harbour corpus (hftoolkit/corpora/harbour: facts in no training file, 16 paraphrased questions) from an index
of that corpus, with no more training. Writes results.md and results.json to --out; prints the CPU first. Run
nothing else meanwhile: the times are the machine's.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.machine import cpu_line  # noqa: E402
from benchmarks.report import write_table  # noqa: E402

HELDOUT = "bundled://corpora/cars/qa/heldout.jsonl"
HARBOUR_TEXT = "bundled://corpora/harbour/text"
HARBOUR_QA = "bundled://corpora/harbour/qa.jsonl"


def hftoolkit(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "hftoolkit", *args], capture_output=True, text=True, check=True)


def train(recipe: str, seed: int, out: Path) -> dict:
    started = time.perf_counter()
    done = subprocess.run(["/usr/bin/time", "-f", "maxrss_kb=%M", sys.executable, "-m", "hftoolkit", "train", recipe,
                           "--output-dir", str(out), "--overwrite", f"training.seed={seed}"],
                          capture_output=True, text=True, check=True)
    peak_kb = int(done.stderr.rsplit("maxrss_kb=", 1)[1].split()[0])
    metrics = json.loads((out / "metrics.json").read_text())
    return {"wall_s": round(time.perf_counter() - started), "train_s": round(metrics["train_runtime_seconds"]),
            "peak_gb": round(peak_kb / 1024 ** 2, 2)}


def score(checkpoint: Path, data: str, *extra: str) -> dict:
    result = json.loads(hftoolkit("eval", str(checkpoint), "--data", data, "--json", *extra).stdout)
    groups: dict[str, list[int]] = {}
    for answer in result["answers"]:
        right_and_count = groups.setdefault(answer.get("group") or "all", [0, 0])
        right_and_count[0] += bool(answer["correct"])
        right_and_count[1] += 1
    return {"right": result["correct"], "count": result["total"], "groups": groups,
            "fact_in_passages": result.get("fact_in_passages")}


def markdown_table(rows: list[dict], cpu: str) -> list[str]:
    table = [f"# {cpu}", "",
             "| recipe | seed | held-out (101) | corpus_only / paraphrase | harbour, never trained on (16) | "
             "training command wall time | peak RSS |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        groups = " / ".join(f"{right}/{count}" for right, count in r["heldout"]["groups"].values())
        table.append(f"| {r['recipe']} | {r['seed']} | {r['heldout']['right']}/{r['heldout']['count']} | {groups} | "
                     f"{r['harbour']['right']}/{r['harbour']['count']} | {r['wall_s']} s (training {r['train_s']} s) "
                     f"| {r['peak_gb']} GB |")
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipes", default="cars_qa,cars_qa_gemma")
    parser.add_argument("--seeds", default="42,7")
    parser.add_argument("--work", default="runs/readers", help="checkpoints go here")
    parser.add_argument("--out", default=None, help="folder for results.md and results.json")
    args = parser.parse_args()
    print(f"# {cpu_line()}", flush=True)
    work = Path(args.work)
    harbour_index = work / "harbour_index"
    if not harbour_index.exists():
        hftoolkit("index", "build", HARBOUR_TEXT, "--out", str(harbour_index))
    rows = []
    for recipe in args.recipes.split(","):
        for seed in (int(s) for s in args.seeds.split(",")):
            out = work / f"{recipe}_seed{seed}"
            row = {"recipe": recipe, "seed": seed, **train(recipe, seed, out),
                   "heldout": score(out, HELDOUT), "harbour": score(out, HARBOUR_QA, "--context", str(harbour_index))}
            rows.append(row)
            print(json.dumps(row), flush=True)
    table = markdown_table(rows, cpu_line())
    write_table(args.out, table, f"python scripts/compare_readers.py --recipes {args.recipes} --seeds {args.seeds}",
                {"cpu": cpu_line(), "rows": rows})


if __name__ == "__main__":
    main()
