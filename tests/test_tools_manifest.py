"""Manifest checks of [[tools]], [[mcp]] and chunking: each problem names its field, at build and check time."""

from __future__ import annotations

import pytest

from llmos_cli.pkg.manifest import parse_manifest_text

BASE = 'schema = 1\n[package]\nname = "x"\nversion = "1.0"\nkind = "library"\nsummary = "s"\nlicense = "MIT"\nmaintainer = "m"\n'


def findings(extra: str) -> list[str]:
    _, found = parse_manifest_text(BASE + extra)
    return [str(f) for f in found if f.severity == "error"]


def test_valid_tools_and_mcp_pass():
    ok = (
        '[[tools]]\nname = "weather"\ndescription = "d"\ncommand = ["python", "t.py"]\ntimeout = 5\n'
        'parameters = { type = "object", properties = { city = { type = "string", enum = ["Oslo"] } }, required = ["city"] }\n'
        '[[mcp]]\nname = "units"\ncommand = ["python", "s.py"]\ntools = ["convert", "scale"]\ntimeout = 10\n'
        '[knowledge]\ndocuments = ["*.md"]\nchunk_size = 100\nchunk_overlap = 20\n'
    )
    assert findings(ok) == []


@pytest.mark.parametrize(
    "extra, expected",
    [
        ('[[tools]]\nname = "9lives"\ndescription = "d"\ncommand = ["a"]\n', "tools[0].name: must start with a letter"),
        ('[[tools]]\nname = "t"\ndescription = "d"\ncommand = ["a"]\ntimeout = 0\n', "tools[0].timeout: must be a number of seconds"),
        (
            '[[tools]]\nname = "t"\ndescription = "d"\ncommand = ["a"]\nparameters = { type = "object", properties = { q = { type = "string", pattern = "^a" } } }\n',
            "tools[0].parameters: tool 't': cannot build a grammar for its parameters: parameters.properties.q: 'pattern' is not supported",
        ),
        ('[[mcp]]\nname = "s"\ncommand = []\ntools = ["a"]\n', "mcp[0].command: must be a non-empty list"),
        ('[[mcp]]\nname = "s"\ncommand = ["p"]\n', "mcp[0].tools: must list the server's tools"),
        ('[[mcp]]\nname = "s"\ncommand = ["p"]\ntools = ["a b"]\n', "mcp[0].tools: 'a b' is not a valid tool name"),
        (
            '[[mcp]]\nname = "s"\ncommand = ["p"]\ntools = ["a"]\n[[mcp]]\nname = "s"\ncommand = ["p"]\ntools = ["b"]\n',
            "mcp[1].name: MCP server 's' declared twice",
        ),
        (
            '[[tools]]\nname = "a"\ndescription = "d"\ncommand = ["x"]\n[[mcp]]\nname = "s"\ncommand = ["p"]\ntools = ["a"]\n',
            "mcp[0].tools: tool 'a' declared twice",
        ),
        ('[mcp]\nname = "s"\n', "mcp: must be an array of tables"),
        ('[knowledge]\ndocuments = ["*.md"]\nchunk_size = 50\nchunk_overlap = 60\n', "knowledge.chunk_overlap: must be smaller than chunk_size (50)"),
        ('[knowledge]\ndocuments = ["*.md"]\nchunk_size = 0\n', "knowledge.chunk_size: must be at least 1"),
    ],
)
def test_problems_name_their_field(extra, expected):
    errs = findings(extra)
    assert any(e.startswith(expected) for e in errs), errs


def test_llmos_check_reports_an_inexpressible_tool_schema(cli, tmp_path, write_source):
    folder = write_source(
        tmp_path,
        "odd",
        files={"t.py": "print(1)\n"},
        extra={"tools": [{"name": "t", "description": "d", "command": ["python", "t.py"], "parameters": {"type": "object", "properties": {"q": {"not": {}}}}}]},
    )
    r = cli("check", str(folder), "--json")
    assert r.exit_code == 10, r
    found = r.json()["data"]["findings"]
    assert any(f["code"] == "tool-schema" and f["field"] == "tools[0].parameters" for f in found), found
    r = cli("build", str(folder), "-o", str(tmp_path / "out"))
    assert r.exit_code == 5 and "tools[0].parameters" in r.stderr
