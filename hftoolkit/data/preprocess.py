"""Step 2: turn loaded documents into model inputs, through the content-keyed cache."""

from __future__ import annotations

from dataclasses import asdict

from hftoolkit.data.cache import cached, tokenizer_fingerprint
from hftoolkit.data.chat_format import chat_stats, encode_chat_dataset
from hftoolkit.data.pack import block_stats, pack_dataset, tokenize_documents
from hftoolkit.data.splits import LoadedData
from hftoolkit.recipe.schema import Recipe


def preprocess(recipe: Recipe, loaded: LoadedData, tokenizer) -> tuple[object, dict, bool]:
    """Blocks for train/validation, their stats, and whether the cache was hit."""
    data, prep = recipe.data, recipe.preprocess
    key = {"data_hash": loaded.content_hash, "tokenizer": tokenizer_fingerprint(tokenizer),
           "preprocess": asdict(prep), "data": {k: v for k, v in asdict(data).items() if k not in ("train",
                                                                                                  "validation")},
           "seed": recipe.training.seed, "version": 1}

    def build():
        from datasets import DatasetDict

        splits = {"train": loaded.train, "validation": loaded.validation}
        out, stats = {}, {}
        for name, split in splits.items():
            if data.format == "text":
                tokens = tokenize_documents(split, tokenizer, data.text_column, prep.add_eos, prep.num_proc)
                out[name] = pack_dataset(tokens, prep.block_size, tokenizer.pad_token_id, prep.packing,
                                         prep.num_proc)
                stats[name] = block_stats(len(split), out[name])
            else:
                out[name] = encode_chat_dataset(split, tokenizer, data, prep.block_size, prep.num_proc)
                stats[name] = chat_stats(out[name])
            if "truncated" in out[name].column_names:
                out[name] = out[name].remove_columns("truncated")
        return DatasetDict(out), stats

    datasets, stats, hit, _ = cached(key, build)
    return datasets, stats, hit
