"""Tools served by a library's MCP server over stdio, through the official ``mcp`` SDK (client and server)."""

from __future__ import annotations

import pytest

from llmos_cli.errors import ToolError
from llmos_cli.knowledge.libraries import LibraryView
from llmos_cli.runtime.engine import EngineOptions, LlamaCppEngine, SamplingParams
from llmos_cli.tools.loop import LoopOptions, run_tool_loop
from llmos_cli.tools.permissions import Policy
from llmos_cli.tools.registry import ToolSet
from tests.helpers.fixtures_models import llama_sdist, write_real_vocab_model  # noqa: F401  (fixture)

SERVER = '''
import os, time
from typing import Literal
try:
    from mcp.server.mcpserver import MCPServer as Server   # mcp >= 2
except ImportError:
    from mcp.server.fastmcp import FastMCP as Server        # mcp 1.x

srv = Server("units")

@srv.tool()
def convert(value: float, unit: Literal["km", "mi"]) -> dict:
    """Convert a distance to the other unit."""
    return {"value": round(value * 1.609344, 6) if unit == "mi" else round(value / 1.609344, 6), "unit": "km" if unit == "mi" else "mi"}

@srv.tool()
def slow(seconds: float) -> str:
    """Sleep, then answer."""
    time.sleep(seconds)
    return "done"

@srv.tool()
def fail(x: int) -> str:
    """Always fails."""
    raise ValueError("the converter is broken")

@srv.tool()
def env() -> list[str]:
    """The environment variable names the server sees."""
    return sorted(os.environ)

@srv.tool()
def hidden() -> str:
    """Not exposed by the library."""
    return "secret"

srv.run()
'''


def _lib(tmp_path, write_source, name="units", tools=("convert", "slow", "fail", "env"), command=None, **extra) -> LibraryView:
    decl = {"name": "units-srv", "command": command or ["python", "mcp/server.py"], "tools": list(tools), "timeout": 5, **extra}
    folder = write_source(
        tmp_path, name, files={"mcp/server.py": SERVER, "mcp/crash.py": "raise SystemExit('cannot start: no config')\n"}, extra={"mcp": [decl]}
    )
    return LibraryView.from_folder(folder)


@pytest.fixture
def units(tmp_path, write_source, monkeypatch):
    monkeypatch.setenv("SECRET_TOKEN", "hunter2")
    ts = ToolSet.for_run([_lib(tmp_path, write_source)])
    yield ts
    ts.close()


def test_lists_only_the_declared_tools_with_their_schemas(units):
    assert units.names() == ["calculator", "convert", "slow", "fail", "env"]
    conv = units.get("convert")
    assert conv.kind == "mcp" and conv.source == "units" and conv.key == "units:convert"
    assert conv.description == "Convert a distance to the other unit."
    props = conv.parameters["properties"]
    assert props["unit"]["enum"] == ["km", "mi"] and props["value"]["type"] == "number"
    assert units.get("hidden") is None


@pytest.mark.slow
def test_calls_results_errors_and_timeouts(units):
    r = units.call(units.get("convert"), {"value": 10, "unit": "mi"})
    assert r.ok, r.error
    flat = r.value.get("result", r.value) if isinstance(r.value, dict) else r.value
    assert flat == {"value": 16.09344, "unit": "km"}
    bad = units.call(units.get("fail"), {"x": 1})
    assert not bad.ok and "tool 'fail' reported an error" in bad.error
    invalid = units.call(units.get("convert"), {"value": "ten", "unit": "mi"})
    assert not invalid.ok and "invalid arguments" in invalid.error
    spec = units.get("slow")
    spec.timeout = 1.0
    slow = units.call(spec, {"seconds": 5})
    assert not slow.ok and "timed out after 1 s" in slow.error
    again = units.call(units.get("convert"), {"value": 1, "unit": "km"})
    assert again.ok  # the server is still usable


def test_server_environment_is_scrubbed(units):
    r = units.call(units.get("env"), {})
    assert r.ok, r.error
    names = r.value.get("result", r.value) if isinstance(r.value, dict) else r.value
    assert "SECRET_TOKEN" not in names and "LLMOS_TOOL" in names


def test_server_problems_are_clear_errors(tmp_path, write_source):
    with pytest.raises(ToolError, match="does not serve the declared tool\\(s\\) teleport"):
        ToolSet.for_run([_lib(tmp_path / "a", write_source, tools=("convert", "teleport"))])
    with pytest.raises(ToolError, match="MCP server 'units-srv' of library units failed to start"):
        ToolSet.for_run([_lib(tmp_path / "b", write_source, command=["python", "mcp/crash.py"])])


@pytest.mark.slow
def test_forced_mcp_call_round_the_loop(tmp_path, write_source, llama_sdist):
    model = write_real_vocab_model(tmp_path / "m.gguf", llama_sdist, "qwen2", "Qwen-Qwen2.5-7B-Instruct", n_ctx=2048)
    ts = ToolSet.for_run([_lib(tmp_path, write_source, tools=("convert",))])
    try:
        with LlamaCppEngine(model.path, EngineOptions(n_ctx=2048)) as engine:
            res = run_tool_loop(
                engine,
                [{"role": "user", "content": "How many km is 3 miles?"}],
                ts,
                LoopOptions(
                    tool_choice="convert",
                    params=SamplingParams(max_tokens=64, temperature=0.8, seed=5),
                    policy=Policy(allow=frozenset({"units:convert"})),
                ),
            )
    finally:
        ts.close()
    rec = res.tool_calls[0]
    assert rec.call.name == "convert" and rec.source == "units"
    assert rec.call.arguments["unit"] in ("km", "mi") and isinstance(rec.call.arguments["value"], (int, float))
    assert rec.result.ok, rec.result.error
    assert "<tool_response>" in res.prompts[1]
