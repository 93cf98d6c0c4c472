"""`data.streaming: true`: blocks made on the fly equal the map-style path's; every file form and a database
stream alike; the stream's state resumes exactly, reading only what comes after; two processes split the
documents; a run killed with SIGKILL resumes to the weights and loss curve of the run never killed."""

import gzip
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from conftest import REPO, run_cli, tiny_recipe
from hftoolkit.data.pack import pack_dataset, tokenize_documents
from hftoolkit.data.sources import load_split
from hftoolkit.data.stream_blocks import StreamedBlocks
from hftoolkit.data.stream_documents import DocumentSource
from hftoolkit.data.stream_splits import stream_source
from hftoolkit.paths import resolve_data_path
from hftoolkit.recipe.load import load_recipe
from hftoolkit.recipe.schema import DataSection, SqlSource
from hftoolkit.recipe.validate import planned_steps

CARS = Path(resolve_data_path("bundled://corpora/cars/text/train"))


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    from hftoolkit.models.registry import pull

    return AutoTokenizer.from_pretrained(str(pull("smollm2-135m-instruct", log=lambda m: None)))


@pytest.fixture(scope="module")
def documents():
    """The car corpus's paragraphs as the map-style path loads them (datasets' text builder, blank ones dropped)."""
    split = load_split(str(CARS), "data.train")
    return [t for t in split["text"] if t.strip()]


def stream(source: DocumentSource, tokenizer, block_size=64, shuffle_buffer=0, seed=0, rank=0, world=1):
    return StreamedBlocks(source, tokenizer, block_size, True, shuffle_buffer, seed, rank, world)


def take(blocks: StreamedBlocks, count: int) -> list[dict]:
    iterator = iter(blocks)
    return [next(iterator) for _ in range(count)]


def write_forms(folder: Path, documents: list[str]) -> dict[str, Path]:
    """The same documents as JSON Lines (plain, gzip, zstd), CSV, parquet and a SQLite table."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    import zstandard

    folder.mkdir(parents=True, exist_ok=True)
    lines = "".join(json.dumps({"id": i, "text": t}) + "\n" for i, t in enumerate(documents)).encode()
    forms = {"jsonl": folder / "docs.jsonl", "gz": folder / "docs.jsonl.gz", "zst": folder / "docs.jsonl.zst",
             "csv": folder / "docs.csv", "parquet": folder / "docs.parquet"}
    forms["jsonl"].write_bytes(lines)
    forms["gz"].write_bytes(gzip.compress(lines))
    forms["zst"].write_bytes(zstandard.ZstdCompressor().compress(lines))
    import csv

    with open(forms["csv"], "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "text"])
        writer.writerows(enumerate(documents))
    pq.write_table(pa.table({"text": documents}), forms["parquet"], row_group_size=37)
    database = folder / "docs.db"
    with sqlite3.connect(database) as connection:
        connection.execute("CREATE TABLE docs (id INTEGER PRIMARY KEY, text TEXT)")
        connection.executemany("INSERT INTO docs VALUES (?, ?)", list(enumerate(documents)))
    forms["sqlite"] = database
    return forms


def source_for(form: str, path: Path) -> DocumentSource:
    if form == "sqlite":
        return stream_source(DataSection(train=SqlSource(uri=f"sqlite:///{path}", table="docs")))
    return stream_source(DataSection(train=str(path)))


def test_streamed_blocks_equal_the_map_style_blocks(tokenizer, documents):
    """The car corpus fits one map batch, so the map-style path pads only its last block, as the stream
    does: every block, its positions and its labels must be equal."""
    split = load_split(str(CARS), "data.train")
    split = split.filter(lambda row: bool(row["text"].strip()))
    mapped = pack_dataset(tokenize_documents(split, tokenizer, "text", True), 64, tokenizer.pad_token_id, True)
    assert len(mapped) > 100
    streamed = take(stream(stream_source(DataSection(train=str(CARS))), tokenizer), len(mapped))
    for number, (ours, theirs) in enumerate(zip(streamed, mapped)):
        assert ours == {k: theirs[k] for k in ours}, f"block {number} differs"
    assert sum(streamed[-1]["attention_mask"]) < 64 and min(sum(b["attention_mask"]) for b in streamed[:-1]) == 64
    assert streamed[5]["position_ids"] != list(range(64))  # documents restart their positions inside blocks


@pytest.mark.parametrize("form", ["jsonl", "gz", "zst", "csv", "parquet", "sqlite"])
def test_every_file_form_and_a_database_stream_the_same_blocks(tmp_path, tokenizer, documents, form):
    forms = write_forms(tmp_path, documents[:120])
    reference = take(stream(source_for("jsonl", forms["jsonl"]), tokenizer), 60)
    assert take(stream(source_for(form, forms[form]), tokenizer), 60) == reference


@pytest.mark.parametrize("form", ["txt", "gz", "csv", "parquet", "sqlite"])
@pytest.mark.parametrize("stop_at", [3, 61, 250])
def test_a_restored_state_goes_on_exactly_and_reads_only_what_follows(tmp_path, tokenizer, documents, form,
                                                                      stop_at):
    """Stopped after `stop_at` blocks (mid-paragraph, mid-file, across epochs with a shuffle buffer): the
    JSON state restores the stream bit for bit, and the restored one parses only documents that come later."""
    forms = write_forms(tmp_path, documents[:150])
    source = DocumentSource(files=sorted(CARS.glob("*.txt"))[:3]) if form == "txt" else source_for(form, forms[form])
    total = 300  # more than an epoch of these documents
    uninterrupted = stream(source, tokenizer, shuffle_buffer=20, seed=3)
    expected = take(uninterrupted, total)
    first = stream(source, tokenizer, shuffle_buffer=20, seed=3)
    before = take(first, stop_at)
    state = json.loads(json.dumps(first.state_dict()))
    resumed = stream(source, tokenizer, shuffle_buffer=20, seed=99)  # its own seed is overwritten by the state
    resumed.load_state_dict(state)
    assert before + take(resumed, total - stop_at) == expected
    assert resumed.documents == uninterrupted.documents  # same place in the corpus
    assert resumed.documents_read == uninterrupted.documents - state["documents"]  # nothing read twice


def test_resuming_later_reads_less(tokenizer):
    """Rows parsed on resume fall as the resume point moves later: no replay from the start."""
    source = stream_source(DataSection(train=str(CARS)))
    reads = []
    for stop_at in (10, 200):
        first = stream(source, tokenizer, shuffle_buffer=50)
        take(first, stop_at)
        resumed = stream(source, tokenizer, shuffle_buffer=50)
        resumed.load_state_dict(first.state_dict())
        take(resumed, 400 - stop_at)
        reads.append((first.documents, resumed.documents_read))
    (early_before, early_read), (late_before, late_read) = reads
    assert late_before > early_before and late_read < early_read
    assert early_before + early_read == late_before + late_read  # together, each reads the corpus once


def test_two_shares_split_the_documents_between_them(tmp_path, documents):
    files = write_forms(tmp_path / "one", documents[:99])
    for source in (source_for("jsonl", files["jsonl"]), DocumentSource(files=sorted(CARS.glob("*.txt"))[:4])):
        from hftoolkit.data.stream_documents import START, read_documents

        shares = [[text for text, _ in read_documents(source, START, rank, 2)] for rank in (0, 1)]
        everything = list(source.documents())
        assert sorted(shares[0] + shares[1]) == sorted(everything) and len(everything) == len(set(everything))
        assert shares[0] and shares[1]


SHARD_SCRIPT = """
import json, re, sys
from transformers import AutoTokenizer
from hftoolkit.models.registry import pull
from hftoolkit.recipe.load import load_recipe
from hftoolkit.data.stream_splits import load_streamed
from hftoolkit.train import distributed
from hftoolkit.train.run import streamed_blocks
recipe = load_recipe(sys.argv[1])
tokenizer = AutoTokenizer.from_pretrained(str(pull("smollm2-135m-instruct", log=lambda m: None)))
blocks, _ = streamed_blocks(recipe, load_streamed(recipe.data), tokenizer)
train, ids = blocks["train"], []
train.limit = None  # the recipe's one step would end the stream after 4 blocks; read a whole epoch
for block in train:  # in corpus order (shuffle_buffer 0), so documents cut between blocks join again
    if train.epoch == 1:
        break
    ids += [t for t, m in zip(block["input_ids"], block["attention_mask"]) if m]
seen = re.findall(r"Record (\\d+) ", tokenizer.decode(ids))
json.dump({"rank": distributed.rank(), "world": distributed.world_size(), "seen": seen},
          open(sys.argv[2] + f"/rank{distributed.rank()}.json", "w"))
distributed.finish()
"""


def test_two_processes_each_read_their_own_share_once(tmp_path):
    """Under torchrun, each rank's training stream (built as `train` builds it) holds only its share: over one
    epoch no document is seen twice and none is skipped."""
    corpus = tmp_path / "records.jsonl"
    corpus.write_text("".join(json.dumps({"text": f"Record {i:04d} says the oil is changed every {i} km."}) + "\n"
                              for i in range(301)))
    recipe = tmp_path / "stream.yaml"
    recipe.write_text(json.dumps({"model": {"name": "smollm2-135m-instruct"},
                                  "data": {"train": str(corpus), "streaming": True, "validation_documents": 1,
                                           "shuffle_buffer": 0},
                                  "preprocess": {"block_size": 32}, "training": {"max_steps": 1}}))
    script = tmp_path / "shards.py"
    script.write_text(SHARD_SCRIPT)
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                           str(script), str(recipe), str(tmp_path)], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["world"] for r in ranks] == [2, 2]
    seen = [r["seen"] for r in ranks]
    assert all(len(s) == len(set(s)) for s in seen)  # no document twice on a rank
    assert not set(seen[0]) & set(seen[1])  # nor on both
    assert sorted(seen[0] + seen[1]) == [f"{i:04d}" for i in range(1, 301)]  # none skipped (0 is validation)
    assert 140 <= len(seen[0]) <= 160


def streaming_recipe(tmp_path: Path, **training) -> Path:
    return tiny_recipe(tmp_path, data={"train": "bundled://corpora/cars/text/train", "streaming": True,
                                       "shuffle_buffer": 50},
                       training={"max_steps": 40, "save_steps": 2, "eval_steps": 1000, "logging_steps": 1,
                                 **training},
                       output={"keep_training_state": True})


def complete_steps(out: Path) -> list[int]:
    return sorted(int(p.parent.name.split("-")[1]) for p in out.glob("checkpoints/*/.complete"))


def test_sigkill_then_resume_gives_the_uninterrupted_weights_and_losses(tmp_path):
    recipe = streaming_recipe(tmp_path, max_steps=-1, max_tokens=40 * 8 * 64 - 100)  # 40 steps, rounded up
    reference = tmp_path / "reference"
    done = run_cli("train", recipe, "--output-dir", reference)
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads((reference / "metrics.json").read_text())["train_steps"] == 40
    expected = load_file(reference / "model.safetensors")
    expected_losses = [h["loss"] for h in json.loads((reference / "trainer_log.json").read_text()) if "loss" in h]
    total_documents = json.loads((reference / "metrics.json").read_text())["stream"]["documents"]

    out, rng = tmp_path / "killed", random.Random(5)
    path = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    flags: tuple = ()
    killed_at = []
    for _ in range(2):
        process = subprocess.Popen([sys.executable, "-m", "hftoolkit", "train", str(recipe), "--output-dir",
                                    str(out), *flags], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                   env={**os.environ, "PYTHONPATH": path})
        deadline, before = time.time() + 120, max(killed_at, default=0)
        while time.time() < deadline and process.poll() is None and max(complete_steps(out), default=0) <= before:
            time.sleep(0.02)  # until this run has saved a checkpoint of its own
        time.sleep(rng.uniform(0.0, 0.3))
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
        process.communicate()
        complete = complete_steps(out)
        killed_at.append(complete[-1] if complete else 0)
        flags = ("--resume",) if complete else ("--overwrite",)
        if (out / "model.safetensors").exists():
            break
    assert killed_at[0] < 40, "the first run finished before it was killed; make the recipe longer"
    last = max(out.glob("checkpoints/*/.complete"), key=lambda p: int(p.parent.name.split("-")[1])).parent
    at_resume = json.loads((last / "data-state-rank0.json").read_text())["documents"]
    if not (out / "model.safetensors").exists():
        finished = run_cli("train", recipe, "--output-dir", out, "--resume")
        assert finished.returncode == 0, finished.stderr[-3000:]
        assert "the stream goes on from its checkpoint" in finished.stdout + finished.stderr
        read = json.loads((out / "metrics.json").read_text())["stream"]["documents_read_by_this_run"]
        assert read == total_documents - at_resume  # the resumed run read no document it had trained on
    resumed = load_file(out / "model.safetensors")
    assert all(torch.equal(resumed[k], expected[k]) for k in expected)  # bit-identical
    losses = [h["loss"] for h in json.loads((out / "trainer_log.json").read_text()) if "loss" in h]
    assert losses == expected_losses


def test_two_processes_stream_train_and_resume(tmp_path):
    """`train --nproc 2` on a stream: each rank saves its own position; resuming with one process is refused."""
    recipe = streaming_recipe(tmp_path, max_steps=4, save_steps=2)
    out = tmp_path / "run"
    done = run_cli("train", recipe, "--output-dir", out, "--nproc", 2)
    assert done.returncode == 0, done.stderr[-3000:]
    states = [json.loads((out / "checkpoints" / "checkpoint-4" / f"data-state-rank{r}.json").read_text())
              for r in (0, 1)]
    assert [s["world"] for s in states] == [2, 2] and all(s["blocks"] == 4 * 4 for s in states)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["processes"] == 2 and metrics["train_steps"] == 4
    more = run_cli("train", recipe, "--output-dir", out, "--resume", "--force", "training.max_steps=6")
    assert more.returncode == 2 and "resume with --nproc 2" in more.stderr


def test_streaming_recipe_errors_name_the_field(tmp_path):
    recipe = tiny_recipe(tmp_path, data={"streaming": True}, training={"max_steps": -1})
    done = run_cli("train", recipe)
    assert done.returncode == 2 and done.stderr.strip() == (
        "hftoolkit: error: data.streaming: a streamed corpus has no known length; set training.max_steps or "
        "training.max_tokens")
    both = run_cli("train", recipe, "training.max_tokens=1000", "training.max_steps=3")
    assert both.returncode == 2 and "training.max_tokens and training.max_steps are both set" in both.stderr
    array = tmp_path / "array.json"
    array.write_text(json.dumps([{"text": "one"}, {"text": "two"}]))
    wrong = run_cli("train", recipe, f"data.train={array}", "training.max_steps=2")
    assert wrong.returncode == 2 and "streaming reads JSON Lines" in wrong.stderr
    assert not (tmp_path / "run").exists()
    steps = load_recipe(str(recipe), ["training.max_steps=-1", "training.max_tokens=1537"])
    assert planned_steps(steps) == 4  # 8 blocks x 64 tokens a step: 1,537 tokens need a fourth step


QA = Path(resolve_data_path("bundled://corpora/cars/qa/train.jsonl"))


def test_streamed_qa_examples_equal_the_map_style_examples_and_resume_exactly(tmp_path, tokenizer):
    """qa rows stream as one example each (not packed), encoded as the map-style path encodes them; a
    restored state goes on with the same examples."""
    from hftoolkit.data.chat_format import encode_chat_dataset, row_encoder

    data = DataSection(train=str(QA), format="qa", system_prompt="Answer briefly.")
    rows = load_split(str(QA), "data.train")
    mapped = encode_chat_dataset(rows, tokenizer, data, 128)
    encode = row_encoder(tokenizer, data, 128)

    def qa_stream(seed=0, buffer=0):
        return StreamedBlocks(stream_source(data), tokenizer, 128, True, buffer, seed, encode_row=encode)

    streamed = take(qa_stream(), len(mapped))
    assert streamed == [{k: row[k] for k in ("input_ids", "attention_mask", "labels")} for row in mapped]
    assert all(-100 in example["labels"] and len(example["input_ids"]) <= 128 for example in streamed)
    expected = take(qa_stream(seed=4, buffer=30), 2 * len(mapped) + 7)  # into the third epoch
    first = qa_stream(seed=4, buffer=30)
    before = take(first, len(mapped) + 3)
    resumed = qa_stream(seed=8, buffer=30)
    resumed.load_state_dict(json.loads(json.dumps(first.state_dict())))
    assert before + take(resumed, len(mapped) + 4) == expected


def test_a_streamed_qa_recipe_trains_and_holds_out_the_first_rows(tmp_path, tiny_chat_model):
    recipe = tmp_path / "qa.yaml"
    recipe.write_text(json.dumps({
        "model": {"name": str(tiny_chat_model)},
        "data": {"train": str(QA), "format": "qa", "streaming": True, "validation_documents": 12,
                 "shuffle_buffer": 16},
        "preprocess": {"block_size": 128},
        "training": {"max_steps": 4, "batch_size": 4, "learning_rate": 3e-3, "eval_steps": 100, "save_steps": 100,
                     "precision": "fp32"},
        "output": {"dir": str(tmp_path / "run")}}))
    done = run_cli("train", recipe)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "one training example (learned tokens in [[ ]])" in done.stdout + done.stderr
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["preprocessing"]["validation"]["examples"] == 12
    assert metrics["preprocessing"]["train"]["held_out_documents"] == 12
    assert metrics["stream"]["blocks"] == 16 and metrics["eval_loss"] < metrics["eval_loss_start"]
