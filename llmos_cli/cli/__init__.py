"""Typer application.  Each ``llmos_cli/cli/<area>.py`` has ``register(app)``.

Only typer is imported here; every command imports its core module inside its
body, so ``llmos --help``, ``--version`` and ``list`` stay fast and never load
llama_cpp, torch or transformers.
"""

from __future__ import annotations

import importlib
from typing import Annotated

import typer

from llmos_cli import __version__

#: Command modules, in help order.  Each defines ``register(app: typer.Typer)``.
MODULES = [
    "packages",  # install, remove, autoremove, upgrade, hold, unhold, list, show, search, verify, history
    "build",  # build, check, index
    "sources",  # source, update
    "runtime",  # run, stack, attach, detach, import-model, doctor
    "knowledge",  # query, tools
    "train",  # train, merge
    "remote",  # key, publish, mirror, cache
]


#: Which module defines each top-level command, so that ``llmos run ...``
#: imports only ``cli/runtime.py`` and not the whole command tree.  Kept in
#: step with the modules by ``tests/test_cli_app.py``.
COMMAND_MODULES = {
    **dict.fromkeys(
        ["install", "remove", "autoremove", "upgrade", "hold", "unhold", "list", "show", "search", "verify", "history"],
        "packages",
    ),
    **dict.fromkeys(["build", "check", "index"], "build"),
    **dict.fromkeys(["source", "update"], "sources"),
    **dict.fromkeys(["run", "stack", "attach", "detach", "import-model", "default-model", "doctor"], "runtime"),
    **dict.fromkeys(["query", "tools"], "knowledge"),
    **dict.fromkeys(["train", "merge"], "train"),
    **dict.fromkeys(["key", "publish", "mirror", "cache"], "remote"),
}


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"llmos {__version__}")
        raise typer.Exit(0)


def build_app(only: list[str] | None = None) -> typer.Typer:
    """The whole app, or (``only``) just the named command modules."""
    app = typer.Typer(
        name="llmos",
        help="Install, stack and run knowledge libraries on local LLMs.",
        no_args_is_help=True,
        pretty_exceptions_enable=False,
        rich_markup_mode=None,
        add_completion=True,
        context_settings={"help_option_names": ["-h", "--help"]},
    )

    @app.callback()
    def main(
        version: Annotated[
            bool | None,
            typer.Option("--version", "-V", callback=_version_callback, is_eager=True, help="Show the version and exit."),
        ] = None,
        verbose: Annotated[int, typer.Option("--verbose", "-v", count=True, help="More messages; tracebacks on errors.")] = 0,
    ) -> None:
        """Install, stack and run knowledge libraries on local LLMs."""
        from llmos_cli.cli._common import STATE

        STATE.verbose = verbose

    for name in MODULES if only is None else only:
        try:
            mod = importlib.import_module(f"llmos_cli.cli.{name}")
        except ModuleNotFoundError as exc:  # a command group not written yet
            if exc.name != f"llmos_cli.cli.{name}":
                raise
            continue
        mod.register(app)
    return app


def _invoked_module(argv: list[str]) -> str | None:
    """The module of the command being run, when it can be told from argv alone."""
    for arg in argv:
        if arg in ("-h", "--help", "--install-completion", "--show-completion"):
            return None
        if arg.startswith("-"):
            continue  # global options (-v) come before the command
        return COMMAND_MODULES.get(arg)
    return None


def run_app(argv: list[str] | None = None) -> int:
    import sys

    args = sys.argv[1:] if argv is None else argv
    module = _invoked_module(args)
    app = build_app(only=[module] if module else None)
    try:
        app(args=args, prog_name="llmos", standalone_mode=True)
    except SystemExit as exc:
        return int(exc.code or 0) if not isinstance(exc.code, str) else 1
    return 0
