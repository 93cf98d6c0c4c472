"""Perplexity of a causal LM on text: token-weighted mean loss over packed blocks.

Blocks are built exactly as for training (`data.pack`), so each document is scored
on its own (per-document positions) and every token is counted once. Each batch adds
its summed loss and token count to the shipped `token_perplexity` evaluate module,
so no logits of the whole set are kept.
"""

from __future__ import annotations

from hftoolkit.data.pack import IGNORE_INDEX, pack_blocks, packed_inputs
from hftoolkit.metrics import load_metric


def text_perplexity(model, tokenizer, texts: list[str], block_size: int = 256, batch_size: int = 8) -> dict:
    import torch

    metric = load_metric("token_perplexity")
    eos = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    documents = [ids + eos for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]
    blocks = pack_blocks({"input_ids": documents}, block_size, tokenizer.pad_token_id or 0)
    model.eval()
    with torch.inference_mode():
        for start in range(0, len(blocks["input_ids"]), batch_size):
            batch = {k: torch.tensor(v[start:start + batch_size]) for k, v in blocks.items()}
            labels = batch.pop("labels")
            logits = model(**packed_inputs(batch)).logits[:, :-1].float()
            targets = labels[:, 1:]
            loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.size(-1)), targets.reshape(-1),
                                                     ignore_index=IGNORE_INDEX, reduction="sum")
            metric.add_batch(predictions=[float(loss)], references=[int((targets != IGNORE_INDEX).sum())])
    return metric.compute()
