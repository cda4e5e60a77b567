"""``llmos query``, ``llmos tools ...`` and the knowledge/tool options of ``llmos run``, on real installs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.helpers.fixtures_models import write_tiny_llama

HEART = """# Heart

## Symptoms

Chest pain, shortness of breath and a rise of troponin are the symptoms of a myocardial infarction.

## Treatment

Aspirin and rapid reperfusion of the blocked artery save heart muscle.
"""
RENAL = "Kidneys filter the blood. Dialysis replaces the filtering when the kidneys fail.\n"
WEATHER = "import json, sys\nargs = json.load(sys.stdin)\nprint(json.dumps({'city': args['city'], 'sky': 'clear'}))\n"
SCHEMA = {"type": "object", "properties": {"city": {"type": "string", "enum": ["Oslo", "Lima"]}}, "required": ["city"]}


def _install_library(cli, tmp_path: Path, write_source, name: str, files: dict, extra: dict) -> None:
    folder = write_source(tmp_path / "src", name, files=files, extra=extra)
    r = cli("build", str(folder), "-o", str(tmp_path / "out"))
    assert r.exit_code == 0, r
    r = cli("install", str(tmp_path / "out" / f"{name}_1.0.0.llmos"), "-y")
    assert r.exit_code == 0, r


@pytest.fixture
def installed(cli, tmp_path, write_source):
    _install_library(
        cli,
        tmp_path,
        write_source,
        "cardio",
        {"docs/heart.md": HEART, "glossary.toml": '[terms.troponin]\ndefinition = "A heart-muscle protein."\n'},
        {"knowledge": {"documents": ["docs/*.md"], "chunk_size": 30}, "glossary": {"file": "glossary.toml"}},
    )
    _install_library(
        cli,
        tmp_path,
        write_source,
        "renal",
        {"docs/kidney.txt": RENAL, "tools/weather.py": WEATHER},
        {
            "knowledge": {"documents": ["docs/*.txt"]},
            "tools": [{"name": "weather", "description": "Sky over a city.", "command": ["python", "tools/weather.py"], "parameters": SCHEMA}],
        },
    )
    return tmp_path


@pytest.fixture
def with_model(cli, installed, tmp_path):
    write_tiny_llama(tmp_path / "tiny.gguf", n_ctx=2048)
    r = cli("import-model", str(tmp_path / "tiny.gguf"), "--name", "tiny", "-y")
    assert r.exit_code == 0, r
    return tmp_path


# ---------------------------------------------------------------- query


def test_query_across_attached_libraries(cli, installed):
    r = cli("query", "troponin symptoms", "--json")
    assert r.exit_code == 0, r
    data = r.json()["data"]
    assert data["libraries"] == ["cardio", "renal"]
    top = data["results"][0]
    assert top["library"] == "cardio" and top["document"] == "docs/heart.md" and top["section"] == "Heart > Symptoms"
    assert top["citation"] == f"[cardio:docs/heart.md#{top['chunk']}]" and top["score"] > 0
    r = cli("query", "dialysis")
    assert r.exit_code == 0 and "[renal:docs/kidney.txt#1]" in r.stdout
    r = cli("query", "dialysis", "--lib", "cardio")
    assert r.exit_code == 0 and r.stdout == "" and "no match in 1 library" in r.stderr
    r = cli("detach", "renal")
    assert r.exit_code == 0, r
    assert cli("query", "dialysis", "--json").json()["data"]["results"] == []


def test_query_bad_input(cli, installed):
    r = cli("query", "x", "--lib", "nosuch")
    assert r.exit_code == 3 and "library 'nosuch' is not installed" in r.stderr
    r = cli("query", "   ")
    assert r.exit_code == 2 and "empty query" in r.stderr


def test_query_on_a_corrupt_index_fails_clearly(cli, installed, llmos_home):
    from llmos_cli.paths import get_paths
    from llmos_cli.state.db import StateDB
    from llmos_cli.state.store import Store

    paths = get_paths()
    db = StateDB.open(paths)
    f = next(f for f in db.files("cardio") if f.path == ".llmos/knowledge.sqlite")
    db.close()
    blob = Store(paths).path_for(f.sha256)
    blob.chmod(0o644)
    blob.write_bytes(b"garbage" * 100)
    r = cli("query", "troponin")
    assert r.exit_code == 6, r
    assert "library cardio: knowledge index" in r.stderr and "corrupt" in r.stderr
    assert "llmos verify cardio" in r.stderr


# ---------------------------------------------------------------- tools list / allow / deny


def test_tools_list_allow_deny(cli, installed):
    r = cli("tools", "list", "--json")
    assert r.exit_code == 0, r
    rows = {t["key"]: t for t in r.json()["data"]}
    assert set(rows) == {"builtin:calculator", "builtin:lookup", "renal:weather"}
    assert rows["renal:weather"]["library"] == "renal" and rows["renal:weather"]["allowed"] is False
    assert rows["builtin:calculator"]["allowed"] is True
    # allowing asks; without a terminal it needs --yes
    r = cli("tools", "allow", "weather")
    assert r.exit_code == 18 and "--yes" in r.stderr
    r = cli("tools", "allow", "weather", "-s")
    assert r.exit_code == 0 and "would set renal:weather: ask -> allowed" in r.stderr
    assert cli("tools", "list", "--json").json()["data"][2]["allowed"] is False
    r = cli("tools", "allow", "weather", "-y")
    assert r.exit_code == 0, r
    assert {t["key"]: t["allowed"] for t in cli("tools", "list", "--json").json()["data"]}["renal:weather"] is True
    r = cli("tools", "deny", "renal:weather")
    assert r.exit_code == 0 and "allowed -> denied" in r.stderr
    r = cli("tools", "deny", "calculator")
    assert r.exit_code == 0
    rows = {t["key"]: t for t in cli("tools", "list", "--json").json()["data"]}
    assert rows["renal:weather"]["status"] == "denied" and rows["builtin:calculator"]["allowed"] is False
    r = cli("tools", "allow", "nosuch", "-y")
    assert r.exit_code == 3 and "no tool named 'nosuch'" in r.stderr


# ---------------------------------------------------------------- llmos run


def test_run_explain_shows_parts_and_does_not_generate(cli, with_model):
    r = cli("run", "what are the symptoms with troponin?", "--explain", "--knowledge", "2", "--tool-choice", "none")
    assert r.exit_code == 0, r
    out = r.stdout
    assert "--- refinements: 1 term" in out and "- troponin: A heart-muscle protein." in out
    assert "--- knowledge: " in out and "[cardio:docs/heart.md#" in out
    assert "--- user (" in out and "what are the symptoms with troponin?" in out
    assert "context 2048 = prompt" in out
    r = cli("run", "what are the symptoms with troponin?", "--explain", "--json", "--tool-choice", "none")
    data = r.json()["data"]
    assert data["text"] == "" and data["usage"]["completion_tokens"] == 0
    ex = data["extra"]["explain"]
    assert {p["name"] for p in ex["parts"]} == {"system", "refinements", "knowledge", "tools", "user", "template"}
    assert ex["budget"]["prompt_tokens"] == sum(p["tokens"] for p in ex["parts"])


def test_run_json_reports_knowledge_budget_and_tools(cli, with_model):
    r = cli("run", "troponin symptoms", "--json", "-n", "4", "--temperature", "0", "--tool-choice", "none")
    assert r.exit_code == 0, r
    extra = r.json()["data"]["extra"]
    k = extra["knowledge"][0]
    assert set(k) >= {"library", "document", "score", "citation", "chunk"}
    assert k["library"] == "cardio"
    b = extra["budget"]
    assert b["context"] == 2048 and b["reserve"] == 4 and b["prompt_tokens"] <= b["available"]
    assert r.json()["data"]["usage"]["prompt_tokens"] == b["prompt_tokens"]
    assert extra["refinements"][0]["term"] == "troponin"
    r = cli("run", "troponin symptoms", "--json", "-n", "2", "--knowledge", "off", "--tool-choice", "none")
    assert r.json()["data"]["extra"]["knowledge"] == []
    r = cli("run", "x", "--knowledge", "lots")
    assert r.exit_code == 2 and "--knowledge takes off, auto or a number" in r.stderr


def test_run_forced_tool_call(cli, with_model):
    r = cli("run", "sky over Oslo?", "--json", "-n", "40", "--seed", "1", "--tool-choice", "weather", "--allow-tool", "weather", "--knowledge", "off")
    assert r.exit_code == 0, r
    extra = r.json()["data"]["extra"]
    (call,) = extra["tool_calls"]
    assert call["name"] == "weather" and call["library"] == "renal" and call["ok"] is True
    assert call["value"] == {"city": call["arguments"]["city"], "sky": "clear"}
    assert extra["tool_format"] == "generic" and extra["tool_rounds"] == 1


def test_run_tools_debug_goes_to_stderr(cli, with_model):
    r = cli("run", "sky over Lima?", "-n", "40", "--seed", "2", "--tool-choice", "weather", "--allow-tools", "--tools-debug", "--knowledge", "off")
    assert r.exit_code == 0, r
    assert "[tools] call weather {" in r.stderr and "[tools] result weather" in r.stderr
    assert "[tools]" not in r.stdout


def test_run_refuses_a_tool_nobody_allowed_without_hanging(cli, llmos_proc, with_model):
    r = llmos_proc("run", "sky over Oslo?", "-n", "20", "--tool-choice", "weather", input="", timeout=120)
    assert r.exit_code == 14, r
    assert "tool 'weather' from library renal is not allowed" in r.stderr
    assert "--allow-tool weather" in r.stderr
    # a stored permission is enough, in a later process
    assert cli("tools", "allow", "renal:weather", "-y").exit_code == 0
    r = llmos_proc("run", "sky over Oslo?", "-n", "20", "--seed", "3", "--tool-choice", "weather", "--json", input="", timeout=120)
    assert r.exit_code == 0, r
    assert r.json()["data"]["extra"]["tool_calls"][0]["ok"] is True
    # and a stored denial beats --allow-tools
    assert cli("tools", "deny", "weather").exit_code == 0
    r = llmos_proc("run", "sky over Oslo?", "-n", "20", "--tool-choice", "weather", "--allow-tools", input="", timeout=120)
    assert r.exit_code == 14 and "denied" in r.stderr


def test_run_tool_errors_are_clear(cli, with_model):
    r = cli("run", "x", "--tool-choice", "teleport", "--allow-tools")
    assert r.exit_code == 3 and "no tool named 'teleport'" in r.stderr
    r = cli("run", "x", "--allow-tool", "telepart")
    assert r.exit_code == 3 and "no tool named 'telepart'" in r.stderr
    r = cli("run", "x", "--chain-limit", "-1")
    assert r.exit_code == 2


def test_run_prompt_too_large_for_the_context(cli, with_model):
    r = cli("run", "hello world " * 1200, "--json", "-n", "16", "--tool-choice", "none")
    assert r.exit_code == 13, r
    err = r.json()["error"]
    assert err["code"] == "context_overflow" and "tokens too long" in err["message"]
    assert err["details"]["over_by"] > 0
    assert json.dumps(err)  # serialisable
