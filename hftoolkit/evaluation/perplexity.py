"""Perplexity of a causal LM on text: token-weighted mean loss over packed blocks.

Each batch adds its summed loss and token count to the shipped `token_perplexity`
evaluate module, so no logits of the whole set are kept.
"""

from __future__ import annotations


def text_perplexity(model, tokenizer, texts: list[str], block_size: int = 256, batch_size: int = 8) -> dict:
    import torch

    from hftoolkit.metrics import load_metric

    metric = load_metric("token_perplexity")
    eos = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    stream = [t for ids in tokenizer(texts, add_special_tokens=False)["input_ids"] for t in ids + eos]
    blocks = [stream[i:i + block_size] for i in range(0, len(stream), block_size)]
    blocks = [b for b in blocks if len(b) > 1]
    model.eval()
    with torch.inference_mode():
        for start in range(0, len(blocks), batch_size):
            batch = blocks[start:start + batch_size]
            width = max(len(b) for b in batch)
            ids = torch.full((len(batch), width), tokenizer.pad_token_id or 0)
            mask = torch.zeros((len(batch), width), dtype=torch.long)
            for row, block in enumerate(batch):
                ids[row, :len(block)] = torch.tensor(block)
                mask[row, :len(block)] = 1
            logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1].float()
            targets = ids[:, 1:].masked_fill(mask[:, 1:] == 0, -100)
            loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.size(-1)), targets.reshape(-1),
                                                     ignore_index=-100, reduction="sum")
            metric.add_batch(predictions=[float(loss)], references=[int((targets != -100).sum())])
    return metric.compute()
