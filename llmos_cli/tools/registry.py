"""The tools of a run (``ToolSet``) and of the installation (``list_tools``).

Names the model sees must be unique: built-in names (``lookup``,
``calculator``) are reserved, and when two libraries declare the same name
the first library (by name) keeps it and the other's tool is left out with a
warning.  Each call's arguments are validated against the tool's schema
before the tool runs; a mismatch goes back to the model as an error result.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from llmos_cli.errors import NotFoundError, ToolError, UsageError
from llmos_cli.knowledge.libraries import installed_libraries
from llmos_cli.paths import get_paths
from llmos_cli.state.db import StateDB
from llmos_cli.tools.builtin import calculator_spec, lookup_spec, run_calculator, run_lookup
from llmos_cli.tools.command import run_command
from llmos_cli.tools.mcp_client import McpServer
from llmos_cli.tools.permissions import load_stored, store
from llmos_cli.tools.spec import DEFAULT_MAX_OUTPUT, DEFAULT_TIMEOUT, EMPTY_PARAMS, MAX_TIMEOUT, NAME_RE, ToolResult, ToolSpec

BUILTIN_NAMES = ("calculator", "lookup")


def _timeout(value: Any) -> float:
    if isinstance(value, (int, float)) and not isinstance(value, bool) and 0 < value <= MAX_TIMEOUT:
        return float(value)
    return DEFAULT_TIMEOUT


def library_tool_specs(lib: Any) -> list[ToolSpec]:
    """Command tools and declared MCP tools of one library (MCP schemas unknown until started)."""
    specs: list[ToolSpec] = []
    for t in lib.tool_decls():
        specs.append(
            ToolSpec(
                name=t.name,
                description=t.description,
                parameters=t.parameters if t.parameters is not None else dict(EMPTY_PARAMS),
                source=lib.name,
                kind="command",
                command=list(t.command),
                timeout=_timeout(t.timeout),
                max_output=t.max_output if t.max_output is not None else DEFAULT_MAX_OUTPUT,
                library=lib,
            )
        )
    for m in lib.mcp_decls():
        for name in m.tools:
            specs.append(
                ToolSpec(
                    name=name,
                    description=f"(served by MCP server {m.name})",
                    parameters=dict(EMPTY_PARAMS),
                    source=lib.name,
                    kind="mcp",
                    server=m.name,
                    timeout=_timeout(m.timeout),
                    library=lib,
                )
            )
    return specs


@dataclass
class ToolSet:
    specs: list[ToolSpec]
    libraries: list[Any] = field(default_factory=list)
    servers: dict[tuple[str, str], Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    @classmethod
    def for_run(cls, libraries: Sequence[Any], *, builtins: bool = True, start_mcp: bool = True) -> ToolSet:
        """Every tool the attached ``libraries`` offer, plus the built-ins; starts MCP servers."""

        ts = cls([], list(libraries))
        if builtins:
            ts.specs.append(calculator_spec())
            knowing = [lib.name for lib in libraries if lib.has_knowledge]
            if knowing:
                ts.specs.append(lookup_spec(knowing))
        taken = {s.name: s.source for s in ts.specs}
        taken.update({n: "builtin" for n in BUILTIN_NAMES})
        for lib in sorted(libraries, key=lambda x: x.name):
            for spec in library_tool_specs(lib):
                if not re.match(NAME_RE, spec.name):
                    ts.warnings.append(f"tool {spec.name!r} of {lib.name} left out: not a valid tool name")
                    continue
                if spec.name in taken:
                    ts.warnings.append(f"tool {spec.name!r} of {lib.name} left out: the name is taken by {taken[spec.name]}")
                    continue
                taken[spec.name] = lib.name
                ts.specs.append(spec)
        if start_mcp:
            try:
                ts._start_servers()
            except BaseException:
                ts.close()
                raise
        return ts

    def _start_servers(self) -> None:

        for spec in self.specs:
            if spec.kind != "mcp":
                continue
            key = (spec.source, spec.server or "")
            if key not in self.servers:
                decl = next(m for m in spec.library.mcp_decls() if m.name == spec.server)
                server = McpServer(spec.library, decl)
                self.servers[key] = server
                server.start()
            info = self.servers[key].tools[spec.name]
            spec.description = info["description"] or spec.description
            spec.parameters = info["parameters"]

    def get(self, name: str) -> ToolSpec | None:
        return next((s for s in self.specs if s.name == name), None)

    def names(self) -> list[str]:
        return [s.name for s in self.specs]

    def openai(self, only: Sequence[str] | None = None) -> list[dict[str, Any]]:
        return [s.openai() for s in self.specs if only is None or s.name in only]

    def resolve(self, name: str) -> ToolSpec:
        """A tool by ``name`` or ``library:name`` (for ``--allow-tool`` and ``--tool-choice``)."""
        for s in self.specs:
            if name in (s.name, s.key):
                return s
        raise NotFoundError(
            f"no tool named {name!r} among the attached libraries and built-ins",
            "see `llmos tools list`" + (f"; available: {', '.join(self.names())}" if self.specs else ""),
        )

    def call(self, spec: ToolSpec, arguments: dict[str, Any]) -> ToolResult:
        import jsonschema

        try:
            jsonschema.Draft202012Validator(spec.parameters).validate(arguments)
        except jsonschema.ValidationError as exc:
            where = "/".join(str(p) for p in exc.absolute_path) or "arguments"
            return ToolResult(False, error=f"invalid arguments for {spec.name!r}: {where}: {exc.message}")
        except jsonschema.SchemaError as exc:
            return ToolResult(False, error=f"tool {spec.name!r} has an invalid schema: {exc.message}")
        if spec.kind == "builtin":
            if spec.name == "calculator":
                return run_calculator(arguments)
            return run_lookup(arguments, self.libraries)
        if spec.kind == "command":
            return run_command(spec, arguments)
        if spec.kind == "mcp":
            server = self.servers.get((spec.source, spec.server or ""))
            if server is None:
                return ToolResult(False, error=f"MCP server {spec.server!r} is not running")
            return server.call(spec.name, arguments, spec.timeout)
        raise ToolError(f"unknown tool kind {spec.kind!r}")  # pragma: no cover

    def close(self) -> None:
        for server in self.servers.values():
            server.close()
        self.servers.clear()


# ---------------------------------------------------------------- llmos tools list / allow / deny


@dataclass
class ToolRow:
    name: str
    key: str
    source: str
    kind: str
    description: str
    attached: bool
    status: str  # allowed | denied | ask | builtin

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "key": self.key,
            "library": None if self.source == "builtin" else self.source,
            "kind": self.kind,
            "description": self.description,
            "attached": self.attached,
            "allowed": self.status in ("allowed", "builtin"),
            "status": self.status,
        }


def list_tools(paths: Any = None) -> list[ToolRow]:
    """Every tool of every installed library plus the built-ins, with its permission."""

    paths = paths or get_paths()
    libs = installed_libraries(paths, attached_only=False)
    stored = load_stored(paths)
    attached = {}

    if paths.db.exists():
        db = StateDB.open(paths)
        try:
            attached = {n: p.attached for n, p in db.installed().items()}
        finally:
            db.close()
    rows: list[ToolRow] = []
    for spec in (calculator_spec(), lookup_spec([lib.name for lib in libs if lib.has_knowledge] or ["(none)"])):
        status = "denied" if stored.get(spec.key) is False else "builtin"
        rows.append(ToolRow(spec.name, spec.key, "builtin", "builtin", spec.description, True, status))
    for lib in libs:
        for spec in library_tool_specs(lib):
            st = stored.get(spec.key)
            status = "allowed" if st else ("denied" if st is False else "ask")
            rows.append(ToolRow(spec.name, spec.key, lib.name, spec.kind, spec.description, attached.get(lib.name, True), status))
    return rows


@dataclass
class PermissionChange:
    key: str
    name: str
    library: str | None
    allowed: bool
    before: str
    simulated: bool
    command: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "tool": self.name,
            "key": self.key,
            "library": self.library,
            "allowed": self.allowed,
            "before": self.before,
            "simulated": self.simulated,
        }


def find_tool_row(name: str, paths: Any = None) -> ToolRow:
    rows = list_tools(paths)
    exact = [r for r in rows if r.key == name]
    if exact:
        return exact[0]
    by_name = [r for r in rows if r.name == name]
    if len(by_name) == 1:
        return by_name[0]
    if len(by_name) > 1:
        raise UsageError(
            f"several libraries have a tool named {name!r}: {', '.join(r.key for r in by_name)}",
            "name it as library:tool",
        )
    raise NotFoundError(f"no tool named {name!r} in the installed libraries", "see `llmos tools list`")


def plan_permission(name: str, allowed: bool, paths: Any = None, *, simulate: bool = False) -> PermissionChange:
    row = find_tool_row(name, paths)
    lib = None if row.source == "builtin" else row.source
    return PermissionChange(row.key, row.name, lib, allowed, row.status, simulate)


def apply_permission(change: PermissionChange, paths: Any = None) -> PermissionChange:

    paths = paths or get_paths()
    if change.library is None and change.allowed:
        # built-ins are allowed by default: allowing one again only forgets a denial
        store(paths, change.key, None)
    else:
        store(paths, change.key, change.allowed)
    return change
