"""A real ``llmos serve`` on 127.0.0.1 (a random free port) for tests and benchmarks.

``demo_home(root)`` installs the embedded demo registry's packages and a tiny
random model (``tiny``, imported with ``llmos import-model``; it rarely ends
its answers, so it makes long generations) into a fresh LLMOS_HOME.
``running(home, ...)`` starts the server in a thread and yields a ``Live``
with the base URL and small HTTP helpers (stdlib only).
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent.parent


def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def llmos(home: Path, *args: str, check: bool = True, env: dict | None = None) -> subprocess.CompletedProcess:
    e = dict(os.environ, LLMOS_HOME=str(home), LLMOS_EMBEDDED_REGISTRY=str(REPO / "registry"), NO_COLOR="1")
    e.update(env or {})
    p = subprocess.run([sys.executable, "-m", "llmos_cli", *args], capture_output=True, text=True, env=e, stdin=subprocess.DEVNULL, timeout=300)
    if check and p.returncode != 0:
        raise AssertionError(f"llmos {' '.join(args)} failed ({p.returncode}): {p.stderr}")
    return p


def demo_home(root: Path, *, tiny: bool = True) -> Path:
    from tests.helpers.fixtures_models import write_tiny_llama

    home = root / "home"
    llmos(home, "install", "-y", "med-lib", "law-lib", "geo-lib")
    if tiny:
        m = write_tiny_llama(root / "tiny.gguf", n_ctx=2048, n_embd=64)
        llmos(home, "import-model", str(m.path), "--name", "tiny", "--version", "1.0", "-y")
        llmos(home, "default-model", "demo-chat")
    return home


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Live:
    url: str
    port: int
    server: Any  # llmos_cli.serve.http.Server

    def request(self, method: str, path: str, body: Any = None, *, headers: dict | None = None, raw: bytes | None = None, timeout: float = 120) -> Response:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
            h = {"Content-Type": "application/json", **(headers or {})}
            conn.request(method, path, body=data, headers=h)
            r = conn.getresponse()
            return Response(r.status, {k.lower(): v for k, v in r.getheaders()}, r.read())
        finally:
            conn.close()

    def post(self, path: str, body: Any = None, **kw: Any) -> Response:
        return self.request("POST", path, body, **kw)

    def get(self, path: str, **kw: Any) -> Response:
        return self.request("GET", path, **kw)

    def sse(self, path: str, body: Any) -> list[Any]:
        """The ``data:`` events of a streamed answer ("[DONE]" kept as a string)."""
        r = self.post(path, body)
        assert r.status == 200, r.body
        out: list[Any] = []
        for block in r.body.decode().split("\n\n"):
            if block.startswith("data: "):
                payload = block[6:]
                out.append(payload if payload == "[DONE]" else json.loads(payload))
        return out


@contextlib.contextmanager
def running(home: Path, **options: Any) -> Iterator[Live]:
    """``llmos serve`` on a free loopback port; ``options`` go to ServerOptions (``pool=`` PoolOptions fields as a dict)."""
    import uvicorn

    from llmos_cli.paths import Paths
    from llmos_cli.serve.http import Server, ServerOptions
    from llmos_cli.serve.pool import PoolOptions
    from llmos_cli.serve.scheduler import SchedulerOptions

    pool = dict(options.pop("pool", {}))
    sched = pool.pop("scheduler", {})
    pool.setdefault("threads", 2)
    port = free_port()
    srv = Server(ServerOptions(port=port, pool=PoolOptions(**pool, scheduler=SchedulerOptions(**sched)), **options), paths=Paths(home))
    u = uvicorn.Server(uvicorn.Config(srv.app, host="127.0.0.1", port=port, log_level="error", lifespan="off"))
    t = threading.Thread(target=u.run, daemon=True)
    t.start()
    deadline = time.monotonic() + 30
    while not u.started:
        if time.monotonic() > deadline or not t.is_alive():
            raise RuntimeError("the server did not start")
        time.sleep(0.02)
    try:
        yield Live(f"http://127.0.0.1:{port}", port, srv)
    finally:
        u.should_exit = True
        t.join(timeout=15)
        srv.close()
