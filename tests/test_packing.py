"""Packing keeps the remainder, labels keep EOS even when pad == EOS, stats add up."""

from datasets import Dataset

from hftoolkit.data.pack import IGNORE_INDEX, block_stats, pack_blocks, pack_dataset, tokenize_documents
from hftoolkit.models.scratch import _byte_level_bpe


def test_remainder_is_padded_not_dropped():
    batch = {"input_ids": [[1, 2, 3], [4, 5, 6, 7], [8]]}  # 8 tokens, block 3 → 3 blocks, last has 2 real
    blocks = pack_blocks(batch, block_size=3, pad_id=0)
    assert blocks["input_ids"] == [[1, 2, 3], [4, 5, 6], [7, 8, 0]]
    assert blocks["attention_mask"][-1] == [1, 1, 0]
    assert blocks["labels"][-1] == [7, 8, IGNORE_INDEX]


def test_eos_stays_in_loss_when_pad_equals_eos():
    eos = 9
    batch = {"input_ids": [[1, 2, eos], [3, eos]]}
    blocks = pack_blocks(batch, block_size=4, pad_id=eos)
    # the real EOS tokens are learned; only the padding EOS is masked
    assert blocks["labels"] == [[1, 2, eos, 3], [eos, IGNORE_INDEX, IGNORE_INDEX, IGNORE_INDEX]]


def test_tiny_corpus_still_trains_and_stats_add_up():
    tokenizer = _byte_level_bpe(["the brake pads wear down", "oil keeps the engine cool"] * 20, 300)
    docs = Dataset.from_dict({"text": ["brake pads", "engine oil is hot"]})
    tokens = tokenize_documents(docs, tokenizer, "text", add_eos=True)
    assert all(ids[-1] == tokenizer.eos_token_id for ids in tokens["input_ids"])
    total = sum(len(ids) for ids in tokens["input_ids"])
    blocks = pack_dataset(tokens, block_size=64, pad_id=tokenizer.pad_token_id, packing=True)
    assert len(blocks) == 1  # fewer tokens than one block: kept as one padded block
    stats = block_stats(2, blocks)
    assert stats["tokens"] == total and stats["blocks"] == 1
    assert stats["padding_percent"] == round(100 * (64 - total) / 64, 2)
    assert tokenizer.pad_token_id != tokenizer.eos_token_id


def test_no_packing_truncates_and_counts():
    tokenizer = _byte_level_bpe(["a b c d e f g h"] * 10, 280)
    docs = Dataset.from_dict({"text": ["a b c d e f g h a b c d e f g h", "a"]})
    tokens = tokenize_documents(docs, tokenizer, "text", add_eos=True)
    lengths = [len(ids) for ids in tokens["input_ids"]]
    blocks = pack_dataset(tokens, block_size=4, pad_id=tokenizer.pad_token_id, packing=False)
    assert len(blocks) == 2
    assert block_stats(2, blocks)["tokens_truncated"] == sum(max(0, n - 4) for n in lengths) > 0


def test_map_batches_are_bounded_by_tokens_not_rows(monkeypatch):
    # whole files as documents: 1000 rows per batch (datasets' default) was the whole corpus in one batch
    from hftoolkit.data import pack
    from hftoolkit.data.batch_size import rows_per_batch

    long_docs = Dataset.from_dict({"text": ["x" * 1000] * 10, "n": list(range(10))})
    assert rows_per_batch(long_docs, "text", budget=2500) == 2
    assert rows_per_batch(long_docs, "text", budget=10 ** 9) == 1000  # short documents: the usual 1000
    assert rows_per_batch(long_docs, "n", budget=2500) == 1000  # not text or tokens: left alone
    tokens = Dataset.from_dict({"input_ids": [list(range(d * 100, d * 100 + 60)) for d in range(6)]})
    assert rows_per_batch(tokens, "input_ids", budget=130) == 2
    monkeypatch.setattr(pack, "BATCH_TOKENS", 130)  # two 60-token documents per packing batch
    blocks = pack_dataset(tokens, block_size=16, pad_id=0, packing=True)
    # each batch of 120 tokens ends in its own padded block: 3 batches x 8 blocks, not 360 / 16 -> 23
    assert len(blocks) == 24
    real = [t for ids, mask in zip(blocks["input_ids"], blocks["attention_mask"]) for t, m in zip(ids, mask) if m]
    assert real == [t for ids in tokens["input_ids"] for t in ids]  # every token kept, in order


def test_whole_files_are_written_a_few_at_a_time(tmp_path, monkeypatch):
    # one row per file: datasets' text reader buffered 1000 single-row tables (the whole corpus) before writing
    from hftoolkit.data import batch_size
    from hftoolkit.data.sources import load_split

    for i in range(5):
        (tmp_path / f"{i}.txt").write_text(f"file {i} " + "word " * 20 + "\n\nsecond paragraph\n")
    monkeypatch.setattr(batch_size, "BATCH_CHARACTERS", 260)  # two 126-byte files per written batch
    split = load_split(str(tmp_path), "data.train", text_documents="file")
    assert [batch.num_rows for batch in split.data.to_batches()] == [2, 2, 1]
    assert [t.split()[1] for t in split["text"]] == ["0", "1", "2", "3", "4"]
    assert split["text"][0].endswith("second paragraph\n")  # whole files, paragraphs and all
