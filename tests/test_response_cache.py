"""Response cache against the real backends: diskcache on disk and a real redis-server."""

import json
import time

import pytest

from conftest import run_cli, tiny_recipe
from redis_server import RedisServer
from hftoolkit.generate.api import TextGenerator
from hftoolkit.generate.engine import GenerationSettings

SETTINGS = GenerationSettings(max_new_tokens=24)


@pytest.fixture
def redis_server(tmp_path):
    server = RedisServer(tmp_path)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cache")
    out = tmp / "run"
    done = run_cli("train", tiny_recipe(tmp, training={"max_steps": 10}), "--output-dir", out)
    assert done.returncode == 0, done.stderr[-2000:]
    return out


def test_disk_hit_skips_loading_weights(checkpoint, tmp_path):
    # how much faster a hit is, is measured in benchmarks/generation.py, not asserted here
    folder = str(tmp_path / "responses")
    first = TextGenerator(str(checkpoint), cache=folder)
    miss = first.generate(["The brake pads"], settings=SETTINGS)[0]
    assert not miss.cached and first.weights_loaded
    second = TextGenerator(str(checkpoint), cache=folder)  # a new process would look the same
    hit = second.generate(["The brake pads"], settings=SETTINGS)[0]
    assert hit.cached and hit.completion == miss.completion and not second.weights_loaded
    mixed = second.generate(["The brake pads", "Disc brakes"], settings=SETTINGS)  # one hit, one miss
    assert [m.cached for m in mixed] == [True, False] and second.weights_loaded
    alone = TextGenerator(str(checkpoint), cache="off").generate(["Disc brakes"], settings=SETTINGS)[0]
    assert mixed[1].completion == alone.completion


def test_only_reproducible_requests_are_cached(checkpoint):
    gen = TextGenerator(str(checkpoint), cache="memory")
    unseeded = GenerationSettings(max_new_tokens=8, temperature=1.0)
    gen.generate(["Oil"], settings=unseeded)
    assert not gen.generate(["Oil"], settings=unseeded)[0].cached
    seeded = GenerationSettings(max_new_tokens=8, temperature=1.0, seed=1)
    gen.generate(["Oil"], settings=seeded)
    assert gen.generate(["Oil"], settings=seeded)[0].cached
    # every parameter is part of the key
    assert not gen.generate(["Oil"], settings=GenerationSettings(max_new_tokens=9, temperature=1.0, seed=1))[0].cached


def test_retrained_checkpoint_never_gets_old_answers(tmp_path):
    recipe = tiny_recipe(tmp_path, training={"max_steps": 3})
    out = tmp_path / "run"
    assert run_cli("train", recipe, "--output-dir", out).returncode == 0
    folder = str(tmp_path / "responses")
    TextGenerator(str(out), cache=folder).generate(["Tyres"], settings=SETTINGS)
    assert TextGenerator(str(out), cache=folder).generate(["Tyres"], settings=SETTINGS)[0].cached
    assert run_cli("train", recipe, "--output-dir", out, "--overwrite", "training.seed=5").returncode == 0
    assert not TextGenerator(str(out), cache=folder).generate(["Tyres"], settings=SETTINGS)[0].cached


def test_redis_shared_between_processes_with_ttl(checkpoint, redis_server):
    args = ["generate", checkpoint, "Brake fluid", "--json", "--cache", redis_server.url, "--max-new-tokens", "8"]
    first = run_cli(*args)
    second = run_cli(*args)  # another process
    assert first.returncode == 0 and second.returncode == 0, first.stderr[-1500:] + second.stderr[-1500:]
    one, two = json.loads(first.stdout), json.loads(second.stdout)
    assert not one["cached"] and two["cached"] and one["completion"] == two["completion"]
    stats = run_cli("cache", "stats", "--cache", redis_server.url)
    assert json.loads(stats.stdout)["entries"] == 1

    short = TextGenerator(str(checkpoint), cache=redis_server.url, cache_ttl=1)
    short.generate(["Coolant"], settings=SETTINGS)
    assert short.generate(["Coolant"], settings=SETTINGS)[0].cached
    time.sleep(1.6)
    assert not short.generate(["Coolant"], settings=SETTINGS)[0].cached
    assert "removed" in run_cli("cache", "clear", "--cache", redis_server.url).stdout


def test_redis_killed_mid_run_warns_once_and_keeps_generating(checkpoint, redis_server):
    warnings = []
    gen = TextGenerator(str(checkpoint), cache=redis_server.url, log=warnings.append)
    gen.generate(["Fuses"], settings=SETTINGS)
    redis_server.stop()
    results = gen.generate(["Fuses", "Clutch", "Winter tyres"], settings=SETTINGS)
    assert all(r.completion for r in results) and not any(r.cached for r in results)
    assert len([w for w in warnings if "cache unavailable" in w]) == 1

    done = run_cli("generate", checkpoint, "Fuses", "--cache", redis_server.url, "--json", "--max-new-tokens", "4")
    assert done.returncode == 0 and json.loads(done.stdout)["completion"]
    assert done.stderr.count("cache unavailable") == 1


def test_threads_and_processes_sharing_one_disk_cache_get_correct_answers(checkpoint, tmp_path):
    import os
    import subprocess
    import sys
    from concurrent.futures import ThreadPoolExecutor

    from conftest import REPO

    prompts = ["The brake pads", "Tyres", "The coolant", "Check the oil", "A worn clutch", "The battery"]
    settings = GenerationSettings(max_new_tokens=8)
    truth = [c.completion for c in TextGenerator(str(checkpoint), cache="off").generate(prompts, settings=settings)]
    shared = tmp_path / "shared-cache"

    def worker(offset: int) -> list[str]:  # each thread its own generator, every prompt, in its own order
        order = prompts[offset:] + prompts[:offset]
        done = TextGenerator(str(checkpoint), cache=str(shared), log=lambda m: None).generate(order, settings=settings)
        answers = dict(zip(order, (c.completion for c in done)))
        return [answers[p] for p in prompts]

    with ThreadPoolExecutor(4) as pool:
        assert list(pool.map(worker, range(4))) == [truth] * 4

    path = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    processes = [subprocess.Popen([sys.executable, "-m", "hftoolkit", "generate", str(checkpoint), *prompts, "--raw",
                                   "--json", "--max-new-tokens", "8", "--cache", str(shared / "procs")],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                  env={**os.environ, "PYTHONPATH": path}) for _ in range(3)]
    outputs = [p.communicate(timeout=300) for p in processes]
    assert [p.returncode for p in processes] == [0, 0, 0], [err[-800:] for _, err in outputs]
    for stdout, _ in outputs:
        assert [json.loads(line)["completion"] for line in stdout.splitlines()] == truth
    again = run_cli("generate", checkpoint, *prompts, "--raw", "--json", "--max-new-tokens", "8", "--cache",
                    shared / "procs")
    rows = [json.loads(line) for line in again.stdout.splitlines()]
    assert [r["completion"] for r in rows] == truth and all(r["cached"] for r in rows)
