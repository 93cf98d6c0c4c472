"""Causal-LM loss computed only where there are labels.

The output layer of a small LM is a large share of its compute (SmolLM2-135M:
a 49,152 x 576 matrix applied at every position). With answer-only labels
most positions carry no loss, so the hidden states are gathered at the labelled
positions first and only those go through the output layer: the same loss, a
third less training time for SFT examples on a CPU (benchmark in docs/performance.md).

When many positions are labelled (text recipes) and the vocabulary is large, their logits alone are large
(Gemma 3's 262,144 entries: 2,048 positions are 2.1 GB in fp32). Past `LOSS_CHUNK` labelled positions the
output layer and the cross-entropy run chunk by chunk under activation checkpointing, so at most one chunk's
logits exist at a time, in the forward and in the backward; the sum is the same up to float rounding.
"""

from __future__ import annotations

from hftoolkit.train.precision import fp32_forward

IGNORE_INDEX = -100
LOSS_CHUNK = 1024  # labelled positions whose logits may exist at once


def labelled_positions_loss(model, inputs: dict, num_items_in_batch=None, chunk: int = LOSS_CHUNK):
    """Next-token cross-entropy over labelled positions: sum / num_items_in_batch, or the mean; `chunk` labelled
    positions' logits at a time.

    It calls the decoder and the output layer, not the model's forward, so it runs outside the autocast that
    accelerate puts on that forward: the Trainer calls it inside `accelerator.autocast()`."""

    labels = inputs["labels"]
    body = {k: v for k, v in inputs.items() if k != "labels"}
    hidden = model.get_decoder()(**body).last_hidden_state  # (batch, tokens, width)
    targets = labels[:, 1:]
    keep = targets != IGNORE_INDEX
    loss = output_layer_loss(model.get_output_embeddings(), hidden[:, :-1][keep], targets[keep], chunk)
    if num_items_in_batch is not None:
        return loss / num_items_in_batch
    return loss / keep.sum().clamp(min=1)


def output_layer_loss(head, hidden, targets, chunk: int = LOSS_CHUNK):
    """Summed cross-entropy of `head(hidden)` against `targets`, `chunk` rows of logits at a time."""
    import torch
    from torch.utils.checkpoint import checkpoint

    def summed(rows, wanted):
        return torch.nn.functional.cross_entropy(head(rows).float(), wanted, reduction="sum")

    if hidden.shape[0] <= chunk:
        return summed(hidden, targets)
    return sum(checkpoint(summed, hidden[start:start + chunk], targets[start:start + chunk], use_reentrant=False)
               for start in range(0, hidden.shape[0], chunk))


def matches_model_loss(model, inputs: dict) -> bool:
    """Whether the shortcut gives the model's own loss here (models that scale or cap logits differ).

    Compared in fp32: past the autocast that accelerate wraps around the forward of a bf16 run, so that
    rounding neither fails the check nor hides a real difference. On one labelled row of the batch: two fp32
    forwards of a whole SmolLM2 batch cost a QA run several seconds before its first step."""
    import torch

    labelled = (inputs["labels"][:, 1:] != IGNORE_INDEX).any(dim=1).nonzero()
    row = int(labelled[0]) if len(labelled) else 0
    rows = inputs["labels"].shape[0]
    inputs = {k: v[row:row + 1] if torch.is_tensor(v) and v.dim() and v.shape[0] == rows else v
              for k, v in inputs.items()}
    forward = fp32_forward(model)
    with torch.no_grad(), torch.autocast(inputs["input_ids"].device.type, enabled=False):
        own = forward(**inputs).loss
        ours = labelled_positions_loss(model, inputs)
    return bool(torch.isfinite(own)) and abs(float(own) - float(ours)) <= 1e-3 * max(1.0, abs(float(own)))
