"""A one-time check that a model keeps packed documents apart.

Per-document position ids separate documents only in models whose attention mask is
built by transformers' `create_causal_mask` from the position ids. A model with its
own masking would let documents see each other with restarted positions, which is
worse than plain packing, so the trainer checks the first packed batch and falls
back to the 2D mask (documents see earlier ones, positions run on) if it fails.
"""

from __future__ import annotations

from hftoolkit.train.precision import fp32_forward


def second_document(position_ids) -> tuple[int, int] | None:
    """(start, end) of the second document in a block's position ids, if it has one."""
    restarts = [i for i in range(1, len(position_ids)) if position_ids[i] != position_ids[i - 1] + 1]
    if not restarts:
        return None
    end = restarts[1] if len(restarts) > 1 else len(position_ids)
    return restarts[0], end


def documents_kept_apart(model, inputs: dict, tolerance: float = 1e-3, window: int = 32) -> bool:
    """Whether the second document of the first block that has one gets the logits it gets alone.

    Only `window` tokens either side of the boundary are run: doc 2's first tokens, after the end of doc 1,
    against the same tokens alone. A model that lets documents see each other fails it as it fails on whole
    blocks, at a fraction of the cost (a 256-token SmolLM2 block took 1.3 s in fp32)."""
    import torch

    span = None
    for row in range(inputs["input_ids"].shape[0]):
        span = second_document(inputs["position_ids"][row].tolist())
        if span:
            break
    if span is None:
        return True  # no block holds two documents: nothing to keep apart
    start, end = span
    first, last = max(0, start - window), min(end, start + window)
    ids = inputs["input_ids"][row:row + 1, first:last]
    positions = inputs["position_ids"][row:row + 1, first:last]
    # in fp32, so only a real leak between documents exceeds the tolerance: autocast off, and past the forward
    # that accelerate wraps in its own autocast for bf16 training (whose rounding alone failed the check)
    forward = fp32_forward(model)
    with torch.no_grad(), torch.autocast(ids.device.type, enabled=False):
        packed = forward(input_ids=ids, position_ids=positions, use_cache=False).logits[0, start - first:].float()
        alone = forward(input_ids=ids[:, start - first:]).logits[0].float()
    scale = max(1.0, float(alone.abs().max()))
    return bool((packed - alone).abs().max() <= tolerance * scale)
