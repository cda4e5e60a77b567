"""GBNF grammars from tool JSON schemas, validated before llama.cpp sees them.

``call_grammar(tool_name, schema, args_key)`` gives a grammar for exactly one
call object ``{"name": "<tool_name>", "<args_key>": {...}}`` whose arguments
follow the schema.  The call-format markers (``<tool_call>``,
``[TOOL_CALLS][``...) are not in the grammar: the tool loop writes them into
the prompt before generation and after it (see ``formats``), which keeps
grammars independent of how a vocabulary splits those markers.

Supported JSON-schema subset: ``type`` (one or a list), ``properties``,
``required``, ``additionalProperties`` (extra keys are never generated),
``items``, ``minItems``/``maxItems``, ``enum``, ``const``, ``anyOf``/``oneOf``,
a one-element ``allOf``, local ``$ref`` to ``$defs``/``definitions``, string
``minLength``/``maxLength`` (a string without ``maxLength`` is capped at
``DEFAULT_MAX_STRING`` characters, so an unclosed string ends) and
``format`` date/time/date-time/uuid, integer
and number (integer ranges up to 1000 values and numbers within [0, 1] are
exact; otherwise the sign is left out when ``minimum >= 0`` and the digits are
bounded by ``maximum``).  Bounds the grammar only approximates (wide numeric
ranges, ``multipleOf``, ``uniqueItems``, long strings) are checked again with
``jsonschema`` after parsing, and a call that fails goes back to the model
as an error result.  Anything else (``pattern``, ``not``,
``if``/``then``, ``patternProperties``, ...) raises ``SchemaNotExpressible``
before any generation: a grammar that silently ignored them would let
invalid calls through, and a malformed grammar crashes llama-cpp-python.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from llmos_cli.errors import ToolError

_ANNOTATIONS = {
    "title",
    "description",
    "default",
    "examples",
    "$schema",
    "$comment",
    "$id",
    "deprecated",
    "readOnly",
    "writeOnly",
    "$defs",
    "definitions",
}
#: checked again with jsonschema after the call is parsed
_POST_CHECKED = {
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "exclusiveMaximum",
    "multipleOf",
    "uniqueItems",
    "minProperties",
    "maxProperties",
    "minLength",
    "maxLength",
    "minItems",
    "maxItems",
}
_STRUCTURAL = {
    "type",
    "properties",
    "required",
    "additionalProperties",
    "items",
    "enum",
    "const",
    "anyOf",
    "oneOf",
    "allOf",
    "$ref",
    "format",
}
_FORMATS = {
    "date": r'"\"" [0-9]{4} "-" [0-1] [0-9] "-" [0-3] [0-9] "\""',
    "time": r'"\"" [0-2] [0-9] ":" [0-5] [0-9] ":" [0-5] [0-9] ( "." [0-9]{1,6} )? ( "Z" | [+-] [0-2] [0-9] ":" [0-5] [0-9] )? "\""',
    "date-time": r'"\"" [0-9]{4} "-" [0-1] [0-9] "-" [0-3] [0-9] "T" [0-2] [0-9] ":" [0-5] [0-9] ":" [0-5] [0-9] ( "." [0-9]{1,6} )? ( "Z" | [+-] [0-2] [0-9] ":" [0-5] [0-9] ) "\""',
    "uuid": r'"\"" [0-9a-f]{8} "-" [0-9a-f]{4} "-" [0-9a-f]{4} "-" [0-9a-f]{4} "-" [0-9a-f]{12} "\""',
}
#: explicit repetition bounds above this become ``*`` (and are checked after parsing)
MAX_EXPLICIT_REPEAT = 256
#: integer ranges up to this span are written out exactly as alternatives
MAX_INT_ALTERNATIVES = 1000
MAX_RULES = 2000
#: a string without maxLength is capped at this many characters in a call grammar, so an
#: unclosed string cannot run to the token cap (jsonschema still sees the schema as written)
DEFAULT_MAX_STRING = 256

_PRIMITIVES = {
    "ws": '" "?',
    "char": r'[^"\\\x7F\x00-\x1F] | "\\" ( ["\\/bfnrt] | "u" [0-9a-fA-F]{4} )',
    "string": r'"\"" char{0,256} "\""',  # DEFAULT_MAX_STRING
    "integer": r'"-"? ( "0" | [1-9] [0-9]{0,15} )',
    "number": r'"-"? ( "0" | [1-9] [0-9]{0,15} ) ( "." [0-9]{1,15} )? ( [eE] [-+]? [0-9]{1,3} )?',
    "boolean": '"true" | "false"',
    "null": '"null"',
    "value": "object | array | string | number | boolean | null",
    "object": '"{" ws ( string ":" ws value ( "," ws string ":" ws value )* )? ws "}"',
    "array": '"[" ws ( value ( "," ws value )* )? ws "]"',
}
_PRIMITIVE_DEPS = {
    "string": ["char"],
    "value": ["object", "array", "string", "number", "boolean", "null"],
    "object": ["ws", "string", "value"],
    "array": ["ws", "value"],
}


class SchemaNotExpressible(ToolError):
    """A tool's parameter schema uses something the grammar builder cannot express."""


def gbnf_literal(text: str) -> str:
    """A GBNF string literal matching ``text`` exactly."""
    out = []
    for ch in text:
        if ch == '"':
            out.append('\\"')
        elif ch == "\\":
            out.append("\\\\")
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\r":
            out.append("\\r")
        elif ch == "\t":
            out.append("\\t")
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\x{ord(ch):02X}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def _json_literal(value: Any) -> str:
    return gbnf_literal(json.dumps(value, ensure_ascii=False, separators=(", ", ": ")))


def _digits_bound(maximum: Any) -> int:
    try:
        return max(1, min(16, len(str(abs(int(maximum))))))
    except (TypeError, ValueError, OverflowError):
        return 16


class _Builder:
    def __init__(self, tool: str, root_schema: dict[str, Any]):
        self.tool = tool
        self.root_schema = root_schema
        self.rules: dict[str, str] = {}
        self.by_body: dict[str, str] = {}
        self.refs: dict[str, str] = {}

    def fail(self, path: str, message: str) -> SchemaNotExpressible:
        return SchemaNotExpressible(
            f"tool {self.tool!r}: cannot build a grammar for its parameters: {path}: {message}",
            "simplify the tool's JSON schema (see the supported subset in docs/architecture.md, 'How a prompt flows'), or call it with --tool-choice auto",
        )

    def primitive(self, name: str) -> str:
        if name not in self.rules:
            self.rules[name] = _PRIMITIVES[name]
            for dep in _PRIMITIVE_DEPS.get(name, []):
                self.primitive(dep)
        return name

    def add(self, hint: str, body: str) -> str:
        if body in self.by_body:
            return self.by_body[body]
        base = re.sub(r"[^a-zA-Z0-9-]+", "-", hint).strip("-").lower() or "r"
        name = base
        i = 1
        while name in self.rules or name in _PRIMITIVES:
            i += 1
            name = f"{base}-{i}"
        if len(self.rules) >= MAX_RULES:
            raise self.fail("parameters", "schema too large")
        self.rules[name] = body
        self.by_body[body] = name
        return name

    def resolve_ref(self, ref: str, path: str) -> tuple[str, dict[str, Any]]:
        m = re.fullmatch(r"#/(\$defs|definitions)/([^/]+)", ref)
        if not m:
            raise self.fail(path, f"only local $ref to #/$defs/... is supported, not {ref!r}")
        target = (self.root_schema.get(m.group(1)) or {}).get(m.group(2))
        if not isinstance(target, dict):
            raise self.fail(path, f"$ref {ref!r} points nowhere")
        return m.group(2), target

    def visit(self, schema: Any, path: str, hint: str) -> str:
        """A GBNF expression (usually a rule name) for values matching ``schema``."""
        if schema is True or schema == {}:
            return self.primitive("value")
        if not isinstance(schema, dict):
            raise self.fail(path, "a schema must be an object")
        unknown = sorted(set(schema) - _ANNOTATIONS - _POST_CHECKED - _STRUCTURAL)
        if unknown:
            raise self.fail(path, f"{unknown[0]!r} is not supported")
        if "$ref" in schema:
            ref = schema["$ref"]
            if ref in self.refs:
                return self.refs[ref]
            name, target = self.resolve_ref(ref, path)
            rule = self.add(f"def-{name}", "__pending__")
            self.by_body.pop("__pending__", None)
            self.refs[ref] = rule
            self.rules[rule] = self.visit(target, f"{path}.$ref", f"def-{name}")
            return rule
        if "const" in schema:
            return self.add(f"{hint}-const", _json_literal(schema["const"]))
        if "enum" in schema:
            values = schema["enum"]
            if not isinstance(values, list) or not values:
                raise self.fail(path, "enum must be a non-empty list")
            return self.add(f"{hint}-enum", " | ".join(_json_literal(v) for v in values))
        for key in ("anyOf", "oneOf"):
            if key in schema:
                subs = schema[key]
                if not isinstance(subs, list) or not subs:
                    raise self.fail(path, f"{key} must be a non-empty list")
                rest = {k: v for k, v in schema.items() if k not in (key, *_ANNOTATIONS)}
                alts = [self.visit({**rest, **s} if isinstance(s, dict) else s, f"{path}.{key}[{i}]", f"{hint}-{i}") for i, s in enumerate(subs)]
                return self.add(f"{hint}-alt", " | ".join(alts))
        if "allOf" in schema:
            subs = schema["allOf"]
            if not isinstance(subs, list) or len(subs) != 1:
                raise self.fail(path, "allOf with more than one schema is not supported")
            rest = {k: v for k, v in schema.items() if k != "allOf"}
            return self.visit({**rest, **subs[0]}, f"{path}.allOf[0]", hint)
        t = schema.get("type")
        if isinstance(t, list):
            if not t:
                raise self.fail(path, "type must not be an empty list")
            alts = [self.visit({**schema, "type": one}, path, f"{hint}-{one}") for one in t]
            return self.add(f"{hint}-types", " | ".join(alts))
        if t is None:
            if "properties" in schema:
                t = "object"
            elif "items" in schema:
                t = "array"
            else:
                return self.primitive("value")
        if "format" in schema and t != "string":
            raise self.fail(path, "format is only supported on strings")
        if t == "object":
            return self.object(schema, path, hint)
        if t == "array":
            return self.array(schema, path, hint)
        if t == "string":
            return self.string(schema, path, hint)
        if t in ("integer", "number"):
            return self.numeric(schema, t, hint)
        if t == "boolean":
            return self.primitive("boolean")
        if t == "null":
            return self.primitive("null")
        raise self.fail(path, f"unknown type {t!r}")

    def string(self, schema: dict[str, Any], path: str, hint: str) -> str:
        fmt = schema.get("format")
        if fmt is not None:
            if fmt not in _FORMATS:
                raise self.fail(path, f"string format {fmt!r} is not supported (supported: {', '.join(sorted(_FORMATS))})")
            return self.add(f"{hint}-{fmt}", _FORMATS[fmt])
        lo = schema.get("minLength", 0)
        hi = schema.get("maxLength")
        if not isinstance(lo, int) or lo < 0 or (hi is not None and (not isinstance(hi, int) or hi < lo)):
            raise self.fail(path, "minLength/maxLength must be non-negative integers with minLength <= maxLength")
        if lo == 0 and hi is None:
            return self.primitive("string")  # capped at DEFAULT_MAX_STRING characters
        self.primitive("char")
        if hi is None:
            hi = max(lo, DEFAULT_MAX_STRING)  # no maxLength: capped, never unbounded
        if hi <= MAX_EXPLICIT_REPEAT:
            rep = f"char{{{lo},{hi}}}"
        elif lo <= MAX_EXPLICIT_REPEAT:
            rep = f"char{{{lo},}}"
        else:
            rep = "char*"
        return self.add(f"{hint}-str", f'"\\"" {rep} "\\""')

    def numeric(self, schema: dict[str, Any], t: str, hint: str) -> str:
        def num(key: str) -> float | int | None:
            v = schema.get(key)
            return v if isinstance(v, (int, float)) and not isinstance(v, bool) else None

        lo = num("minimum")
        hi = num("maximum")
        xlo = num("exclusiveMinimum")
        xhi = num("exclusiveMaximum")
        if t == "integer":
            a = lo if lo is not None else (math.floor(xlo) + 1 if xlo is not None else None)
            b = hi if hi is not None else (math.ceil(xhi) - 1 if xhi is not None else None)
            if a is not None and b is not None and 0 <= b - a <= MAX_INT_ALTERNATIVES:
                a, b = math.ceil(a), math.floor(b)
                if a > b:
                    raise self.fail(hint, "integer range is empty")
                values = sorted(range(a, b + 1), key=lambda v: (-len(str(v)), v))
                return self.add(f"{hint}-int", " | ".join(gbnf_literal(str(v)) for v in values))
        else:
            a = lo if lo is not None else xlo
            b = hi if hi is not None else xhi
            if a is not None and b is not None and 0 <= a and b <= 1:
                frac = '( "." [0-9]{1,15} )?'
                return self.add(f"{hint}-unit", f'"0" {frac} | "1" ( "." "0"{{1,15}} )?')
        low = lo if lo is not None else xlo
        high = hi if hi is not None else xhi
        nonneg = low is not None and low >= 0
        nonpos = high is not None and high <= 0
        width = 16
        if low is not None and high is not None:
            width = max(_digits_bound(high), _digits_bound(low))
        elif nonneg and high is not None:
            width = _digits_bound(high)
        sign = "" if nonneg else ('"-" ' if nonpos else '"-"? ')
        ints = f'( "0" | [1-9] [0-9]{{0,{width - 1}}} )' if width > 1 else "[0-9]"
        if low is None and high is None:
            return self.primitive("integer" if t == "integer" else "number")
        if t == "integer":
            return self.add(f"{hint}-int", f"{sign}{ints}")
        return self.add(f"{hint}-num", f'{sign}{ints} ( "." [0-9]{{1,15}} )?')

    def array(self, schema: dict[str, Any], path: str, hint: str) -> str:
        items = schema.get("items", {})
        if isinstance(items, list):
            raise self.fail(path, "tuple-style items lists are not supported")
        item = self.visit(items, f"{path}.items", f"{hint}-item")
        ws = self.primitive("ws")
        lo = schema.get("minItems", 0)
        hi = schema.get("maxItems")
        if not isinstance(lo, int) or lo < 0 or (hi is not None and (not isinstance(hi, int) or hi < lo)):
            raise self.fail(path, "minItems/maxItems must be non-negative integers with minItems <= maxItems")
        more = f'"," {ws} {item}'
        if hi == 0:
            body = f'"[" {ws} "]"'
        elif hi is not None and hi <= MAX_EXPLICIT_REPEAT:
            inner = f"{item} ( {more} ){{{max(lo - 1, 0)},{hi - 1}}}"
            body = f'"[" {ws} {inner} {ws} "]"' if lo >= 1 else f'"[" {ws} ( {inner} )? {ws} "]"'
        elif lo >= 1 and lo <= MAX_EXPLICIT_REPEAT:
            body = f'"[" {ws} {item} ( {more} ){{{lo - 1},}} {ws} "]"'
        else:
            body = f'"[" {ws} ( {item} ( {more} )* )? {ws} "]"'
        return self.add(f"{hint}-arr", body)

    def object(self, schema: dict[str, Any], path: str, hint: str) -> str:
        props = schema.get("properties", {}) or {}
        if not isinstance(props, dict):
            raise self.fail(path, "properties must be an object")
        required = schema.get("required", []) or []
        if not isinstance(required, list) or any(r not in props for r in required):
            missing = [r for r in required if r not in props] if isinstance(required, list) else required
            raise self.fail(path, f"required names properties that are not declared: {missing!r}")
        ap = schema.get("additionalProperties", None)
        if not props and ap not in (None, False) and not required:
            # a free-form object
            return self.primitive("object")
        ws = self.primitive("ws")
        kv: dict[str, str] = {}
        for name, sub in props.items():
            val = self.visit(sub, f"{path}.properties.{name}", f"{hint}-{name}")
            kv[name] = self.add(f"{hint}-{name}-kv", f'{gbnf_literal(json.dumps(name, ensure_ascii=False))} {ws} ":" {ws} {val}')
        req = [n for n in props if n in required]
        opt = [n for n in props if n not in required]
        if req:
            seq = f' "," {ws} '.join(kv[n] for n in req)
            seq += "".join(f' ( "," {ws} {kv[n]} )?' for n in opt)
            body = f'"{{" {ws} {seq} {ws} "}}"'
        elif opt:
            # any subset of the optional properties, in declaration order
            chains = []
            for i, n in enumerate(opt):
                chains.append(kv[n] + "".join(f' ( "," {ws} {kv[m]} )?' for m in opt[i + 1 :]))
            body = f'"{{" {ws} ( {" | ".join(chains)} )? {ws} "}}"'
        else:
            body = f'"{{" {ws} "}}"'
        return self.add(f"{hint}-obj", body)

    def text(self, root_body: str) -> str:
        lines = [f"root ::= {root_body}"]
        lines += [f"{name} ::= {body}" for name, body in self.rules.items()]
        return "\n".join(lines) + "\n"


def check_schema(tool: str, schema: Any) -> None:
    """Is ``schema`` a valid JSON schema (draft 2020-12) for an object of arguments?"""
    import jsonschema

    if not isinstance(schema, dict):
        raise SchemaNotExpressible(f"tool {tool!r}: parameters must be a JSON-schema object")
    if schema.get("type", "object") != "object":
        raise SchemaNotExpressible(f"tool {tool!r}: parameters must describe an object (type: object), not {schema.get('type')!r}")
    try:
        jsonschema.Draft202012Validator.check_schema(schema)
    except jsonschema.SchemaError as exc:
        raise SchemaNotExpressible(f"tool {tool!r}: parameters is not a valid JSON schema: {exc.message}") from None


def arguments_grammar(tool: str, schema: dict[str, Any]) -> str:
    """Grammar whose root is just the arguments object."""
    check_schema(tool, schema)
    b = _Builder(tool, schema)
    args = b.visit({**schema, "type": "object"}, "parameters", "args")
    return b.text(args)


def call_grammar(tool: str, schema: dict[str, Any], args_key: str = "arguments") -> str:
    """Grammar for one call object ``{"name": tool, args_key: {...}}``."""
    check_schema(tool, schema)
    b = _Builder(tool, schema)
    args = b.visit({**schema, "type": "object"}, "parameters", "args")
    ws = b.primitive("ws")
    name_lit = gbnf_literal(json.dumps(tool, ensure_ascii=False))
    root = f'"{{" {ws} "\\"name\\"" ":" {ws} {name_lit} "," {ws} {gbnf_literal(json.dumps(args_key))} ":" {ws} {args} {ws} "}}"'
    return b.text(root)


def validate_grammar(vocab: Any, grammar: str) -> None:
    """Parse ``grammar`` with llama.cpp's own parser on ``vocab``; raise instead of crashing.

    llama-cpp-python 0.3.x adds a NULL sampler for a grammar that fails to
    parse and the process dies later; ``llama_sampler_init_grammar`` returns
    that NULL here, where we can turn it into an error.
    """
    import llama_cpp

    if vocab is None or not bool(vocab):
        raise ToolError("cannot validate a grammar without a loaded vocabulary")
    sampler = llama_cpp.llama_sampler_init_grammar(vocab, grammar.encode("utf-8"), b"root")
    if not bool(sampler):
        raise ToolError(
            "internal error: llama.cpp rejected a generated tool-call grammar",
            "run with -v and report it; the grammar is printed with --tools-debug",
            details={"grammar": grammar},
        )
    llama_cpp.llama_sampler_free(sampler)
