"""OpenAI-compatible requests and responses, checked before llama.cpp sees anything.

``parse_chat(body, limits)`` and ``parse_completion(body, limits)`` turn a
request body into a ``Call``: a ``RunRequest`` for ``app.run.run`` plus what
the response needs.  Every field is checked for type and range here; a bad
one raises ``BadRequest`` (HTTP 400 in OpenAI's error shape, naming the
field).  Unknown fields are ignored, as OpenAI clients send many.

The ``model`` field names a stack: ``MODEL`` (the model with its attached
libraries, as ``llmos run --model``), ``MODEL+LIB+LIB:0.5`` (exactly these
libraries at these scales, as ``--lib``), or ``default``.  The extension
field ``libraries: [{"name", "scale"}]`` names the libraries instead
(``[]``: the bare model).

Client tools (``tools``/``tool_choice``) are rendered through the model's
chat template and the reply is parsed for calls in the model's native format
(``tools.formats``); the calls go back to the client as ``tool_calls``
(they are not run on the server).  Library tools run server-side as in
``llmos run`` when the client sends no tools.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from llmos_cli.app.options import PromptOptions
from llmos_cli.app.run import MODEL_PARAMETERS, RunRequest
from llmos_cli.errors import LlmosError, UsageError
from llmos_cli.gbnf import call_grammar
from llmos_cli.runtime.engine import Generation, SamplingParams
from llmos_cli.tools.formats import detect_format, prepare_chat
from llmos_cli.tools.loop import CALL_MIN_TOKENS

ROLES = ("system", "user", "assistant", "tool", "developer")


class BadRequest(UsageError):
    """A request field is missing, of the wrong type or out of range (HTTP 400)."""

    def __init__(self, message: str, param: str | None = None, hint: str | None = None):
        super().__init__(message, hint)
        self.param = param


@dataclass
class Limits:
    max_tokens: int = 2048
    max_messages: int = 256
    max_tools: int = 64
    max_stop: int = 4


@dataclass
class Call:
    kind: str  # "chat" | "completion"
    model: str  # as the client named it (echoed back)
    request: RunRequest
    stream: bool = False
    include_usage: bool = False
    keep_alive: float | None = None
    client_tools: list[dict[str, Any]] | None = None
    tool_choice: Any = None
    raw_prompt: str | None = None  # /v1/completions
    created: int = field(default_factory=lambda: int(time.time()))
    id: str = field(default_factory=lambda: uuid.uuid4().hex[:24])


# ---------------------------------------------------------------- field checks


def _num(body: dict, key: str, lo: float, hi: float, *, integer: bool = False, lo_open: bool = False) -> Any:
    v = body.get(key)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, (int, float)) or (integer and not float(v).is_integer()):
        raise BadRequest(f"'{key}' must be {'an integer' if integer else 'a number'}, not {json.dumps(v)[:40]}", key)
    if not math.isfinite(float(v)) or v > hi or v < lo or (lo_open and v <= lo):
        raise BadRequest(f"'{key}' must be {'>' if lo_open else '>='} {lo} and <= {hi}, not {v}", key)
    return int(v) if integer else float(v)


def _str(body: dict, key: str, *, required: bool = False, max_len: int = 1_000_000) -> str | None:
    v = body.get(key)
    if v is None:
        if required:
            raise BadRequest(f"'{key}' is required", key)
        return None
    if not isinstance(v, str):
        raise BadRequest(f"'{key}' must be a string", key)
    if len(v) > max_len:
        raise BadRequest(f"'{key}' is longer than {max_len} characters", key)
    return v


def parse_keep_alive(v: Any) -> float | None:
    """Ollama's keep_alive: seconds, or a duration such as "5m", "1h", "30s"; negative keeps forever."""
    if v is None:
        return None
    if isinstance(v, bool):
        raise BadRequest("'keep_alive' must be seconds or a duration such as \"5m\"", "keep_alive")
    if isinstance(v, (int, float)):
        if not math.isfinite(float(v)):
            raise BadRequest("'keep_alive' must be finite", "keep_alive")
        return float(v)
    if isinstance(v, str):
        s = v.strip()
        units = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
        for unit in ("ms", "s", "m", "h"):
            if s.endswith(unit):
                try:
                    return float(s[: -len(unit)]) * units[unit]
                except ValueError:
                    break
        try:
            return float(s)
        except ValueError:
            pass
    raise BadRequest(f"'keep_alive' must be seconds or a duration such as \"5m\", not {json.dumps(v)[:40]}", "keep_alive")


def _content(m: dict, i: int) -> str:
    c = m.get("content")
    if c is None:
        return ""
    if isinstance(c, str):
        return c
    if isinstance(c, list):  # [{"type": "text", "text": ...}]
        parts = []
        for part in c:
            if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                raise BadRequest(f"messages[{i}].content: only text parts are supported", f"messages[{i}].content")
            parts.append(part["text"])
        return "".join(parts)
    raise BadRequest(f"messages[{i}].content must be a string or a list of text parts", f"messages[{i}].content")


def _messages(body: dict, limits: Limits) -> list[dict[str, Any]]:
    msgs = body.get("messages")
    if not isinstance(msgs, list) or not msgs:
        raise BadRequest("'messages' must be a non-empty list", "messages")
    if len(msgs) > limits.max_messages:
        raise BadRequest(f"'messages' has more than {limits.max_messages} messages", "messages")
    out: list[dict[str, Any]] = []
    for i, m in enumerate(msgs):
        if not isinstance(m, dict):
            raise BadRequest(f"messages[{i}] must be an object", f"messages[{i}]")
        role = m.get("role")
        if role not in ROLES:
            raise BadRequest(f"messages[{i}].role must be one of {', '.join(ROLES)}", f"messages[{i}].role")
        msg: dict[str, Any] = {"role": "system" if role == "developer" else role, "content": _content(m, i)}
        if role == "assistant" and m.get("tool_calls") is not None:
            msg["tool_calls"] = _assistant_calls(m["tool_calls"], i)
        if role == "tool":
            msg["tool_call_id"] = str(m.get("tool_call_id") or "")
            if isinstance(m.get("name"), str):
                msg["name"] = m["name"]
        out.append(msg)
    if not any(m["role"] == "user" for m in out):
        raise BadRequest("'messages' needs at least one user message", "messages")
    return out


def _assistant_calls(calls: Any, i: int) -> list[dict[str, Any]]:
    if not isinstance(calls, list):
        raise BadRequest(f"messages[{i}].tool_calls must be a list", f"messages[{i}].tool_calls")
    out = []
    for c in calls:
        fn = c.get("function") if isinstance(c, dict) else None
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
            raise BadRequest(f"messages[{i}].tool_calls: each needs function.name", f"messages[{i}].tool_calls")
        args = fn.get("arguments", {})
        if isinstance(args, str):
            try:
                args = json.loads(args) if args.strip() else {}
            except ValueError:
                raise BadRequest(f"messages[{i}].tool_calls: arguments are not JSON", f"messages[{i}].tool_calls") from None
        out.append({"id": str(c.get("id") or ""), "type": "function", "function": {"name": fn["name"], "arguments": args}})
    return out


def _tools(body: dict, limits: Limits) -> list[dict[str, Any]] | None:
    tools = body.get("tools")
    if tools is None:
        return None
    if not isinstance(tools, list) or len(tools) > limits.max_tools:
        raise BadRequest(f"'tools' must be a list of at most {limits.max_tools} tools", "tools")
    out = []
    for i, t in enumerate(tools):
        fn = t.get("function") if isinstance(t, dict) else None
        if not isinstance(t, dict) or t.get("type", "function") != "function" or not isinstance(fn, dict):
            raise BadRequest(f'tools[{i}] must be {{"type": "function", "function": {{...}}}}', f"tools[{i}]")
        name = fn.get("name")
        if not isinstance(name, str) or not name or len(name) > 64 or not all(ch.isalnum() or ch in "_-" for ch in name):
            raise BadRequest(f"tools[{i}].function.name must be 1-64 letters, digits, _ or -", f"tools[{i}].function.name")
        params = fn.get("parameters", {"type": "object", "properties": {}})
        if not isinstance(params, dict):
            raise BadRequest(f"tools[{i}].function.parameters must be a JSON schema object", f"tools[{i}].function.parameters")
        desc = fn.get("description", "")
        out.append({"type": "function", "function": {"name": name, "description": desc if isinstance(desc, str) else "", "parameters": params}})
    return out or None


def _tool_choice(body: dict, tools: list[dict[str, Any]] | None) -> Any:
    tc = body.get("tool_choice")
    if tc is None:
        return "auto" if tools else "none"
    if tc in ("auto", "none", "required"):
        if tc == "required" and not tools:
            raise BadRequest("tool_choice 'required' needs 'tools'", "tool_choice")
        return tc
    if isinstance(tc, dict) and isinstance(tc.get("function"), dict) and isinstance(tc["function"].get("name"), str):
        name = tc["function"]["name"]
        if not tools or name not in {t["function"]["name"] for t in tools}:
            raise BadRequest(f"tool_choice names {name!r}, which is not in 'tools'", "tool_choice")
        return name
    raise BadRequest('\'tool_choice\' must be auto, none, required or {"type": "function", "function": {"name": ...}}', "tool_choice")


def parse_stack(model: str | None, libraries: Any) -> tuple[str | None, list[str] | None, bool]:
    """(model, libs, no_libs) from ``model`` ("m+lib:0.5+lib2") and the ``libraries`` extension."""
    name = (model or "").strip()
    libs: list[str] | None = None
    if "+" in name:
        name, *rest = name.split("+")
        libs = [r.strip() for r in rest]
        if any(not r for r in libs):
            raise BadRequest("'model': an empty library name in the stack", "model", "e.g. demo-chat+med-lib:0.5+law-lib")
    if libraries is not None:
        if libs is not None:
            raise BadRequest("give the libraries either in 'model' (m+lib) or in 'libraries', not both", "libraries")
        if not isinstance(libraries, list):
            raise BadRequest('\'libraries\' must be a list of {"name", "scale"}', "libraries")
        libs = []
        for i, lib in enumerate(libraries):
            if not isinstance(lib, dict) or not isinstance(lib.get("name"), str) or not lib["name"].strip():
                raise BadRequest(f'libraries[{i}] must be {{"name": str, "scale": number}}', f"libraries[{i}]")
            scale = lib.get("scale")
            if scale is None:
                libs.append(lib["name"].strip())
            else:
                if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not math.isfinite(float(scale)):
                    raise BadRequest(f"libraries[{i}].scale must be a finite number", f"libraries[{i}].scale")
                libs.append(f"{lib['name'].strip()}:{float(scale)}")
    model_name = None if name in ("", "default") else name
    return model_name, libs, libs == []


def _sampling(body: dict, limits: Limits) -> tuple[SamplingParams, set[str]]:
    sp = SamplingParams()
    given: set[str] = set()
    mt = body.get("max_completion_tokens", body.get("max_tokens"))
    if mt is not None:
        sp.max_tokens = _num({"max_tokens": mt}, "max_tokens", 1, limits.max_tokens, integer=True)
        given.add("max_tokens")
    for key, lo, hi, integer, attr in (
        ("temperature", 0.0, 2.0, False, "temperature"),
        ("top_p", 0.0, 1.0, False, "top_p"),
        ("top_k", 0, 1_000_000, True, "top_k"),
        ("min_p", 0.0, 1.0, False, "min_p"),
        ("repeat_penalty", 0.0, 10.0, False, "repeat_penalty"),
        ("seed", -(2**63), 2**63 - 1, True, "seed"),
    ):
        v = _num(body, key, lo, hi, integer=integer, lo_open=key == "top_p")
        if v is not None:
            setattr(sp, attr, v)
            given.add(attr)
    stop = body.get("stop")
    if stop is not None:
        stops = [stop] if isinstance(stop, str) else stop
        if not isinstance(stops, list) or len(stops) > limits.max_stop or not all(isinstance(s, str) and 0 < len(s) <= 200 for s in stops):
            raise BadRequest(f"'stop' must be a string or a list of at most {limits.max_stop} non-empty strings", "stop")
        sp.stop = list(stops)
    n = body.get("n")
    if n not in (None, 1):
        raise BadRequest("only n=1 is supported", "n")
    if body.get("logprobs") not in (None, False) or body.get("echo") not in (None, False):
        raise BadRequest("logprobs and echo are not supported", "logprobs")
    return sp, given & set(MODEL_PARAMETERS)


def _common(body: Any, limits: Limits, kind: str) -> tuple[dict, RunRequest, Call]:
    if not isinstance(body, dict):
        raise BadRequest("the request body must be a JSON object")
    model_field = _str(body, "model", max_len=1000)
    model, libs, no_libs = parse_stack(model_field, body.get("libraries"))
    sampling, given = _sampling(body, limits)
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise BadRequest("'stream' must be true or false", "stream")
    so = body.get("stream_options")
    include_usage = bool(isinstance(so, dict) and so.get("include_usage") is True)
    knowledge = body.get("knowledge", "auto")
    if not (knowledge in ("auto", "off") or (isinstance(knowledge, int) and not isinstance(knowledge, bool) and 0 <= knowledge <= 100)):
        raise BadRequest("'knowledge' must be auto, off or a number of chunks (0-100)", "knowledge")
    opts = PromptOptions(knowledge=knowledge, ask=None)
    req = RunRequest(model=model, libs=libs, no_libs=no_libs, sampling=sampling, explicit_sampling=given, prompt_options=opts, origin="serve")
    call = Call(kind, model_field or "default", req, stream=stream, include_usage=include_usage, keep_alive=parse_keep_alive(body.get("keep_alive")))
    return body, req, call


def parse_chat(body: Any, limits: Limits) -> Call:
    body, req, call = _common(body, limits, "chat")
    req.messages = _messages(body, limits)
    tools = _tools(body, limits)
    choice = _tool_choice(body, tools)
    if tools and choice != "none":
        call.client_tools = tools
        call.tool_choice = choice
        req.prompt_options.tool_choice = "none"  # the client's tools replace the libraries' for this request
    elif body.get("tool_choice") == "none":
        req.prompt_options.tool_choice = "none"
    return call


def parse_completion(body: Any, limits: Limits) -> Call:
    body, req, call = _common(body, limits, "completion")
    prompt = body.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
        prompt = prompt[0]
    if not isinstance(prompt, str) or not prompt:
        raise BadRequest("'prompt' must be a non-empty string", "prompt")
    call.raw_prompt = prompt
    req.prompt = prompt
    return call


# ---------------------------------------------------------------- stages for the run pipeline


def raw_completion_stage(prompt: str) -> Callable[[Any], None]:
    """/v1/completions: the prompt as raw text (BOS added as the model wants), no chat template."""

    def stage(ctx: Any) -> None:
        def generate(c: Any, on_text: Callable[[str], None] | None) -> Generation:
            tokens = c.engine.tokenize(prompt)
            c.engine.check_fits(len(tokens))
            return c.engine.generate(tokens, c.request.sampling, on_text=on_text)

        ctx.generate = generate

    return stage


def client_tools_stage(tools: list[dict[str, Any]], choice: Any) -> Callable[[Any], None]:
    """Render the client's tools, generate once, hand parsed calls back (``extra.client_tool_calls``)."""

    def stage(ctx: Any) -> None:
        fmt = detect_format(getattr(ctx.engine, "chat_template", None))

        def generate(c: Any, on_text: Callable[[str], None] | None) -> Generation:
            msgs, ttools = prepare_chat(fmt, c.final_messages(), tools)
            tokens = c.engine.prompt_tokens(msgs, tools=ttools)
            grammar = None
            forced = choice not in ("auto", "required")
            if choice == "required" or forced:
                tokens = tokens + c.engine.tokenize(fmt.prefix, add_bos=False) if fmt.prefix else tokens
            if forced:
                spec = next(t["function"] for t in tools if t["function"]["name"] == choice)
                grammar = call_grammar(spec["name"], spec["parameters"], fmt.args_key)
            c.engine.check_fits(len(tokens))
            params = c.request.sampling
            if grammar is not None and params.max_tokens and 0 < params.max_tokens < CALL_MIN_TOKENS:
                params = dataclasses.replace(params, max_tokens=CALL_MIN_TOKENS)  # as the tool loop gives a forced call
            gen = c.engine.generate(tokens, params, grammar=grammar)
            reply = fmt.prefix + gen.text + fmt.suffix if (forced or choice == "required") else gen.text
            calls = [k for k in fmt.parse(reply) if k.error is None]
            c.extra["client_tool_calls"] = [{"id": f"call_{k.id}", "name": k.name, "arguments": k.arguments} for k in calls]
            text = "" if calls else reply.strip()
            if on_text is not None and text:
                on_text(text)
            return Generation(
                text=text,
                tokens=gen.tokens,
                finish_reason="tool_calls" if calls else gen.finish_reason,
                prompt_tokens=gen.prompt_tokens,
                completion_tokens=gen.completion_tokens,
                prompt_s=gen.prompt_s,
                generate_s=gen.generate_s,
            )

        ctx.generate = generate

    return stage


# ---------------------------------------------------------------- responses


def _llmos_part(result: Any) -> dict[str, Any]:
    extra = result.extra or {}
    return {
        "model": result.model,
        "libraries": result.libraries,
        "citations": [k.get("citation") for k in extra.get("knowledge", []) if isinstance(k, dict)],
        "tool_calls": extra.get("tool_calls", []),
        "timings": result.timings,
    }


def tool_calls_json(result: Any) -> list[dict[str, Any]]:
    return [
        {"id": c["id"], "type": "function", "function": {"name": c["name"], "arguments": json.dumps(c["arguments"], ensure_ascii=False)}}
        for c in (result.extra or {}).get("client_tool_calls", [])
    ]


def finish_reason(result: Any) -> str:
    return "tool_calls" if (result.extra or {}).get("client_tool_calls") else ("length" if result.finish_reason == "length" else "stop")


def chat_response(call: Call, result: Any) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": result.text}
    calls = tool_calls_json(result)
    if calls:
        message["content"] = None
        message["tool_calls"] = calls
    return {
        "id": f"chatcmpl-{call.id}",
        "object": "chat.completion",
        "created": call.created,
        "model": call.model,
        "choices": [{"index": 0, "message": message, "finish_reason": finish_reason(result), "logprobs": None}],
        "usage": dict(result.usage),
        "llmos": _llmos_part(result),
    }


def completion_response(call: Call, result: Any) -> dict[str, Any]:
    return {
        "id": f"cmpl-{call.id}",
        "object": "text_completion",
        "created": call.created,
        "model": call.model,
        "choices": [{"index": 0, "text": result.text, "finish_reason": finish_reason(result), "logprobs": None}],
        "usage": dict(result.usage),
        "llmos": _llmos_part(result),
    }


def chat_chunk(call: Call, delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
    return {
        "id": f"chatcmpl-{call.id}",
        "object": "chat.completion.chunk",
        "created": call.created,
        "model": call.model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}],
    }


def completion_chunk(call: Call, text: str, finish: str | None = None) -> dict[str, Any]:
    return {
        "id": f"cmpl-{call.id}",
        "object": "text_completion",
        "created": call.created,
        "model": call.model,
        "choices": [{"index": 0, "text": text, "finish_reason": finish, "logprobs": None}],
    }


ERROR_STATUS = {
    "usage": 400,
    "not_found": 404,
    "context_overflow": 400,
    "abi_mismatch": 400,
    "invalid_package": 400,
    "tool": 400,
    "unsatisfiable": 400,
    "queue_full": 429,
    "pool_busy": 503,
    "locked": 503,
    "timeout": 408,
    "cancelled": 499,
}


def error_body(
    status: int, message: str, *, type_: str = "invalid_request_error", param: str | None = None, code: str | None = None, llmos: dict | None = None
) -> dict[str, Any]:
    body: dict[str, Any] = {"error": {"message": message, "type": type_, "param": param, "code": code}}
    if llmos is not None:
        body["error"]["llmos"] = llmos
    return body


def error_for(exc: LlmosError) -> tuple[int, dict[str, Any]]:
    status = ERROR_STATUS.get(exc.slug, 500)
    msg = exc.message + (f" ({exc.hint})" if exc.hint else "")
    type_ = "invalid_request_error" if status < 500 else "server_error"
    if status == 429:
        type_ = "rate_limit_error"
    if exc.slug == "context_overflow":
        code = "context_length_exceeded"
    else:
        code = exc.slug
    return status, error_body(status, msg, type_=type_, param=getattr(exc, "param", None), code=code, llmos=exc.to_json())
