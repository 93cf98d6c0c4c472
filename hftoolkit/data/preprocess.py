"""Step 2: turn loaded documents into model inputs, through the content-keyed cache."""

from __future__ import annotations

from dataclasses import asdict

from hftoolkit.data.cache import cached, tokenizer_fingerprint
from hftoolkit.data.chat_format import chat_stats, encode_chat_dataset
from hftoolkit.data.encoder_format import encode_classification, encode_masked_lm
from hftoolkit.data.pack import block_stats, pack_dataset, tokenize_documents
from hftoolkit.data.splits import LoadedData
from hftoolkit.recipe.schema import Recipe


def preprocess(recipe: Recipe, loaded: LoadedData, tokenizer, labels: list[str] | None = None
               ) -> tuple[object, dict, bool]:
    """Model inputs for train/validation, their stats, and whether the cache was hit."""
    data, prep = recipe.data, recipe.preprocess
    workers = worker_count(prep.num_proc, loaded.train)
    key = {"data_hash": loaded.content_hash, "tokenizer": tokenizer_fingerprint(tokenizer),
           "workers": workers,  # packing batches follow the worker shards
           "preprocess": asdict(prep), "data": {k: v for k, v in asdict(data).items()
                    if k not in ("train", "validation", "extra_text")},  # sources: in data_hash, no passwords
           "task": recipe.model.task, "problem_type": recipe.model.problem_type, "labels": labels,
           "seed": recipe.training.seed, "version": 3}  # 2: position ids; 3: batches bounded by tokens

    def build():
        from datasets import DatasetDict

        splits = {"train": loaded.train, "validation": loaded.validation}
        out, stats = {}, {}
        for name, split in splits.items():
            if recipe.model.task == "classification":
                out[name] = encode_classification(split, tokenizer, recipe, labels)
                stats[name] = example_stats(out[name])
            elif recipe.model.task == "masked_lm":
                out[name] = encode_masked_lm(split, tokenizer, recipe)
                stats[name] = block_stats(len(split), out[name]) if prep.packing else example_stats(out[name])
            elif data.format == "text":
                tokens = tokenize_documents(split, tokenizer, data.text_column, prep.add_eos, workers)
                out[name] = pack_dataset(tokens, prep.block_size, tokenizer.pad_token_id, prep.packing, workers)
                stats[name] = block_stats(len(split), out[name])
            else:
                out[name] = encode_chat_dataset(split, tokenizer, data, prep.block_size, workers)
                stats[name] = chat_stats(out[name])
            if "truncated" in out[name].column_names:
                out[name] = out[name].remove_columns("truncated")
        if loaded.extra_text is not None:
            out["train"], stats["extra_text"] = add_text_blocks(out["train"], loaded.extra_text, recipe, tokenizer,
                                                                workers)
        return DatasetDict(out), stats

    datasets, stats, hit, _ = cached(key, build)
    return datasets, stats, hit


AUTO_WORKERS_BYTES = 20 * 2 ** 20  # below this, starting worker processes costs more than it saves


def worker_count(num_proc: int, train) -> int:
    """preprocess.num_proc, or for 0 one worker per core when the training data is large enough to pay."""
    import os

    if num_proc:
        return num_proc
    return (os.cpu_count() or 1) if train.data.nbytes >= AUTO_WORKERS_BYTES else 1


def example_stats(encoded) -> dict:
    lengths = [len(ids) for ids in encoded["input_ids"]]
    truncated = sum(encoded["truncated"]) if "truncated" in encoded.column_names else 0
    return {"examples": len(lengths), "tokens": sum(lengths), "max_length": max(lengths, default=0),
            "tokens_truncated": truncated}


def add_text_blocks(examples, documents, recipe: Recipe, tokenizer, workers: int = 1):
    """Shuffle packed text blocks (full loss) in among the chat examples (answer-only loss)."""
    from datasets import concatenate_datasets

    prep = recipe.preprocess
    tokens = tokenize_documents(documents, tokenizer, recipe.data.text_column, prep.add_eos, workers)
    blocks = pack_dataset(tokens, prep.block_size, tokenizer.pad_token_id, packing=True, num_proc=workers)
    stats = block_stats(len(documents), blocks)
    # chat examples are padded per batch with a 2D mask, so mixed batches cannot use per-document positions
    blocks = blocks.remove_columns("position_ids")
    mixed = concatenate_datasets([examples, blocks.cast(examples.features)])
    return mixed.shuffle(seed=recipe.training.seed), stats
