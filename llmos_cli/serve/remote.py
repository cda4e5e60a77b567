"""``llmos run --server URL``: the run goes to a server, the output stays the same.

The client sends the ``RunRequest`` as JSON to ``POST /llmos/v1/run``; the
server runs ``app.run.run`` on its pool and streams NDJSON lines back::

    {"type": "text", "text": "..."}            as the answer is generated
    {"type": "warning", "message": "..."}      what the run would warn about locally
    {"type": "result", "result": {...}, "notes": [...]}   RunResult.to_json()
    {"type": "error", "error": {...}}          LlmosError.to_json()

so the CLI prints the same text, warnings and ``--json`` envelope as an
in-process run.  The client uses only the standard library (``http.client``)
to keep the whole process short (it imports neither the run pipeline nor
llama.cpp; ``serve.wire`` is the server's side).  Device, context and thread options are the
server's; the client's are not sent.
"""

from __future__ import annotations

import http.client
import json
import os
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import urlsplit

from llmos_cli.errors import ExitCode, LlmosError, NetworkError, UsageError
from llmos_cli.progress import NullReporter, Reporter
from llmos_cli.serve.openai_remote import run_openai

RUN_PATH = "/llmos/v1/run"
PROMPT_OPTION_FIELDS = (
    "knowledge",
    "refine",
    "grounded",
    "long",
    "input_label",
    "explain",
    "tool_choice",
    "allow_tool",
    "allow_tools",
    "chain_limit",
    "builtin_tools",
)


def server_from_env(value: str | None) -> str | None:
    """``--server`` or ``LLMOS_SERVER``; empty means in-process."""
    v = value if value is not None else os.environ.get("LLMOS_SERVER")
    return v.strip() or None if v else None


def request_json(
    *,
    prompt: str | None = None,
    stdin_text: str | None = None,
    system: str | None = None,
    model: str | None = None,
    libs: list[str] | None = None,
    no_libs: bool = False,
    sampling: dict[str, Any] | None = None,
    explicit_sampling: Iterable[str] = (),
    route: bool = False,
    log: bool = True,
    prompt_options: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The body of ``POST /llmos/v1/run``: a ``RunRequest`` as plain JSON (see ``serve.wire``)."""
    return {
        "prompt": prompt,
        "stdin_text": stdin_text,
        "system": system,
        "model": model,
        "libs": libs,
        "no_libs": no_libs,
        "sampling": dict(sampling or {}),
        "explicit_sampling": sorted(explicit_sampling),
        "route": route,
        "log": log,
        "prompt_options": {k: v for k, v in (prompt_options or {}).items() if k in PROMPT_OPTION_FIELDS},
    }


class RemoteResult:
    """A run's result as the server sent it: ``RunResult``'s attributes and the same ``to_json()``."""

    KEYS = ("text", "finish_reason", "model", "libraries", "usage", "timings", "device", "seed", "sampling", "extra")

    def __init__(self, data: dict[str, Any], notes: list[str], exit_code: int = 0):
        self.data = data
        self.notes = notes
        self.exit_code = exit_code  # a run that answered may still exit non-zero (--grounded abstained)
        for k in self.KEYS:
            setattr(self, k, data.get(k))

    def to_json(self) -> dict[str, Any]:
        return dict(self.data)


class _RemoteError(LlmosError):
    def __init__(self, err: dict[str, Any]):
        super().__init__(str(err.get("message") or "the server reported an error"), err.get("hint"), details=err.get("details"))
        self.slug = str(err.get("code") or "error")
        try:
            self.exit_code = ExitCode(int(err.get("exit_code", 1)))
        except ValueError:
            self.exit_code = ExitCode.FAILURE


def run_remote(
    url: str,
    request: dict[str, Any],
    *,
    on_text: Callable[[str], None] | None = None,
    reporter: Reporter | None = None,
    api_key: str | None = None,
    timeout: float = 600.0,
) -> RemoteResult:
    """Send the run (``request_json(...)``) to ``url``; errors come back as the same ``LlmosError``."""
    rep = reporter or NullReporter()
    parts = urlsplit(url if "://" in url else f"http://{url}")
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UsageError(f"--server {url!r} is not an http(s) URL", "e.g. --server http://127.0.0.1:8080")
    conn_cls = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    conn = conn_cls(parts.hostname, parts.port or (443 if parts.scheme == "https" else 80), timeout=timeout)
    body = json.dumps({"request": request}).encode("utf-8")
    headers = {"Content-Type": "application/json", "Accept": "application/x-ndjson"}
    key = api_key if api_key is not None else os.environ.get("LLMOS_API_KEY")
    if key:
        headers["Authorization"] = f"Bearer {key}"
    base = parts.path.rstrip("/")
    try:
        conn.request("POST", base + RUN_PATH, body=body, headers=headers)
        resp = conn.getresponse()
        if resp.status != 200:
            raw = resp.read(1_000_000)
            if resp.status == 404 and b'"llmos"' not in raw:  # not llmos serve: any OpenAI-compatible server (vLLM)
                conn.close()
                data, notes = run_openai(url, request, on_text=on_text, reporter=rep, api_key=key, timeout=timeout)
                return RemoteResult(data, notes)
            try:
                err = json.loads(raw)["error"]
            except (ValueError, KeyError, TypeError):
                raise NetworkError(f"the server at {url} answered HTTP {resp.status}", "is it an llmos server? (llmos serve)") from None
            if isinstance(err.get("llmos"), dict):
                raise _RemoteError(err["llmos"])
            retry = resp.getheader("Retry-After")
            raise NetworkError(f"the server at {url} answered HTTP {resp.status}: {err.get('message')}", f"retry after {retry} s" if retry else None)
        result: RemoteResult | None = None
        for line in resp:
            if not line.strip():
                continue
            ev = json.loads(line)
            kind = ev.get("type")
            if kind == "text" and on_text is not None:
                on_text(ev["text"])
            elif kind == "warning":
                rep.warn(ev["message"])
            elif kind == "result":
                result = RemoteResult(ev["result"], ev.get("notes", []), int(ev.get("exit_code", 0)))
            elif kind == "error":
                raise _RemoteError(ev["error"])
        if result is None:
            raise NetworkError(f"the server at {url} closed the connection before the answer was complete")
        return result
    except (OSError, http.client.HTTPException) as exc:
        raise NetworkError(f"cannot reach the llmos server at {url}: {exc}", "start one with llmos serve, or drop --server / LLMOS_SERVER") from None
    finally:
        conn.close()
