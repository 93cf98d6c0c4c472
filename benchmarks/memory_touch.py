"""What the first touch of memory costs on this machine, against memory the process touched before.

A training step's activations are gigabytes; the first step touches all of them fresh, later steps reuse
what the allocator kept (tcmalloc keeps it; glibc hands large blocks back). On a virtual machine whose
host backs guest memory lazily and takes freed memory back, fresh pages cost more than reused ones, and
that shows up as a slow first step. This maps N GiB and writes one byte per 4 KiB page after a pause (in
which freed memory can go back to the host: fresh), unmaps it, and at once maps and touches N GiB again,
which the kernel fills from the pages just freed (reused); alternating, medians.

    python -m benchmarks.memory_touch [--gib 2] [--rounds 3] [--pause 5]
"""

from __future__ import annotations

import argparse
import mmap
import platform
import resource
import statistics
import time

PAGE = 4096


def touch_seconds(size: int) -> tuple[float, int]:
    """(seconds, page faults) to write one byte into every page of a new anonymous mapping of `size`."""
    import numpy as np

    region = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    pages = np.frombuffer(region, dtype=np.uint8)
    started = time.perf_counter()
    pages[::PAGE] = 1
    seconds = time.perf_counter() - started
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults
    del pages
    region.close()
    return seconds, faults


def main(argv: list[str] | None = None) -> dict:
    from benchmarks.machine import cpu_line

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gib", type=float, default=2.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--pause", type=float, default=5.0, help="seconds before each fresh pass")
    args = parser.parse_args(argv)
    size = int(args.gib * 2 ** 30) // PAGE * PAGE
    print(f"CPU: {cpu_line()}; kernel {platform.release()}")
    fresh, reused = [], []
    for _ in range(args.rounds):
        time.sleep(args.pause)
        fresh.append(touch_seconds(size)[0])
        seconds, faults = touch_seconds(size)
        reused.append(seconds)
    result = {"gib": args.gib, "pages": size // PAGE, "fresh_s": statistics.median(fresh),
              "reused_s": statistics.median(reused)}
    result["fresh_vs_reused"] = result["fresh_s"] / result["reused_s"]
    per_gib = lambda seconds: seconds / args.gib  # noqa: E731
    print(f"{args.gib:g} GiB, {size // PAGE} pages, {faults} faults a pass; medians of {args.rounds}, "
          f"{args.pause:g} s pause before each fresh pass: "
          f"fresh {result['fresh_s']:.2f} s ({per_gib(result['fresh_s']):.2f} s/GiB), reused "
          f"{result['reused_s']:.2f} s ({per_gib(result['reused_s']):.2f} s/GiB): fresh costs "
          f"{result['fresh_vs_reused']:.1f}x")
    return result


if __name__ == "__main__":
    main()
