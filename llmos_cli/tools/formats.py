"""Tool-call syntaxes of the model families, detected from the chat template.

=========  ======================================================  ==============
format     a call as the model writes it                          families
=========  ======================================================  ==============
hermes     ``<tool_call>\\n{"name": .., "arguments": {..}}\\n</tool_call>``  Qwen2.5/3, Hermes 2/3, SmolLM3...
llama3     ``{"name": .., "parameters": {..}}`` (the whole reply)   Llama 3.1/3.2/3.3
mistral    ``[TOOL_CALLS][{"name": .., "arguments": {..}}]``       Mistral, Mixtral, Nemo
generic    like hermes; the tools are described in the system      templates that know no tools
           message by llmos because the template cannot
=========  ======================================================  ==============

Each format knows the text written before a forced call (``prefix``: the
loop puts it at the end of the prompt and the grammar generates only the
JSON object), the text after it (``suffix``), the key holding the arguments,
and how to parse calls out of free text.  Malformed calls are returned with
an ``error`` so the loop can hand the error back to the model, and with the
tool name they began with when it can still be read (``"name": "..."``).
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from typing import Any

_ID_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"


def _call_id() -> str:
    """Nine alphanumeric characters (Mistral's templates insist on exactly that)."""
    return "".join(_ID_CHARS[b % len(_ID_CHARS)] for b in os.urandom(9))


@dataclass
class ParsedCall:
    name: str
    arguments: dict[str, Any]
    raw: str
    error: str | None = None
    id: str = field(default_factory=lambda: _call_id())

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "arguments": self.arguments, "error": self.error}


@dataclass(frozen=True)
class CallFormat:
    name: str
    prefix: str
    suffix: str
    args_key: str
    #: True: llmos describes the tools in the system message itself
    describe_tools: bool = False

    def parse(self, text: str) -> list[ParsedCall]:
        return _PARSERS[self.name](text, self)

    def render_call(self, call: ParsedCall) -> str:
        body = json.dumps({"name": call.name, self.args_key: call.arguments}, ensure_ascii=False)
        return f"{self.prefix}{body}{self.suffix}"


HERMES = CallFormat("hermes", "<tool_call>\n", "\n</tool_call>", "arguments")
LLAMA3 = CallFormat("llama3", "", "", "parameters")
MISTRAL = CallFormat("mistral", "[TOOL_CALLS][", "]", "arguments")
GENERIC = CallFormat("generic", "<tool_call>\n", "\n</tool_call>", "arguments", describe_tools=True)
FORMATS = {f.name: f for f in (HERMES, LLAMA3, MISTRAL, GENERIC)}


def detect_format(template: str | None) -> CallFormat:
    """The call syntax a chat template teaches its model."""
    t = template or ""
    if "[TOOL_CALLS]" in t or "[AVAILABLE_TOOLS]" in t:
        return MISTRAL
    if "<tool_call>" in t:
        return HERMES
    if "<|start_header_id|>" in t and ("ipython" in t or '"parameters"' in t):
        return LLAMA3
    return GENERIC if "tools" not in t else HERMES


GENERIC_INSTRUCTIONS = (
    "You may call one or more functions to assist with the user query.\n"
    "You are provided with function signatures within <tools></tools> XML tags:\n<tools>\n{tools}\n</tools>\n\n"
    "For each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:\n"
    '<tool_call>\n{{"name": <function-name>, "arguments": <args-json-object>}}\n</tool_call>'
)


def describe_tools(tools: list[dict[str, Any]]) -> str:
    """System-message text for templates without tool support (the generic format)."""
    return GENERIC_INSTRUCTIONS.format(tools="\n".join(json.dumps(t, ensure_ascii=False) for t in tools))


# ---------------------------------------------------------------- parsers


def _decode_object(text: str) -> tuple[Any, int]:
    dec = json.JSONDecoder()
    return dec.raw_decode(text)


_NAME_RX = re.compile(r'"name"\s*:\s*"([A-Za-z][A-Za-z0-9_.-]{0,63})"')


def _name_in(text: str) -> str:
    """The tool name a call that is not valid JSON started with ("" when none is readable)."""
    m = _NAME_RX.search(text)
    return m.group(1) if m else ""


def _to_call(obj: Any, raw: str, keys: tuple[str, ...]) -> ParsedCall:
    if not isinstance(obj, dict) or not isinstance(obj.get("name"), str):
        return ParsedCall("", {}, raw, error='a call must be a JSON object with a "name" string')
    args: Any = {}
    for k in keys:
        if k in obj:
            args = obj[k]
            break
    if isinstance(args, str):  # some models write the arguments as a JSON string
        try:
            args = json.loads(args)
        except ValueError:
            return ParsedCall(obj["name"], {}, raw, error="the arguments are not valid JSON")
    if not isinstance(args, dict):
        return ParsedCall(obj["name"], {}, raw, error="the arguments must be a JSON object")
    return ParsedCall(obj["name"], args, raw)


_HERMES_RX = re.compile(r"<tool_call>\s*(.*?)\s*(?:</tool_call>|$)", re.S)


def _parse_hermes(text: str, fmt: CallFormat) -> list[ParsedCall]:
    calls = []
    for m in _HERMES_RX.finditer(text):
        body = m.group(1).strip()
        try:
            obj, _ = _decode_object(body)
        except ValueError as exc:
            calls.append(ParsedCall(_name_in(body), {}, m.group(0), error=f"the call is not valid JSON ({getattr(exc, 'msg', exc)})"))
            continue
        calls.append(_to_call(obj, m.group(0), ("arguments", "parameters")))
    return calls


def _parse_llama3(text: str, fmt: CallFormat) -> list[ParsedCall]:
    body = text.strip()
    if body.startswith("<|python_tag|>"):
        body = body[len("<|python_tag|>") :].strip()
    if not body.startswith("{"):
        return []
    calls = []
    rest = body
    while rest.startswith("{"):
        try:
            obj, end = _decode_object(rest)
        except ValueError as exc:
            if '"name"' in rest[:200]:
                calls.append(ParsedCall(_name_in(rest), {}, rest, error=f"the call is not valid JSON ({getattr(exc, 'msg', exc)})"))
            break
        if not (isinstance(obj, dict) and "name" in obj and ("parameters" in obj or "arguments" in obj)):
            break
        calls.append(_to_call(obj, rest[:end], ("parameters", "arguments")))
        rest = rest[end:].lstrip().lstrip(";").lstrip()
    return calls


def _parse_mistral(text: str, fmt: CallFormat) -> list[ParsedCall]:
    i = text.find("[TOOL_CALLS]")
    if i < 0:
        return []
    body = text[i + len("[TOOL_CALLS]") :].strip()
    try:
        obj, end = _decode_object(body)
    except ValueError as exc:
        return [ParsedCall(_name_in(body), {}, text[i:], error=f"the call list is not valid JSON ({getattr(exc, 'msg', exc)})")]
    raw = "[TOOL_CALLS]" + body[:end]
    items = obj if isinstance(obj, list) else [obj]
    return [_to_call(o, raw, ("arguments", "parameters")) for o in items]


def parse_forced(fmt: CallFormat, body: str) -> list[ParsedCall]:
    """The call a forced round generated under its grammar: ``body`` is the JSON object alone.

    Decoded directly, not searched for in free text: a string argument may
    hold the format's own markers (``</tool_call>``) and still be valid JSON.
    Falls back to the free-text parser when the body is not one JSON object.
    """
    text = body.strip()
    try:
        obj, end = _decode_object(text)
    except ValueError:
        return fmt.parse(fmt.prefix + body + fmt.suffix)
    if text[end:].strip():
        return fmt.parse(fmt.prefix + body + fmt.suffix)
    return [_to_call(obj, fmt.prefix + text + fmt.suffix, (fmt.args_key, "arguments", "parameters"))]


_PARSERS = {"hermes": _parse_hermes, "generic": _parse_hermes, "llama3": _parse_llama3, "mistral": _parse_mistral}


def assistant_message(fmt: CallFormat, calls: list[ParsedCall], content: str = "") -> dict[str, Any]:
    """The assistant turn holding ``calls``, in the shape chat templates expect."""
    msg: dict[str, Any] = {
        "role": "assistant",
        "content": content,
        "tool_calls": [{"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}} for c in calls],
    }
    return msg


def tool_message(call: ParsedCall, content: str) -> dict[str, Any]:
    return {"role": "tool", "tool_call_id": call.id, "name": call.name, "content": content}


def prepare_chat(
    fmt: CallFormat, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None
) -> tuple[list[dict[str, Any]], list[dict[str, Any]] | None]:
    """Messages and ``tools`` argument for the chat template.

    Native formats hand both to the template unchanged (Llama 3 gets a JSON
    object result as an object: its template JSON-encodes what it is given).  The generic format
    (a template that knows no tools) gets the tool list described in its
    system message, assistant calls written out as ``<tool_call>`` text and
    tool results as user turns in ``<tool_response>`` tags.
    """
    if fmt.name == "llama3":
        # its template writes a string result through tojson (quoted twice); hand it the object
        out_l3 = []
        for m in messages:
            if m.get("role") == "tool" and isinstance(m.get("content"), str):
                try:
                    value = json.loads(m["content"])
                except ValueError:
                    value = None
                if isinstance(value, dict):
                    m = {**m, "content": value}
            out_l3.append(m)
        return out_l3, (tools or None)
    if not fmt.describe_tools:
        return messages, (tools or None)
    out: list[dict[str, Any]] = []
    rest = list(messages)
    if tools:
        text = describe_tools(tools)
        if rest and rest[0].get("role") == "system":
            first = rest.pop(0)
            out.append({"role": "system", "content": f"{first.get('content') or ''}\n\n{text}".strip()})
        else:
            out.append({"role": "system", "content": text})
    for m in rest:
        if m.get("role") == "assistant" and m.get("tool_calls"):
            calls = "\n".join(fmt.render_call(ParsedCall(c["function"]["name"], c["function"]["arguments"], "", id=c.get("id", ""))) for c in m["tool_calls"])
            content = m.get("content") or ""
            out.append({"role": "assistant", "content": f"{content}\n{calls}".strip()})
        elif m.get("role") == "tool":
            out.append({"role": "user", "content": f"<tool_response>\n{m.get('content', '')}\n</tool_response>"})
        else:
            out.append(m)
    return out, None
