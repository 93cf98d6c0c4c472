"""How many processes a `Dataset.map` gets."""


def map_processes(workers: int | None) -> int | None:
    """None (this process) for one worker: datasets 5 starts a process pool even for num_proc=1, pickling the
    tokenizer into it (2 s per map for Gemma's 262k-entry tokenizer, on every preprocessing of a small set)."""
    return workers if workers and workers > 1 else None
