"""Step 2 for encoder (BERT-style) tasks: classification examples and masked-LM blocks."""

from __future__ import annotations

from hftoolkit.data.fingerprint import step_fingerprint
from hftoolkit.data.labels import encode_label
from hftoolkit.recipe.schema import Recipe


def encode_classification(dataset, tokenizer, recipe: Recipe, names: list[str]):
    """input_ids truncated to block_size, plus `labels` (class id, multi-hot list, or float)."""
    data, prep, problem = recipe.data, recipe.preprocess, recipe.model.problem_type

    def encode(batch):
        encoded = tokenizer([str(t) for t in batch[data.text_column]], truncation=True, max_length=prep.block_size)
        full = tokenizer([str(t) for t in batch[data.text_column]])["input_ids"]
        encoded["labels"] = [encode_label(v, names, problem) for v in batch[data.label_column]]
        encoded["truncated"] = [max(0, len(f) - len(e)) for f, e in zip(full, encoded["input_ids"])]
        return encoded

    fingerprint = step_fingerprint(dataset, tokenizer, "encode_classification", data=recipe.data,
                                   preprocess=recipe.preprocess, problem=problem, names=names)
    return dataset.map(encode, batched=True, remove_columns=dataset.column_names, desc="tokenizing",
                       new_fingerprint=fingerprint)


def encode_masked_lm(dataset, tokenizer, recipe: Recipe):
    """Documents with [CLS]/[SEP], packed into blocks (or one per line); labels come from the collator."""
    prep = recipe.preprocess
    column = recipe.data.text_column
    offsets = prep.whole_word_mask  # the collator finds word boundaries from character offsets

    def encode(batch):
        texts = [t for t in batch[column] if isinstance(t, str) and t.strip()]
        enc = tokenizer(texts, return_special_tokens_mask=True, return_offsets_mapping=offsets,
                        truncation=not prep.packing, max_length=prep.block_size if not prep.packing else None)
        keys = ["input_ids", "special_tokens_mask"] + (["offset_mapping"] if offsets else [])
        if not prep.packing:
            return {k: enc[k] for k in keys} | {"attention_mask": enc["attention_mask"]}
        return _pack(enc, keys, prep.block_size, tokenizer.pad_token_id)

    fingerprint = step_fingerprint(dataset, tokenizer, "encode_masked_lm", column=column, preprocess=prep)
    return dataset.map(encode, batched=True, batch_size=1000, remove_columns=dataset.column_names,
                       desc="tokenizing and packing" if prep.packing else "tokenizing", new_fingerprint=fingerprint)


def _pack(enc, keys: list[str], block_size: int, pad_id: int) -> dict:
    """Concatenate documents and cut fixed blocks; the last block is padded (attention 0), not dropped."""
    pads = {"input_ids": pad_id, "special_tokens_mask": 1, "offset_mapping": (0, 0)}
    streams = {k: [x for row in enc[k] for x in row] for k in keys}
    out = {k: [] for k in keys + ["attention_mask"]}
    total = len(streams["input_ids"])
    for start in range(0, total, block_size):
        length = min(block_size, total - start)
        for k in keys:
            out[k].append(list(streams[k][start:start + length]) + [pads[k]] * (block_size - length))
        out["attention_mask"].append([1] * length + [0] * (block_size - length))
    return out
