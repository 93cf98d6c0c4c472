"""The Markdown tables of a benchmark result (docs/performance.md condenses them)."""

from __future__ import annotations


def write_table(folder: str | None, table: list[str], reproduce: str, result: dict) -> None:
    """Print a table (its CPU line first) and, given a folder, keep it as results.md (with the command that
    reproduces it) and results.json."""
    import json
    from pathlib import Path

    print("\n".join(table[2:]))
    if folder:
        out = Path(folder)
        out.mkdir(parents=True, exist_ok=True)
        (out / "results.md").write_text("\n".join(table) + f"\n\nReproduce: `{reproduce}`\n")
        (out / "results.json").write_text(json.dumps(result, indent=1))


def write_json(path: str | None, result: dict) -> None:
    """Keep a benchmark's result as indented JSON at `path` (its folder made), when a path is given."""
    import json
    from pathlib import Path

    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(result, indent=2) + "\n")


def markdown(result: dict) -> str:
    info = result["machine"]
    lines = [f"Machine: {info['model']}, {info['cores']} cores, flags: {' '.join(info['flags']) or 'none'}; "
             f"2048² matmul fp32 {info['matmul_gflops']['float32']} GFLOP/s, "
             f"{info.get('bf16_matmul_size', 2048)}² bf16 {info['matmul_gflops']['bfloat16']} GFLOP/s; {info['case']}.", ""]
    if "training" in result:
        lines += ["| training case | variant | precision, malloc | end to end | end-to-end tokens/s (vs baseline) "
                  "| before 1st step | 1st step | steady tokens/s (vs baseline) | MFU steady | train tokens/s (vs "
                  "baseline) | padding | peak RSS | disk written | eval loss (vs baseline) "
                  "| run_clm-style eval loss (vs baseline) |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in result["training"]:
            lines.append(
                f"| {r['case']} | {r['variant']} | {r['precision']}, {r.get('allocator', 'libc')} "
                f"| {r['wall_seconds']:.0f} s | {r['end_to_end_tokens_per_second']:.0f} "
                f"({r['end_to_end_speedup']:.2f}x) | {r['before_first_step_seconds']:.0f} s "
                f"| {r['first_step_seconds']:.1f} s "
                f"| {r['steady_tokens_per_second']:.0f} ({r['steady_speedup']:.2f}x) | {r['steady_mfu_percent']:.0f}% "
                f"| {r['tokens_per_second']:.0f} ({r['speedup']:.2f}x) "
                f"| {r['padding_percent']:.0f}% | {r['peak_rss_mb']:.0f} MB "
                f"| {r['disk_written_mb']:.0f} MB | {r['eval_loss']:.3f} ({r['eval_loss_vs_baseline']:+.3f}) |"
                + (f" {r['eval_loss_run_clm']:.3f} ({r['eval_loss_run_clm_vs_baseline']:+.3f}) |"
                   if "eval_loss_run_clm" in r else " – |"))
        lines += ["", "baseline: a plain Trainer script at its best (bf16 where the CPU has bf16 instructions, as "
                  "run_clm's `--bf16`; QA padded per batch); baseline_fp32: the same script in fp32. All variants "
                  "under the same allocator, with cold preprocessing and datasets caches. End to end: the whole "
                  "process (imports, loading, tokenizing, evaluations the recipe asks for, training, saving) over "
                  "the real tokens trained; before 1st step: process start to the first step; steady: median "
                  "real tokens/s over steps after the first; train tokens/s: real tokens over the Trainer's train "
                  "time. MFU: FLOPs per token (6N + 12·layers·hidden·sequence; LoRA: 4N + 2·trainable + attention) "
                  "x steady tokens/s over the fp32 or bf16 matmul ceiling above. Medians over the rounds. Eval "
                  "loss, one evaluator for all: text, held-out paragraphs each scored on its own with EOS (as "
                  "hftoolkit trains); run_clm-style: held-out lines concatenated into blocks (as the baseline "
                  "trains); QA: loss on the validation answers' tokens.", ""]
    if "preprocessing" in result:
        rows = result["preprocessing"]
        lines += ["| corpus | num_proc | tokens | cold | warm | warm speed-up | cold tokens/s | peak RSS cold | "
                  "peak heap cold | peak RSS warm |", "|---|---|---|---|---|---|---|---|---|---|"]
        for r in rows:
            lines.append(f"| {r['megabytes']} MB | {r['num_proc']} | {r['tokens']:,} | {r['cold_seconds']:.1f} s "
                         f"| {r['warm_seconds']:.1f} s | {r['warm_speedup']:.0f}x | {r['cold_tokens_per_second']:,} "
                         f"| {r['cold_peak_rss_mb']} MB | {r['cold_peak_heap_mb']} MB | {r['warm_peak_rss_mb']} MB |")
        single = {r["megabytes"]: r for r in rows if r["num_proc"] == 1}
        if len(single) > 1:
            small, large = single[min(single)], single[max(single)]
            lines += ["", f"{max(single)} MB vs {min(single)} MB: cold time "
                      f"x{large['cold_seconds'] / small['cold_seconds']:.2f} "
                      f"for x{large['tokens'] / small['tokens']:.2f} the tokens; peak RSS "
                      f"x{large['cold_peak_rss_mb'] / small['cold_peak_rss_mb']:.2f}, peak heap "
                      f"x{large['cold_peak_heap_mb'] / small['cold_peak_heap_mb']:.2f}.", ""]
    if "streaming" in result:
        from benchmarks.streaming import markdown as streaming_markdown

        lines += [streaming_markdown(result["streaming"]), ""]
    if "serving" in result:
        from benchmarks.serving import markdown as serving_markdown

        lines += [serving_markdown(result["serving"]), ""]
    if "generation" in result:
        gen = result["generation"]
        lines += [f"| generation ({gen['prompts']} prompts x {gen['new_tokens']} new tokens) | tokens/s | vs batch 1 |",
                  "|---|---|---|"]
        lines += [f"| {r['setting']} | {r['tokens_per_second']} | {r['vs_batch_1']:.2f}x |" for r in gen["throughput"]]
        lines += ["", "| request | median latency | speed-up vs fresh |", "|---|---|---|"]
        lines += [f"| {r['request']} | {r['median_ms']} ms | {r['speedup']:,}x |" for r in gen["latency"]]
    return "\n".join(lines) + "\n"
