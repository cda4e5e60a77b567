"""A tool as the loop sees it, and the result of one call."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

#: tool names the model sees: OpenAI's function-name rules plus dots (``math.factorial``, as MCP servers and
#: function-calling benchmarks name tools); 64 characters at most
NAME_RE = r"^[A-Za-z][A-Za-z0-9_.-]{0,63}$"
DEFAULT_TIMEOUT = 10.0
MAX_TIMEOUT = 300.0
DEFAULT_MAX_OUTPUT = 64 * 1024
EMPTY_PARAMS: dict[str, Any] = {"type": "object", "properties": {}}


@dataclass
class ToolSpec:
    name: str
    description: str
    parameters: dict[str, Any]
    source: str  # "builtin" or the library's name
    kind: str  # "builtin" | "command" | "mcp"
    command: list[str] = field(default_factory=list)
    server: str | None = None  # MCP server name (kind "mcp")
    timeout: float = DEFAULT_TIMEOUT
    max_output: int = DEFAULT_MAX_OUTPUT
    library: Any = None  # knowledge.libraries.LibraryView for library tools

    @property
    def key(self) -> str:
        """Permission key: ``<library>:<tool>`` (``builtin:<tool>`` for built-ins)."""
        return f"{self.source}:{self.name}"

    def openai(self) -> dict[str, Any]:
        return {
            "type": "function",
            "function": {"name": self.name, "description": self.description, "parameters": self.parameters},
        }

    def to_json(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "name": self.name,
            "key": self.key,
            "source": self.source,
            "kind": self.kind,
            "description": self.description,
            "parameters": self.parameters,
        }
        if self.kind == "command":
            d["command"] = self.command
            d["timeout"] = self.timeout
        if self.kind == "mcp":
            d["server"] = self.server
        return d


@dataclass
class ToolResult:
    ok: bool
    value: Any = None
    error: str | None = None
    seconds: float = 0.0
    truncated: bool = False
    stderr: str = ""

    def model_text(self) -> str:
        """What the model reads back: the JSON result, or ``{"error": ...}``."""
        if self.ok:
            return json.dumps(self.value, ensure_ascii=False)
        return json.dumps({"error": self.error}, ensure_ascii=False)

    def to_json(self) -> dict[str, Any]:
        d: dict[str, Any] = {"ok": self.ok, "seconds": round(self.seconds, 4)}
        if self.ok:
            d["value"] = self.value
        else:
            d["error"] = self.error
        if self.truncated:
            d["truncated"] = True
        if self.stderr:
            d["stderr"] = self.stderr
        return d
