"""Databases, for real: a PostgreSQL server started by the tests and SQLite files.

Recipes read tables; `data import` fills them; the generation log records answers
that people rate and that train the next checkpoint.
"""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from conftest import REPO, run_cli, tiny_recipe
from pg_server import PASSWORD, PostgresServer

BRAKES = str(REPO / "hftoolkit/corpora/cars/text/train/06_brakes.txt")
HELDOUT = str(REPO / "hftoolkit/corpora/cars/text/heldout.txt")


@pytest.fixture(scope="module")
def postgres():
    server = PostgresServer()
    yield server
    server.close()


def all_bytes(folder) -> bytes:
    """Every file of a run folder (TensorBoard events and Trainer state included), concatenated."""
    return b"\n".join(p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file())


def test_recipe_from_postgres_ends_with_the_same_eval_loss_as_from_files(tmp_path, postgres):
    uri = postgres.create_database("cars")
    for file, table in ((BRAKES, "brakes"), (HELDOUT, "heldout")):
        done = run_cli("data", "import", file, "--to", uri, "--table", table)
        assert done.returncode == 0, done.stderr[-2000:]
        assert PASSWORD not in done.stdout + done.stderr
    (tmp_path / "files").mkdir()
    (tmp_path / "db").mkdir()
    from_files = tiny_recipe(tmp_path / "files", training={"max_steps": 8})
    from_db = tiny_recipe(tmp_path / "db", training={"max_steps": 8}, data={
        "train": {"uri": uri, "table": "brakes"},
        "validation": {"uri": uri, "query": "SELECT text FROM heldout ORDER BY id"}})
    runs = {}
    for name, recipe in (("files", from_files), ("db", from_db)):
        done = run_cli("train", recipe)
        assert done.returncode == 0, done.stderr[-3000:]
        assert PASSWORD not in done.stdout + done.stderr
        runs[name] = json.loads((recipe.parent / "run" / "metrics.json").read_text())
    assert runs["db"]["eval_loss"] == runs["files"]["eval_loss"]
    assert runs["db"]["eval_loss"] < runs["db"]["eval_loss_start"]
    assert runs["db"]["preprocessing"] == runs["files"]["preprocessing"]
    saved = tmp_path / "db" / "run"
    assert PASSWORD.encode() not in all_bytes(saved)  # recipe.yaml, model card, logs, Trainer state
    assert PASSWORD.encode() not in all_bytes(Path(os.environ["HFTOOLKIT_CACHE"]))  # preprocessing cache keys
    assert yaml.safe_load((saved / "recipe.yaml").read_text())["data"]["train"] == {
        "uri": uri.replace(PASSWORD, "***"), "table": "brakes", "query": None}


def test_changed_rows_change_the_preprocessing_cache_key(tmp_path):
    from hftoolkit.data.sources import fingerprint, load_split
    from hftoolkit.data.db_import import import_files
    from hftoolkit.recipe.schema import SqlSource

    uri = f"sqlite:///{tmp_path / 'notes.db'}"
    notes = tmp_path / "notes.txt"
    notes.write_text("Check tyre pressure monthly.\n\nReplace wipers yearly.")
    import_files([str(notes)], uri, "notes", "text")
    source = SqlSource(uri=uri, table="notes")
    first = load_split(source, "data.train")
    assert list(first["text"]) == ["Check tyre pressure monthly.", "Replace wipers yearly."]
    key = fingerprint(source, first)
    assert fingerprint(source, load_split(source, "data.train")) == key  # same rows, same key
    more = tmp_path / "more.txt"
    more.write_text("Rotate tyres every 8,000 km.")
    import_files([str(more)], uri, "notes", "text")
    second = load_split(source, "data.train")  # a fresh read, not datasets' cache of the same query
    assert list(second["text"])[-1] == "Rotate tyres every 8,000 km." and len(second) == 3
    assert fingerprint(source, second) != key


def test_import_skips_duplicates_and_keeps_formats(tmp_path):
    db = tmp_path / "cars.db"
    uri = f"sqlite:///{db}"
    qa = REPO / "hftoolkit/corpora/cars/qa/validation.jsonl"
    rows = [json.loads(line) for line in qa.read_text().splitlines() if line.strip()]
    first = run_cli("data", "import", qa, "--to", uri, "--table", "qa", "--format", "qa")
    assert first.returncode == 0, first.stderr[-2000:]
    assert f"{len(rows)} rows added from 1 file(s), 0 already there; {len(rows)} rows in all" in first.stdout
    again = run_cli("data", "import", qa, "--to", uri, "--table", "qa", "--format", "qa")
    assert f"0 rows added from 1 file(s), {len(rows)} already there; {len(rows)} rows in all" in again.stdout
    extra = tmp_path / "extra.jsonl"
    extra.write_text(json.dumps(rows[0]) + "\n" + json.dumps({"question": "New?", "answer": "Yes."}) + "\n")
    third = run_cli("data", "import", extra, "--to", uri, "--table", "qa", "--format", "qa")
    assert f"1 rows added from 1 file(s), 1 already there; {len(rows) + 1} rows in all" in third.stdout
    shown = json.loads(run_cli("data", "show", uri, "--table", "qa", "--rows", "2", "--json").stdout)
    assert shown["rows"] == len(rows) + 1
    assert shown["columns"] == ["id", "question", "answer", "key_facts", "content_hash"]
    assert [r["question"] for r in shown["first"]] == [rows[0]["question"], rows[1]["question"]]
    from hftoolkit.data.splits import load_data
    from hftoolkit.recipe.schema import DataSection, SqlSource

    # the key facts scoring and retrieval read come back as the file's lists (before, import dropped them)
    table = SqlSource(uri=uri, table="qa")
    loaded = load_data(DataSection(train=table, validation=table, format="qa"), seed=1)
    assert list(loaded.validation["key_facts"]) == [row["key_facts"] for row in rows] + [None]
    heldout = REPO / "hftoolkit/corpora/cars/qa/heldout.jsonl"
    assert run_cli("data", "import", heldout, "--to", uri, "--table", "heldout", "--format", "qa").returncode == 0
    first_heldout = json.loads(heldout.read_text().splitlines()[0])
    shown = json.loads(run_cli("data", "show", uri, "--table", "heldout", "--rows", "1", "--json").stdout)
    assert shown["columns"] == ["id", "question", "answer", "key_facts", "group", "content_hash"]
    assert json.loads(shown["first"][0]["key_facts"]) == first_heldout["key_facts"]
    assert shown["first"][0]["group"] == first_heldout["group"] == "corpus_only"
    import sqlite3

    with sqlite3.connect(db) as made_before:  # a table from before key facts were kept
        made_before.execute("CREATE TABLE old_qa (id INTEGER PRIMARY KEY AUTOINCREMENT, question TEXT, answer TEXT, "
                            "content_hash VARCHAR(64) NOT NULL UNIQUE)")
    for added in (len(rows), 0):
        into_old = run_cli("data", "import", qa, "--to", uri, "--table", "old_qa", "--format", "qa")
        assert f"{added} rows added from 1 file(s)" in into_old.stdout, into_old.stderr[-2000:]
        assert "left out key_facts: table old_qa has no such column" in into_old.stdout

    chat = tmp_path / "chat.jsonl"
    messages = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello, driver."}]
    chat.write_text(json.dumps({"messages": messages}) + "\n")
    assert run_cli("data", "import", chat, "--to", uri, "--table", "chats", "--format", "chat").returncode == 0
    source = SqlSource(uri=uri, table="chats")
    loaded = load_data(DataSection(train=source, validation=source, format="chat"), seed=1)
    assert loaded.train[0]["messages"] == messages  # JSON text in the table, messages again in training


def test_postgres_table_streams_in_bounded_memory(postgres):
    """A ~400 MB table loads while the process's own memory grows by far less than that."""
    import psycopg

    uri = postgres.create_database("big")
    with psycopg.connect(uri, autocommit=True) as conn:
        conn.execute("CREATE TABLE docs (id serial primary key, text text)")
        conn.execute("INSERT INTO docs (text) SELECT repeat(md5(i::text), 50) FROM generate_series(1, 250000) i")
        table_bytes = conn.execute("SELECT sum(length(text)) FROM docs").fetchone()[0]
    assert table_bytes > 390e6
    code = textwrap.dedent(f"""
        import threading, time
        def anon_mb():
            for line in open("/proc/self/status"):
                if line.startswith("RssAnon:"):
                    return int(line.split()[1]) / 1024
        import datasets, pandas, sqlalchemy, psycopg  # imported before the baseline
        from hftoolkit.data.sources import load_split
        from hftoolkit.recipe.schema import SqlSource
        base, peak, done = anon_mb(), [0.0], threading.Event()
        def watch():
            while not done.is_set():
                peak[0] = max(peak[0], anon_mb())
                time.sleep(0.02)
        threading.Thread(target=watch, daemon=True).start()
        loaded = load_split(SqlSource(uri={uri!r}, table="docs"), "data.train")
        done.set()
        print(len(loaded), len(loaded[123456]["text"]), round(peak[0] - base))
    """)
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600,
                         env={**os.environ})
    assert run.returncode == 0, run.stderr[-3000:]
    rows, length, growth_mb = map(int, run.stdout.split())
    assert rows == 250000 and length == 1600
    assert growth_mb < 150, f"memory grew {growth_mb} MB while loading a {table_bytes / 1e6:.0f} MB table"


def test_log_rate_export_train_round_trip(tmp_path, postgres, tiny_chat_model):
    """Generate with --log, rate two answers (one corrected), export, fine-tune on the export: the new
    checkpoint says the corrected answer."""
    uri = postgres.create_database("answers")
    questions = ["How often should brake fluid be replaced?", "What does ABS stop?"]
    done = run_cli("generate", tiny_chat_model, *questions, "--log", uri, "--json", "--cache", "off",
                   "--max-new-tokens", "8")
    assert done.returncode == 0, done.stderr[-3000:]
    logged = [json.loads(line) for line in done.stdout.splitlines()]
    assert [row["prompt"] for row in logged] == questions and [row["log_id"] for row in logged] == [1, 2]
    assert PASSWORD not in done.stdout + done.stderr

    fix = "Every two years, because the fluid absorbs water."
    good = run_cli("data", "rate", uri, "2", "GOOD")
    bad = run_cli("data", "rate", uri, "1", "bad", "--fix", fix)
    assert good.returncode == 0 and bad.returncode == 0, good.stderr + bad.stderr
    out = tmp_path / "judged.jsonl"
    exported = run_cli("data", "export-log", uri, "--min-rating", "good", "--out", out)
    assert exported.returncode == 0, exported.stderr[-2000:]
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(r["question"], r["answer"], r["corrected"]) for r in rows] == [
        (questions[0], fix, True), (questions[1], logged[1]["completion"].strip(), False)]

    recipe = tmp_path / "flywheel.yaml"
    recipe.write_text(yaml.safe_dump({
        "model": {"name": str(tiny_chat_model), "task": "causal_lm"},
        "data": {"train": str(out), "validation": str(out), "format": "qa"},
        "preprocess": {"block_size": 128},
        "training": {"max_steps": 120, "batch_size": 2, "learning_rate": 1e-2, "warmup_ratio": 0.0,
                     "eval_steps": 120, "save_steps": 120, "logging_steps": 20, "precision": "fp32",
                     "eval_on_start": False},
        "output": {"dir": str(tmp_path / "next")}}))
    trained = run_cli("train", recipe)
    assert trained.returncode == 0, trained.stderr[-3000:]
    answer = run_cli("generate", tmp_path / "next", questions[0], "--cache", "off", "--max-new-tokens", "24")
    assert answer.returncode == 0, answer.stderr[-2000:]
    assert answer.stdout.strip() == fix


def test_log_outage_warns_once_and_generation_goes_on(tiny_chat_model):
    from hftoolkit.generate.api import TextGenerator

    server = PostgresServer()
    try:
        warnings = []
        gen = TextGenerator(str(tiny_chat_model), cache="off", log=warnings.append,
                            request_log=server.create_database("log"))
        kwargs = {"max_new_tokens": 4}
        from hftoolkit.generate.engine import GenerationSettings

        first = gen.generate(["Brakes?"], chat=True, settings=GenerationSettings(**kwargs))
        assert first[0].log_id == 1
        server.stop()
        during = gen.generate(["Tyres?", "Oil?"], chat=True, settings=GenerationSettings(**kwargs))
        during += gen.generate(["Wipers?"], chat=True, settings=GenerationSettings(**kwargs))
        assert len(during) == 3 and all(c.log_id is None for c in during)
        outage = [w for w in warnings if "unavailable" in w]
        assert len(outage) == 1 and PASSWORD not in outage[0]
        server.start()
        after = gen.generate(["Lights?"], chat=True, settings=GenerationSettings(**kwargs))
        assert after[0].log_id == 2 and any("reachable again" in w for w in warnings)
    finally:
        server.close()


@pytest.fixture(scope="module")
def brakes_sqlite(tmp_path_factory):
    db = tmp_path_factory.mktemp("sqlite") / "cars.db"
    assert run_cli("data", "import", BRAKES, "--to", f"sqlite:///{db}", "--table", "brakes").returncode == 0
    return db


@pytest.mark.parametrize("case", ["wrong_password", "missing_table", "missing_column", "unsupported",
                                  "missing_sqlite", "no_table_or_query", "bare_uri"])
def test_bad_database_sources_fail_in_one_line(tmp_path, postgres, brakes_sqlite, case):
    uri = postgres.uri()
    sqlite_db = brakes_sqlite
    train, expected = {
        "wrong_password": ({"uri": postgres.uri(password="not-it"), "table": "x"}, "password authentication failed"),
        "missing_table": ({"uri": uri, "table": "nowhere"}, "data.train.table: 'nowhere' is not a table"),
        "missing_column": ({"uri": f"sqlite:///{sqlite_db}", "query": "SELECT id AS body FROM brakes"},
                           "data.text_column: column 'text' is not in"),
        "unsupported": ({"uri": "mysql://me@localhost/cars", "table": "t"}, "is not a database URI"),
        "missing_sqlite": ({"uri": f"sqlite:///{tmp_path / 'none.db'}", "table": "t"}, "does not exist"),
        "no_table_or_query": ({"uri": uri}, "give exactly one of table or query"),
        "bare_uri": (uri, "a database source needs a table or query"),
    }[case]
    recipe = tiny_recipe(tmp_path, data={"train": train})
    before = sorted(p.name for p in tmp_path.iterdir())
    done = run_cli("train", recipe)
    assert done.returncode == 2, done.stderr[-2000:]
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0], lines
    assert PASSWORD not in done.stderr and "not-it" not in done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no run folder, no database file


def test_bad_log_commands_fail_in_one_line(tmp_path, postgres):
    uri = f"sqlite:///{tmp_path / 'log.db'}"
    assert run_cli("data", "rate", uri, "1", "good").stderr.strip().endswith("does not exist; check the path "
                                                                             "(or create it with `hftoolkit data import`)")
    from hftoolkit.db.generation_log import GenerationLog

    GenerationLog(uri).record("ckpt", "f" * 64, "Q?", "A.", {}, [], 0.1, False)
    missing = run_cli("data", "rate", uri, "7", "good")
    assert missing.returncode == 2 and missing.stderr.strip() == f"hftoolkit: error: ID: no logged answer #7 in {uri}"
    unrated = run_cli("data", "export-log", uri, "--out", tmp_path / "out.jsonl")
    assert unrated.returncode == 2 and "no rated answers" in unrated.stderr
    assert not (tmp_path / "out.jsonl").exists()
    existing = tmp_path / "keep.jsonl"
    existing.write_text("mine\n")
    assert run_cli("data", "rate", uri, "1", "good").returncode == 0
    refused = run_cli("data", "export-log", uri, "--out", existing)
    assert refused.returncode == 2 and "already exists" in refused.stderr and existing.read_text() == "mine\n"
    wrong = run_cli("data", "show", postgres.uri(password="not-it"), "--table", "generation_log")
    assert wrong.returncode == 2 and len(wrong.stderr.strip().splitlines()) == 1
    assert "password authentication failed" in wrong.stderr and "not-it" not in wrong.stderr


def test_password_from_pgpassword_or_pgpass(tmp_path, postgres):
    uri = postgres.uri(password=None)  # no password in the URI: libpq reads PGPASSWORD, then ~/.pgpass
    assert run_cli("data", "import", BRAKES, "--to", uri, "--table", "env_brakes",
                   env={"PGPASSWORD": PASSWORD}).returncode == 0
    pgpass = tmp_path / "pgpass"
    pgpass.write_text(f"127.0.0.1:{postgres.port}:postgres:hftk:{PASSWORD}\n")
    pgpass.chmod(0o600)
    shown = run_cli("data", "show", uri, "--table", "env_brakes", "--json", env={"PGPASSFILE": str(pgpass)})
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["rows"] == 11
    refused = run_cli("data", "show", uri, "--table", "env_brakes", env={"PGPASSWORD": "not-it"})
    assert refused.returncode == 2 and "password authentication failed" in refused.stderr
    assert "not-it" not in refused.stderr


def test_streamed_postgres_table_trains_from_a_server_side_cursor(tmp_path, postgres):
    """data.streaming over PostgreSQL reads the rows the file holds, in order (the same blocks as the streamed
    file); a streamed run from it trains, and the password appears in no output, log or saved stream position."""
    from transformers import AutoTokenizer

    from hftoolkit.data.stream_blocks import StreamedBlocks
    from hftoolkit.data.stream_splits import stream_source
    from hftoolkit.models.registry import pull
    from hftoolkit.recipe.schema import DataSection, SqlSource

    uri = postgres.create_database("cars_stream")
    done = run_cli("data", "import", BRAKES, "--to", uri, "--table", "brakes")
    assert done.returncode == 0, done.stderr[-2000:]
    tokenizer = AutoTokenizer.from_pretrained(str(pull("smollm2-135m-instruct", log=lambda m: None)))
    blocks = {}
    for name, train in (("file", BRAKES), ("db", SqlSource(uri=uri, table="brakes"))):
        stream = StreamedBlocks(stream_source(DataSection(train=train)), tokenizer, 64, True, 8, 0)
        stream.limit = 40
        blocks[name] = list(stream)
    assert blocks["db"] == blocks["file"] and len(blocks["db"]) == 40
    recipe = tiny_recipe(tmp_path, data={"train": {"uri": uri, "table": "brakes"}, "streaming": True},
                         training={"max_steps": 6, "save_steps": 3}, output={"keep_training_state": True})
    done = run_cli("train", recipe)
    assert done.returncode == 0, done.stderr[-3000:]
    assert PASSWORD not in done.stdout + done.stderr
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["stream"]["documents"] > 0 and metrics["eval_loss"] < metrics["eval_loss_start"]
    assert (tmp_path / "run" / "checkpoints" / "checkpoint-6" / "data-state-rank0.json").is_file()
    assert PASSWORD.encode() not in all_bytes(tmp_path / "run")  # data-state-rank0.json included
