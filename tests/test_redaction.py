"""No secret is ever printed: database and Redis passwords of any printable characters, raw or %-escaped, and
hub tokens, through every failing path (closed port, unknown host, wrong password, hub 401), checked in stdout,
stderr, the generation log and every file written. Each password carries two fixed cores, so a leak of any
part split at an odd character (the host or port a parser cut out of it) is still found."""

import socket
import string
from pathlib import Path
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import REPO, run_cli
from hftoolkit.cli import main
from hub_server import LocalHub
from pg_server import USER, PostgresServer
from redis_server import RedisServer

CORES = ("Kq7ZpW3m", "Lx8RvT2y")
QA = REPO / "hftoolkit/corpora/cars/qa/heldout.jsonl"
printable = st.text(alphabet=[chr(c) for c in range(0x20, 0x7F)], max_size=5)
passwords = st.builds(lambda a, b, c: a + CORES[0] + b + CORES[1] + c, printable, printable, printable)


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]  # free again once closed: nothing listens there


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    postgres = PostgresServer()
    redis = RedisServer(tmp_path_factory.mktemp("redis"), password="the-real-redis-pw")
    yield postgres, redis
    redis.stop()
    postgres.close()


def leaks(secret: str, texts) -> list[str]:
    """Which of the texts show the secret, %-escaped or not, or either core."""
    forms = {secret, quote(secret, safe=""), *CORES}
    return [text[:300] for text in texts if any(form in text for form in forms)]


def written_files(folder: Path) -> list[str]:
    return [p.read_bytes().decode("latin-1") for p in folder.rglob("*") if p.is_file()]


def cli_in_process(capfd, *argv) -> tuple[int, str, str]:
    """The real entry point in this process (imports paid once): exit status, stdout, stderr."""
    code = main([str(arg) for arg in argv])
    captured = capfd.readouterr()
    return code, captured.out, captured.err


@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
@given(password=passwords, escaped=st.booleans())
def test_database_and_redis_passwords_never_appear(servers, tmp_path_factory, capfd, password, escaped):
    postgres, redis = servers
    work = tmp_path_factory.mktemp("redaction")
    shown = quote(password, safe="") if escaped else password
    databases = {
        "closed port": f"postgresql://{USER}:{shown}@127.0.0.1:{closed_port()}/db",
        "unknown host": f"postgresql://{USER}:{shown}@no-such-host.invalid:5432/db",
        "wrong password": f"postgresql://{USER}:{shown}@127.0.0.1:{postgres.port}/postgres",
    }
    outputs = []
    for why, uri in databases.items():
        code, out, err = cli_in_process(capfd, "data", "import", QA, "--to", uri, "--table", "qa", "--format", "qa")
        assert code == 2, (why, err)
        assert err.startswith("hftoolkit: error: --to: database postgresql://hftk:***@"), err
        assert len(err.strip().splitlines()) == 1 and out == ""
        outputs += [out, err]
    code, out, err = cli_in_process(capfd, "cache", "stats", "--cache", f"redis://:{shown}@127.0.0.1:{redis.port}/0")
    assert code == 2 and f"redis://:***@127.0.0.1:{redis.port}/0" in err, err
    outputs += [out, err]
    assert not leaks(password, outputs + written_files(work))


@pytest.mark.parametrize("escaped", [False, True])
def test_generation_goes_on_without_the_cache_and_logs_no_password(tiny_gpt, tmp_path, escaped):
    """A separate process, as a user runs it: the Redis cache refuses, generation answers, the SQLite
    generation log is written, and neither output nor any file holds the password."""
    password = f"a@b/{CORES[0]}:c%41 d'{CORES[1]}#"
    shown = quote(password, safe="") if escaped else password
    log = tmp_path / "log.db"
    done = run_cli("generate", tiny_gpt, "The brake", "--max-new-tokens", "4", "--cache",
                   f"redis://:{shown}@127.0.0.1:{closed_port()}/0", "--log", f"sqlite:///{log}", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "warning: response cache unavailable (redis" in done.stderr and done.stdout.startswith("The brake")
    assert log.is_file()
    assert not leaks(password, [done.stdout, done.stderr] + written_files(tmp_path))


@settings(max_examples=3, deadline=None, suppress_health_check=list(HealthCheck))
@given(token=st.text(alphabet=string.ascii_letters + string.digits, min_size=4, max_size=12))
def test_hub_token_never_appears(tiny_gpt, tmp_path_factory, token):
    secret = f"hf_{token}{CORES[0]}"
    work = tmp_path_factory.mktemp("hub-token")
    with LocalHub(work / "hub") as hub:
        env = {"HF_ENDPOINT": hub.endpoint, "HF_TOKEN": secret, "HF_HOME": str(work / "home")}
        done = run_cli("push", tiny_gpt, "tester/leak", env=env, cwd=work)
        pulled = run_cli("pull", "tester/leak", work / "p", env=env, cwd=work)
    assert done.returncode == 2 and "rejected the token (401 unauthorized)" in done.stderr, done.stderr
    assert pulled.returncode == 2
    assert not leaks(secret, [done.stdout, done.stderr, pulled.stdout, pulled.stderr] + written_files(work))


@settings(max_examples=300, deadline=None)
@given(password=passwords, user=st.text(alphabet=string.ascii_letters, min_size=1, max_size=6))
def test_redact_masks_every_form_in_driver_text(password, user):
    """The function itself on text shaped like driver, client and header messages."""
    from hftoolkit.redact import redact, remember_uri

    for shown in (password, quote(password, safe="")):
        uri = f"postgresql://{user}:{shown}@db.example:5432/x"
        remember_uri(uri)
        for text in (f"could not connect to {uri}", f"redis://:{shown}@h:1/0 refused",
                     f"Authorization: Bearer {shown}", f"password={shown} host=h"):
            assert not leaks(password, [redact(text)]), text
