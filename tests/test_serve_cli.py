"""The command line of the LLM pool: ``llmos serve``, ``llmos run --server`` / ``LLMOS_SERVER``, ``--no-log``, ``llmos logs``."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from tests.helpers.servekit import demo_home, free_port, llmos, running

QUESTION = "What does Naerviovil treat?"


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    return demo_home(tmp_path_factory.mktemp("servecli"), tiny=False)


@pytest.fixture(scope="module")
def live(home):
    with running(home, pool={"slots": 2, "seq_ctx": 1024}) as lv:
        yield lv


def _data(p):
    assert p.returncode == 0, p.stderr
    env = json.loads(p.stdout)
    assert env["ok"] and env["command"] == "run"
    return env


def test_run_server_prints_the_same_json_and_text(home, live):
    args = ["run", "--temperature", "0", "--json", QUESTION]
    local = _data(llmos(home, *args, check=False))
    remote = _data(llmos(home, *args, "--server", live.url, check=False))
    assert set(local) == set(remote) and local["schema"] == remote["schema"]
    a, b = local["data"], remote["data"]
    assert set(a) == set(b)
    for key in ("text", "finish_reason", "model", "libraries", "usage", "seed", "sampling"):
        assert a[key] == b[key], key
    assert a["extra"]["knowledge"] == b["extra"]["knowledge"]
    # plain text output, and LLMOS_SERVER instead of --server
    t_local = llmos(home, "run", "--temperature", "0", QUESTION, check=False)
    t_remote = llmos(home, "run", "--temperature", "0", QUESTION, check=False, env={"LLMOS_SERVER": live.url})
    assert t_local.returncode == t_remote.returncode == 0
    assert t_local.stdout == t_remote.stdout and "Ferdund fever" in t_remote.stdout
    # --server "" forces in-process even with LLMOS_SERVER set to a dead address
    p = llmos(home, "run", "--temperature", "0", "--server", "", QUESTION, check=False, env={"LLMOS_SERVER": "http://127.0.0.1:1"})
    assert p.returncode == 0 and p.stdout == t_local.stdout


def test_run_server_errors_keep_exit_codes(home, live):
    p = llmos(home, "run", "--model", "no-such", "--server", live.url, "x", check=False)
    assert p.returncode == 3 and "no-such" in p.stderr and "Traceback" not in p.stderr
    p = llmos(home, "run", "--server", "http://127.0.0.1:1", "x", check=False)
    assert p.returncode == 16 and "llmos serve" in p.stderr
    p = llmos(home, "run", "--server", "ftp://x", "x", check=False)
    assert p.returncode == 2


def test_logs_run_no_log_and_off_switch(home):
    before = json.loads(llmos(home, "logs", "-n", "0", "--json").stdout)["data"]["entries"]
    llmos(home, "run", "--temperature", "0", "--max-tokens", "4", "logged prompt one")
    llmos(home, "run", "--temperature", "0", "--max-tokens", "4", "--no-log", "not logged")
    after = json.loads(llmos(home, "logs", "-n", "0", "--json").stdout)["data"]
    assert len(after["entries"]) == len(before) + 1 and after["enabled"] is True
    newest = after["entries"][0]
    assert newest["prompt"] == "logged prompt one" and newest["origin"] == "run" and newest["model"] == "demo-chat"
    assert newest["usage"]["completion_tokens"] <= 4
    human = llmos(home, "logs", "-n", "1")
    assert "logged prompt one" in human.stdout and newest["answer"] in human.stdout
    llmos(home, "logs", "off")
    llmos(home, "run", "--temperature", "0", "--max-tokens", "4", "while off")
    assert len(json.loads(llmos(home, "logs", "-n", "0", "--json").stdout)["data"]["entries"]) == len(before) + 1
    llmos(home, "logs", "on")
    assert json.loads(llmos(home, "logs", "--json").stdout)["data"]["enabled"] is True
    assert llmos(home, "logs", "sideways", check=False).returncode == 2


def test_serve_refuses_other_hosts_without_a_key_and_bad_options(home):
    t = time.perf_counter()
    p = llmos(home, "serve", "--host", "0.0.0.0", "--port", str(free_port()), check=False)
    assert p.returncode == 2 and "--api-key" in p.stderr and time.perf_counter() - t < 30
    assert llmos(home, "serve", "--memory", "lots", check=False).returncode == 2
    assert llmos(home, "serve", "--keep-alive", "soon", check=False).returncode == 2
    assert llmos(home, "serve", "--parallel", "0", check=False).returncode == 2


def test_serve_process_starts_answers_and_stops_on_sigint(home):
    port = free_port()
    env = dict(os.environ, LLMOS_HOME=str(home), NO_COLOR="1")
    proc = subprocess.Popen(
        [sys.executable, "-m", "llmos_cli", "serve", "--port", str(port), "--parallel", "1", "--ctx", "512"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            p = llmos(home, "run", "--server", f"http://127.0.0.1:{port}", "--max-tokens", "2", "--json", "hi", check=False)
            if p.returncode == 0:
                break
            time.sleep(0.3)
        assert p.returncode == 0, p.stderr
    finally:
        proc.send_signal(signal.SIGINT)
        out, errs = proc.communicate(timeout=30)
    assert proc.returncode == 0, errs
    assert b"127.0.0.1" in errs and out == b""
