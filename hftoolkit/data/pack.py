"""Step 2 for plain text: tokenize documents (EOS after each) and pack them into fixed blocks.

The remainder of each packing batch becomes a final short block padded to
`block_size` with attention 0 and labels -100, so nothing is silently dropped.
Labels come from the attention mask, not the pad id, so EOS always stays in the
loss even when a model's pad token equals its EOS.

Packed blocks also carry `position_ids` that restart at every document (and at the
padding). Given position ids and no 2D attention mask, transformers 5 treats the
block as packed sequences: each document attends only to itself, with the positions
it would have alone, so its logits equal those of the document run on its own
(tested) while blocks keep one static shape. `packed_inputs` makes that call.
"""

from __future__ import annotations

from hftoolkit.data.batch_size import BATCH_CHARACTERS, BATCH_TOKENS, rows_per_batch
from hftoolkit.data.fingerprint import step_fingerprint
from hftoolkit.data.mapping import map_processes

IGNORE_INDEX = -100


def tokenize_documents(dataset, tokenizer, text_column: str, add_eos: bool, num_proc: int = 1):
    """Adds `input_ids` per document (no special tokens but a trailing EOS)."""
    eos = [tokenizer.eos_token_id] if add_eos and tokenizer.eos_token_id is not None else []

    def encode(batch):
        texts = [t if isinstance(t, str) else "" for t in batch[text_column]]
        encoded = tokenizer(texts, add_special_tokens=False)["input_ids"]
        return {"input_ids": [ids + eos for ids in encoded]}

    rows = rows_per_batch(dataset, text_column, BATCH_CHARACTERS)
    fingerprint = step_fingerprint(dataset, tokenizer, "tokenize_documents", column=text_column, eos=eos, rows=rows)
    return dataset.map(encode, batched=True, batch_size=rows, writer_batch_size=rows,
                       remove_columns=dataset.column_names, num_proc=map_processes(num_proc),
                       features=token_features("input_ids"), desc="tokenizing", new_fingerprint=fingerprint)


def pack_blocks(batch: dict, block_size: int, pad_id: int) -> dict:
    """Concatenate a batch of token lists and cut it into blocks of `block_size`.

    Shapes: in, a list of variable-length id lists; out, lists of length block_size.
    """
    stream = [tok for ids in batch["input_ids"] for tok in ids]
    positions = [pos for ids in batch["input_ids"] for pos in range(len(ids))]
    blocks = {"input_ids": [], "attention_mask": [], "labels": [], "position_ids": []}
    for start in range(0, len(stream), block_size):
        block = packed_block(stream[start:start + block_size], positions[start:start + block_size], block_size,
                             pad_id)
        for column, values in block.items():
            blocks[column].append(values)
    return blocks


def packed_block(ids: list[int], positions: list[int], block_size: int, pad_id: int) -> dict:
    """One training block from up to block_size tokens and their positions within their documents (the
    streamed path builds its blocks with this too, so both paths pack alike)."""
    block = {"input_ids": [], "attention_mask": [], "labels": []}
    _append_padded(block, ids, block_size, pad_id)
    return {column: values[0] for column, values in block.items()} | {
        "position_ids": _block_positions(positions, block_size)}


def _block_positions(positions: list[int], block_size: int) -> list[int]:
    """A document carried over from the previous block restarts at 0 (as a block of its own would), so no
    position reaches past the block: absolute-position models have block_size positions. The padding
    restarts at 0 too: a segment of its own that no real token attends to."""
    if positions and positions[0]:
        carried = next((i for i, pos in enumerate(positions) if pos == 0), len(positions))
        positions = list(range(carried)) + positions[carried:]
    return positions + list(range(block_size - len(positions)))


def truncate_blocks(batch: dict, block_size: int, pad_id: int) -> dict:
    """One block per document (no packing); tokens past block_size are cut and counted."""
    blocks = {"input_ids": [], "attention_mask": [], "labels": [], "truncated": []}
    for ids in batch["input_ids"]:
        _append_padded(blocks, ids[:block_size], block_size, pad_id)
        blocks["truncated"].append(max(0, len(ids) - block_size))
    return blocks


def _append_padded(blocks: dict, ids: list[int], block_size: int, pad_id: int) -> None:
    pad = block_size - len(ids)
    blocks["input_ids"].append(ids + [pad_id] * pad)
    blocks["attention_mask"].append([1] * len(ids) + [0] * pad)
    blocks["labels"].append(ids + [IGNORE_INDEX] * pad)


def token_features(*columns: str):
    """Arrow types for token columns: int32 ids and positions, int8 masks (int64 would be 2.5x the bytes on
    disk and in memory-mapped pages; the collator turns them into int64 tensors all the same)."""
    from datasets import Features, Sequence, Value

    types = {"input_ids": "int32", "labels": "int32", "position_ids": "int32", "attention_mask": "int8",
             "truncated": "int64"}
    return Features({c: Value(types[c]) if c == "truncated" else Sequence(Value(types[c])) for c in columns})


def pack_dataset(tokenized, block_size: int, pad_id: int, packing: bool, num_proc: int = 1):
    """Packed (or truncated) fixed-length blocks ready for `default_data_collator`."""
    step = pack_blocks if packing else truncate_blocks
    columns = ("input_ids", "attention_mask", "labels") + (("position_ids",) if packing else ("truncated",))
    rows = rows_per_batch(tokenized, "input_ids", BATCH_TOKENS)  # the remainder of each batch is padded
    return tokenized.map(step, batched=True, batch_size=rows, remove_columns=tokenized.column_names,
                         fn_kwargs={"block_size": block_size, "pad_id": pad_id}, num_proc=map_processes(num_proc),
                         features=token_features(*columns), desc="packing" if packing else "truncating")


def packed_inputs(inputs: dict) -> dict:
    """Model inputs for packed blocks: without the 2D mask, so the position ids separate the documents.

    The mask stays in the collated batch (the Trainer counts real tokens with it); padding is a segment of
    its own with labels -100, so dropping the mask changes no real token's output. transformers looks for
    packed documents only without a KV cache, hence `use_cache=False`.
    """
    if "position_ids" not in inputs:
        return inputs
    return {k: v for k, v in inputs.items() if k != "attention_mask"} | {"use_cache": False}


def block_stats(documents: int, blocks) -> dict:
    """Documents, real tokens, blocks, padding % and truncated tokens of one split.

    Counted over Arrow batches, so a large corpus is never turned into Python lists."""
    import pyarrow.compute as pc

    real = slots = truncated = 0
    for batch in blocks.with_format("arrow").iter(batch_size=10_000):
        masks = pc.list_flatten(batch["attention_mask"])
        real += pc.sum(masks).as_py() or 0
        slots += len(masks)
        if "truncated" in batch.column_names:
            truncated += pc.sum(batch["truncated"]).as_py() or 0
    return {"documents": documents, "tokens": real, "blocks": len(blocks),
            "padding_percent": round(100 * (slots - real) / slots, 2) if slots else 0.0,
            "tokens_truncated": truncated}
