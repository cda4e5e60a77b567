"""Built-in tools: ``lookup`` (the attached knowledge) and ``calculator``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from llmos_cli.knowledge.retrieve import search
from llmos_cli.tools.calculator import CalcError, evaluate
from llmos_cli.tools.spec import ToolResult, ToolSpec

LOOKUP_MAX_K = 10


def calculator_spec() -> ToolSpec:
    return ToolSpec(
        name="calculator",
        description=(
            "Evaluate an arithmetic expression exactly. Supports + - * / // % ** and parentheses, "
            "pi, e, and sqrt, exp, log, log10, log2, sin, cos, tan, floor, ceil, abs, round, min, max, factorial."
        ),
        parameters={
            "type": "object",
            "properties": {
                "expression": {"type": "string", "minLength": 1, "maxLength": 200, "description": "e.g. (2 + 3) * sqrt(16)"},
            },
            "required": ["expression"],
            "additionalProperties": False,
        },
        source="builtin",
        kind="builtin",
    )


def lookup_spec(library_names: Sequence[str]) -> ToolSpec:
    props: dict[str, Any] = {
        "query": {"type": "string", "minLength": 1, "maxLength": 100, "description": "words to search for"},
    }
    if len(library_names) > 1:
        props["library"] = {"type": "string", "enum": sorted(library_names), "description": "search only this library"}
    props["k"] = {"type": "integer", "minimum": 1, "maximum": LOOKUP_MAX_K, "description": "number of passages (default 3)"}
    return ToolSpec(
        name="lookup",
        description=(
            "Search the attached knowledge libraries (" + ", ".join(sorted(library_names)) + ") and return the best "
            "matching passages, each with a citation tag [library:document#chunk]."
        ),
        parameters={"type": "object", "properties": props, "required": ["query"], "additionalProperties": False},
        source="builtin",
        kind="builtin",
    )


def run_calculator(arguments: dict[str, Any]) -> ToolResult:

    expr = arguments.get("expression")
    try:
        value = evaluate(expr if isinstance(expr, str) else "")
    except CalcError as exc:
        return ToolResult(False, error=f"calculator: {exc}")
    return ToolResult(True, value={"expression": expr, "result": value})


def run_lookup(arguments: dict[str, Any], libraries: Sequence[Any]) -> ToolResult:

    query = arguments.get("query")
    if not isinstance(query, str) or not query.strip():
        return ToolResult(False, error="lookup: query must be a non-empty string")
    k = arguments.get("k", 3)
    k = max(1, min(LOOKUP_MAX_K, int(k))) if isinstance(k, int) and not isinstance(k, bool) else 3
    wanted = arguments.get("library")
    libs = [lib for lib in libraries if wanted in (None, lib.name)]
    if wanted is not None and not libs:
        return ToolResult(False, error=f"lookup: no attached library named {wanted!r}")
    indexes = [ix for ix in (lib.index() for lib in libs) if ix is not None]
    hits = search(indexes, query, k)
    return ToolResult(
        True,
        value={
            "query": query,
            "results": [{"citation": h.citation, "section": h.section, "score": round(h.score, 3), "text": h.text} for h in hits],
        },
    )
