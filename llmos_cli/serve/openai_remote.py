"""``llmos run --server URL`` against a server that is not ``llmos serve`` (vLLM, any OpenAI-compatible one).

``remote.run_remote`` posts to ``/llmos/v1/run``; a server without that path
(a 404 that is not an llmos error) is asked through the OpenAI API instead:

* the stack becomes the ``model`` name that ``llmos serve --engine vllm``
  gives it: ``default`` for the attached libraries (the default case),
  ``MODEL+LIB:0.5+LIB2`` for ``--lib``, the bare base (``MODEL``) for
  ``--no-libs``; the base's name comes from ``GET /v1/models`` when ``--model``
  is not given (vLLM lists LoRAs with a ``parent``; the base has none);
* the name must be one the server lists, else ``NotFoundError`` (exit 3)
  naming what it serves;
* the prompt (piped input first, as ``llmos run``) and ``--system`` go as chat
  messages to ``POST /v1/chat/completions`` with ``stream: true``; the text is
  printed as it arrives;
* knowledge, glossary and tool stages do not run there: a warning says so, and
  options that need them (``--grounded``, ``--explain``, tools, ``--route``)
  are refused (exit 2) rather than silently ignored; an input longer than the
  server's context is the server's error (``--long`` does not apply).

Standard library only, like ``remote.py``.
"""

from __future__ import annotations

import http.client
import json
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from llmos_cli.errors import NetworkError, NotFoundError, UsageError
from llmos_cli.progress import NullReporter, Reporter

NO_STAGES = "this server is not llmos serve: no knowledge, glossary or tool stages run there; the adapters alone answer"
#: run options that only llmos serve can honour: (request field, what it is called on the command line)
_NEEDS_LLMOS = (("grounded", "--grounded"), ("explain", "--explain"), ("allow_tools", "--allow-tools"), ("allow_tool", "--allow-tool"))
#: llmos sampling field -> OpenAI/vLLM request field
_SAMPLING = {
    "max_tokens": "max_tokens",
    "temperature": "temperature",
    "top_p": "top_p",
    "seed": "seed",
    "stop": "stop",
    "top_k": "top_k",
    "min_p": "min_p",
    "repeat_penalty": "repetition_penalty",
}


def _scale_name(spec: str) -> tuple[str, float]:
    name, sep, scale = spec.rpartition(":")
    if not sep:
        return spec.strip(), 1.0
    try:
        return name.strip(), float(scale)
    except ValueError:
        raise UsageError(f"--lib {spec}: scale {scale!r} is not a number", "e.g. --lib med-lib:0.5") from None


def served_name(request: dict[str, Any], models: list[dict[str, Any]]) -> tuple[str, list[dict[str, Any]]]:
    """(the OpenAI ``model`` for this run's stack, its libraries with scales)."""
    ids = [str(m.get("id")) for m in models]
    bases = [str(m.get("id")) for m in models if not m.get("parent")]
    model = request.get("model") or None
    libs = [_scale_name(s) for s in request.get("libs") or []]
    base = model or (bases[0] if len(bases) == 1 else None)
    if request.get("no_libs") or libs:
        if base is None:
            raise UsageError(f"the server serves {len(bases)} base models; say which with --model", f"it serves: {', '.join(ids)}")
        name = "+".join([base] + [n if s == 1.0 else f"{n}:{s:g}" for n, s in libs])
    else:
        name = "default" if "default" in ids and (model is None or model in bases) else (model or base or "default")
    if name not in ids:
        raise NotFoundError(
            f"the server has no model {name!r}",
            f"it serves: {', '.join(ids) or 'nothing'}; export the stack (llmos export A+B) and restart it (llmos serve --engine vllm)",
        )
    return name, [{"name": n, "scale": s} for n, s in libs]


def _messages(request: dict[str, Any]) -> list[dict[str, str]]:
    parts = [t.strip("\n") for t in (request.get("stdin_text"), request.get("prompt")) if t and t.strip()]
    if not parts:
        raise UsageError("nothing to ask", 'give a prompt (llmos run "question") or pipe text into llmos run')
    out = [{"role": "system", "content": request["system"]}] if request.get("system") else []
    return out + [{"role": "user", "content": "\n\n".join(parts)}]


def _check_options(request: dict[str, Any], rep: Reporter) -> None:
    opts = request.get("prompt_options") or {}
    for key, flag in _NEEDS_LLMOS:
        if opts.get(key):
            raise UsageError(f"{flag} needs llmos serve; this server only answers OpenAI requests", "run it in-process (--server '') or against llmos serve")
    if opts.get("tool_choice") not in (None, "auto", "none"):
        raise UsageError("--tool-choice needs llmos serve; this server only answers OpenAI requests", "run it in-process (--server '') or against llmos serve")
    if request.get("route"):
        raise UsageError("--route needs llmos serve; this server only answers OpenAI requests", "run it in-process (--server '') or against llmos serve")
    rep.warn(NO_STAGES)


def run_openai(
    url: str,
    request: dict[str, Any],
    *,
    on_text: Callable[[str], None] | None = None,
    reporter: Reporter | None = None,
    api_key: str | None = None,
    timeout: float = 600.0,
) -> tuple[dict[str, Any], list[str]]:
    """Run ``request`` (``remote.request_json``) on an OpenAI-compatible server: (``RunResult``-shaped dict, notes)."""
    rep = reporter or NullReporter()
    _check_options(request, rep)
    parts = urlsplit(url if "://" in url else f"http://{url}")
    host, port = parts.hostname or "127.0.0.1", parts.port or (443 if parts.scheme == "https" else 80)
    conn_cls = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    prefix = parts.path.rstrip("/")
    headers = {"Content-Type": "application/json"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    t0 = time.monotonic()
    conn = conn_cls(host, port, timeout=timeout)
    try:
        conn.request("GET", prefix + "/v1/models", headers=headers)
        resp = conn.getresponse()
        raw = resp.read(10_000_000)
        if resp.status != 200:
            raise NetworkError(f"the server at {url} answered HTTP {resp.status} to /v1/models", "is it an OpenAI-compatible server? (llmos serve, vllm serve)")
        try:
            models = json.loads(raw)["data"]
        except (ValueError, KeyError, TypeError):
            raise NetworkError(f"the server at {url} sent no model list", "is it an OpenAI-compatible server? (llmos serve, vllm serve)") from None
        name, libraries = served_name(request, models if isinstance(models, list) else [])
        sampling = {_SAMPLING[k]: v for k, v in (request.get("sampling") or {}).items() if k in _SAMPLING and v not in (None, [])}
        body = {"model": name, "messages": _messages(request), "stream": True, "stream_options": {"include_usage": True}, **sampling}
        conn.request("POST", prefix + "/v1/chat/completions", body=json.dumps(body).encode(), headers={**headers, "Accept": "text/event-stream"})
        resp = conn.getresponse()
        if resp.status != 200:
            raw = resp.read(1_000_000)
            try:
                message = json.loads(raw)["error"]["message"]
            except (ValueError, KeyError, TypeError):
                message = raw[:200].decode("utf-8", "replace")
            raise NetworkError(f"the server at {url} answered HTTP {resp.status}: {message}")
        text: list[str] = []
        finish, usage = None, None
        for line in resp:
            line = line.strip()
            if not line.startswith(b"data:"):
                continue
            data = line[5:].strip()
            if data == b"[DONE]":
                break
            chunk = json.loads(data)
            if chunk.get("usage"):
                usage = chunk["usage"]
            for choice in chunk.get("choices") or []:
                piece = (choice.get("delta") or {}).get("content")
                if piece:
                    text.append(piece)
                    if on_text is not None:
                        on_text(piece)
                finish = choice.get("finish_reason") or finish
    except (OSError, http.client.HTTPException, ValueError) as exc:
        raise NetworkError(f"cannot run on the server at {url}: {exc}", "start one with llmos serve (or vllm serve), or drop --server / LLMOS_SERVER") from None
    finally:
        conn.close()
    result = {
        "text": "".join(text),
        "finish_reason": finish or "stop",
        "model": {"name": name.split("+")[0], "served_as": name},
        "libraries": libraries,
        "usage": usage or {},
        "timings": {"total_s": round(time.monotonic() - t0, 3)},
        "device": None,
        "seed": (request.get("sampling") or {}).get("seed"),
        "sampling": sampling,
        "extra": {"server": "openai", "served_model": name},
    }
    return result, []
