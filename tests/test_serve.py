"""``llmos serve`` over HTTP: a real server on 127.0.0.1 (random free port), real llama.cpp.

The home holds the embedded demo registry's packages (demo-chat and its
libraries, whose adapters change answers) and a tiny random model ``tiny``
that rarely stops (long generations for disconnects, queues and eviction).
"""

from __future__ import annotations

import json
import random
import socket
import threading
import time

import pytest

from llmos_cli.app.run import RunRequest
from llmos_cli.app.run import run as run_in_process
from llmos_cli.errors import LlmosError, UsageError
from llmos_cli.paths import Paths
from llmos_cli.runtime.engine import SamplingParams
from llmos_cli.serve.http import Server, ServerOptions, check_bind
from llmos_cli.serve.remote import request_json, run_remote
from llmos_cli.serve.wire import request_to_json
from llmos_cli.state import logs
from tests.helpers.servekit import demo_home, running

QUESTION = "What does Naerviovil treat?"


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    return demo_home(tmp_path_factory.mktemp("serve"))


@pytest.fixture(scope="module")
def live(home):
    with running(home, pool={"slots": 4, "seq_ctx": 1024}) as lv:
        yield lv


def chat(model="demo-chat", content=QUESTION, **kw):
    return {"model": model, "messages": [{"role": "user", "content": content}], "temperature": 0, **kw}


# ---------------------------------------------------------------- shapes


def test_health_and_models(live):
    r = live.get("/health")
    assert r.status == 200 and r.json()["status"] == "ok"
    r = live.get("/v1/models")
    assert r.status == 200
    body = r.json()
    ids = {m["id"] for m in body["data"]}
    assert body["object"] == "list" and all(m["object"] == "model" for m in body["data"])
    assert {"demo-chat", "tiny", "demo-chat+med-lib"} <= ids
    assert any(i.startswith("demo-chat+") and "law-lib" in i and "med-lib" in i for i in ids)  # the attached stack


def test_chat_completion_shape_and_knowledge_server_side(live):
    r = live.post("/v1/chat/completions", chat())
    assert r.status == 200, r.body
    b = r.json()
    assert b["object"] == "chat.completion" and b["id"].startswith("chatcmpl-") and b["model"] == "demo-chat"
    choice = b["choices"][0]
    assert choice["message"]["role"] == "assistant" and choice["finish_reason"] in ("stop", "length")
    assert "Ferdund fever" in choice["message"]["content"]
    assert set(b["usage"]) == {"prompt_tokens", "completion_tokens", "total_tokens"}
    assert any(c.startswith("[med-lib:") for c in b["llmos"]["citations"])  # retrieval ran on the server


def test_served_answer_equals_in_process_run(live, home, monkeypatch):
    monkeypatch.setenv("LLMOS_HOME", str(home))
    req = RunRequest(prompt=QUESTION, sampling=SamplingParams(temperature=0.0), explicit_sampling={"temperature"}, log=False)
    local = run_in_process(req, paths=Paths(home))
    pieces: list[str] = []
    remote = run_remote(
        live.url,
        request_to_json(RunRequest(prompt=QUESTION, sampling=SamplingParams(temperature=0.0), explicit_sampling={"temperature"})),
        on_text=pieces.append,
    )
    a, b = local.to_json(), remote.to_json()
    for key in ("text", "finish_reason", "model", "libraries", "usage", "seed", "sampling"):
        assert a[key] == b[key], key
    assert a["extra"]["knowledge"] == b["extra"]["knowledge"]
    assert "".join(pieces) == b["text"]


def test_streaming_chat_sse(live):
    events = live.sse("/v1/chat/completions", chat(stream=True, stream_options={"include_usage": True}))
    assert events[-1] == "[DONE]"
    chunks = events[:-1]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert "Ferdund fever" in text
    finals = [c for c in chunks if c["choices"] and c["choices"][0]["finish_reason"]]
    assert len(finals) == 1
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] > 0


def test_completions_raw_and_streaming(live):
    r = live.post("/v1/completions", {"model": "tiny", "prompt": "abc", "max_tokens": 12, "temperature": 0})
    assert r.status == 200, r.body
    b = r.json()
    assert b["object"] == "text_completion" and b["choices"][0]["finish_reason"] == "length"
    assert b["usage"]["completion_tokens"] == 12
    events = live.sse("/v1/completions", {"model": "tiny", "prompt": "abc", "max_tokens": 12, "temperature": 0, "stream": True})
    assert "".join(e["choices"][0]["text"] for e in events[:-1]) == b["choices"][0]["text"]


def test_stacks_by_model_name_and_libraries_field(live):
    a = live.post("/v1/chat/completions", chat("demo-chat+med-lib:0.5+law-lib")).json()
    names = {lib["name"]: lib["scale"] for lib in a["llmos"]["libraries"]}
    assert names == {"med-lib": 0.5, "law-lib": 1.0}  # exactly these, as llmos run --lib
    b = live.post("/v1/chat/completions", chat("demo-chat", libraries=[{"name": "med-lib", "scale": 0.5}, {"name": "law-lib"}])).json()
    assert {lib["name"]: lib["scale"] for lib in b["llmos"]["libraries"]} == names
    assert a["choices"][0]["message"]["content"] == b["choices"][0]["message"]["content"]
    bare = live.post("/v1/chat/completions", chat("demo-chat", libraries=[])).json()
    assert bare["llmos"]["libraries"] == []
    r = live.post("/v1/chat/completions", chat("demo-chat+no-such-lib"))
    assert r.status == 404 and r.json()["error"]["code"] == "not_found"


def test_client_tools_forced_and_streamed(live):
    tools = [
        {
            "type": "function",
            "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}},
        }
    ]
    body = chat(content="Weather in Paris?", tools=tools, tool_choice={"type": "function", "function": {"name": "get_weather"}}, max_tokens=64)
    r = live.post("/v1/chat/completions", body)
    assert r.status == 200, r.body
    choice = r.json()["choices"][0]
    assert choice["finish_reason"] == "tool_calls" and choice["message"]["content"] is None
    call = choice["message"]["tool_calls"][0]
    assert call["type"] == "function" and call["function"]["name"] == "get_weather"
    assert isinstance(json.loads(call["function"]["arguments"])["city"], str)  # the grammar kept it well formed
    events = live.sse("/v1/chat/completions", {**body, "stream": True})
    deltas = [c["choices"][0]["delta"] for c in events[:-1] if c["choices"]]
    assert any(d.get("tool_calls") and d["tool_calls"][0]["function"]["name"] == "get_weather" for d in deltas)
    # a conversation that carries the call and its result back is accepted
    follow = chat(content="Weather in Paris?", tools=tools, max_tokens=8)
    follow["messages"] += [
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": call["id"], "content": '{"temp": 20}'},
    ]
    assert live.post("/v1/chat/completions", follow).status == 200


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"model": "demo-chat"}, "messages"),
        ({"model": "demo-chat", "messages": []}, "messages"),
        ({"model": "demo-chat", "messages": [{"role": "wizard", "content": "x"}]}, "messages[0].role"),
        ({"model": "demo-chat", "messages": [{"role": "user", "content": 5}]}, "messages[0].content"),
        ({"model": "demo-chat", "messages": [{"role": "user", "content": "x"}], "temperature": "hot"}, "temperature"),
        ({"model": "demo-chat", "messages": [{"role": "user", "content": "x"}], "max_tokens": -1}, "max_tokens"),
        ({"model": "demo-chat", "messages": [{"role": "user", "content": "x"}], "max_tokens": 10**9}, "max_tokens"),
        ({"model": "demo-chat", "messages": [{"role": "user", "content": "x"}], "top_p": 0}, "top_p"),
        ({"model": "demo-chat", "messages": [{"role": "user", "content": "x"}], "stop": [1]}, "stop"),
        ({"model": "demo-chat", "messages": [{"role": "user", "content": "x"}], "n": 3}, "n"),
        ({"model": "demo-chat", "messages": [{"role": "user", "content": "x"}], "tools": [{"type": "function"}]}, "tools[0]"),
        ({"model": "demo-chat", "messages": [{"role": "user", "content": "x"}], "tool_choice": "required"}, "tool_choice"),
        ({"model": "demo-chat+", "messages": [{"role": "user", "content": "x"}]}, "model"),
        ({"model": "demo-chat", "messages": [{"role": "user", "content": "x"}], "libraries": [{"name": "med-lib", "scale": "big"}]}, "libraries[0].scale"),
        ({"model": "demo-chat", "messages": [{"role": "user", "content": "x"}], "keep_alive": "soon"}, "keep_alive"),
    ],
)
def test_malformed_requests_get_openai_errors(live, body, param):
    r = live.post("/v1/chat/completions", body)
    assert r.status == 400, r.body
    err = r.json()["error"]
    assert err["type"] == "invalid_request_error" and err["param"] == param and err["message"]


def test_malformed_bodies_paths_and_sizes(live):
    assert live.post("/v1/chat/completions", raw=b"{not json").status == 400
    assert live.post("/v1/chat/completions", raw=b"\xff\xfe").status == 400
    assert live.post("/v1/chat/completions", [1, 2]).status == 400
    r = live.post("/v1/chat/completions", raw=b'{"x": "' + b"a" * 1_100_000 + b'"}')
    assert r.status == 413 and "error" in r.json()
    r = live.get("/v1/nothing")
    assert r.status == 404 and r.json()["error"]["code"] == "not_found"
    r = live.get("/v1/chat/completions")
    assert r.status == 405 and "error" in r.json()
    r = live.post("/v1/chat/completions", chat(content="x " * 3000))  # over the 1024-token context
    assert r.status == 400 and r.json()["error"]["code"] == "context_length_exceeded"


def test_random_junk_never_crashes_the_server(live):
    rng = random.Random(7)
    atoms = [None, True, -1, 0, 1.5, 1e308, "", "x", "user", [], {}, [{}], {"role": "user"}, "demo-chat+", "\x00"]

    def junk(depth=0):
        if depth > 2 or rng.random() < 0.4:
            return rng.choice(atoms)
        if rng.random() < 0.5:
            return [junk(depth + 1) for _ in range(rng.randint(0, 3))]
        keys = [
            "model",
            "messages",
            "role",
            "content",
            "max_tokens",
            "temperature",
            "tools",
            "tool_choice",
            "stop",
            "stream",
            "libraries",
            "prompt",
            "seed",
            "keep_alive",
        ]
        return {rng.choice(keys): junk(depth + 1) for _ in range(rng.randint(0, 5))}

    for i in range(60):
        body = junk()
        if isinstance(body, dict):
            body.setdefault("max_tokens", 4)
        path = "/v1/chat/completions" if i % 2 else "/v1/completions"
        r = live.post(path, body)
        assert r.status in (200, 400, 404, 413), (body, r.status, r.body[:300])
        if r.status != 200:
            assert r.json()["error"]["message"]
    assert live.get("/health").status == 200


# ---------------------------------------------------------------- auth


def test_binding_beyond_loopback_needs_a_key(home):
    with pytest.raises(UsageError, match="API key"):
        check_bind("0.0.0.0", None)
    with pytest.raises(UsageError):
        Server(ServerOptions(host="192.168.1.20"), paths=Paths(home))
    check_bind("0.0.0.0", "secret")
    check_bind("127.0.0.1", None)
    check_bind("::1", None)
    check_bind("localhost", None)


def test_api_key_is_required_when_set(home):
    with running(home, api_key="s3cret-key", pool={"slots": 1, "seq_ctx": 512}) as lv:
        assert lv.get("/health").status == 200
        r = lv.get("/v1/models")
        assert r.status == 401 and r.json()["error"]["type"] == "authentication_error"
        assert lv.get("/v1/models", headers={"Authorization": "Bearer nope"}).status == 401
        ok = lv.post(
            "/v1/completions", {"model": "tiny", "prompt": "s3cret-key Bearer abcdefghijkl", "max_tokens": 3}, headers={"Authorization": "Bearer s3cret-key"}
        )
        assert ok.status == 200
        entry = logs.read(Paths(home), 1)[0]
        assert "s3cret-key" not in json.dumps(entry.to_json()) and "abcdefghijkl" not in entry.prompt  # logs never hold keys


# ---------------------------------------------------------------- limits, pool, disconnects


def _long(model="tiny", n=400):
    return {"model": model, "prompt": "go on", "max_tokens": n, "temperature": 0}


def test_full_queue_gets_429_with_retry_after(home):
    with running(home, max_queue=1, pool={"slots": 1, "seq_ctx": 1024}) as lv:
        results: list[int] = []
        threads = [threading.Thread(target=lambda: results.append(lv.post("/v1/completions", _long()).status)) for _ in range(2)]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 30
        while lv.server.inflight < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        r = lv.post("/v1/completions", _long(n=2))
        assert r.status == 429, r.body
        assert int(r.headers["retry-after"]) >= 1 and r.json()["error"]["type"] == "rate_limit_error"
        for t in threads:
            t.join()
        assert results == [200, 200]
        assert lv.post("/v1/completions", _long(n=2)).status == 200  # room again


def test_client_disconnect_cancels_generation(live):
    body = json.dumps({**_long(n=900), "stream": True}).encode()
    s = socket.create_connection(("127.0.0.1", live.port))
    s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
    assert s.recv(4096)  # the stream has started
    before = len(live.server.jobs)
    job = live.server.jobs[-1] if before else None
    s.close()
    assert job is not None
    assert job.wait(20)
    assert job.finish_reason == "cancelled" and len(job.generated) < 900
    # a non-streaming request whose client goes away is cancelled too
    body = json.dumps(_long(n=900)).encode()
    s = socket.create_connection(("127.0.0.1", live.port))
    s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
    deadline = time.monotonic() + 20
    while (len(live.server.jobs) == before or live.server.jobs[-1] is job) and time.monotonic() < deadline:
        time.sleep(0.01)
    job2 = live.server.jobs[-1]
    while len(job2.generated) < 3:
        time.sleep(0.005)
    s.close()
    assert job2.wait(20)
    assert job2.finish_reason == "cancelled" and len(job2.generated) < 900
    assert live.get("/health").status == 200


def test_lru_eviction_and_keep_alive(home):
    with running(home, pool={"max_models": 1, "slots": 1, "seq_ctx": 512}) as lv:
        assert lv.post("/v1/completions", {"model": "tiny", "prompt": "a", "max_tokens": 2}).status == 200
        assert lv.post("/v1/completions", {"model": "demo-chat", "prompt": "a", "max_tokens": 2}).status == 200
        h = lv.get("/health").json()
        assert [m["name"] for m in h["models"]] == ["demo-chat"] and h["evictions"] == ["tiny"]
        # keep_alive 0: unloaded as soon as the request is done
        assert lv.post("/v1/completions", {"model": "demo-chat", "prompt": "a", "max_tokens": 2, "keep_alive": 0}).status == 200
        assert lv.get("/health").json()["models"] == []
        # a short keep_alive: the reaper unloads it when idle
        assert lv.post("/v1/completions", {"model": "tiny", "prompt": "a", "max_tokens": 2, "keep_alive": "300ms"}).status == 200
        deadline = time.monotonic() + 10
        while lv.get("/health").json()["models"] and time.monotonic() < deadline:
            time.sleep(0.1)
        assert lv.get("/health").json()["models"] == []


def test_busy_pool_answers_503_not_evicting_a_busy_model(home):
    with running(home, pool={"max_models": 1, "slots": 1, "seq_ctx": 1024}) as lv:
        t = threading.Thread(target=lambda: lv.post("/v1/completions", _long(n=600)))
        t.start()
        while not lv.server.jobs:
            time.sleep(0.01)
        r = lv.post("/v1/completions", {"model": "demo-chat", "prompt": "a", "max_tokens": 2})
        assert r.status == 503 and "retry-after" in r.headers and r.json()["error"]["code"] == "pool_busy"
        t.join()


def test_memory_budget_refuses_a_model_that_cannot_fit(home):
    with running(home, pool={"memory": 1_000_000, "slots": 1, "seq_ctx": 512}) as lv:
        r = lv.post("/v1/completions", {"model": "demo-chat", "prompt": "a", "max_tokens": 2})
        assert r.status == 500 and "--memory" in r.json()["error"]["message"]


def test_served_requests_are_logged(live, home):
    r = live.post("/v1/chat/completions", chat(content=QUESTION + " (logged)"))
    assert r.status == 200
    entry = logs.read(Paths(home), 1)[0]
    assert entry.origin == "serve" and entry.prompt == QUESTION + " (logged)"
    assert entry.answer == r.json()["choices"][0]["message"]["content"]
    assert entry.model == "demo-chat" and any(lib["name"] == "med-lib" for lib in entry.libraries)
    assert any(c.startswith("[med-lib:") for c in entry.citations) and entry.usage["completion_tokens"] > 0


def test_remote_errors_keep_their_exit_codes(live):
    with pytest.raises(LlmosError) as ei:
        run_remote(live.url, request_json(prompt="x", model="no-such-model"))
    assert ei.value.exit_code == 3 and "no-such-model" in ei.value.message


def test_request_time_limit_gives_408_and_frees_the_slot(home):
    with running(home, timeout=0.5, pool={"slots": 1, "seq_ctx": 1024}) as lv:
        r = lv.post("/v1/completions", _long(n=1000))
        assert r.status == 408 and r.json()["error"]["code"] == "timeout"
        job = lv.server.jobs[-1]
        assert job.finish_reason == "cancelled" and len(job.generated) < 1000
        assert lv.post("/v1/completions", _long(n=2)).status == 200
