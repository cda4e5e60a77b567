"""``llmos run --server URL``: the run goes to a server, the output stays the same.

The client sends the ``RunRequest`` as JSON to ``POST /llmos/v1/run``; the
server runs ``app.run.run`` on its pool and streams NDJSON lines back::

    {"type": "text", "text": "..."}            as the answer is generated
    {"type": "warning", "message": "..."}      what the run would warn about locally
    {"type": "result", "result": {...}, "notes": [...]}   RunResult.to_json()
    {"type": "error", "error": {...}}          LlmosError.to_json()

so the CLI prints the same text, warnings and ``--json`` envelope as an
in-process run.  The client uses only the standard library (``http.client``)
to keep the whole process short.  Device, context and thread options are the
server's; the client's are not sent.
"""

from __future__ import annotations

import http.client
import json
import os
from collections.abc import Callable
from dataclasses import asdict
from typing import Any
from urllib.parse import urlsplit

from llmos_cli.app.options import PromptOptions
from llmos_cli.app.run import RunRequest, RunResult
from llmos_cli.errors import ExitCode, LlmosError, NetworkError, UsageError
from llmos_cli.progress import NullReporter, Reporter
from llmos_cli.runtime.engine import SamplingParams

RUN_PATH = "/llmos/v1/run"
PROMPT_OPTION_FIELDS = ("knowledge", "refine", "explain", "tool_choice", "allow_tool", "allow_tools", "chain_limit")


def server_from_env(value: str | None) -> str | None:
    """``--server`` or ``LLMOS_SERVER``; empty means in-process."""
    v = value if value is not None else os.environ.get("LLMOS_SERVER")
    return v.strip() or None if v else None


def request_to_json(req: RunRequest) -> dict[str, Any]:
    po = req.prompt_options or PromptOptions()
    return {
        "prompt": req.prompt,
        "stdin_text": req.stdin_text,
        "system": req.system,
        "model": req.model,
        "libs": req.libs,
        "no_libs": req.no_libs,
        "sampling": asdict(req.sampling),
        "explicit_sampling": sorted(req.explicit_sampling),
        "route": req.route,
        "log": req.log,
        "prompt_options": {k: getattr(po, k) for k in PROMPT_OPTION_FIELDS},
    }


def _typed(d: dict, key: str, types: Any, default: Any) -> Any:
    v = d.get(key, default)
    if v is None:
        return v
    allowed = types if isinstance(types, tuple) else (types,)
    if not isinstance(v, allowed) or (isinstance(v, bool) and bool not in allowed):
        raise UsageError(f"run request: '{key}' has the wrong type")
    return v


def request_from_json(d: Any) -> RunRequest:
    """The server's side: a checked ``RunRequest`` (wrong types are a 400, never a crash)."""
    if not isinstance(d, dict):
        raise UsageError("run request: the body must be a JSON object")
    sp = SamplingParams()
    s = d.get("sampling") or {}
    if not isinstance(s, dict):
        raise UsageError("run request: 'sampling' must be an object")
    for key, types in (
        ("max_tokens", int),
        ("temperature", (int, float)),
        ("top_p", (int, float)),
        ("top_k", int),
        ("min_p", (int, float)),
        ("repeat_penalty", (int, float)),
        ("seed", int),
    ):
        v = _typed(s, key, types, getattr(sp, key))
        setattr(sp, key, v)
    stop = s.get("stop", [])
    if not isinstance(stop, list) or not all(isinstance(x, str) for x in stop):
        raise UsageError("run request: 'sampling.stop' must be a list of strings")
    sp.stop = stop
    po_in = d.get("prompt_options") or {}
    if not isinstance(po_in, dict):
        raise UsageError("run request: 'prompt_options' must be an object")
    po = PromptOptions(ask=None)
    for key in PROMPT_OPTION_FIELDS:
        if key in po_in:
            default = getattr(po, key)
            v = po_in[key]
            ok = (
                (key == "knowledge" and (isinstance(v, str) or (isinstance(v, int) and not isinstance(v, bool))))
                or (key == "tool_choice" and (v is None or isinstance(v, str)))
                or (key == "allow_tool" and isinstance(v, list) and all(isinstance(x, str) for x in v))
                or (isinstance(default, bool) and isinstance(v, bool))
                or (key == "chain_limit" and isinstance(v, int) and not isinstance(v, bool))
            )
            if not ok:
                raise UsageError(f"run request: 'prompt_options.{key}' has the wrong type")
            setattr(po, key, v)
    libs = d.get("libs")
    if libs is not None and (not isinstance(libs, list) or not all(isinstance(x, str) for x in libs)):
        raise UsageError("run request: 'libs' must be a list of strings")
    explicit = d.get("explicit_sampling", [])
    if not isinstance(explicit, list) or not all(isinstance(x, str) for x in explicit):
        raise UsageError("run request: 'explicit_sampling' must be a list of strings")
    req = RunRequest(
        prompt=_typed(d, "prompt", str, None),
        stdin_text=_typed(d, "stdin_text", str, None),
        system=_typed(d, "system", str, None),
        model=_typed(d, "model", str, None),
        libs=libs,
        no_libs=bool(_typed(d, "no_libs", bool, False)),
        sampling=sp,
        explicit_sampling=set(explicit),
        route=bool(_typed(d, "route", bool, False)),
        prompt_options=po,
        log=bool(_typed(d, "log", bool, True)),
        origin="serve",
    )
    return req


def result_from_json(d: dict[str, Any], notes: list[str]) -> RunResult:
    keys = ("text", "finish_reason", "model", "libraries", "usage", "timings", "device", "seed")
    return RunResult(**{k: d[k] for k in keys}, extra=d.get("extra", {}), notes=notes, sampling=d.get("sampling", {}))


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
    req: RunRequest,
    *,
    on_text: Callable[[str], None] | None = None,
    reporter: Reporter | None = None,
    api_key: str | None = None,
    timeout: float = 600.0,
) -> RunResult:
    """Send the run to ``url`` and return its result; errors come back as the same ``LlmosError``."""
    rep = reporter or NullReporter()
    parts = urlsplit(url if "://" in url else f"http://{url}")
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UsageError(f"--server {url!r} is not an http(s) URL", "e.g. --server http://127.0.0.1:8080")
    conn_cls = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    conn = conn_cls(parts.hostname, parts.port or (443 if parts.scheme == "https" else 80), timeout=timeout)
    body = json.dumps({"request": request_to_json(req)}).encode("utf-8")
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
            try:
                err = json.loads(raw)["error"]
            except (ValueError, KeyError, TypeError):
                raise NetworkError(f"the server at {url} answered HTTP {resp.status}", "is it an llmos server? (llmos serve)") from None
            if isinstance(err.get("llmos"), dict):
                raise _RemoteError(err["llmos"])
            retry = resp.getheader("Retry-After")
            raise NetworkError(f"the server at {url} answered HTTP {resp.status}: {err.get('message')}", f"retry after {retry} s" if retry else None)
        result: RunResult | None = None
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
                result = result_from_json(ev["result"], ev.get("notes", []))
            elif kind == "error":
                raise _RemoteError(ev["error"])
        if result is None:
            raise NetworkError(f"the server at {url} closed the connection before the answer was complete")
        return result
    except (OSError, http.client.HTTPException) as exc:
        raise NetworkError(f"cannot reach the llmos server at {url}: {exc}", "start one with llmos serve, or drop --server / LLMOS_SERVER") from None
    finally:
        conn.close()
