"""Library command tools run for real: JSON in/out, no shell, timeout, output cap, scrubbed env, temp cwd."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from llmos_cli.knowledge.libraries import LibraryView
from llmos_cli.tools.command import run_command
from llmos_cli.tools.registry import ToolSet
from llmos_cli.tools.spec import ToolSpec

SCRIPTS = {
    "tools/echo.py": "import json, sys\nargs = json.load(sys.stdin)\nprint(json.dumps({'got': args}))\n",
    "tools/env.py": (
        "import json, os, sys\njson.load(sys.stdin)\nprint(json.dumps({'env': dict(os.environ), 'cwd': os.getcwd(), 'files': sorted(os.listdir('tools'))}))\n"
    ),
    "tools/hang.py": "import time\ntime.sleep(60)\n",
    "tools/flood.py": "import sys\nwhile True:\n    sys.stdout.write('x' * 65536)\n",
    "tools/fail.py": "import sys\nsys.stderr.write('boom: no such city\\n')\nsys.exit(3)\n",
    "tools/junk.py": "print('this is not json')\n",
    "tools/silent.py": "pass\n",
    "tools/write.py": "import json, sys, os\njson.load(sys.stdin)\nopen('made.txt', 'w').write('x')\nprint(json.dumps(os.getcwd()))\n",
    "tools/argv.py": "import json, sys\njson.load(sys.stdin)\nprint(json.dumps(sys.argv[1:]))\n",
}


@pytest.fixture
def lib(tmp_path, write_source) -> LibraryView:
    folder = write_source(tmp_path, "toolbox", files=SCRIPTS, extra={"prompt": {"system": "tools/echo.py"}})
    return LibraryView.from_folder(folder)


def spec(lib, script: str, *args: str, **kw) -> ToolSpec:
    return ToolSpec(
        name=Path(script).stem,
        description="t",
        parameters={"type": "object"},
        source="toolbox",
        kind="command",
        command=["python", f"tools/{script}", *args],
        library=lib,
        **kw,
    )


def test_json_in_json_out(lib):
    r = run_command(spec(lib, "echo.py"), {"city": "Oslo", "n": 2})
    assert r.ok, r.error
    assert r.value == {"got": {"city": "Oslo", "n": 2}}


def test_environment_is_scrubbed_and_cwd_is_a_temporary_copy(lib, monkeypatch):
    monkeypatch.setenv("SECRET_TOKEN", "hunter2")
    r = run_command(spec(lib, "env.py"), {})
    assert r.ok, r.error
    env, cwd = r.value["env"], r.value["cwd"]
    assert "SECRET_TOKEN" not in env
    assert set(env) <= {"PATH", "LANG", "LC_ALL", "HOME", "TMPDIR", "PYTHONDONTWRITEBYTECODE", "PYTHONIOENCODING", "LLMOS_TOOL", "LC_CTYPE"}
    assert env["HOME"] == cwd and env["LLMOS_TOOL"] == "env"
    assert "echo.py" in r.value["files"]  # the package's files are there
    assert not Path(cwd).exists()  # and gone afterwards
    assert str(lib.files["tools/env.py"].parent) != cwd


def test_writes_stay_in_the_temporary_folder(lib):
    r = run_command(spec(lib, "write.py"), {})
    assert r.ok, r.error
    assert not Path(r.value).exists()
    assert not (lib.files["tools/write.py"].parent / "made.txt").exists()


def test_no_shell_interprets_arguments(lib, tmp_path):
    marker = tmp_path / "pwned"
    r = run_command(spec(lib, "argv.py", f"; touch {marker}", "$(id)"), {})
    assert r.ok, r.error
    assert r.value == [f"; touch {marker}", "$(id)"]
    assert not marker.exists()


def test_a_hanging_tool_is_stopped(lib):
    r = run_command(spec(lib, "hang.py", timeout=1.0), {})
    assert not r.ok and "timed out after 1 s" in r.error


def test_a_flooding_tool_is_capped(lib):
    r = run_command(spec(lib, "flood.py", max_output=100_000), {})
    assert not r.ok and r.truncated
    assert "more than 100000 bytes" in r.error


def test_non_zero_exit_invalid_json_and_silence_are_error_results(lib):
    r = run_command(spec(lib, "fail.py"), {})
    assert not r.ok and "exited with status 3: boom: no such city" in r.error
    r = run_command(spec(lib, "junk.py"), {})
    assert not r.ok and "did not print valid JSON" in r.error
    r = run_command(spec(lib, "silent.py"), {})
    assert not r.ok and "printed nothing" in r.error
    missing = ToolSpec("ghost", "t", {"type": "object"}, "toolbox", "command", command=["/nonexistent/ghost"], library=lib)
    r = run_command(missing, {})
    assert not r.ok and "could not start" in r.error
    assert json.loads(r.model_text())["error"].startswith("tool 'ghost' could not start")


def test_toolset_validates_arguments_before_running(tmp_path, write_source):
    folder = write_source(
        tmp_path,
        "toolbox",
        files=SCRIPTS,
        extra={
            "tools": [
                {
                    "name": "echo",
                    "description": "echo",
                    "command": ["python", "tools/echo.py"],
                    "parameters": {"type": "object", "properties": {"n": {"type": "integer", "maximum": 5}}, "required": ["n"]},
                }
            ]
        },
    )
    ts = ToolSet.for_run([LibraryView.from_folder(folder)])
    try:
        assert ts.names() == ["calculator", "echo"]
        echo = ts.get("echo")
        assert echo.key == "toolbox:echo"
        assert ts.call(echo, {"n": 3}).value == {"got": {"n": 3}}
        bad = ts.call(echo, {"n": 9})
        assert not bad.ok and "invalid arguments for 'echo': n: 9 is greater than the maximum of 5" in bad.error
        assert not ts.call(echo, {}).ok
    finally:
        ts.close()


def test_name_clashes_keep_the_first_and_warn(tmp_path, write_source):
    decl = {"name": "calculator", "description": "x", "command": ["python", "tools/echo.py"]}
    a = LibraryView.from_folder(write_source(tmp_path, "alpha", files=SCRIPTS, extra={"tools": [decl, {**decl, "name": "echo"}]}))
    b = LibraryView.from_folder(write_source(tmp_path, "beta", files=SCRIPTS, extra={"tools": [{**decl, "name": "echo"}]}))
    ts = ToolSet.for_run([b, a])
    assert ts.names() == ["calculator", "echo"]
    assert ts.get("echo").source == "alpha" and ts.get("calculator").source == "builtin"
    assert any("'calculator' of alpha left out" in w for w in ts.warnings)
    assert any("'echo' of beta left out" in w for w in ts.warnings)


def test_tool_files_are_read_only_copies(lib):
    r = run_command(spec(lib, "env.py"), {})
    assert r.ok
    assert os.access(lib.files["tools/env.py"], os.W_OK)  # the source is untouched
