"""The CLI's lazy command map, commands as plain functions, and start-up hygiene."""

from __future__ import annotations

import importlib
import inspect
import subprocess
import sys

import pytest
import typer
import typer.core
from typer.main import get_command

from llmos_cli.cli import COMMANDS, build_app, load_command
from llmos_cli.errors import ExitCode

HEAVY = ("llama_cpp", "torch", "transformers", "peft")
#: third-party modules that are not heavy but that start-up should not pay for either
AVOIDABLE = ("numpy", "huggingface_hub", "nacl", "mcp", "gguf")
COMMAND_MODULES = sorted({e.module for e in COMMANDS.values()})


def _first_paragraph(text: str | None) -> str:
    return " ".join(inspect.cleandoc(text or "").split("\n\n")[0].split())


@pytest.mark.parametrize("name", list(COMMANDS))
def test_map_entry_loads_and_its_help_is_the_commands_own(name):
    entry = COMMANDS[name]
    obj = getattr(importlib.import_module(entry.module), entry.attribute)
    command = load_command(name)
    assert command.name == name
    if isinstance(obj, typer.Typer):
        assert isinstance(command, typer.core.TyperGroup)
        assert command.commands, f"group {name} has no subcommands"
    else:
        assert inspect.isfunction(obj) and obj.__module__ == entry.module  # a plain module-level function
    assert _first_paragraph(command.help) == entry.help


def test_every_command_function_in_the_modules_is_in_the_map():
    """A command written but not listed would silently be missing from the CLI."""
    listed = {(e.module, e.attribute) for e in COMMANDS.values()}
    for modname in COMMAND_MODULES:
        mod = importlib.import_module(modname)
        for attr, obj in vars(mod).items():
            if attr.startswith("_") or getattr(obj, "__module__", None) != modname:
                continue
            if isinstance(obj, typer.Typer):
                assert (modname, attr) in listed, f"{modname}.{attr} is a command group missing from COMMANDS"


def test_root_help_lists_the_map_in_order_without_importing_command_modules(cli):
    for mod in COMMAND_MODULES:
        sys.modules.pop(mod, None)
    res = cli("--help")
    assert res.exit_code == 0
    listed = [ln.split()[0] for ln in res.stdout.split("Commands:")[1].splitlines() if ln.strip()]
    assert listed == list(COMMANDS)
    assert not [m for m in COMMAND_MODULES if m in sys.modules]


def test_root_help_matches_the_loaded_commands(cli):
    """The help drawn from the map is what typer would print with every command loaded."""
    lazy = get_command(build_app())
    ctx = typer.Context(lazy, info_name="llmos")
    formatter = ctx.make_formatter()
    lazy.format_commands(ctx, formatter)
    eager = typer.core.TyperGroup(name="llmos", commands={n: load_command(n) for n in COMMANDS})
    formatter2 = ctx.make_formatter()
    typer.core.TyperGroup.format_commands(eager, ctx, formatter2)
    assert formatter.getvalue() == formatter2.getvalue()


def test_unknown_command_is_a_usage_error_with_a_suggestion(cli):
    res = cli("no-such-command")
    assert res.exit_code == 2
    res = cli("instal")
    assert res.exit_code == 2
    assert "Did you mean 'install'" in res.stderr


def test_a_command_is_a_plain_function_callable_without_the_cli(capsys):
    from llmos_cli.cli import packages

    result = packages.list_(kind=None, json=False)  # empty sealed home
    assert result.packages == []
    assert "No packages installed." in capsys.readouterr().err
    with pytest.raises(typer.Exit) as exc:
        packages.show(name="no-such-package", json=False)
    assert exc.value.exit_code == int(ExitCode.NOT_FOUND)


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
        heavy = sorted(m for m in mods if m.split(".")[0] in HEAVY + AVOIDABLE)
        assert heavy == [], f"llmos {' '.join(args)} imported {heavy}"


def test_help_imports_no_command_module_and_a_command_only_its_own():
    mods = _imported_modules(["--help"])
    assert not [m for m in COMMAND_MODULES if m in mods]
    mods = _imported_modules(["list"])
    assert "llmos_cli.cli.packages" in mods
    assert [m for m in COMMAND_MODULES if m in mods] == ["llmos_cli.cli.packages"]


def _rich_table(columns, rows, heads, fold) -> str:
    import io

    from rich import box
    from rich.console import Console
    from rich.table import Table

    from llmos_cli.cli._render import _rich_width

    console = Console(file=io.StringIO(), highlight=False, soft_wrap=True, width=_rich_width())
    t = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False) if heads else Table(box=None, pad_edge=False, show_edge=False)
    for c in columns:
        t.add_column(c, overflow="fold" if fold else "ellipsis")
    for r in rows:
        t.add_row(*r)
    console.print(t)
    return console.file.getvalue()


def test_plain_tables_are_the_bytes_rich_draws(monkeypatch):
    """`table()` skips rich for simple tables in a pipe; the text must be exactly rich's."""
    import random
    import string

    from llmos_cli.cli import _render

    monkeypatch.setattr(_render, "_consoles", {})
    monkeypatch.setattr(_render.sys, "stdout", type("NotATerminal", (), {"isatty": staticmethod(lambda: False)})())
    rng = random.Random(7)
    alphabet = string.ascii_letters + string.digits + " -_.,()'/=<>"
    plain = fallback = 0
    for _ in range(400):
        ncol = rng.randint(1, 6)
        cols = ["".join(rng.choice(alphabet) for _ in range(rng.randint(1, 9))) for _ in range(ncol)]
        rows = [["".join(rng.choice(alphabet) for _ in range(rng.randint(0, rng.choice((5, 14, 30))))) for _ in range(ncol)] for _ in range(rng.randint(0, 5))]
        heads, fold = rng.random() < 0.5, rng.random() < 0.5
        text = _render._plain_table(cols, rows, heads)
        if text is None:
            fallback += 1  # too wide: rich folds or cuts it
            continue
        plain += 1
        assert text == _rich_table(cols, rows, heads, fold), (cols, rows, heads)
    assert plain > 100 and fallback > 10  # both paths were exercised
    for heads, cols in ((False, ["a" * 38, "b" * 40]), (True, ["a" * 38, "b" * 39])):  # exactly 80 wide
        text = _render._plain_table(cols, [["x", "y"]], heads)
        assert text is not None and text == _rich_table(cols, [["x", "y"]], heads, True)
    assert _render._plain_table(["a"], [["[bold]x"]], False) is None  # rich markup: rich decides
    assert _render._plain_table(["a"], [["é"]], False) is None
