"""``llmos serve --engine vllm``: the ``vllm serve`` command built from the installed state.

There is no GPU and no vLLM on this machine, so vLLM itself never runs here:
the tests check the exact argv, the PEFT folders it names (their logits are
checked in tests/test_export_peft.py), and the launch path with a stand-in
``vllm`` script that only records what it was given (a fake, because vLLM
needs a GPU).  ``serve_vllm`` is what the ``serve`` command calls for
``--engine vllm``.
"""

from __future__ import annotations

import json
import os
import stat

import pytest

from tests.helpers.trainkit import make_base, random_adapter, require_train_extra, write_library

require_train_extra()


@pytest.fixture(scope="module")
def kit(tmp_path_factory):
    from llmos_cli.app.build import build_package

    root = tmp_path_factory.mktemp("vllm")
    base = make_base(root / "base")
    libs = {}
    for name, rank, seed in (("lib-a", 4, 1), ("lib-b", 2, 2)):
        d = write_library(root, name)
        random_adapter(base, d / "adapter.gguf", rank=rank, targets=["q_proj", "k_proj", "v_proj"], seed=seed)
        libs[name] = build_package(d, root / "dist").path
    libs["docs-lib"] = build_package(write_library(root, "docs-lib", adapter=False), root / "dist").path
    return base, libs


@pytest.fixture
def home(kit, cli):
    base, libs = kit
    assert cli("import-model", str(base.gguf), "--name", "tiny", "--version", "1.0", "-y").exit_code == 0
    r = cli("install", "-y", *(str(p) for p in libs.values()))
    assert r.exit_code == 0, r


def _plan(capsys, **kw):
    from llmos_cli.cli.export import serve_vllm

    capsys.readouterr()
    serve_vllm(print_only=True, json=True, **kw)
    return json.loads(capsys.readouterr().out)["data"]


def test_exact_command_for_the_installed_state(home, cli, llmos_home):
    import shlex

    ex = llmos_home / "exports" / "tiny"
    r = cli("serve", "--engine", "vllm", "--print")
    assert r.exit_code == 0, r
    assert "docs-lib left out: no adapter" in r.stderr
    data = {"argv": shlex.split(r.stdout)}
    assert data["argv"] == [
        "vllm", "serve", str(ex / "hf"),
        "--served-model-name", "tiny", "--host", "127.0.0.1", "--port", "8080",
        "--enable-lora", "--max-lora-rank", "8", "--max-loras", "3",
        "--lora-modules",
        f"default={ex / 'tiny+lib-a+lib-b'}",
        f"tiny+lib-a={ex / 'tiny+lib-a'}",
        f"tiny+lib-a+lib-b={ex / 'tiny+lib-a+lib-b'}",
        f"tiny+lib-b={ex / 'tiny+lib-b'}",
    ]  # fmt: skip
    for module in data["argv"][data["argv"].index("--lora-modules") + 1 :]:
        cfg = json.loads((llmos_home / module.split("=", 1)[1] / "adapter_config.json").read_text())
        assert cfg["base_model_name_or_path"] == str(ex / "hf") and cfg["r"] <= 8, module
    assert json.loads((ex / "tiny+lib-a+lib-b" / "adapter_config.json").read_text())["r"] == 6


def test_scales_detach_earlier_stacks_and_options(home, cli, capsys, llmos_home):
    ex = llmos_home / "exports" / "tiny"
    assert cli("attach", "lib-b", "--scale", "0.5").exit_code == 0
    assert cli("export", "lib-a:2+lib-b:0.25", "--base-model", "org/tiny-hf").exit_code == 0  # an earlier exported stack is served too
    data = _plan(capsys, host="0.0.0.0", api_key="k", port=9000, max_loras=1, base_model="org/tiny-hf", vllm_args=["--tensor-parallel-size", "2"])
    assert data["argv"][:13] == ["vllm", "serve", "org/tiny-hf", "--served-model-name", "tiny", "--host", "0.0.0.0", "--port", "9000",
                                 "--enable-lora", "--max-lora-rank", "8", "--max-loras"]  # fmt: skip
    assert data["argv"][13] == "1" and data["argv"][-2:] == ["--tensor-parallel-size", "2"]
    assert sorted(data["lora_modules"]) == ["default", "tiny+lib-a", "tiny+lib-a+lib-b:0.5", "tiny+lib-a:2+lib-b:0.25", "tiny+lib-b:0.5"]
    assert data["lora_modules"]["default"] == data["lora_modules"]["tiny+lib-a+lib-b:0.5"]
    assert not (ex / "hf").exists()  # the base was named: nothing converted
    assert cli("detach", "lib-b").exit_code == 0
    data = _plan(capsys, base_model="org/tiny-hf")
    assert [e["stack"] for e in data["exports"]] == ["tiny+lib-a", "tiny+lib-b:0.5"]  # lib-a alone is the attached stack now
    assert "tiny+lib-a+lib-b:0.5" in data["lora_modules"]  # still served: exported before, sources unchanged
    assert data["lora_modules"]["default"] == data["lora_modules"]["tiny+lib-a"]
    data = _plan(capsys)  # another base: earlier stacks that name the old one are left out, singles written again
    assert sorted(data["lora_modules"]) == ["default", "tiny+lib-a", "tiny+lib-b:0.5"] and data["base_model"] == str(ex / "hf")
    assert sum("exported for base org/tiny-hf" in n for n in data["notes"]) == 2


def test_launch_without_vllm_is_one_line_exit_3(home, capsys, monkeypatch, tmp_path):
    import typer

    from llmos_cli.cli.export import serve_vllm

    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(typer.Exit) as ei:
        serve_vllm()
    assert ei.value.exit_code == 3
    err = capsys.readouterr().err
    assert "'vllm' is not installed" in err and "--print" in err and "Traceback" not in err
    # --print works all the same
    assert serve_vllm(print_only=True).argv[:2] == ["vllm", "serve"]


def test_launch_runs_vllm_with_the_key_in_its_environment(home, capsys, monkeypatch, tmp_path):
    """A stand-in ``vllm`` (vLLM needs a GPU) records its argv and VLLM_API_KEY, then exits 0."""
    from llmos_cli.cli.export import serve_vllm

    rec = tmp_path / "rec.json"
    fake = tmp_path / "bin" / "vllm"
    fake.parent.mkdir()
    fake.write_text(
        f'#!/bin/sh\nexec {os.sys.executable} -c \'import json,os,sys; json.dump([sys.argv[1:], os.environ.get("VLLM_API_KEY")], open("{rec}", "w"))\' "$@"\n'
    )
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{fake.parent}{os.pathsep}{os.environ['PATH']}")
    plan = serve_vllm(api_key="s3cret")
    argv, key = json.loads(rec.read_text())
    assert argv == plan.argv[1:] and key == "s3cret" and "s3cret" not in argv
    assert plan.launched and plan.exit_code == 0


def test_bad_serve_options_are_one_line_errors(home, cli, llmos_home):
    cases = [
        (["--engine", "tgi"], 2, "choose llmos or vllm"),
        (["--print"], 2, "--print goes with --engine vllm"),
        (["--engine", "vllm", "--print", "--host", "0.0.0.0"], 2, "without an API key"),
        (["--engine", "vllm", "--print", "--model", "nope"], 3, "not installed"),
        (["--engine", "vllm", "--print", "--max-loras", "0"], 2, "--max-loras"),
    ]
    for args, code, words in cases:
        r = cli("serve", *args)
        assert r.exit_code == code, (args, r)
        assert words in r.stderr and "Traceback" not in r.stderr and r.stdout == "", (args, r.stderr)
    assert not (llmos_home / "exports").exists()


class _FakeVllm:
    """A stand-in for vLLM's OpenAI server on 127.0.0.1 (vLLM needs a GPU): the routes ``llmos run --server`` uses.

    ``/llmos/v1/run`` is a 404 in FastAPI's shape, as on vLLM; ``/v1/models``
    lists the base without ``parent`` and the LoRAs with it; chat completions
    stream two pieces, a usage chunk and ``[DONE]``.  Every request is recorded.
    """

    def __init__(self, ids):
        import http.server
        import threading

        seen = self.seen = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def _send(self, code, body, ctype="application/json"):
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self):
                seen.append(("GET", self.path, None))
                data = [{"id": i, "object": "model", "parent": None if "+" not in i and i != "default" else ids[0]} for i in ids]
                self._send(200, json.dumps({"object": "list", "data": data}).encode())

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                seen.append(("POST", self.path, body))
                if self.path != "/v1/chat/completions":
                    return self._send(404, b'{"detail":"Not Found"}')
                chunks = [
                    {"choices": [{"index": 0, "delta": {"role": "assistant", "content": "Hello"}, "finish_reason": None}]},
                    {"choices": [{"index": 0, "delta": {"content": " world"}, "finish_reason": "stop"}]},
                    {"choices": [], "usage": {"prompt_tokens": 7, "completion_tokens": 2, "total_tokens": 9}},
                ]
                sse = "".join(f"data: {json.dumps(c)}\n\n" for c in chunks) + "data: [DONE]\n\n"
                self._send(200, sse.encode(), "text/event-stream")

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def test_run_server_against_an_openai_server(cli):
    """``llmos run --server`` falls back to the OpenAI API where /llmos/v1/run is missing (vLLM), naming stacks as serve --engine vllm does."""
    fake = _FakeVllm(["tiny", "default", "tiny+lib-a", "tiny+lib-a:0.5+lib-b"])
    try:
        r = cli("run", "--server", fake.url, "-t", "0", "--max-tokens", "5", "--system", "Be brief.", "Say hello")
        assert r.exit_code == 0, r
        assert r.stdout.startswith("Hello world") and "no knowledge, glossary or tool stages" in r.stderr
        post = [b for m, p, b in fake.seen if p == "/v1/chat/completions"][-1]
        assert post["model"] == "default" and post["temperature"] == 0 and post["max_tokens"] == 5 and post["stream"] is True
        assert post["messages"] == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Say hello"}]
        for args, want in ((["--lib", "lib-a"], "tiny+lib-a"), (["--lib", "lib-a:0.5", "--lib", "lib-b:1"], "tiny+lib-a:0.5+lib-b"), (["--no-libs"], "tiny")):
            r = cli("run", "--server", fake.url, *args, "--json", "hi")
            assert r.exit_code == 0, (args, r)
            data = json.loads(r.stdout)["data"]
            assert data["text"] == "Hello world" and data["extra"]["served_model"] == want and data["usage"]["total_tokens"] == 9
            assert [b for m, p, b in fake.seen if p == "/v1/chat/completions"][-1]["model"] == want
        n = len(fake.seen)
        for args, code, words in ((["--lib", "lib-b"], 3, "no model 'tiny+lib-b'"), (["--grounded"], 2, "--grounded needs llmos serve")):
            r = cli("run", "--server", fake.url, *args, "hi")
            assert r.exit_code == code and words in r.stderr and "Traceback" not in r.stderr, (args, r)
        assert not [b for m, p, b in fake.seen[n:] if p == "/v1/chat/completions"]  # refused before generating
    finally:
        fake.close()
