"""The `hftoolkit` command runs under tcmalloc when the machine has it: CPU training is faster with it.

glibc's malloc hands large freed blocks back to the kernel, so every training step allocates its big tensors
(the logits, gradients, bf16 copies of the weights) in fresh pages and pays a page fault per 4 KB to touch
them. tcmalloc keeps freed memory for reuse. Measured on SmolLM2-135M (one step of 4 x 256 tokens, 2 cores):
bf16 on an AMX CPU 2.21 -> 1.66 s, fp32 4.00 -> 3.39 s (`benchmarks/`, docs/performance.md). An allocator can only be
chosen before a process starts, so the command starts itself again once with tcmalloc preloaded. Set
HFTOOLKIT_ALLOCATOR=system to keep the C library's malloc.

For training it also sets TCMALLOC_RELEASE_RATE=0 (unless set already): tcmalloc then never hands freed memory
back to the kernel, so a step never faults again on pages an earlier one used, and the memory written ahead of
the first step (`train/warm_memory.py`) stays there for it. A training process's memory stays at its peak until
it exits, as it would reach that peak again at the next step anyway.
"""

from __future__ import annotations

import ctypes.util
import os
import sys

OPT_OUT = "HFTOOLKIT_ALLOCATOR"
LIBRARY = "tcmalloc_minimal"  # Debian/Ubuntu: libtcmalloc-minimal4
INSTALL_HINT = "apt-get install libtcmalloc-minimal4"
RESTARTED = "_HFTOOLKIT_LD_PRELOAD_BEFORE"  # set for the restarted process: the LD_PRELOAD it had before
RELEASE_RATE = "TCMALLOC_RELEASE_RATE"  # tcmalloc reads it once, when it loads; 0: keep what is freed


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


def keeps_freed_memory() -> bool:
    """Whether this process runs under tcmalloc told to keep the memory it frees."""
    try:
        return loaded_tcmalloc() is not None and float(os.environ.get(RELEASE_RATE, "")) == 0
    except ValueError:
        return False


def preload_env(env: dict | None = None, keep_freed_memory: bool = False) -> dict | None:
    """`env` with tcmalloc added to LD_PRELOAD (and, for training, told to keep freed memory unless the
    environment says otherwise), or None when it is not installed or opted out of."""
    env = dict(os.environ if env is None else env)
    if env.get(OPT_OUT) == "system" or not sys.platform.startswith("linux"):
        return None
    library = ctypes.util.find_library(LIBRARY)
    if library is None:
        return None
    env[RESTARTED] = env.get("LD_PRELOAD", "")  # what the restarted process puts back
    env["LD_PRELOAD"] = " ".join(filter(None, [library, env[RESTARTED]]))
    if keep_freed_memory:
        env.setdefault(RELEASE_RATE, "0")
    return env


def restart_with_tcmalloc(keep_freed_memory: bool = False) -> None:
    """Replace this process by the same `python -m hftoolkit ...` under tcmalloc, when that is possible and
    not done yet; afterwards LD_PRELOAD is as it was, so the programs hftoolkit starts keep their malloc.
    `keep_freed_memory`: a training command (see the module's docstring)."""
    if RESTARTED in os.environ:  # already restarted (or tcmalloc would not load)
        before = os.environ.pop(RESTARTED)
        if before:
            os.environ["LD_PRELOAD"] = before
        else:
            os.environ.pop("LD_PRELOAD", None)
        return
    if loaded_tcmalloc():
        return
    env = preload_env(keep_freed_memory=keep_freed_memory)
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
        return f"tcmalloc ({library}{', keeping freed memory' if keeps_freed_memory() else ''})"
    if os.environ.get(OPT_OUT) == "system":
        return f"the C library's malloc ({OPT_OUT}=system)"
    return f"the C library's malloc (CPU training runs faster under tcmalloc: {INSTALL_HINT})"
