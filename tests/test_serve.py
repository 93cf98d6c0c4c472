"""`hftoolkit serve`, from outside: the real command on loopback, the official openai client, raw HTTP for what a
client library hides ([DONE], status codes, bodies), and a real headless chromium for the chat page.

One server (SmolLM2-135M-Instruct answering from a brakes/tyres index, with a disk cache, a generation log and
an API key) serves every test of this module; each test asks questions no other test asks, so cache hits happen
only where a test wants them.
"""

import asyncio
import json
import os
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import httpx
import openai
import pytest

from hftoolkit import app
from hftoolkit.models.registry import pull

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parent.parent
KEY = "sk-test-7f3a9c1e5b2d4f6a8c0e"  # a secret: it must never appear in any output, response or log
SETTINGS = dict(max_tokens=20, temperature=0)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def smollm2() -> Path:
    return pull("smollm2-135m-instruct", log=lambda m: None)


@pytest.fixture(scope="module")
def server(tmp_path_factory, smollm2, brakes_tyres_index):
    """`hftoolkit serve` as a user starts it, in its own process; yields what the tests need to talk to it."""
    root = tmp_path_factory.mktemp("serve")
    port = free_port()
    log_uri = f"sqlite:///{root / 'answers.db'}"
    out, err = open(root / "stdout.txt", "w"), open(root / "stderr.txt", "w")
    path = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    process = subprocess.Popen(
        [sys.executable, "-m", "hftoolkit", "serve", str(smollm2), "--port", str(port), "--api-key-env", "MY_KEY",
         "--context", str(brakes_tyres_index), "--top-k", "2", "--cache", str(root / "cache"), "--log", log_uri],
        stdout=out, stderr=err, env={**os.environ, "PYTHONPATH": path, "MY_KEY": KEY}, cwd=root)
    base = f"http://127.0.0.1:{port}"
    deadline, seen = time.monotonic() + 180, set()
    while True:
        assert process.poll() is None, (root / "stderr.txt").read_text()[-3000:]
        try:
            status = httpx.get(f"{base}/health", timeout=2).status_code
            seen.add(status)
            if status == 200:
                break
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, "server did not become healthy"
        time.sleep(0.2)
    precision = httpx.get(f"{base}/health").json()["precision"]  # auto: bf16 on a CPU with fast bf16 matmuls
    responses: list[str] = []  # every body a test received: the key must be in none of them
    yield {"base": base, "root": root, "log_uri": log_uri, "db": root / "answers.db", "model": smollm2.name,
           "checkpoint": smollm2, "index": brakes_tyres_index, "responses": responses, "process": process,
           "health_seen": seen, "precision": precision}
    process.terminate()
    process.wait(timeout=30)
    out.close()
    err.close()


def client(server, key=KEY) -> openai.OpenAI:
    return openai.OpenAI(base_url=server["base"] + "/v1", api_key=key, max_retries=0)


def post(server, path: str, body, key=KEY, raw: bytes | None = None) -> httpx.Response:
    headers = {"authorization": f"Bearer {key}", "content-type": "application/json"}
    response = httpx.post(server["base"] + path, content=raw if raw is not None else json.dumps(body),
                          headers=headers, timeout=120)
    server["responses"].append(response.text)
    return response


def stats(server) -> dict:
    return httpx.get(server["base"] + "/v1/stats", headers={"authorization": f"Bearer {KEY}"}).json()


def long_stream(server, question: str, max_tokens: int):
    """A streamed request that keeps the worker busy; the caller reads (or drops) its lines."""
    return httpx.stream("POST", server["base"] + "/v1/chat/completions", timeout=120,
                        headers={"authorization": f"Bearer {KEY}"},
                        json={"model": server["model"], "stream": True, "max_tokens": max_tokens, "temperature": 0,
                              "messages": [{"role": "user", "content": question}]})


def expected(server, question: str, max_new_tokens=SETTINGS["max_tokens"]):
    """What `hftoolkit generate` answers with the server's settings (same index, top-k, greedy)."""
    [done] = app.generate(str(server["checkpoint"]), [question], cache="off", context=str(server["index"]), top_k=2,
                          settings=app.request_settings(max_new_tokens=max_new_tokens, greedy=True),
                          precision=server["precision"], log=lambda m: None)
    return done


def test_chat_streamed_and_not_equals_generate_with_sources_usage_and_log(server):
    question = "How thick is a new brake pad?"
    want = expected(server, question)
    assert want.completion.strip(), "the model said nothing: the comparison would be empty"

    reply = client(server).chat.completions.create(model=server["model"], messages=[{"role": "user",
                                                                                     "content": question}], **SETTINGS)
    body = reply.model_dump()
    assert reply.choices[0].message.content == want.completion.strip()
    assert body["sources"] == want.sources and body["sources"][0]["file"] == "06_brakes.txt"
    assert {"file", "start", "end", "score"} <= set(body["sources"][0])
    assert reply.usage.completion_tokens == want.tokens
    assert reply.usage.prompt_tokens == len(want_tokens(server, want.prompt))
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens

    streamed, last = "", None
    for chunk in client(server).chat.completions.create(
            model=server["model"], messages=[{"role": "user", "content": "Is a new brake pad thick?"}], stream=True,
            **SETTINGS):
        streamed += chunk.choices[0].delta.content or ""
        last = chunk
    want2 = expected(server, "Is a new brake pad thick?")
    assert streamed.strip() == want2.completion.strip()
    extra = last.model_dump()
    assert extra["sources"] == want2.sources and extra["usage"]["completion_tokens"] == want2.tokens
    assert last.choices[0].finish_reason in ("stop", "length")

    with sqlite3.connect(server["db"]) as db:  # both answers are in the generation log, as `generate --log` writes
        rows = db.execute("SELECT id, answer FROM generation_log WHERE id IN (?, ?)",
                          (body["log_id"], extra["log_id"])).fetchall()
    assert sorted(answer.strip() for _, answer in rows) == sorted([want.completion.strip(), streamed.strip()])


def want_tokens(server, text: str) -> list[int]:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(server["checkpoint"]))(text, add_special_tokens=False)["input_ids"]


def test_raw_stream_ends_with_done_and_every_response_has_a_request_id(server):
    with httpx.stream("POST", server["base"] + "/v1/chat/completions", timeout=120,
                      headers={"authorization": f"Bearer {KEY}", "x-request-id": "trace-42"},
                      json={"model": server["model"], "stream": True, "unknown_field": {"ignored": True},
                            "messages": [{"role": "user", "content": "What does ABS do?"}], **SETTINGS}) as response:
        assert response.status_code == 200
        assert response.headers["x-request-id"] == "trace-42"
        assert response.headers["content-type"].startswith("text/event-stream")
        events = [line[len("data: "):] for line in response.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert "sources" in chunks[-1] and chunks[-1]["usage"]["completion_tokens"] >= 1
    assert all("sources" not in c for c in chunks[:-1])
    assert httpx.get(server["base"] + "/health").headers["x-request-id"]  # a fresh one when none was sent


def test_completions_models_wrong_key_and_unknown_model(server):
    listed = client(server).models.list()
    assert [m.id for m in listed.data] == [server["model"]]

    prompt = "The brake fluid should be"
    done = client(server).completions.create(model=server["model"], prompt=prompt, max_tokens=12, temperature=0)
    [want] = app.generate(str(server["checkpoint"]), [prompt], chat=False, cache="off", context=str(server["index"]),
                          top_k=2, settings=app.request_settings(max_new_tokens=12, greedy=True),
                          precision=server["precision"], log=lambda m: None)
    assert done.choices[0].text == want.completion and done.choices[0].text.strip()
    assert done.model_dump()["sources"] == want.sources

    with pytest.raises(openai.AuthenticationError) as wrong:
        client(server, key="sk-wrong").models.list()
    assert wrong.value.status_code == 401 and "API key" in wrong.value.message
    assert httpx.get(server["base"] + "/v1/models").status_code == 401  # no key at all

    with pytest.raises(openai.NotFoundError) as unknown:
        client(server).chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
    assert "'gpt-4o' is not served here" in unknown.value.message and server["model"] in unknown.value.message


def test_eight_concurrent_requests_are_batched_and_each_gets_its_own_answer(server):
    """While the worker is busy with one long answer, 8 requests queue up; it then generates them as one batch,
    and each client gets the answer `generate` gives for that question in a batch of the same 8."""
    questions = [f"How much tread depth does a {kind} tyre need?" for kind in
                 ("summer", "winter", "new", "worn", "spare", "front", "rear", "truck")]
    before = stats(server)

    async def ask_all():
        async with openai.AsyncOpenAI(base_url=server["base"] + "/v1", api_key=KEY, max_retries=0) as aclient:
            async def ask(question, max_tokens=SETTINGS["max_tokens"]):
                return await aclient.chat.completions.create(
                    model=server["model"], messages=[{"role": "user", "content": question}], stream=True,
                    max_tokens=max_tokens, temperature=0)

            async def text(reply):
                return "".join([c.choices[0].delta.content or "" async for c in reply])
            blocker = await ask("Describe every part of a disc brake.", max_tokens=80)
            await anext(blocker)  # the worker is now generating this one
            replies = await asyncio.gather(*(ask(q) for q in questions))
            answers = await asyncio.gather(*(text(r) for r in replies))
            await text(blocker)
            return answers

    answers = asyncio.run(ask_all())
    after = stats(server)
    assert after["requests"] - before["requests"] == 9
    assert after["batches"] - before["batches"] == 2 and after["largest_batch"] == 8, after
    wanted = app.generate(str(server["checkpoint"]), questions, cache="off", context=str(server["index"]), top_k=2,
                          batch_size=8, settings=app.request_settings(max_new_tokens=SETTINGS["max_tokens"],
                                                                      greedy=True),
                          precision=server["precision"], log=lambda m: None)
    assert len(set(answers)) > 1  # eight questions, not one answer eight times
    for question, answer, want in zip(questions, answers, wanted):
        assert answer.strip() == want.completion.strip(), question


def test_a_cached_answer_streams_too_and_starts_at_once(server):
    question = "When should brake discs be replaced?"
    first = post(server, "/v1/chat/completions", {"model": server["model"], "messages": [
        {"role": "user", "content": question}], **SETTINGS}).json()
    assert first["cached"] is False
    started = time.perf_counter()
    with httpx.stream("POST", server["base"] + "/v1/chat/completions", timeout=60,
                      headers={"authorization": f"Bearer {KEY}"},
                      json={"model": server["model"], "stream": True, "messages": [
                          {"role": "user", "content": question}], **SETTINGS}) as response:
        events = []
        for line in response.iter_lines():
            if line.startswith("data: ") and '"content": "' in line and not events:
                first_token = time.perf_counter() - started
            if line.startswith("data: "):
                events.append(line[6:])
    chunks = [json.loads(e) for e in events[:-1]]
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks)
    assert text.strip() == first["choices"][0]["message"]["content"]
    assert chunks[-1]["cached"] is True and chunks[-1]["sources"] == first["sources"]
    assert first_token < 1.0  # the cached answer does not wait for the model (the benchmark measures it properly)


def test_a_cached_answer_does_not_wait_for_a_running_batch(server):
    question = "What does a tyre's load index say?"
    body = {"model": server["model"], "messages": [{"role": "user", "content": question}], **SETTINGS}
    first = post(server, "/v1/chat/completions", body).json()
    before = stats(server)
    with long_stream(server, "Explain how a car's brakes work.", 300) as long:
        lines = long.iter_lines()
        next(lines)  # the long answer is being generated now
        again = post(server, "/v1/chat/completions", body).json()
        rest = [line for line in lines if line.startswith("data: ")]  # the long answer was still going
    assert again["cached"] is True and again["choices"][0]["message"]["content"] == \
        first["choices"][0]["message"]["content"]
    assert stats(server)["cached_while_busy"] == before["cached_while_busy"] + 1
    assert rest[-1] == "data: [DONE]" and len(rest) > 20


def test_a_client_that_goes_away_stops_its_generation(server):
    before = stats(server)
    with long_stream(server, "Write a long essay about tyres.", 400) as response:
        lines = response.iter_lines()
        for _ in range(3):
            next(lines)
    deadline = time.monotonic() + 30
    while stats(server)["cancelled"] == before["cancelled"]:
        assert time.monotonic() < deadline, "the generation was not stopped"
        time.sleep(0.2)
    with sqlite3.connect(server["db"]) as db:  # an abandoned answer is not logged as if it had been given
        assert db.execute("SELECT COUNT(*) FROM generation_log WHERE prompt LIKE '%long essay about tyres%'"
                          ).fetchone()[0] == 0


@pytest.mark.parametrize("body, raw, status, message", [
    (None, b'{"model": "x", "messages": [', 400, "request body is not valid JSON"),
    ({"messages": []}, None, 400, "messages: List should have at least 1 item"),
    ({"messages": [{"role": "user", "content": "   "}]}, None, 400, "empty prompt"),
    ({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 0}, None, 400, "max_tokens: Input should be"),
    ({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 10 ** 6}, None, 400,
     "tokens over the model's 8192-token window"),
    ({"messages": [{"role": "user", "content": "hi"}], "temperature": "hot"}, None, 400, "temperature:"),
    ({"messages": [{"role": "wizard", "content": "hi"}]}, None, 400, "messages.0.role:"),
    ({"messages": "hi"}, None, 400, "messages:"),
    (None, b'{"model": "m", "messages": [{"role": "user", "content": "' + b"a" * (10 << 20) + b'"}]}', 413,
     "over the 1,048,576-byte limit"),
])
def test_bad_input_gets_one_clear_4xx_and_the_server_keeps_serving(server, body, raw, status, message):
    if body is not None:
        body = {"model": server["model"], **body}
    response = post(server, "/v1/chat/completions", body, raw=raw)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert message in error["message"], error
    assert "Traceback" not in response.text and "\n" not in error["message"]
    ok = post(server, "/v1/chat/completions", {"model": server["model"], "max_tokens": 2, "temperature": 0,
                                                "messages": [{"role": "user", "content": "Hello?"}]})
    assert ok.status_code == 200


def test_a_prompt_over_the_window_says_by_how_much(server):
    long = "brake " * 9000
    response = post(server, "/v1/chat/completions", {"model": server["model"], "max_tokens": 100,
                                                      "messages": [{"role": "user", "content": long}]})
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "context_length_exceeded" and error["param"] == "max_tokens"
    over = int(error["message"].split(": ")[1].split(" tokens over")[0])
    prompt_tokens = int(error["message"].split("the prompt is ")[1].split(" tokens")[0])
    assert over == prompt_tokens + 100 - 8192 and over > 0


def test_ratings_go_into_the_generation_log_and_export(server, tmp_path):
    reply = post(server, "/v1/chat/completions", {"model": server["model"], **SETTINGS, "messages": [
        {"role": "user", "content": "How often should brake fluid be changed?"}]}).json()
    rated = post(server, "/v1/ratings", {"log_id": reply["log_id"], "rating": "bad", "fix": "Every two years."})
    assert rated.status_code == 200 and rated.json()["correction"] == "Every two years."
    missing = post(server, "/v1/ratings", {"log_id": 10 ** 6, "rating": "good"})
    assert missing.status_code == 404 and "no logged answer #1000000" in missing.json()["error"]["message"]
    out = tmp_path / "pairs.jsonl"
    app.export_answers(server["log_uri"], str(out))
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert {"question": "How often should brake fluid be changed?", "answer": "Every two years."} in \
        [{k: r[k] for k in ("question", "answer")} for r in rows]


def test_the_chat_page_streams_shows_sources_and_rates_in_a_real_browser(server, tmp_path):
    from playwright.sync_api import sync_playwright

    question = "What is the minimum legal tread depth?"
    want = expected(server, question, max_new_tokens=256)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1000, "height": 700})
        sent = []
        page.on("request", lambda r: sent.append(r.post_data_json) if r.url.endswith("/chat/completions") else None)
        page.goto(server["base"] + "/")
        page.get_by_test_id("api-key").fill(KEY)
        page.get_by_test_id("api-key").dispatch_event("change")
        page.wait_for_function("document.querySelector('[data-testid=model]').textContent === "
                               f"{json.dumps(server['model'])}")
        page.get_by_test_id("question").fill(question)
        page.get_by_test_id("send").click()
        page.wait_for_selector("[data-testid=assistant-turn][data-done=true]", timeout=120_000)
        answer = page.get_by_test_id("answer").inner_text()
        sources = page.get_by_test_id("source").all_inner_texts()
        page.get_by_test_id("rate-bad").click()
        page.get_by_test_id("correction").fill("At least 1.6 mm.")
        page.get_by_test_id("save-correction").click()
        page.wait_for_function("document.querySelector('[data-testid=rating-status]').textContent.includes('saved')")
        page.screenshot(path=str(tmp_path / "chat.png"))
        # the page keeps the conversation: a follow-up is sent with the first turn
        page.get_by_test_id("question").fill("And for winter tyres?")
        page.get_by_test_id("send").click()
        page.wait_for_function("document.querySelectorAll('[data-testid=assistant-turn][data-done=true]').length == 2",
                               timeout=120_000)
        browser.close()
    assert answer.strip() == want.completion.strip() and answer.strip()
    assert sources and sources[0].startswith(want.sources[0]["file"])
    assert (tmp_path / "chat.png").stat().st_size > 10_000
    with sqlite3.connect(server["db"]) as db:
        rating, correction = db.execute("SELECT rating, correction FROM generation_log WHERE prompt LIKE ? "
                                        "ORDER BY id DESC", (f"%{question}%",)).fetchone()
    assert (rating, correction) == ("bad", "At least 1.6 mm.")
    assert [m["role"] for m in sent[-1]["messages"]] == ["user", "assistant", "user"]
    assert sent[-1]["messages"][1]["content"] == answer.strip()


def test_create_app_is_a_mountable_asgi_app_whose_health_waits_for_the_weights(tiny_chat_model):
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from hftoolkit.serve import create_app

    generator = app.open_generator(str(tiny_chat_model), cache="off", context="off", log=lambda m: None)
    served = create_app(generator, model_name="tiny")
    outer = FastAPI()
    outer.mount("/llm", served)
    plain = TestClient(served)  # no lifespan: the worker never starts, as while weights load
    loading = plain.get("/health")
    assert loading.status_code == 503 and loading.json()["status"] == "loading"
    with TestClient(served) as running:  # the lifespan starts the worker, which loads the weights
        deadline = time.monotonic() + 60
        while running.get("/health").status_code != 200:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        reply = running.post("/v1/chat/completions", json={"model": "tiny", "max_tokens": 5, "temperature": 0,
                                                           "messages": [{"role": "user", "content": "Hi"}]})
        # no max_tokens: the chat default (256) does not fit this 256-token model, so the answer gets what is left
        rest = running.post("/v1/chat/completions", json={"model": "tiny", "temperature": 0,
                                                          "messages": [{"role": "user", "content": "Hi"}]}).json()
    assert reply.status_code == 200 and reply.json()["usage"]["completion_tokens"] == 5
    assert rest["usage"]["total_tokens"] <= 256 and rest["usage"]["prompt_tokens"] > 0, rest
    assert rest["choices"][0]["finish_reason"] in ("stop", "length")
    assert {route.path for route in outer.routes} >= {"/llm"}


def test_serve_refuses_a_missing_key_variable_and_warns_when_open_to_the_network(tiny_chat_model):
    from conftest import run_cli

    done = run_cli("serve", tiny_chat_model, "--api-key-env", "NO_SUCH_VARIABLE_SET", timeout=120)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1] == (
        "hftoolkit: error: --api-key-env: the environment variable NO_SUCH_VARIABLE_SET is not set or empty; "
        "export NO_SUCH_VARIABLE_SET=<key> before starting the server")
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "hftoolkit", "serve", str(tiny_chat_model), "--host", "0.0.0.0",
                                "--port", str(port), "--cache", "off"], stderr=subprocess.PIPE, text=True,
                               env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        lines = []
        while not any(line.startswith("serving") for line in lines):
            line = process.stderr.readline()
            assert line, "".join(lines)
            lines.append(line)
    finally:
        process.terminate()
        process.wait(timeout=30)
    assert any("warning: serving on 0.0.0.0 without an API key" in line for line in lines), lines


def test_zz_the_key_never_appears_in_any_output_response_or_log(server):
    """Last in this file, so after every other test has talked to the server."""
    post(server, "/v1/chat/completions", {"model": "nope", "messages": []}, key="sk-wrong")
    server["process"].terminate()
    server["process"].wait(timeout=30)
    outputs = (server["root"] / "stdout.txt").read_text() + (server["root"] / "stderr.txt").read_text()
    assert "serving" in outputs
    assert KEY not in outputs
    assert len(server["responses"]) > 10 and not any(KEY in body for body in server["responses"])
    with sqlite3.connect(server["db"]) as db:
        logged = json.dumps(db.execute("SELECT * FROM generation_log").fetchall())
    assert "brake" in logged and KEY not in logged
