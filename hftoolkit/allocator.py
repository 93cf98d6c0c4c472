"""The `hftoolkit` command runs under tcmalloc when the machine has it: CPU training is faster with it.

glibc's malloc hands large freed blocks back to the kernel, so every training step allocates its big tensors
(the logits, gradients, bf16 copies of the weights) in fresh pages and pays a page fault per 4 KB to touch
them. tcmalloc keeps freed memory for reuse. Measured on SmolLM2-135M (one step of 4 x 256 tokens, 2 cores):
bf16 on an AMX CPU 2.21 -> 1.66 s, fp32 4.00 -> 3.39 s (`benchmarks/`, docs/performance.md). An allocator can only be
chosen before a process starts, so the command starts itself again once with tcmalloc preloaded. Set
HFTOOLKIT_ALLOCATOR=system to keep the C library's malloc.
"""

from __future__ import annotations

import ctypes.util
import os
import sys

OPT_OUT = "HFTOOLKIT_ALLOCATOR"
LIBRARY = "tcmalloc_minimal"  # Debian/Ubuntu: libtcmalloc-minimal4
INSTALL_HINT = "apt-get install libtcmalloc-minimal4"
RESTARTED = "_HFTOOLKIT_LD_PRELOAD_BEFORE"  # set for the restarted process: the LD_PRELOAD it had before


def loaded_tcmalloc() -> str | None:
    """The tcmalloc library this process runs with, or None (also where /proc is not there to tell)."""
    try:
        with open("/proc/self/maps") as maps:
            for line in maps:
                path = line.split()[-1]
                if "libtcmalloc" in os.path.basename(path):
                    return path
    except OSError:
        pass
    return None


def preload_env(env: dict | None = None) -> dict | None:
    """`env` with tcmalloc added to LD_PRELOAD, or None when it is not installed or opted out of."""
    env = dict(os.environ if env is None else env)
    if env.get(OPT_OUT) == "system" or not sys.platform.startswith("linux"):
        return None
    library = ctypes.util.find_library(LIBRARY)
    if library is None:
        return None
    env[RESTARTED] = env.get("LD_PRELOAD", "")  # what the restarted process puts back
    env["LD_PRELOAD"] = " ".join(filter(None, [library, env[RESTARTED]]))
    return env


def restart_with_tcmalloc() -> None:
    """Replace this process by the same `python -m hftoolkit ...` under tcmalloc, when that is possible and
    not done yet; afterwards LD_PRELOAD is as it was, so the programs hftoolkit starts keep their malloc."""
    if RESTARTED in os.environ:  # already restarted (or tcmalloc would not load)
        before = os.environ.pop(RESTARTED)
        if before:
            os.environ["LD_PRELOAD"] = before
        else:
            os.environ.pop("LD_PRELOAD", None)
        return
    if loaded_tcmalloc():
        return
    env = preload_env()
    if env is None:
        return
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execve(sys.executable, [sys.executable, "-m", "hftoolkit", *sys.argv[1:]], env)
    except OSError:
        return  # carry on with the C library's malloc


def describe() -> str:
    """One line for the training log: which allocator this process uses, and how to get the faster one."""
    library = loaded_tcmalloc()
    if library:
        return f"tcmalloc ({library})"
    if os.environ.get(OPT_OUT) == "system":
        return f"the C library's malloc ({OPT_OUT}=system)"
    return f"the C library's malloc (CPU training runs faster under tcmalloc: {INSTALL_HINT})"
