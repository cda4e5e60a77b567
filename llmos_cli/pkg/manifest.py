"""``llmos.toml``: the package manifest.  Format documented in docs/package-format.md.

The manifest is parsed once into one typed object, ``Manifest``, with a
dataclass per table (``ModelTable``, ``AdapterTable``, ``KnowledgeTable``,
``GlossaryTable``, ``PromptTable``, ``ToolDecl``, ``McpDecl``, ``TrainTable``,
``MergedFrom``, ``ArchiveTable``, ``FileRecord``, ``pkg.external.ExternalPayload``).  Code reads those fields, never the TOML
tables themselves.

* ``validate_manifest(data)`` returns a ``Manifest`` (or ``None`` when there is
  an error) and a list of ``Finding``s, each naming the field at fault, so
  ``llmos check`` can report every problem at once.
* ``load_manifest(path)`` is the strict form used by build/install: it raises
  ``InvalidPackageError`` on the first error.
* ``Manifest.from_table(data)`` reads a manifest that was validated before (a
  row of the state database, an archive already opened) or that a caller
  wants to read as it is (a plain folder in tests): it builds the same typed
  view and never raises; a field of the wrong type reads as absent.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from llmos_cli.errors import InvalidPackageError, ToolError
from llmos_cli.gbnf import call_grammar
from llmos_cli.pkg.external import ExternalPayload, parse_payloads
from llmos_cli.pkg.meta import (
    KINDS,
    Dependency,
    FileRecord,
    MetaView,
    PackageMeta,
    Provide,
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
    "breaks",
    "provides",
    "base",
    "tags",
}
_TOP_KEYS = {"schema", "package", "model", "adapter", "knowledge", "glossary", "prompt", "tools", "mcp", "train", "merged_from", "files", "archive", "payload"}
#: ``[archive] compression``: ``auto`` stores mostly-incompressible payloads (GGUF...) in a plain tar
COMPRESSIONS = ("auto", "gzip", "none")
_MCP_KEYS = {"name", "command", "tools", "timeout", "description"}
_TOOL_NAME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]{0,63}$")
_LIBRARY_ONLY = ("adapter", "knowledge", "glossary", "tools", "mcp")


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


# ---------------------------------------------------------------- the typed tables


@dataclass(frozen=True)
class ModelTable:
    """``[model]`` of a model package; ``llmos build`` adds the GGUF fields."""

    file: str | None = None
    chat_template: str | None = None
    architecture: str | None = None
    context_length: int | None = None
    fingerprint: str | None = None
    #: ``[model.parameters]``: default sampling parameters
    parameters: dict[str, Any] = field(default_factory=dict)
    #: what the model answers when it does not know (``llmos train``'s abstention examples; ``--grounded``)
    abstention: str | None = None


@dataclass(frozen=True)
class AdapterTable:
    """``[adapter]``: the LoRA GGUF and its default scale."""

    file: str | None = None
    scale: float = 1.0


@dataclass(frozen=True)
class KnowledgeTable:
    """``[knowledge]``: document globs and chunking (``None``: the indexer's default)."""

    documents: tuple[str, ...] = ()
    chunk_size: int | None = None
    chunk_overlap: int | None = None


@dataclass(frozen=True)
class GlossaryTable:
    file: str | None = None


@dataclass(frozen=True)
class PromptTable:
    #: the system-prompt fragment's file
    system: str | None = None


@dataclass(frozen=True)
class ToolDecl:
    """One ``[[tools]]`` entry: a command tool."""

    name: str
    description: str = ""
    command: tuple[str, ...] = ()
    #: the JSON schema of the arguments; ``None`` when not declared
    parameters: dict[str, Any] | None = None
    timeout: float | None = None
    max_output: int | None = None
    #: the table as written, so ``llmos merge`` copies it verbatim
    table: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)


@dataclass(frozen=True)
class McpDecl:
    """One ``[[mcp]]`` entry: an MCP server and the tools the library exposes from it."""

    name: str
    command: tuple[str, ...] = ()
    tools: tuple[str, ...] = ()
    timeout: float | None = None
    description: str = ""
    #: the table as written, so ``llmos merge`` copies it verbatim
    table: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)


@dataclass(frozen=True)
class TrainTable:
    """``[train]``: ``llmos train``'s settings.

    The payload files it names are typed here; the other settings are
    ``llmos train``'s to read (``TrainOptions.from_manifest(options)``), and
    ``llmos check`` reports the keys and values it would refuse.
    """

    data: tuple[str, ...] = ()
    eval: tuple[str, ...] = ()
    replay: tuple[str, ...] = ()
    #: the whole table
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class MergedFrom:
    """``[merged_from]``, written by ``llmos merge``."""

    method: str = ""
    weights: tuple[float, ...] = ()
    density: float | None = None
    #: each source's ``name``, ``version`` and ``adapter_sha256``
    sources: tuple[dict[str, Any], ...] = ()


@dataclass(frozen=True)
class ArchiveTable:
    """``[archive]``: how ``llmos build`` writes the archive (``compression``: one of ``COMPRESSIONS``)."""

    compression: str = "auto"


@dataclass
class Manifest(MetaView):
    """The typed view of one ``llmos.toml``."""

    meta: PackageMeta
    license: str
    maintainer: str
    description: str = ""
    homepage: str = ""
    #: ``None`` when the manifest has no ``tags`` list
    tags: tuple[str, ...] | None = None
    model: ModelTable | None = None
    adapter: AdapterTable | None = None
    knowledge: KnowledgeTable = field(default_factory=KnowledgeTable)
    glossary: GlossaryTable | None = None
    prompt: PromptTable | None = None
    tools: list[ToolDecl] = field(default_factory=list)
    mcp: list[McpDecl] = field(default_factory=list)
    train: TrainTable = field(default_factory=TrainTable)
    merged_from: MergedFrom | None = None
    archive: ArchiveTable = field(default_factory=ArchiveTable)
    #: ``[[payload]]``: files declared by hash and fetched from origins (``pkg/external.py``)
    payloads: list[ExternalPayload] = field(default_factory=list)
    #: payload path -> record; filled in archives by ``llmos build``
    files: dict[str, FileRecord] = field(default_factory=dict)
    #: the source table, kept only to write it out again (``llmos build``, the state database)
    raw: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def has_files_table(self) -> bool:
        """Whether the manifest has a ``[files]`` table (an archive's manifest must)."""
        return "files" in self.raw

    def named_files(self) -> list[tuple[str, str]]:
        """``(field, path)`` of each single payload file the manifest names (not globs)."""
        named = (
            ("model.file", self.model.file if self.model else None),
            ("model.chat_template", self.model.chat_template if self.model else None),
            ("adapter.file", self.adapter.file if self.adapter else None),
            ("glossary.file", self.glossary.file if self.glossary else None),
            ("prompt.system", self.prompt.system if self.prompt else None),
        )
        return [(f, v) for f, v in named if v is not None]

    def declared_files(self) -> list[str]:
        """Single payload files named by the manifest (not globs)."""
        return [v for _, v in self.named_files()]

    def document_globs(self) -> list[str]:
        return list(self.knowledge.documents)

    def to_json(self) -> dict:
        return {
            **self.meta.to_json(),
            "license": self.license,
            "maintainer": self.maintainer,
            "description": self.description,
            "homepage": self.homepage,
        }

    @classmethod
    def from_table(cls, data: dict[str, Any]) -> Manifest:
        """The typed view of ``data`` without judging it (see the module docstring)."""
        parser = _Parser(data if isinstance(data, dict) else {}, [])
        return parser.manifest(_lenient_meta(parser.pkg), parser._files())

    @classmethod
    def read_folder(cls, folder: Path) -> Manifest:
        """``from_table`` of a folder's ``llmos.toml``: read as it is, not judged.

        A missing, non-UTF-8 or non-TOML file still raises ``InvalidPackageError``.
        """
        p = Path(folder) / MANIFEST_NAME
        try:
            data = tomllib.loads(p.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise InvalidPackageError(f"no {MANIFEST_NAME} in {folder}", "a package source folder needs a llmos.toml manifest") from None
        except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            raise InvalidPackageError(f"{p} is not valid TOML: {exc}", "run `llmos check` on the folder") from None
        return cls.from_table(data)


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


# ---------------------------------------------------------------- reading and validating


def _number(v: Any) -> float | None:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def _opt_str(v: Any) -> str | None:
    return v if isinstance(v, str) else None


def _int_or_none(v: Any) -> int | None:
    return int(v) if isinstance(v, int) else None


def _strs(v: Any) -> tuple[str, ...]:
    """A string or a list of strings as a tuple (other items left out)."""
    if isinstance(v, str):
        return (v,)
    if isinstance(v, list):
        return tuple(x for x in v if isinstance(x, str))
    return ()


def _timeout_ok(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and 0 < v <= 300


def _table(data: dict[str, Any], key: str) -> dict[str, Any] | None:
    v = data.get(key)
    return v if isinstance(v, dict) else None


class _Parser:
    """Reads one manifest table by table, collecting findings as it goes.

    Each ``_<table>`` method checks one part and returns its typed value
    (defaults where a field is wrong); ``validate`` runs the phases in the
    order ``llmos check`` reports them.
    """

    def __init__(self, data: dict[str, Any], findings: list[Finding]):
        self.data = data
        self.findings = findings
        self.pkg: dict[str, Any] = _table(data, "package") or {}

    def err(self, code: str, fieldname: str | None, message: str) -> None:
        self.findings.append(Finding(code, "error", message, field=fieldname))

    def warn(self, code: str, fieldname: str | None, message: str) -> None:
        self.findings.append(Finding(code, "warning", message, field=fieldname))

    def str_list(self, value: Any, fieldname: str) -> list[str]:
        if value is None:
            return []
        if not isinstance(value, list) or not all(isinstance(x, str) for x in value):
            self.err("field-type", fieldname, "must be a list of strings")
            return []
        return value

    # ------------------------------------------------------------ phases

    def validate(self) -> Manifest | None:
        data = self.data
        self._top_level()
        if not isinstance(data.get("package"), dict):
            self.err("missing-field", "package", "missing [package] table")
            return None
        meta = self._package()
        if meta.kind == "model":
            self._model_sections()
        elif meta.kind == "library":
            self._library_sections(meta)
        files = self._files()
        for i, p in enumerate(self._payloads()):
            if p.path in files:
                self.err("duplicate", f"payload[{i}].path", f"{p.path} is declared by hash and also carried in [files]")
        self._archive()
        if any(f.severity == "error" for f in self.findings):
            return None
        return self.manifest(meta, files)

    def _top_level(self) -> None:
        schema = self.data.get("schema", None)
        if schema is None:
            self.err("missing-field", "schema", f"missing (use schema = {SCHEMA_VERSION})")
        elif schema != SCHEMA_VERSION:
            self.err("schema-version", "schema", f"unsupported schema {schema!r}; this llmos reads schema {SCHEMA_VERSION}")
        for k in self.data:
            if k not in _TOP_KEYS:
                self.warn("unknown-field", k, "unknown top-level field (ignored)")

    def _package(self) -> PackageMeta:
        """``[package]``: identity, then relations."""
        pkg = self.pkg
        for k in pkg:
            if k not in _PACKAGE_KEYS:
                self.warn("unknown-field", f"package.{k}", "unknown field (ignored)")
        name = self._required_str("name")
        if name:
            try:
                check_name(name)
            except RelationError as exc:
                self.err("invalid-name", "package.name", str(exc))
        version = self._required_str("version")
        if version:
            try:
                parse_version(version)
            except RelationError as exc:
                self.err("invalid-version", "package.version", str(exc))
        kind = self._required_str("kind")
        if kind and kind not in KINDS:
            self.err("invalid-kind", "package.kind", f"must be one of {', '.join(KINDS)}, not {kind!r}")
        summary = self._required_str("summary")
        self._required_str("license")
        self._required_str("maintainer")
        return self._relations(PackageMeta(name=name, version=version, kind=kind, summary=summary))

    def _required_str(self, key: str) -> str:
        v = self.pkg.get(key)
        if v is None:
            self.err("missing-field", f"package.{key}", "missing")
            return ""
        if not isinstance(v, str) or not v.strip():
            self.err("field-type", f"package.{key}", "must be a non-empty string")
            return ""
        return v.strip()

    def _relations(self, meta: PackageMeta) -> PackageMeta:
        pkg, name, version = self.pkg, meta.name, meta.version
        depends: list[Dependency] = []
        for i, d in enumerate(self.str_list(pkg.get("depends"), "package.depends")):
            try:
                depends.append(Dependency.parse(d))
            except RelationError as exc:
                self.err("invalid-relation", f"package.depends[{i}]", str(exc))
        conflicts: list[Req] = []
        for i, text in enumerate(self.str_list(pkg.get("conflicts"), "package.conflicts")):
            try:
                conflicts.append(Req.parse(text))
            except RelationError as exc:
                self.err("invalid-relation", f"package.conflicts[{i}]", str(exc))
        breaks: list[Req] = []  # apt's Breaks: the resolver treats it as Conflicts (docs/resolver.md)
        for i, text in enumerate(self.str_list(pkg.get("breaks"), "package.breaks")):
            try:
                breaks.append(Req.parse(text))
            except RelationError as exc:
                self.err("invalid-relation", f"package.breaks[{i}]", str(exc))
        provides: list[str] = []
        for i, p in enumerate(self.str_list(pkg.get("provides"), "package.provides")):
            try:
                provides.append(Provide.parse(p))  # a name, or a versioned provide "mta (= 2.0)"
            except RelationError as exc:
                self.err("invalid-relation", f"package.provides[{i}]", str(exc))
        base = None
        if pkg.get("base") is not None:
            if meta.kind == "model":
                self.err("invalid-field", "package.base", "a model package has no base")
            try:
                base = Req.parse(pkg["base"])
            except RelationError as exc:
                self.err("invalid-relation", "package.base", str(exc))
        for dep in depends:
            for alt in dep.alternatives:
                if alt.name == name:
                    self.err("self-relation", "package.depends", f"{name} depends on itself")
        for c in conflicts:
            if c.name == name and (not str(c.spec) or (version and c.matches(version))):
                self.err("self-relation", "package.conflicts", f"{name} conflicts with itself")
        return PackageMeta(
            name=name,
            version=version,
            kind=meta.kind,
            summary=meta.summary,
            depends=tuple(depends),
            conflicts=tuple(conflicts),
            provides=tuple(Provide.parse(p) for p in provides),
            base=base,
            breaks=tuple(breaks),
        )

    def _file_field(self, sec: str, key: str, required: bool) -> None:
        s = self.data.get(sec)
        if s is None:
            return
        if not isinstance(s, dict):
            self.err("field-type", sec, "must be a table")
            return
        v = s.get(key)
        if v is None:
            if required:
                self.err("missing-field", f"{sec}.{key}", "missing")
            return
        if safe_relpath(v) is None:
            self.err("unsafe-path", f"{sec}.{key}", f"must be a relative path inside the package, not {v!r}")

    def _model_sections(self) -> None:
        data = self.data
        if "model" not in data:
            self.err("missing-field", "model", 'a model package needs a [model] table with file = "...gguf"')
        self._file_field("model", "file", True)
        self._file_field("model", "chat_template", False)
        abst = (data.get("model") or {}).get("abstention") if isinstance(data.get("model"), dict) else None
        if abst is not None and (not isinstance(abst, str) or not abst.strip()):
            self.err("field-type", "model.abstention", "must be a non-empty string (what the model answers when it does not know)")
        for sec in _LIBRARY_ONLY:
            if sec in data:
                self.err("invalid-field", sec, "only library packages may carry this")

    def _library_sections(self, meta: PackageMeta) -> None:
        data = self.data
        if "model" in data:
            self.err("invalid-field", "model", "only model packages carry [model]")
        self._file_field("adapter", "file", True)
        if "adapter" in data and meta.base is None:
            self.err("missing-field", "package.base", "a library with an adapter must name the base model it was trained on")
        adapter = data.get("adapter")
        if isinstance(adapter, dict) and "scale" in adapter and not isinstance(adapter["scale"], (int, float)):
            self.err("field-type", "adapter.scale", "must be a number")
        self._file_field("glossary", "file", True)
        self._file_field("prompt", "system", False)
        self._knowledge_types()
        self._tool_tables()
        self._chunking()
        names = self._tool_names_and_schemas()
        self._mcp_tables(names)

    def _knowledge_types(self) -> None:
        kn = self.data.get("knowledge")
        if kn is None:
            return
        if not isinstance(kn, dict):
            self.err("field-type", "knowledge", "must be a table")
            return
        docs = kn.get("documents", [])
        docs = [docs] if isinstance(docs, str) else docs
        for i, g in enumerate(self.str_list(docs, "knowledge.documents")):
            if safe_relpath(g) is None:
                self.err("unsafe-path", f"knowledge.documents[{i}]", f"must be a relative glob inside the package, not {g!r}")
        for k in ("chunk_size", "chunk_overlap"):
            if k in kn and (not isinstance(kn[k], int) or kn[k] < 0):
                self.err("field-type", f"knowledge.{k}", "must be a non-negative integer")

    def _tool_tables(self) -> None:
        """``[[tools]]``: the shape of each entry."""
        tools = self.data.get("tools")
        if tools is None:
            return
        if not isinstance(tools, list) or not all(isinstance(t, dict) for t in tools):
            self.err("field-type", "tools", "must be an array of tables ([[tools]])")
            return
        seen: set[str] = set()
        for i, t in enumerate(tools):
            tn = t.get("name")
            if not isinstance(tn, str) or not tn:
                self.err("missing-field", f"tools[{i}].name", "missing")
            elif tn in seen:
                self.err("duplicate", f"tools[{i}].name", f"tool {tn!r} declared twice")
            else:
                seen.add(tn)
            if not isinstance(t.get("description"), str):
                self.err("missing-field", f"tools[{i}].description", "missing")
            cmd = t.get("command")
            if not (isinstance(cmd, list) and cmd and all(isinstance(c, str) for c in cmd)):
                self.err("field-type", f"tools[{i}].command", "must be a non-empty list of strings (run without a shell)")
            params = t.get("parameters", {"type": "object", "properties": {}})
            if not isinstance(params, dict):
                self.err("field-type", f"tools[{i}].parameters", "must be a JSON-schema object")

    def _chunking(self) -> None:
        """``[knowledge]`` chunk_size against chunk_overlap."""
        kn = self.data.get("knowledge")
        if not isinstance(kn, dict):
            return
        size, overlap = kn.get("chunk_size"), kn.get("chunk_overlap")
        if isinstance(size, int) and size < 1:
            self.err("field-type", "knowledge.chunk_size", "must be at least 1 (words per chunk)")
        if isinstance(size, int) and isinstance(overlap, int) and size >= 1 and overlap >= size:
            self.err("field-type", "knowledge.chunk_overlap", f"must be smaller than chunk_size ({size})")

    def _tool_names_and_schemas(self) -> set[str]:
        """``[[tools]]``: names, timeouts and that a call grammar can be built for each schema."""
        names: set[str] = set()
        tools = self.data.get("tools")
        if not isinstance(tools, list):
            return names
        for i, t in enumerate(tools):
            if not isinstance(t, dict):
                continue
            tn = t.get("name")
            if isinstance(tn, str) and tn:
                names.add(tn)
                if not _TOOL_NAME_RE.match(tn):
                    self.err("invalid-name", f"tools[{i}].name", "must start with a letter and hold only letters, digits, '_', '-' and '.' (64 at most)")
            if "timeout" in t and not _timeout_ok(t["timeout"]):
                self.err("field-type", f"tools[{i}].timeout", "must be a number of seconds, more than 0 and at most 300")
            params = t.get("parameters")
            if isinstance(params, dict) and isinstance(tn, str) and tn:
                try:
                    call_grammar(tn, params)
                except ToolError as exc:
                    self.err("tool-schema", f"tools[{i}].parameters", exc.message)
        return names

    def _mcp_tables(self, names: set[str]) -> None:
        """``[[mcp]]``: each server, and tool names unique across ``[[tools]]`` and every server."""
        mcp = self.data.get("mcp")
        if mcp is None:
            return
        if not isinstance(mcp, list) or not all(isinstance(m, dict) for m in mcp):
            self.err("field-type", "mcp", "must be an array of tables ([[mcp]])")
            return
        servers: set[str] = set()
        for i, m in enumerate(mcp):
            sn = m.get("name")
            if not isinstance(sn, str) or not sn:
                self.err("missing-field", f"mcp[{i}].name", "missing")
            elif sn in servers:
                self.err("duplicate", f"mcp[{i}].name", f"MCP server {sn!r} declared twice")
            else:
                servers.add(sn)
            cmd = m.get("command")
            if not (isinstance(cmd, list) and cmd and all(isinstance(c, str) for c in cmd)):
                self.err("field-type", f"mcp[{i}].command", "must be a non-empty list of strings (run without a shell)")
            mt = m.get("tools")
            if not (isinstance(mt, list) and mt and all(isinstance(x, str) for x in mt)):
                self.err("field-type", f"mcp[{i}].tools", "must list the server's tools the library exposes (non-empty list of names)")
            else:
                for x in mt:
                    if not _TOOL_NAME_RE.match(x):
                        self.err("invalid-name", f"mcp[{i}].tools", f"{x!r} is not a valid tool name")
                    elif x in names:
                        self.err("duplicate", f"mcp[{i}].tools", f"tool {x!r} declared twice")
                    names.add(x)
            if "timeout" in m and not _timeout_ok(m["timeout"]):
                self.err("field-type", f"mcp[{i}].timeout", "must be a number of seconds, more than 0 and at most 300")
            for k in sorted(set(m) - _MCP_KEYS):
                self.warn("unknown-field", f"mcp[{i}].{k}", "unknown field (ignored)")

    def _files(self) -> dict[str, FileRecord]:
        """``[files]``: path = { sha256, size } for every payload file of an archive."""
        files: dict[str, FileRecord] = {}
        raw_files = self.data.get("files")
        if raw_files is None:
            return files
        if not isinstance(raw_files, dict):
            self.err("field-type", "files", "must be a table of path = { sha256, size }")
            return files
        for p, rec in raw_files.items():
            if safe_relpath(p) is None:
                self.err("unsafe-path", f"files.{p}", "must be a relative path inside the package")
                continue
            if not isinstance(rec, dict) or not isinstance(rec.get("sha256"), str) or len(rec["sha256"]) != 64 or not isinstance(rec.get("size"), int):
                self.err("field-type", f"files.{p}", 'must be { sha256 = "<64 hex>", size = <bytes> }')
                continue
            files[p] = FileRecord(rec["sha256"], rec["size"])
        return files

    def _payloads(self) -> list[ExternalPayload]:
        """``[[payload]]``: path, sha256, size and pinned origins of each file declared by hash."""
        payloads, problems = parse_payloads(self.data.get("payload"))
        for code, severity, fieldname, message in problems:
            self.findings.append(Finding(code, severity, message, field=fieldname))
        return payloads

    def _archive(self) -> None:
        t = self.data.get("archive")
        if t is None:
            return
        if not isinstance(t, dict):
            self.err("field-type", "archive", "must be a table")
            return
        if "compression" in t and t["compression"] not in COMPRESSIONS:
            self.err("field-type", "archive.compression", f"must be one of {', '.join(COMPRESSIONS)}, not {t['compression']!r}")

    # ------------------------------------------------------------ the typed view

    def manifest(self, meta: PackageMeta, files: dict[str, FileRecord]) -> Manifest:
        """The typed view of every table (a field of the wrong type reads as absent)."""
        data, pkg = self.data, self.pkg
        return Manifest(
            meta=meta,
            license=str(pkg.get("license", "") or "").strip(),
            maintainer=str(pkg.get("maintainer", "") or "").strip(),
            description=str(pkg.get("description", "") or ""),
            homepage=str(pkg.get("homepage", "") or ""),
            tags=_strs(pkg.get("tags")) if isinstance(pkg.get("tags"), list) else None,
            model=_model_table(data),
            adapter=_adapter_table(data),
            knowledge=_knowledge_table(data),
            glossary=GlossaryTable(_opt_str(t.get("file"))) if (t := _table(data, "glossary")) is not None else None,
            prompt=PromptTable(_opt_str(t.get("system"))) if (t := _table(data, "prompt")) is not None else None,
            tools=_tool_decls(data),
            mcp=_mcp_decls(data),
            train=_train_table(data),
            merged_from=_merged_from(data),
            archive=_archive_table(data),
            payloads=parse_payloads(data.get("payload"))[0],
            files=files,
            raw=data,
        )


def _lenient_meta(pkg: dict[str, Any]) -> PackageMeta:
    def relations(key: str, parse: Any) -> tuple[Any, ...]:
        out = []
        items = pkg.get(key)
        for x in items if isinstance(items, list) else []:
            try:
                out.append(parse(x))
            except RelationError:
                continue
        return tuple(out)

    try:
        base = Req.parse(pkg["base"]) if pkg.get("base") else None
    except RelationError:
        base = None
    return PackageMeta(
        name=str(pkg.get("name", "") or "").strip(),
        version=str(pkg.get("version", "") or "").strip(),
        kind=str(pkg.get("kind", "") or "").strip(),
        summary=str(pkg.get("summary", "") or "").strip(),
        depends=relations("depends", Dependency.parse),
        conflicts=relations("conflicts", Req.parse),
        provides=relations("provides", lambda x: Provide.parse(str(x))),
        breaks=relations("breaks", Req.parse),
        base=base,
    )


def _model_table(data: dict[str, Any]) -> ModelTable | None:
    t = _table(data, "model")
    if t is None:
        return None
    params = t.get("parameters")
    return ModelTable(
        file=_opt_str(t.get("file")),
        chat_template=_opt_str(t.get("chat_template")),
        architecture=_opt_str(t.get("architecture")),
        context_length=_int_or_none(t.get("context_length")),
        fingerprint=_opt_str(t.get("fingerprint")),
        parameters=params if isinstance(params, dict) else {},
        abstention=_opt_str(t.get("abstention")),
    )


def _adapter_table(data: dict[str, Any]) -> AdapterTable | None:
    t = _table(data, "adapter")
    if t is None:
        return None
    scale = _number(t.get("scale"))
    return AdapterTable(file=_opt_str(t.get("file")), scale=1.0 if scale is None else scale)


def _knowledge_table(data: dict[str, Any]) -> KnowledgeTable:
    t = _table(data, "knowledge") or {}
    return KnowledgeTable(
        documents=_strs(t.get("documents", [])),
        chunk_size=_int_or_none(t.get("chunk_size")),
        chunk_overlap=_int_or_none(t.get("chunk_overlap")),
    )


def _entries(data: dict[str, Any], key: str) -> list[dict[str, Any]]:
    v = data.get(key)
    return [t for t in v if isinstance(t, dict)] if isinstance(v, list) else []


def _tool_decls(data: dict[str, Any]) -> list[ToolDecl]:
    out = []
    for t in _entries(data, "tools"):
        params = t.get("parameters")
        out.append(
            ToolDecl(
                name=str(t.get("name")) if t.get("name") is not None else "",
                description=str(t.get("description", "")),
                command=tuple(str(c) for c in t.get("command", [])) if isinstance(t.get("command"), list) else (),
                parameters=params if isinstance(params, dict) else None,
                timeout=_number(t.get("timeout")),
                max_output=t["max_output"] if isinstance(t.get("max_output"), int) else None,
                table=t,
            )
        )
    return out


def _mcp_decls(data: dict[str, Any]) -> list[McpDecl]:
    out = []
    for m in _entries(data, "mcp"):
        out.append(
            McpDecl(
                name=str(m.get("name")) if m.get("name") is not None else "",
                command=tuple(str(c) for c in m.get("command", [])) if isinstance(m.get("command"), list) else (),
                tools=tuple(str(x) for x in m.get("tools", []) or []) if isinstance(m.get("tools", []), list) else (),
                timeout=_number(m.get("timeout")),
                description=str(m.get("description", "")),
                table=m,
            )
        )
    return out


def _train_table(data: dict[str, Any]) -> TrainTable:
    t = _table(data, "train") or {}
    return TrainTable(data=_strs(t.get("data")), eval=_strs(t.get("eval")), replay=_strs(t.get("replay")), options=t)


def _archive_table(data: dict[str, Any]) -> ArchiveTable:
    c = (_table(data, "archive") or {}).get("compression")
    return ArchiveTable(c) if isinstance(c, str) else ArchiveTable()


def _merged_from(data: dict[str, Any]) -> MergedFrom | None:
    t = _table(data, "merged_from")
    if t is None:
        return None
    weights = t.get("weights")
    sources = t.get("sources")
    return MergedFrom(
        method=str(t.get("method", "")),
        weights=tuple(w for w in (_number(x) for x in weights) if w is not None) if isinstance(weights, list) else (),
        density=_number(t.get("density")),
        sources=tuple(s for s in sources if isinstance(s, dict)) if isinstance(sources, list) else (),
    )


def validate_manifest(data: Any) -> tuple[Manifest | None, list[Finding]]:
    """The typed manifest (``None`` on any error) and every finding, in a stable order."""
    findings: list[Finding] = []
    if not isinstance(data, dict):
        findings.append(Finding("manifest-type", "error", "manifest must be a TOML table"))
        return None, findings
    return _Parser(data, findings).validate(), findings


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
