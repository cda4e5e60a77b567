"""The CLI's command map and start-up hygiene."""

from __future__ import annotations

import importlib
import subprocess
import sys

import typer
from typer.main import get_command

from llmos_cli.cli import COMMAND_MODULES, MODULES, _invoked_module

HEAVY = ("llama_cpp", "torch", "transformers", "peft")


def _commands_of(module: str) -> set[str]:
    app = typer.Typer()

    @app.callback()
    def _cb() -> None:
        pass

    importlib.import_module(f"llmos_cli.cli.{module}").register(app)
    return set(get_command(app).commands)


def test_command_map_matches_the_modules():
    seen: dict[str, str] = {}
    for module in MODULES:
        for cmd in _commands_of(module):
            assert cmd not in seen, f"{cmd} defined by both {seen[cmd]} and {module}"
            seen[cmd] = module
    assert seen == COMMAND_MODULES


def test_invoked_module_is_found_past_global_options():
    assert _invoked_module(["-v", "run", "hi"]) == "runtime"
    assert _invoked_module(["install", "x"]) == "packages"
    assert _invoked_module(["--help"]) is None
    assert _invoked_module(["nonsense"]) is None


def test_unknown_command_is_a_usage_error(cli):
    res = cli("no-such-command")
    assert res.exit_code == 2


def _imported_modules(args: list[str]) -> set[str]:
    """Modules loaded by a real `llmos ARGS` process (read from sys.modules at exit)."""
    code = (
        "import atexit, sys\n"
        "atexit.register(lambda: sys.__stderr__.write('MODULES=' + ','.join(sorted(sys.modules)) + '\\n'))\n"
        "from llmos_cli.__main__ import main\n"
        f"sys.argv = ['llmos'] + {args!r}\n"
        "main()\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    line = [ln for ln in res.stderr.splitlines() if ln.startswith("MODULES=")]
    assert line, res.stderr
    return set(line[-1][len("MODULES=") :].split(","))


def test_help_version_and_list_do_not_import_heavy_modules():
    for args in (["--help"], ["--version"], ["list"], ["run", "--help"]):
        mods = _imported_modules(args)
        assert "llmos_cli" in mods
        heavy = sorted(m for m in mods if m.split(".")[0] in HEAVY)
        assert heavy == [], f"llmos {' '.join(args)} imported {heavy}"


def test_a_single_command_loads_only_its_module():
    mods = _imported_modules(["list"])
    assert "llmos_cli.cli.packages" in mods
    assert "llmos_cli.cli.runtime" not in mods
    assert "llmos_cli.cli.remote" not in mods
