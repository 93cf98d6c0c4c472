"""Safety: never delete a folder hftoolkit did not create, never unpickle a shared cache entry, never print a
cache password, and a cache outage degrades and recovers."""

import json
import pickle
import sqlite3
import time

import pytest

from conftest import run_cli, start_cli, tiny_recipe
from redis_server import RedisServer


def test_overwrite_refuses_a_folder_hftoolkit_did_not_write(tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("my notes")
    done = run_cli("train", tiny_recipe(tmp_path), "--output-dir", mine, "--overwrite")
    assert done.returncode == 2
    assert done.stderr.strip() == (f"hftoolkit: error: --overwrite: '{mine}' holds files hftoolkit did not write "
                                   "(no checkpoints/.hftoolkit_run), so it is never deleted; choose another "
                                   "--output-dir, or empty the folder yourself")
    assert sorted(p.name for p in mine.iterdir()) == ["notes.txt"] and (mine / "notes.txt").read_text() == "my notes"


def test_a_second_run_into_a_folder_being_written_is_refused(tmp_path):
    """A run still writing its folder holds it: a second run there, with --overwrite or --resume, is refused in one
    line before it reads anything, and the first finishes whole. (Before: --overwrite cleared the first's files
    from under it.) Once the first has ended, the folder is free again."""
    recipe = tiny_recipe(tmp_path, training={"max_steps": 1500, "eval_steps": 5000, "save_steps": 5000})
    run = tmp_path / "run"
    log = tmp_path / "first.log"
    first = start_cli("train", recipe, log=log)
    try:
        deadline = time.time() + 300
        while not (run / "checkpoints" / ".hftoolkit_run").is_file():  # claimed, so data and model have loaded
            assert first.poll() is None and time.time() < deadline, log.read_text()[-2000:]
            time.sleep(0.2)
        for flag in ("--overwrite", "--resume"):
            second = run_cli("train", recipe, flag)
            assert second.returncode == 2 and second.stderr.strip() == (
                f"hftoolkit: error: output dir '{run}' is being written by another hftoolkit run; wait for it to "
                "end, or choose another --output-dir")
        assert first.poll() is None  # the refusals came while the first was still training
        assert first.wait(timeout=600) == 0, log.read_text()[-2000:]
    finally:
        first.kill()
    assert json.loads((run / "metrics.json").read_text())["train_steps"] == 1500
    again = run_cli("train", recipe, "training.max_steps=2", "--overwrite")
    assert again.returncode == 0 and json.loads((run / "metrics.json").read_text())["train_steps"] == 2


def test_overwrite_deletes_only_what_the_run_wrote(tmp_path):
    """A note and a folder the user saved into a finished run survive --overwrite untouched, the new run is
    complete, and one line names what was kept. (Before: clear_run removed the whole folder.)"""
    recipe = tiny_recipe(tmp_path)
    run = tmp_path / "run"
    assert run_cli("train", recipe).returncode == 0
    (run / "notes.md").write_text("what I found")
    (run / "eval" / "deep").mkdir(parents=True)
    (run / "eval" / "deep" / "answers.json").write_text("[1, 2]")
    (run / "logs" / "mine.txt").write_text("inside a folder of ours")
    (run / "empty_folder").mkdir()
    (run / ".staging").mkdir()  # what a crash in the middle of a save leaves: ours, so it goes
    (run / ".staging" / "model.safetensors").write_bytes(b"partial")
    first_metrics = (run / "metrics.json").read_text()
    (run / "metrics.json").write_text("{}")  # so a run that never saves again cannot pass for complete
    done = run_cli("train", recipe, "training.seed=7", "--overwrite")
    assert done.returncode == 0, done.stderr[-3000:]
    assert ("--overwrite: removed the earlier run's" in done.stdout and
            "kept 3 that hftoolkit did not write: eval/deep/answers.json, logs/mine.txt, notes.md" in done.stdout)
    assert (run / "notes.md").read_text() == "what I found"
    assert (run / "eval" / "deep" / "answers.json").read_text() == "[1, 2]"
    assert (run / "logs" / "mine.txt").read_text() == "inside a folder of ours" and (run / "empty_folder").is_dir()
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["train_steps"] == 6 and (run / "metrics.json").read_text() != first_metrics
    assert len(list((run / "logs").glob("events.out.tfevents.*"))) == 1  # the old run's event file went
    assert not (run / ".staging").exists()
    manifest = json.loads((run / "checkpoints" / ".hftoolkit_files").read_text())
    assert "notes.md" not in manifest and {"config.json", "model.safetensors", "metrics.json"} <= set(manifest)


def test_written_files_take_the_users_umask_not_owner_only(tmp_path):
    """safetensors (0.8) and temporary names create files owner-only; a checkpoint, its HDF5 export and the folder
    converted back get the modes the user's umask gives any file, so a colleague or a server's account can read
    the weights as they read the config. (Before: model.safetensors and the .h5 were 0600 under umask 022.)"""
    run = tmp_path / "run"
    assert run_cli("train", tiny_recipe(tmp_path, training={"max_steps": 1}), umask=0o027).returncode == 0
    assert run_cli("convert", run, tmp_path / "weights.h5", umask=0o022).returncode == 0
    assert run_cli("convert", tmp_path / "weights.h5", tmp_path / "back", umask=0o002).returncode == 0

    def mode(path):
        return oct(path.stat().st_mode & 0o777)

    assert {name: mode(run / name) for name in ("model.safetensors", "config.json", "tokenizer.json")} == \
        dict.fromkeys(("model.safetensors", "config.json", "tokenizer.json"), "0o640")
    assert mode(run) == mode(run / "logs") == "0o750"
    assert mode(tmp_path / "weights.h5") == "0o644"
    assert mode(tmp_path / "back") == "0o775" and mode(tmp_path / "back" / "model.safetensors") == "0o664"


def test_a_user_folder_where_the_checkpoint_writes_a_file_is_never_deleted(tmp_path):
    recipe = tiny_recipe(tmp_path, training={"max_steps": 2})
    run = tmp_path / "run"
    assert run_cli("train", recipe).returncode == 0
    (run / "loss_curve.png").unlink()
    (run / "loss_curve.png").mkdir()  # a user's folder, by an unlucky name
    (run / "loss_curve.png" / "mine.txt").write_text("keep me")
    done = run_cli("train", recipe, "--overwrite")
    assert done.returncode == 2 and "is in the way of the checkpoint's file of that name" in done.stderr
    assert (run / "loss_curve.png" / "mine.txt").read_text() == "keep me"


def test_quickstart_refuses_a_folder_with_an_unrelated_file(tmp_path):
    (tmp_path / "thesis.tex").write_text("years of work")
    for target in (str(tmp_path), "."):
        done = run_cli("quickstart", "--output-dir", target, cwd=tmp_path)
        assert done.returncode == 2 and "holds files hftoolkit did not write" in done.stderr, done.stderr[-1000:]
        assert sorted(p.name for p in tmp_path.iterdir()) == ["thesis.tex"]


class Payload:
    """Unpickling this creates a file: proof that a cache read ran code."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def plant_pickle(folder, key: str, payload) -> None:
    """Write a pickle-mode entry for `key` straight into diskcache's SQLite file, as an attacker with write
    access to a shared cache folder could."""
    import diskcache

    raw_key, _ = diskcache.JSONDisk(folder).put(key)
    with sqlite3.connect(folder / "cache.db") as db:
        db.execute("INSERT OR REPLACE INTO Cache(key, raw, store_time, expire_time, access_time, access_count, tag, "
                   "size, mode, filename, value) VALUES (?, 1, ?, NULL, ?, 0, NULL, 0, 4, NULL, ?)",
                   (raw_key, time.time(), time.time(), pickle.dumps(payload)))


def test_planted_pickle_in_the_disk_cache_never_runs(tmp_path):
    import diskcache

    from hftoolkit.generate.cache import DiskBackend

    folder = tmp_path / "shared-cache"
    backend = DiskBackend(str(folder))
    backend.set("hftoolkit:gen:honest", {"completion": "ok", "tokens": 1})
    proof = tmp_path / "pwned"
    plant_pickle(folder, "hftoolkit:gen:planted", Payload(proof))

    assert backend.get("hftoolkit:gen:planted") is None and not proof.exists()  # a miss, nothing ran
    assert backend.get("hftoolkit:gen:honest") == {"completion": "ok", "tokens": 1}
    modes = dict(sqlite3.connect(folder / "cache.db").execute("SELECT key, mode FROM Cache").fetchall())
    honest_key, _ = diskcache.JSONDisk(folder).put("hftoolkit:gen:honest")
    assert modes[honest_key] != 4  # hftoolkit's own entries are (compressed JSON) bytes, never pickles

    with pytest.raises(TypeError):  # the payload runs first; JSON decoding of its result fails after
        diskcache.Cache(str(folder), disk=diskcache.JSONDisk).get("hftoolkit:gen:planted")
    assert proof.exists()  # the same entry read by plain diskcache would have run the payload


def test_redis_password_is_never_printed(tmp_path):
    secret = "redisS3cretPw"
    server = RedisServer(tmp_path, password=secret)
    try:
        stats = run_cli("cache", "stats", "--cache", server.url)
        assert stats.returncode == 0, stats.stderr
        assert json.loads(stats.stdout)["location"] == f"redis://:***@127.0.0.1:{server.port}/0"
        wrong = run_cli("cache", "stats", "--cache", f"redis://:wrong{secret}@127.0.0.1:{server.port}/0")
        assert wrong.returncode == 2 and f"redis://:***@127.0.0.1:{server.port}/0" in wrong.stderr
        for done in (stats, wrong):
            assert secret not in done.stdout + done.stderr
    finally:
        server.stop()


def test_cache_outage_degrades_then_recovers(tmp_path):
    from hftoolkit.generate.cache import RedisBackend, ResponseCache

    server = RedisServer(tmp_path)
    warnings = []
    cache = ResponseCache(RedisBackend(server.url), warn=warnings.append, retry_seconds=0.2)
    cache.set("hftoolkit:gen:a", {"completion": "x", "tokens": 1})
    assert cache.get("hftoolkit:gen:a") == {"completion": "x", "tokens": 1}
    server.stop()
    assert cache.get("hftoolkit:gen:a") is None and cache.get("hftoolkit:gen:a") is None
    assert len(warnings) == 1 and "unavailable" in warnings[0]
    server = RedisServer(tmp_path, port=server.port)  # back on the same port
    try:
        time.sleep(0.3)
        cache.set("hftoolkit:gen:b", {"completion": "y", "tokens": 1})
        assert cache.get("hftoolkit:gen:b") == {"completion": "y", "tokens": 1}
        assert warnings[1:] == ["response cache redis is available again"]
    finally:
        server.stop()



def test_disk_space_is_checked_before_training(tmp_path):
    import shutil

    import torch

    from hftoolkit.checkpoint.output_dir import check_disk_space
    from hftoolkit.errors import UserError

    small = torch.nn.Linear(4, 4)
    check_disk_space(tmp_path, small)  # a few bytes fit
    free = shutil.disk_usage(tmp_path).free

    class Huge(torch.nn.Module):  # parameters on the meta device: their size, without the memory
        def __init__(self):
            super().__init__()
            self.weight = torch.nn.Parameter(torch.empty(free // 4 + 1, device="meta"))

    with pytest.raises(UserError, match="^not enough disk space for '"):
        check_disk_space(tmp_path, Huge())
