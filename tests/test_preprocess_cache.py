"""The preprocessing cache is keyed on content: identical input hits, any relevant change misses."""

from dataclasses import replace

from hftoolkit.data.preprocess import preprocess
from hftoolkit.data.splits import load_data
from hftoolkit.models.scratch import _byte_level_bpe
from hftoolkit.recipe.load import load_recipe

from conftest import tiny_recipe


def run(recipe, tokenizer):
    loaded = load_data(recipe.data, recipe.training.seed)
    return preprocess(recipe, loaded, tokenizer)


def test_hit_and_miss(tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("Brake pads wear down.\n\nTyres need air.\n\nOil keeps engines alive.\n\n" * 5)
    recipe = load_recipe(str(tiny_recipe(tmp_path)), [f"data.train={corpus}", "data.validation=null",
                                                      "data.validation_percent=20"])
    tokenizer = _byte_level_bpe(["brake pads tyres oil engines"] * 10, 300)

    blocks, stats, hit = run(recipe, tokenizer)
    assert not hit and stats["train"]["documents"] == 12 and stats["validation"]["documents"] == 3
    again, _, hit = run(recipe, tokenizer)
    assert hit and again["train"]["input_ids"] == blocks["train"]["input_ids"]

    assert not run(replace(recipe, preprocess=replace(recipe.preprocess, block_size=32)), tokenizer)[2]
    assert not run(recipe, _byte_level_bpe(["completely different words"] * 10, 300))[2]
    corpus.write_text(corpus.read_text() + "Coolant is a mix of water and glycol.\n")
    _, stats, hit = run(recipe, tokenizer)
    assert not hit and stats["train"]["documents"] + stats["validation"]["documents"] == 16
    assert run(recipe, tokenizer)[2]


def test_two_runs_building_one_entry_take_turns(tmp_path, monkeypatch):
    import threading
    import time
    from concurrent.futures import ThreadPoolExecutor

    from datasets import Dataset, DatasetDict

    from hftoolkit.data.cache import cached

    monkeypatch.setenv("HFTOOLKIT_CACHE", str(tmp_path))
    builds, guard = [], threading.Lock()

    def build():
        with guard:
            builds.append(1)
        time.sleep(0.5)  # long enough for the other run to arrive while this one builds
        return DatasetDict(train=Dataset.from_dict({"input_ids": [[1, 2, 3]]})), {"train": {"blocks": 1}}

    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(lambda _: cached({"same": "key"}, build), range(2)))
    assert len(builds) == 1  # the second waited and found the first one's entry
    assert sorted(hit for _, _, hit, _ in results) == [False, True]
    assert all(data["train"]["input_ids"] == [[1, 2, 3]] and stats == {"train": {"blocks": 1}}
               for data, stats, _, _ in results)
    assert len(list((tmp_path / "preprocessed").iterdir())) == 1  # the entry alone: no staging, no lock files


def test_old_and_surplus_entries_are_pruned_but_not_in_use(tmp_path):
    import os
    import time

    from hftoolkit.data.cache import MAX_ENTRIES, entry_lock, prune
    from hftoolkit.file_lock import file_lock

    root = tmp_path / "preprocessed"
    now = time.time()
    entries = []
    for age_days in range(MAX_ENTRIES + 6):  # entry i was last used i days ago
        entry = root / f"entry{age_days:02d}"
        (entry / "data").mkdir(parents=True)
        (entry / "stats.json").write_text("{}")
        os.utime(entry / "stats.json", (now - age_days * 86400, now - age_days * 86400))
        entries.append(entry)
    ancient = root / "entry99"
    (ancient / "data").mkdir(parents=True)
    (ancient / "stats.json").write_text("{}")
    os.utime(ancient / "stats.json", (now - 90 * 86400, now - 90 * 86400))
    crashed = root / "entry00.tmp-4242"
    crashed.mkdir()
    os.utime(crashed, (now - 2 * 86400, now - 2 * 86400))
    crashed_now = root / ".entry01.k2j4x9"  # what safe_write.replace_cached stages under
    crashed_now.mkdir()
    os.utime(crashed_now, (now - 2 * 86400, now - 2 * 86400))
    with file_lock(entry_lock(root, "entry25"), shared=True):  # another run is reading entry25 right now
        removed = prune(root, keep=entries[-1])
    assert sorted(removed) == sorted(["entry24", "entry26", "entry27", "entry28", "entry99", "entry00.tmp-4242",
                                            ".entry01.k2j4x9"])
    left = sorted(p.name for p in root.iterdir() if p.is_dir())
    assert left == [f"entry{i:02d}" for i in range(MAX_ENTRIES)] + ["entry25", "entry29"]


def test_fingerprint_memo_forgets_files_that_changed(tmp_path, monkeypatch):
    import json

    from hftoolkit.generate.cache import model_fingerprint

    monkeypatch.setenv("HFTOOLKIT_CACHE", str(tmp_path / "cache"))
    folder = tmp_path / "ckpt"
    folder.mkdir()
    (folder / "config.json").write_text('{"a": 1}')
    first = model_fingerprint(str(folder))
    (folder / "config.json").write_text('{"a": 2}')
    second = model_fingerprint(str(folder))
    memo = json.loads((tmp_path / "cache" / "fingerprints" / "files.json").read_text())
    assert first != second
    assert len(memo) == 1 and next(iter(memo)).startswith(f"{(folder / 'config.json').resolve()}:")  # old one gone


def test_workers_are_automatic_only_for_large_corpora():
    import os

    from datasets import Dataset

    from hftoolkit.data.preprocess import AUTO_WORKERS_BYTES, worker_count

    small = Dataset.from_dict({"text": ["brake pads wear"] * 10})
    large = Dataset.from_dict({"text": ["x" * 1024] * (AUTO_WORKERS_BYTES // 1024 + 1)})
    assert worker_count(0, small) == 1 and worker_count(3, small) == 3
    assert worker_count(0, large) == (os.cpu_count() or 1)


def test_entry_links_map_output_and_rewrites_anything_else(tmp_path):
    """A split that is exactly a map's Arrow files is hard-linked into the entry (nothing read or rewritten);
    shuffled, column-dropped or two-worker splits come back with the same rows in the same order."""
    import os

    from datasets import Dataset, load_from_disk

    from hftoolkit.data.saved_splits import MANIFEST, load_splits, save_splits

    Dataset.from_dict({"n": list(range(100))}).save_to_disk(str(tmp_path / "source"))
    on_disk = load_from_disk(str(tmp_path / "source"))
    mapped = on_disk.map(lambda row: {"square": row["n"] ** 2})
    splits = {"mapped": mapped, "shuffled": mapped.shuffle(seed=1, keep_in_memory=True),  # indices in memory
              "dropped": mapped.remove_columns("n"),
              "workers": on_disk.map(lambda row: {"cube": row["n"] ** 3}, num_proc=2),
              "in_memory": Dataset.from_dict({"n": [3, 1, 2]})}
    save_splits(splits, tmp_path / "entry")
    back = load_splits(tmp_path / "entry")

    for name, split in splits.items():
        assert back[name].column_names == split.column_names and back[name].to_dict() == split.to_dict(), name
    linked = tmp_path / "entry" / "mapped" / "part-00000.arrow"
    assert os.stat(linked).st_ino == os.stat(mapped.cache_files[0]["filename"]).st_ino
    assert (tmp_path / "entry" / "workers" / MANIFEST).is_file() and len(splits["workers"].cache_files) == 2
    for rewritten in ("shuffled", "dropped", "in_memory"):  # the files do not hold exactly these rows
        assert not (tmp_path / "entry" / rewritten / MANIFEST).exists()
    assert back["shuffled"]["n"] != sorted(back["shuffled"]["n"])


def test_whole_files_as_documents(tmp_path):
    folder = tmp_path / "corpus"
    folder.mkdir()
    (folder / "a.txt").write_text("Brake pads wear down.\n\nPads squeal when thin.\n")
    (folder / "b.txt").write_text("Tyres need air.\n\nCheck them monthly.\n\nRotate them too.\n")
    recipe = load_recipe(str(tiny_recipe(tmp_path)), [f"data.train={folder}"])
    tokenizer = _byte_level_bpe(["brake pads tyres air check rotate"] * 10, 300)
    paragraphs = load_data(recipe.data, recipe.training.seed).train["text"]
    assert sorted(p.strip() for p in paragraphs) == sorted(["Brake pads wear down.", "Pads squeal when thin.", "Tyres need air.",
                                         "Check them monthly.", "Rotate them too."])
    whole = replace(recipe, data=replace(recipe.data, text_documents="file"))
    files = load_data(whole.data, whole.training.seed).train["text"]
    assert [text.split("\n\n") for text in sorted(files)] == [
        ["Brake pads wear down.", "Pads squeal when thin.\n"], ["Tyres need air.", "Check them monthly.",
                                                                "Rotate them too.\n"]]
    _, stats, hit = run(recipe, tokenizer)
    assert stats["train"]["documents"] == 5
    _, stats, hit = run(whole, tokenizer)
    assert not hit and stats["train"]["documents"] == 2  # the setting is part of the cache key
