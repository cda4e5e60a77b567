"""The typed view of ``llmos.toml``: every table parsed once into its dataclass, wrong types named, and
``llmos check``, the strict loader and the view of an installed package agreeing with one another."""

from __future__ import annotations

import json

import pytest
import tomli_w

from llmos_cli.pkg.manifest import (
    AdapterTable,
    ArchiveTable,
    FileRecord,
    GlossaryTable,
    KnowledgeTable,
    Manifest,
    McpDecl,
    MergedFrom,
    ModelTable,
    PromptTable,
    ToolDecl,
    TrainTable,
    load_manifest,
    parse_manifest_text,
    validate_manifest,
)
from llmos_cli.pkg.meta import Dependency, Req

SHA = "ab" * 32
PARAMS = {"type": "object", "properties": {"kg": {"type": "number"}}, "required": ["kg"]}

LIBRARY = {
    "schema": 1,
    "package": {
        "name": "med-lib",
        "version": "2.1.0",
        "kind": "library",
        "summary": "Cardiology knowledge",
        "license": "CC-BY-4.0",
        "maintainer": "Med Team <med@example.org>",
        "description": "Longer text",
        "homepage": "https://example.org/med",
        "tags": ["medicine", "demo"],
        "base": "tiny-chat>=1.0,<2",
        "depends": ["anatomy-core>=1.2", "calc-tools | math-tools>=2"],
        "conflicts": ["old-med<2"],
        "provides": ["medical-knowledge"],
    },
    "adapter": {"file": "adapter.gguf", "scale": 0.75},
    "knowledge": {"documents": ["docs/**/*.md", "notes/*.txt"], "chunk_size": 120, "chunk_overlap": 20},
    "glossary": {"file": "glossary.toml"},
    "prompt": {"system": "prompt.md"},
    "tools": [
        {"name": "dose", "description": "Compute a dose", "command": ["python3", "tools/dose.py"], "parameters": PARAMS, "timeout": 10, "max_output": 4096},
    ],
    "mcp": [{"name": "units", "command": ["python3", "mcp/units.py"], "tools": ["convert", "scale"], "timeout": 5, "description": "unit server"}],
    "train": {"data": "train/qa.jsonl", "eval": ["train/heldout.jsonl"], "steps": 40, "rank": 4},
    "merged_from": {"method": "cat", "weights": [1.0, 0.5], "sources": [{"name": "a", "version": "1.0"}, {"name": "b", "version": "2.0"}]},
    "archive": {"compression": "none"},
    "files": {"adapter.gguf": {"sha256": SHA, "size": 123}},
}

MODEL = {
    "schema": 1,
    "package": {"name": "tiny-chat", "version": "1.0.0", "kind": "model", "summary": "s", "license": "MIT", "maintainer": "m"},
    "model": {
        "file": "model.gguf",
        "chat_template": "template.jinja",
        "architecture": "llama",
        "context_length": 2048,
        "fingerprint": "sha256:00",
        "parameters": {"temperature": 0.2},
    },
}


def test_each_library_table_is_parsed_into_its_dataclass():
    m, findings = validate_manifest(LIBRARY)
    assert findings == [] and m is not None
    assert (m.name, m.version, m.kind) == ("med-lib", "2.1.0", "library")  # from PackageMeta, declared once
    assert m.meta.base == Req.parse("tiny-chat>=1.0,<2")
    assert m.meta.depends == (Dependency.parse("anatomy-core>=1.2"), Dependency.parse("calc-tools | math-tools>=2"))
    assert [str(c) for c in m.meta.conflicts] == ["old-med<2"] and list(m.meta.provides) == ["medical-knowledge"]
    assert (m.license, m.maintainer, m.description, m.homepage, m.tags) == (
        "CC-BY-4.0",
        "Med Team <med@example.org>",
        "Longer text",
        "https://example.org/med",
        ("medicine", "demo"),
    )
    assert m.model is None
    assert m.adapter == AdapterTable(file="adapter.gguf", scale=0.75)
    assert m.knowledge == KnowledgeTable(documents=("docs/**/*.md", "notes/*.txt"), chunk_size=120, chunk_overlap=20)
    assert m.glossary == GlossaryTable("glossary.toml") and m.prompt == PromptTable("prompt.md")
    assert m.tools == [ToolDecl("dose", "Compute a dose", ("python3", "tools/dose.py"), PARAMS, 10.0, 4096)]
    assert m.tools[0].table == LIBRARY["tools"][0]  # kept verbatim for llmos merge
    assert m.mcp == [McpDecl("units", ("python3", "mcp/units.py"), ("convert", "scale"), 5.0, "unit server")]
    assert m.train == TrainTable(data=("train/qa.jsonl",), eval=("train/heldout.jsonl",), replay=(), options=LIBRARY["train"])
    assert m.merged_from == MergedFrom("cat", (1.0, 0.5), None, ({"name": "a", "version": "1.0"}, {"name": "b", "version": "2.0"}))
    assert m.archive == ArchiveTable("none")
    assert m.files == {"adapter.gguf": FileRecord(SHA, 123)} and m.has_files_table
    assert m.declared_files() == ["adapter.gguf", "glossary.toml", "prompt.md"]
    assert m.named_files() == [("adapter.file", "adapter.gguf"), ("glossary.file", "glossary.toml"), ("prompt.system", "prompt.md")]


def test_a_model_table_and_the_defaults_of_absent_tables():
    m, findings = validate_manifest(MODEL)
    assert findings == [] and m is not None
    assert m.model == ModelTable("model.gguf", "template.jinja", "llama", 2048, "sha256:00", {"temperature": 0.2})
    assert m.declared_files() == ["model.gguf", "template.jinja"]
    # absent tables: None where a table names a file, empty where it is a list or a bag of settings
    assert (m.adapter, m.glossary, m.prompt, m.merged_from, m.tags) == (None, None, None, None, None)
    assert m.knowledge == KnowledgeTable() and m.train == TrainTable() and m.archive == ArchiveTable("auto")
    assert (m.tools, m.mcp, m.files, m.has_files_table) == ([], [], {}, False)


@pytest.mark.parametrize(
    "table, value, field",
    [
        ("package", {"depends": "bio-core"}, "package.depends"),
        ("package", {"summary": 5}, "package.summary"),
        ("adapter", {"file": "adapter.gguf", "scale": "high"}, "adapter.scale"),
        ("adapter", {"file": "../adapter.gguf"}, "adapter.file"),
        ("knowledge", {"documents": ["*.md"], "chunk_size": "big"}, "knowledge.chunk_size"),
        ("knowledge", {"documents": [1, 2]}, "knowledge.documents"),
        ("glossary", "glossary.toml", "glossary"),
        ("tools", [{"name": "t", "description": "d", "command": "python t.py"}], "tools[0].command"),
        ("tools", [{"name": "t", "description": "d", "command": ["p"], "timeout": "10"}], "tools[0].timeout"),
        ("mcp", [{"name": "s", "command": ["p"], "tools": ["a"], "timeout": -1}], "mcp[0].timeout"),
        ("files", {"a.md": {"sha256": "short", "size": 1}}, "files.a.md"),
        ("archive", {"compression": "zip"}, "archive.compression"),
    ],
)
def test_a_wrong_type_gives_a_finding_naming_the_field(table, value, field):
    data = json.loads(json.dumps(LIBRARY))
    data[table] = {**data[table], **value} if table == "package" else value
    m, findings = validate_manifest(data)
    errors = [f for f in findings if f.severity == "error"]
    assert m is None
    assert [f.field for f in errors] == [field], errors


def test_payloads_declared_by_hash_are_typed_and_checked():
    from llmos_cli.pkg.external import ExternalPayload

    data = json.loads(json.dumps(MODEL))
    origin = "https://models.example.org/tiny/model.gguf"
    data["payload"] = [{"path": "model.gguf", "sha256": SHA, "size": 42, "origins": [origin]}]
    m, findings = validate_manifest(data)
    assert findings == [] and m is not None
    assert m.payloads == [ExternalPayload("model.gguf", SHA, 42, (origin,))]
    data["payload"][0]["sha256"] = "short"
    m, findings = validate_manifest(data)
    assert m is None and [(f.code, f.field) for f in findings] == [("field-type", "payload[0].sha256")]
    assert Manifest.from_table(data).payloads == []  # the lenient reader leaves a bad entry out


def test_every_problem_is_reported_at_once():
    data = json.loads(json.dumps(LIBRARY))
    data["package"]["version"] = "one"
    data["package"]["depends"] = ["ok>=1", "!!"]
    data["adapter"]["scale"] = "x"
    data["tools"][0]["command"] = []
    data["mcp"][0]["tools"] = []
    data["odd"] = 1
    m, findings = validate_manifest(data)
    assert m is None
    assert [(f.severity, f.field) for f in findings] == [
        ("warning", "odd"),
        ("error", "package.version"),
        ("error", "package.depends[1]"),
        ("error", "adapter.scale"),
        ("error", "tools[0].command"),
        ("error", "mcp[0].tools"),
    ]


def test_from_table_reads_anything_without_raising():
    """The lenient reader (stored rows, plain folders): a wrong field reads as absent, nothing raises."""
    junk = {"package": {"name": 5, "depends": ["ok>=1", "!!"], "provides": "x"}, "adapter": [], "tools": "t", "mcp": [{"tools": "a"}], "train": 3}
    m = Manifest.from_table(junk)
    assert m.name == "5" and [str(d) for d in m.meta.depends] == ["ok>=1"] and m.meta.provides == ()
    assert (m.adapter, m.tools, m.train) == (None, [], TrainTable())
    assert m.mcp == [McpDecl("", (), (), None, "")]
    assert Manifest.from_table("not a table").name == ""  # type: ignore[arg-type]
    # on valid data it is exactly the validated view
    assert Manifest.from_table(LIBRARY) == validate_manifest(LIBRARY)[0]
    assert Manifest.from_table(MODEL) == validate_manifest(MODEL)[0]


def _findings_of_check(cli, folder) -> list[dict]:
    r = cli("check", str(folder), "--json")
    assert r.exit_code in (0, 10), r
    return r.json()["data"]["findings"]


@pytest.mark.parametrize(
    "extra",
    [
        {},
        {"adapter": {"file": "adapter.gguf", "scale": "x"}},
        {"knowledge": {"documents": ["docs/*.md"], "chunk_size": 10, "chunk_overlap": 10}, "mystery": True},
        {"tools": [{"name": "9t", "description": "d", "command": ["python", "t.py"], "timeout": 0}], "archive": {"compression": 1}},
        {"mcp": [{"name": "s", "command": ["p"], "tools": ["a b"], "colour": "red"}], "train": {"steps": 3}},
    ],
)
def test_the_typed_view_and_llmos_check_agree(tmp_path, cli, write_source, extra):
    extra = {"knowledge": {"documents": ["docs/*.md"]}, **extra}
    folder = write_source(tmp_path, "agree", files={"docs/a.md": "# A\n\ntext\n", "t.py": "print(1)\n"}, extra=extra)
    typed, findings = parse_manifest_text((folder / "llmos.toml").read_bytes())
    checked = _findings_of_check(cli, folder)
    # check reports the manifest's findings first, in the same order, then those about files
    # (check adds the file it read as their ``path``)
    assert checked[: len(findings)] == [{**f.to_json(), "path": "llmos.toml"} for f in findings]
    has_error = any(f.severity == "error" for f in findings)
    assert (typed is None) == has_error
    if typed is not None:
        assert load_manifest(folder) == typed
        assert Manifest.read_folder(folder) == typed
        assert typed.knowledge.documents == ("docs/*.md",)


def test_an_installed_package_reads_the_same_typed_view(tmp_path, cli):
    from llmos_cli.paths import get_paths
    from llmos_cli.pkg.archive import PackageArchive
    from llmos_cli.state.db import StateDB
    from tests.helpers.installtools import archive_path, build_registry, use_registry

    extra = {
        "knowledge": {"documents": ["docs/*.md"], "chunk_size": 50, "chunk_overlap": 5},
        "glossary": {"file": "glossary.toml"},
        "prompt": {"system": "prompt.md"},
        "tools": [{"name": "echo", "description": "echo", "command": ["python", "t.py"], "parameters": PARAMS, "timeout": 3}],
        "train": {"data": ["qa.jsonl"], "steps": 5},
    }
    files = {
        "docs/a.md": "# A\n\ntext\n",
        "glossary.toml": '[terms]\nECG = "Electrocardiogram."\n',
        "prompt.md": "Be brief.",
        "t.py": "print(1)\n",
        "qa.jsonl": "{}\n",
    }
    reg = build_registry(tmp_path, [{"name": "typed-lib", "files": files, "extra": extra}])
    use_registry(cli, reg)
    assert cli("install", "-y", "typed-lib").exit_code == 0
    archived = PackageArchive.open(archive_path(reg, "typed-lib", "1.0.0")).manifest
    db = StateDB.open(get_paths())
    try:
        pkg = db.get("typed-lib")
    finally:
        db.close()
    assert pkg is not None
    stored = pkg.typed_manifest
    assert stored == archived
    assert (stored.name, stored.version, stored.kind) == (pkg.name, pkg.version, pkg.kind) == ("typed-lib", "1.0.0", "library")
    assert stored.knowledge == KnowledgeTable(("docs/*.md",), 50, 5) and stored.train.data == ("qa.jsonl",)
    assert stored.tools[0].parameters == PARAMS and stored.tools[0].timeout == 3.0
    assert pkg.manifest == tomli_w_roundtrip(archived.raw)  # the row keeps the table as written


def tomli_w_roundtrip(data: dict) -> dict:
    import tomllib

    return tomllib.loads(tomli_w.dumps(data))
