"""The llmos command line: one lazy command map, commands as plain functions.

:data:`COMMANDS` lists every top-level command once: its name, where it lives
(``"module:function"`` under ``llmos_cli/cli/``) and its one-line help.
``llmos --help`` is drawn from this map without importing any command module;
running a command imports only its module (the habit of pip's
``commands_dict`` and hatch's ``cli/lazy.py``).  ``LazyGroup`` is a
``typer.core.TyperGroup`` whose ``commands`` mapping loads entries on first
use; it relies only on typer's public API (``typer.core.TyperGroup``,
``typer.core.TyperCommand``, ``typer.main.get_command`` / ``get_group``), never
on typer's vendored click.

How to add a command
    1. Write a module-level function in the right ``llmos_cli/cli/<area>.py``::

           def export(
               name: Annotated[str, typer.Argument(help="Installed library.")],
               json: JsonOpt = False,
           ) -> Any:
               "Write a library's adapter as a plain GGUF."  # the docstring is the help

               def work(rep: RichReporter) -> Any:
                   from llmos_cli.app.export import export_library  # core code loads lazily

                   return export_library(name, reporter=rep)

               return run_command("export", json, work, _render_export)

       Parse arguments only; the work is a use case in ``llmos_cli/app/``.
       Render with the helpers of ``cli/_render.py`` (line, note, table, kv,
       warn); data to stdout, messages to stderr.
    2. Add one line to :data:`COMMANDS` below (the help is the first paragraph
       of the function's docstring; ``tests/test_cli_app.py`` checks both
       agree).  A command with subcommands (``llmos source add``) is a
       ``typer.Typer`` object in its module; its subcommands are registered on
       it with ``@source_app.command("add")`` as usual.
    3. Run ``python -m llmos_cli.cli._gendocs`` to regenerate completions/ and
       man/llmos.1, and add a test (``cli`` fixture in tests/conftest.py).

How to add an option to an existing command
    Add a parameter to its function (``Annotated[..., typer.Option(...)]``
    with a default), pass it on to the use case, regenerate completions and
    the man page as in step 3.  Shared options (``JsonOpt``, ``YesOpt``,
    ``SimulateOpt``) live in ``cli/_common.py``.

Only typer is imported here, so ``llmos --help``, ``--version`` and ``list``
stay fast and never load llama_cpp, torch or transformers.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator, MutableMapping
from dataclasses import dataclass
from typing import Annotated, Any

import typer
import typer.core
import typer.main

from llmos_cli import __version__

HELP = "Install, stack and run knowledge libraries on local LLMs."


@dataclass(frozen=True)
class Entry:
    """Where a command lives and what ``llmos --help`` says about it."""

    target: str  # "module:attribute" under llmos_cli/cli/
    help: str

    @property
    def module(self) -> str:
        return "llmos_cli.cli." + self.target.partition(":")[0]

    @property
    def attribute(self) -> str:
        return self.target.partition(":")[2]


#: Every top-level command, in ``llmos --help`` order.
COMMANDS: dict[str, Entry] = {
    # Packages
    "install": Entry("packages:install", "Install packages with their dependencies."),
    "remove": Entry("packages:remove", "Remove packages (refused while other installed packages need them)."),
    "autoremove": Entry("packages:autoremove", "Remove packages installed as dependencies that nothing needs any more."),
    "upgrade": Entry("packages:upgrade", "Upgrade packages to their newest installable versions."),
    "hold": Entry("packages:hold", "Keep packages at their installed version."),
    "unhold": Entry("packages:unhold", "Let held packages be upgraded again."),
    "list": Entry("packages:list_", "List installed packages."),
    "show": Entry("packages:show", "Show a package: installed and available versions, relations, files, marks."),
    "search": Entry("packages:search", "Search the available packages."),
    "verify": Entry("packages:verify", "Re-hash installed files; exit 6 naming each changed or missing file."),
    "history": Entry("packages:history", "Show the transaction history."),
    # Packaging
    "build": Entry("build:build", "Build a package archive (<name>_<version>.llmos) from a source folder; deterministic."),
    "check": Entry("build:check", "Validate a source folder or archive (for CI): exit 0 only when there is no error."),
    "index": Entry("build:index", "(Re)write a registry's index.json from its archives; the version counter goes up by one."),
    # Sources
    "update": Entry("sources:update", "Refresh the local copy of every source's index."),
    # Runtime
    "run": Entry("runtime:run", "Answer a prompt with the model and its attached libraries (streams to stdout)."),
    "stack": Entry("runtime:stack", "Show what a run would use: model, libraries, scales, and whether each adapter fits."),
    "attach": Entry("runtime:attach", "Put libraries back into runs (optionally at a new scale)."),
    "detach": Entry("runtime:detach", "Keep libraries installed but leave them out of runs."),
    "import-model": Entry("runtime:import_model", "Turn a local GGUF into a model package (local registry) and install it."),
    "default-model": Entry("runtime:default_model", "Show or set the model `llmos run` uses without --model."),
    "doctor": Entry("runtime:doctor", "Check the llama.cpp build, GPU offload, threads, data directories and the state database."),
    "serve": Entry("serve:serve", "Serve installed models and stacks over an OpenAI-compatible HTTP API (Ctrl-C stops)."),
    "logs": Entry("serve:logs", "Show the prompt log: what was asked and answered, by `llmos run` and `llmos serve`."),
    # Knowledge and tools
    "query": Entry("knowledge:query", "Search the attached knowledge without running the model (BM25 over every library's index)."),
    # Libraries
    "train": Entry("train:train", "Fine-tune the library's LoRA adapter on a base model and write it as GGUF into the library."),
    "merge": Entry("train:merge", "Merge several libraries into one (adapters, documents, glossaries, tools); then `llmos build` it."),
    "export": Entry("export:export", "Export a library's adapter (or a stack of them, cat-merged) as a PEFT adapter folder, for vLLM."),
    # Publishing
    "publish": Entry("remote:publish", "Add packages to a registry (under pool/) and re-index it, signed with --sign."),
    "mirror": Entry("remote:mirror", "Copy a source's packages (or those NAMES need) into a folder registry for offline machines."),
    # Command groups (typer.Typer objects)
    "source": Entry("sources:source_app", "Manage package sources (registries)."),
    "tools": Entry("knowledge:tools_app", "List the tools libraries offer, and allow or deny them."),
    "key": Entry("remote:key_app", "Signing keys for registries."),
    "cache": Entry("remote:cache_app", "The download cache shared between installs."),
}


def load_command(name: str, entry: Entry | None = None) -> Any:
    """Import the command's module and build its click command (a group for a ``typer.Typer``)."""
    entry = entry or COMMANDS[name]
    obj = getattr(importlib.import_module(entry.module), entry.attribute)
    if isinstance(obj, typer.Typer):
        return typer.main.get_group(obj)
    single = typer.Typer(add_completion=False, rich_markup_mode=None)
    single.command(name)(obj)
    return typer.main.get_command(single)


class LazyCommands(MutableMapping[str, Any]):
    """``{name: click command}`` over :data:`COMMANDS`, loading each on first access."""

    def __init__(self, entries: dict[str, Entry]) -> None:
        self._entries = entries
        self._loaded: dict[str, Any] = {}

    def __getitem__(self, name: str) -> Any:
        if name not in self._loaded:
            if name not in self._entries:
                raise KeyError(name)
            self._loaded[name] = load_command(name, self._entries[name])
        return self._loaded[name]

    def __setitem__(self, name: str, command: Any) -> None:
        self._loaded[name] = command

    def __delitem__(self, name: str) -> None:
        del self._loaded[name]

    def __iter__(self) -> Iterator[str]:
        yield from self._entries
        yield from (n for n in self._loaded if n not in self._entries)

    def __len__(self) -> int:
        return len(set(self._entries) | set(self._loaded))


class LazyGroup(typer.core.TyperGroup):
    """The root group: commands from :data:`COMMANDS`, imported only when run."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.commands = LazyCommands(COMMANDS)

    def list_commands(self, ctx: Any) -> list[str]:
        return list(self.commands)

    def format_commands(self, ctx: Any, formatter: Any) -> None:
        """The command list of ``llmos --help``, from the map alone (no command module is imported)."""
        names = list(self.commands)
        limit = formatter.width - 6 - max(len(n) for n in names)
        rows = []
        for name in names:
            entry = COMMANDS.get(name)
            stub: Any
            if entry is not None:
                stub = typer.core.TyperCommand(name=name, help=entry.help)
            else:  # added at run time (tests)
                stub = self.commands[name]
            rows.append((name, stub.get_short_help_str(limit)))
        with formatter.section("Commands"):
            formatter.write_dl(rows)


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"llmos {__version__}")
        raise typer.Exit(0)


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


def build_app() -> typer.Typer:
    """The whole app; commands load lazily from :data:`COMMANDS`."""
    app = typer.Typer(
        cls=LazyGroup,
        name="llmos",
        help=HELP,
        no_args_is_help=True,
        pretty_exceptions_enable=False,
        rich_markup_mode=None,
        add_completion=True,
        context_settings={"help_option_names": ["-h", "--help"]},
    )
    app.callback()(main)
    return app


def run_app(argv: list[str] | None = None) -> int:
    import sys

    args = sys.argv[1:] if argv is None else argv
    try:
        build_app()(args=args, prog_name="llmos", standalone_mode=True)
    except SystemExit as exc:
        return int(exc.code or 0) if not isinstance(exc.code, str) else 1
    return 0
