"""``llmos.toml``: the package manifest.  Format documented in docs/package-format.md.

``validate_manifest(data)`` returns a ``Manifest`` (or ``None``) and a list of
``Finding``s, each naming the field at fault, so ``llmos check`` can report
every problem at once.  ``load_manifest(path)`` is the strict form used by
build/install: it raises ``InvalidPackageError`` on the first error.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from llmos_cli.errors import InvalidPackageError, ToolError
from llmos_cli.gbnf import call_grammar
from llmos_cli.pkg.meta import (
    KINDS,
    Dependency,
    PackageMeta,
    RelationError,
    Req,
    check_name,
    parse_version,
)

MANIFEST_NAME = "llmos.toml"
SCHEMA_VERSION = 1

_PACKAGE_KEYS = {
    "name",
    "version",
    "kind",
    "summary",
    "description",
    "license",
    "maintainer",
    "homepage",
    "depends",
    "conflicts",
    "provides",
    "base",
    "tags",
}
_TOP_KEYS = {"schema", "package", "model", "adapter", "knowledge", "glossary", "prompt", "tools", "mcp", "train", "merged_from", "files"}


@dataclass
class Finding:
    code: str
    severity: str  # "error" | "warning"
    message: str
    field: str | None = None
    path: str | None = None

    def to_json(self) -> dict:
        return {"code": self.code, "severity": self.severity, "message": self.message, "field": self.field, "path": self.path}

    def __str__(self) -> str:
        where = self.field or self.path
        return f"{where}: {self.message}" if where else self.message


@dataclass
class FileRecord:
    sha256: str
    size: int

    def to_json(self) -> dict:
        return {"sha256": self.sha256, "size": self.size}


@dataclass
class Manifest:
    meta: PackageMeta
    license: str
    maintainer: str
    description: str = ""
    homepage: str = ""
    raw: dict[str, Any] = field(default_factory=dict)
    #: payload path -> record; filled in archives by ``llmos build``
    files: dict[str, FileRecord] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.meta.name

    @property
    def version(self) -> str:
        return self.meta.version

    @property
    def kind(self) -> str:
        return self.meta.kind

    def section(self, name: str) -> dict[str, Any]:
        v = self.raw.get(name)
        return v if isinstance(v, dict) else {}

    @property
    def tools(self) -> list[dict[str, Any]]:
        v = self.raw.get("tools")
        return v if isinstance(v, list) else []

    def declared_files(self) -> list[str]:
        """Single payload files named by the manifest (not globs)."""
        out: list[str] = []
        for sec, key in (("model", "file"), ("model", "chat_template"), ("adapter", "file"), ("glossary", "file"), ("prompt", "system")):
            v = self.section(sec).get(key)
            if isinstance(v, str):
                out.append(v)
        return out

    def document_globs(self) -> list[str]:
        v = self.section("knowledge").get("documents", [])
        return [v] if isinstance(v, str) else [x for x in v if isinstance(x, str)]

    def to_json(self) -> dict:
        return {
            **self.meta.to_json(),
            "license": self.license,
            "maintainer": self.maintainer,
            "description": self.description,
            "homepage": self.homepage,
        }


def safe_relpath(p: str) -> str | None:
    """Return a normalised POSIX relative path, or None if absolute / escaping / empty."""
    if not isinstance(p, str) or not p or "\x00" in p or "\\" in p:
        return None
    pp = PurePosixPath(p)
    if pp.is_absolute() or any(part in ("..",) for part in pp.parts):
        return None
    norm = str(pp)
    if norm in (".", ""):
        return None
    return norm


def _err(findings: list[Finding], code: str, field: str | None, message: str) -> None:
    findings.append(Finding(code, "error", message, field=field))


def _warn(findings: list[Finding], code: str, field: str | None, message: str) -> None:
    findings.append(Finding(code, "warning", message, field=field))


def _str_list(findings: list[Finding], value: Any, fieldname: str) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(x, str) for x in value):
        _err(findings, "field-type", fieldname, "must be a list of strings")
        return []
    return value


def validate_manifest(data: Any) -> tuple[Manifest | None, list[Finding]]:
    findings: list[Finding] = []
    if not isinstance(data, dict):
        _err(findings, "manifest-type", None, "manifest must be a TOML table")
        return None, findings
    schema = data.get("schema", None)
    if schema is None:
        _err(findings, "missing-field", "schema", f"missing (use schema = {SCHEMA_VERSION})")
    elif schema != SCHEMA_VERSION:
        _err(findings, "schema-version", "schema", f"unsupported schema {schema!r}; this llmos reads schema {SCHEMA_VERSION}")
    for k in data:
        if k not in _TOP_KEYS:
            _warn(findings, "unknown-field", k, "unknown top-level field (ignored)")
    pkg = data.get("package")
    if not isinstance(pkg, dict):
        _err(findings, "missing-field", "package", "missing [package] table")
        return None, findings
    for k in pkg:
        if k not in _PACKAGE_KEYS:
            _warn(findings, "unknown-field", f"package.{k}", "unknown field (ignored)")

    def required_str(key: str) -> str:
        v = pkg.get(key)
        if v is None:
            _err(findings, "missing-field", f"package.{key}", "missing")
            return ""
        if not isinstance(v, str) or not v.strip():
            _err(findings, "field-type", f"package.{key}", "must be a non-empty string")
            return ""
        return v.strip()

    name = required_str("name")
    if name:
        try:
            check_name(name)
        except RelationError as exc:
            _err(findings, "invalid-name", "package.name", str(exc))
    version = required_str("version")
    if version:
        try:
            parse_version(version)
        except RelationError as exc:
            _err(findings, "invalid-version", "package.version", str(exc))
    kind = required_str("kind")
    if kind and kind not in KINDS:
        _err(findings, "invalid-kind", "package.kind", f"must be one of {', '.join(KINDS)}, not {kind!r}")
    summary = required_str("summary")
    license_ = required_str("license")
    maintainer = required_str("maintainer")

    depends: list[Dependency] = []
    for i, d in enumerate(_str_list(findings, pkg.get("depends"), "package.depends")):
        try:
            depends.append(Dependency.parse(d))
        except RelationError as exc:
            _err(findings, "invalid-relation", f"package.depends[{i}]", str(exc))
    conflicts: list[Req] = []
    for i, c in enumerate(_str_list(findings, pkg.get("conflicts"), "package.conflicts")):
        try:
            conflicts.append(Req.parse(c))
        except RelationError as exc:
            _err(findings, "invalid-relation", f"package.conflicts[{i}]", str(exc))
    provides: list[str] = []
    for i, p in enumerate(_str_list(findings, pkg.get("provides"), "package.provides")):
        try:
            provides.append(check_name(p.strip()))
        except RelationError as exc:
            _err(findings, "invalid-relation", f"package.provides[{i}]", str(exc))
    base = None
    if pkg.get("base") is not None:
        if kind == "model":
            _err(findings, "invalid-field", "package.base", "a model package has no base")
        try:
            base = Req.parse(pkg["base"])
        except RelationError as exc:
            _err(findings, "invalid-relation", "package.base", str(exc))
    for dep in depends:
        for alt in dep.alternatives:
            if alt.name == name:
                _err(findings, "self-relation", "package.depends", f"{name} depends on itself")
    for c in conflicts:
        if c.name == name and (not str(c.spec) or (version and c.matches(version))):
            _err(findings, "self-relation", "package.conflicts", f"{name} conflicts with itself")

    # payload sections
    def check_file_field(sec: str, key: str, required: bool) -> None:
        s = data.get(sec)
        if s is None:
            return
        if not isinstance(s, dict):
            _err(findings, "field-type", sec, "must be a table")
            return
        v = s.get(key)
        if v is None:
            if required:
                _err(findings, "missing-field", f"{sec}.{key}", "missing")
            return
        if safe_relpath(v) is None:
            _err(findings, "unsafe-path", f"{sec}.{key}", f"must be a relative path inside the package, not {v!r}")

    if kind == "model":
        if "model" not in data:
            _err(findings, "missing-field", "model", 'a model package needs a [model] table with file = "...gguf"')
        check_file_field("model", "file", True)
        check_file_field("model", "chat_template", False)
        for sec in ("adapter", "knowledge", "glossary", "tools", "mcp"):
            if sec in data:
                _err(findings, "invalid-field", sec, "only library packages may carry this")
    elif kind == "library":
        if "model" in data:
            _err(findings, "invalid-field", "model", "only model packages carry [model]")
        check_file_field("adapter", "file", True)
        if "adapter" in data and base is None:
            _err(findings, "missing-field", "package.base", "a library with an adapter must name the base model it was trained on")
        adapter = data.get("adapter")
        if isinstance(adapter, dict) and "scale" in adapter and not isinstance(adapter["scale"], (int, float)):
            _err(findings, "field-type", "adapter.scale", "must be a number")
        check_file_field("glossary", "file", True)
        check_file_field("prompt", "system", False)
        kn = data.get("knowledge")
        if kn is not None:
            if not isinstance(kn, dict):
                _err(findings, "field-type", "knowledge", "must be a table")
            else:
                docs = kn.get("documents", [])
                docs = [docs] if isinstance(docs, str) else docs
                for i, g in enumerate(_str_list(findings, docs, "knowledge.documents")):
                    if safe_relpath(g) is None:
                        _err(findings, "unsafe-path", f"knowledge.documents[{i}]", f"must be a relative glob inside the package, not {g!r}")
                for k in ("chunk_size", "chunk_overlap"):
                    if k in kn and (not isinstance(kn[k], int) or kn[k] < 0):
                        _err(findings, "field-type", f"knowledge.{k}", "must be a non-negative integer")
        tools = data.get("tools")
        if tools is not None:
            if not isinstance(tools, list) or not all(isinstance(t, dict) for t in tools):
                _err(findings, "field-type", "tools", "must be an array of tables ([[tools]])")
            else:
                seen: set[str] = set()
                for i, t in enumerate(tools):
                    tn = t.get("name")
                    if not isinstance(tn, str) or not tn:
                        _err(findings, "missing-field", f"tools[{i}].name", "missing")
                    elif tn in seen:
                        _err(findings, "duplicate", f"tools[{i}].name", f"tool {tn!r} declared twice")
                    else:
                        seen.add(tn)
                    if not isinstance(t.get("description"), str):
                        _err(findings, "missing-field", f"tools[{i}].description", "missing")
                    cmd = t.get("command")
                    if not (isinstance(cmd, list) and cmd and all(isinstance(c, str) for c in cmd)):
                        _err(findings, "field-type", f"tools[{i}].command", "must be a non-empty list of strings (run without a shell)")
                    params = t.get("parameters", {"type": "object", "properties": {}})
                    if not isinstance(params, dict):
                        _err(findings, "field-type", f"tools[{i}].parameters", "must be a JSON-schema object")
        _check_tools_and_mcp(data, findings)  # task F: tool names, timeouts, schemas, [[mcp]], chunk settings

    files: dict[str, FileRecord] = {}
    raw_files = data.get("files")
    if raw_files is not None:
        if not isinstance(raw_files, dict):
            _err(findings, "field-type", "files", "must be a table of path = { sha256, size }")
        else:
            for p, rec in raw_files.items():
                if safe_relpath(p) is None:
                    _err(findings, "unsafe-path", f"files.{p}", "must be a relative path inside the package")
                    continue
                if not isinstance(rec, dict) or not isinstance(rec.get("sha256"), str) or len(rec["sha256"]) != 64 or not isinstance(rec.get("size"), int):
                    _err(findings, "field-type", f"files.{p}", 'must be { sha256 = "<64 hex>", size = <bytes> }')
                    continue
                files[p] = FileRecord(rec["sha256"], rec["size"])

    if any(f.severity == "error" for f in findings):
        return None, findings
    meta = PackageMeta(
        name=name,
        version=version,
        kind=kind,
        summary=summary,
        depends=tuple(depends),
        conflicts=tuple(conflicts),
        provides=tuple(provides),
        base=base,
    )
    return (
        Manifest(
            meta=meta,
            license=license_,
            maintainer=maintainer,
            description=str(pkg.get("description", "") or ""),
            homepage=str(pkg.get("homepage", "") or ""),
            raw=data,
            files=files,
        ),
        findings,
    )


# ---------------------------------------------------------------- task F: tools, [[mcp]], chunking


_TOOL_NAME_RE = r"^[A-Za-z][A-Za-z0-9_-]{0,63}$"


def _check_tools_and_mcp(data: dict[str, Any], findings: list[Finding]) -> None:
    """Extra checks of ``[[tools]]``, ``[[mcp]]`` and ``[knowledge]`` chunking (see docs/architecture.md ("How a prompt flows"))."""
    import re

    def timeout_ok(v: Any) -> bool:
        return isinstance(v, (int, float)) and not isinstance(v, bool) and 0 < v <= 300

    kn = data.get("knowledge")
    if isinstance(kn, dict):
        size, overlap = kn.get("chunk_size"), kn.get("chunk_overlap")
        if isinstance(size, int) and size < 1:
            _err(findings, "field-type", "knowledge.chunk_size", "must be at least 1 (words per chunk)")
        if isinstance(size, int) and isinstance(overlap, int) and size >= 1 and overlap >= size:
            _err(findings, "field-type", "knowledge.chunk_overlap", f"must be smaller than chunk_size ({size})")
    names: set[str] = set()
    tools = data.get("tools")
    if isinstance(tools, list):
        for i, t in enumerate(tools):
            if not isinstance(t, dict):
                continue
            tn = t.get("name")
            if isinstance(tn, str) and tn:
                names.add(tn)
                if not re.match(_TOOL_NAME_RE, tn):
                    _err(findings, "invalid-name", f"tools[{i}].name", "must start with a letter and hold only letters, digits, '_' and '-' (64 at most)")
            if "timeout" in t and not timeout_ok(t["timeout"]):
                _err(findings, "field-type", f"tools[{i}].timeout", "must be a number of seconds, more than 0 and at most 300")
            params = t.get("parameters")
            if isinstance(params, dict) and isinstance(tn, str) and tn:
                try:
                    call_grammar(tn, params)
                except ToolError as exc:
                    _err(findings, "tool-schema", f"tools[{i}].parameters", exc.message)
    mcp = data.get("mcp")
    if mcp is None:
        return
    if not isinstance(mcp, list) or not all(isinstance(m, dict) for m in mcp):
        _err(findings, "field-type", "mcp", "must be an array of tables ([[mcp]])")
        return
    servers: set[str] = set()
    for i, m in enumerate(mcp):
        sn = m.get("name")
        if not isinstance(sn, str) or not sn:
            _err(findings, "missing-field", f"mcp[{i}].name", "missing")
        elif sn in servers:
            _err(findings, "duplicate", f"mcp[{i}].name", f"MCP server {sn!r} declared twice")
        else:
            servers.add(sn)
        cmd = m.get("command")
        if not (isinstance(cmd, list) and cmd and all(isinstance(c, str) for c in cmd)):
            _err(findings, "field-type", f"mcp[{i}].command", "must be a non-empty list of strings (run without a shell)")
        mt = m.get("tools")
        if not (isinstance(mt, list) and mt and all(isinstance(x, str) for x in mt)):
            _err(findings, "field-type", f"mcp[{i}].tools", "must list the server's tools the library exposes (non-empty list of names)")
        else:
            for x in mt:
                if not re.match(_TOOL_NAME_RE, x):
                    _err(findings, "invalid-name", f"mcp[{i}].tools", f"{x!r} is not a valid tool name")
                elif x in names:
                    _err(findings, "duplicate", f"mcp[{i}].tools", f"tool {x!r} declared twice")
                names.add(x)
        if "timeout" in m and not timeout_ok(m["timeout"]):
            _err(findings, "field-type", f"mcp[{i}].timeout", "must be a number of seconds, more than 0 and at most 300")
        unknown = sorted(set(m) - {"name", "command", "tools", "timeout", "description"})
        for k in unknown:
            _warn(findings, "unknown-field", f"mcp[{i}].{k}", "unknown field (ignored)")


def parse_manifest_text(text: str | bytes, origin: str = MANIFEST_NAME) -> tuple[Manifest | None, list[Finding]]:
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError:
            return None, [Finding("manifest-syntax", "error", f"{origin} is not UTF-8 text", path=origin)]
    if not text.strip():
        return None, [Finding("manifest-empty", "error", f"{origin} is empty", path=origin)]
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        return None, [Finding("manifest-syntax", "error", f"{origin} is not valid TOML: {exc}", path=origin)]
    return validate_manifest(data)


def raise_for(findings: list[Finding], origin: str) -> None:
    errors = [f for f in findings if f.severity == "error"]
    if errors:
        first = errors[0]
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        raise InvalidPackageError(f"{origin}: {first}{more}", "run `llmos check` on it to see every problem")


def load_manifest(path: Path) -> Manifest:
    """Strict load of a source folder's manifest (``path`` is the folder or the toml)."""
    p = path / MANIFEST_NAME if path.is_dir() else path
    try:
        text = p.read_bytes()
    except FileNotFoundError:
        raise InvalidPackageError(f"no {MANIFEST_NAME} in {path}", "a package source folder needs a llmos.toml manifest") from None
    m, findings = parse_manifest_text(text, str(p))
    raise_for(findings, str(p))
    assert m is not None
    return m
