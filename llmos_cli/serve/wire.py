"""The server's side of ``POST /llmos/v1/run``: JSON to a checked ``RunRequest`` and back.

``request_from_json`` accepts what ``serve.remote.request_json`` sends (and
``request_to_json`` writes it from a ``RunRequest``, for tests and Python
callers).  A wrong type is a ``UsageError`` (HTTP 400), never a crash.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from llmos_cli.app.options import PromptOptions, prompt_options
from llmos_cli.app.run import RunRequest
from llmos_cli.errors import UsageError
from llmos_cli.runtime.engine import SamplingParams
from llmos_cli.serve.remote import PROMPT_OPTION_FIELDS, request_json

_SAMPLING_TYPES: dict[str, Any] = {
    "max_tokens": int,
    "temperature": (int, float),
    "top_p": (int, float),
    "top_k": int,
    "min_p": (int, float),
    "repeat_penalty": (int, float),
    "seed": int,
}


def request_to_json(req: RunRequest) -> dict[str, Any]:
    po = req.prompt_options or PromptOptions()
    return request_json(
        prompt=req.prompt,
        stdin_text=req.stdin_text,
        system=req.system,
        model=req.model,
        libs=req.libs,
        no_libs=req.no_libs,
        sampling=asdict(req.sampling),
        explicit_sampling=req.explicit_sampling,
        route=req.route,
        log=req.log,
        prompt_options={k: getattr(po, k) for k in PROMPT_OPTION_FIELDS},
    )


def _typed(d: dict, key: str, types: Any, default: Any) -> Any:
    v = d.get(key, default)
    if v is None:
        return v
    allowed = types if isinstance(types, tuple) else (types,)
    if not isinstance(v, allowed) or (isinstance(v, bool) and bool not in allowed):
        raise UsageError(f"run request: '{key}' has the wrong type")
    return v


def _option_ok(key: str, default: Any, v: Any) -> bool:
    if key == "knowledge":
        return isinstance(v, str) or (isinstance(v, int) and not isinstance(v, bool))
    if key in ("long", "input_label"):
        return isinstance(v, str)
    if key == "tool_choice":
        return v is None or isinstance(v, str)
    if key == "allow_tool":
        return isinstance(v, list) and all(isinstance(x, str) for x in v)
    if key == "chain_limit":
        return isinstance(v, int) and not isinstance(v, bool)
    return isinstance(default, bool) and isinstance(v, bool)


def request_from_json(d: Any) -> RunRequest:
    if not isinstance(d, dict):
        raise UsageError('run request: the body must be {"request": {...}}')
    sp = SamplingParams()
    s = d.get("sampling") or {}
    if not isinstance(s, dict):
        raise UsageError("run request: 'sampling' must be an object")
    for key, types in _SAMPLING_TYPES.items():
        setattr(sp, key, _typed(s, key, types, getattr(sp, key)))
    stop = s.get("stop", [])
    if not isinstance(stop, list) or not all(isinstance(x, str) for x in stop):
        raise UsageError("run request: 'sampling.stop' must be a list of strings")
    sp.stop = stop
    po_in = d.get("prompt_options") or {}
    if not isinstance(po_in, dict):
        raise UsageError("run request: 'prompt_options' must be an object")
    defaults = PromptOptions()
    given: dict[str, Any] = {}
    for key in PROMPT_OPTION_FIELDS:
        if key in po_in:
            if not _option_ok(key, getattr(defaults, key), po_in[key]):
                raise UsageError(f"run request: 'prompt_options.{key}' has the wrong type")
            given[key] = po_in[key]
    # the same checks as llmos run's flags; the server never asks
    po = prompt_options(
        knowledge=str(given.get("knowledge", defaults.knowledge)),
        explain=given.get("explain", defaults.explain),
        allow_tool=given.get("allow_tool", []),
        allow_tools=given.get("allow_tools", defaults.allow_tools),
        tool_choice=given.get("tool_choice", defaults.tool_choice),
        chain_limit=given.get("chain_limit", defaults.chain_limit),
        no_builtin_tools=not given.get("builtin_tools", defaults.builtin_tools),
        no_refine=not given.get("refine", defaults.refine),
        grounded=given.get("grounded", defaults.grounded),
        long=given.get("long", defaults.long),
        input_label=given.get("input_label", defaults.input_label),
        ask=None,
    )
    libs = d.get("libs")
    if libs is not None and (not isinstance(libs, list) or not all(isinstance(x, str) for x in libs)):
        raise UsageError("run request: 'libs' must be a list of strings")
    explicit = d.get("explicit_sampling", [])
    if not isinstance(explicit, list) or not all(isinstance(x, str) for x in explicit):
        raise UsageError("run request: 'explicit_sampling' must be a list of strings")
    return RunRequest(
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
