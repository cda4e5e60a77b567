"""The CLI edge: run a core function, render its result, map errors to exit codes.

Every command is a plain module-level function that parses, then hands its
work to :func:`run_command`::

    def show(name: NameArg, json: JsonOpt = False) -> Any:
        def work(rep: RichReporter) -> Any:
            from llmos_cli.app import install  # the core loads only when the command runs
            return install.show(name, reporter=rep)

        return run_command("show", json, work, render_show)

``work`` gets the reporter and returns a result object (a dataclass, a dict or
a list); ``run_command`` prints it as the versioned JSON envelope with
``--json``, or hands it to the human renderer (built from ``cli/_render.py``).
A result may carry an ``exit_code`` attribute (e.g. ``check`` with findings).
On success the command returns the result (so it can be called without the
CLI); a non-zero exit code raises ``typer.Exit``.  Data goes to stdout;
messages, warnings and progress to stderr.
"""

from __future__ import annotations

import dataclasses
import enum
import json as _json
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer

from llmos_cli import JSON_SCHEMA
from llmos_cli.errors import Aborted, ExitCode, LlmosError

JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object (versioned envelope) on stdout.")]
YesOpt = Annotated[bool, typer.Option("--yes", "-y", help="Answer yes to confirmations; needed when stdin is not a terminal.")]
SimulateOpt = Annotated[bool, typer.Option("--simulate", "-s", "--dry-run", help="Print the plan and change nothing.")]


class State:
    verbose: int = 0


STATE = State()


def debug_enabled() -> bool:
    return STATE.verbose > 0 or os.environ.get("LLMOS_DEBUG", "") not in ("", "0")


# ---------------------------------------------------------------- consoles

_consoles: dict[str, Any] = {}


def _console(stderr: bool):
    key = "err" if stderr else "out"
    if key not in _consoles:
        from rich.console import Console

        _consoles[key] = Console(stderr=stderr, highlight=False, soft_wrap=not stderr)
    return _consoles[key]


def out():
    """Console on stdout: data only."""
    return _console(False)


def err():
    """Console on stderr: messages, warnings, progress."""
    return _console(True)


def info(message: str) -> None:
    err().print(message, markup=False)


def warn(message: str) -> None:
    err().print(f"[yellow]warning:[/] {_escape(message)}")


def _escape(text: str) -> str:
    from rich.markup import escape

    return escape(text)


# ---------------------------------------------------------------- reporter


class RichReporter:
    """Reporter that draws rich progress bars and notices on stderr."""

    def __init__(self, quiet: bool = False) -> None:
        self.quiet = quiet
        self.messages: list[tuple[str, str]] = []

    def info(self, message: str) -> None:
        self.messages.append(("info", message))
        if not self.quiet:
            info(message)

    def warn(self, message: str) -> None:
        self.messages.append(("warning", message))
        warn(message)

    def debug(self, message: str) -> None:
        if debug_enabled():
            err().print(f"[dim]debug:[/] {_escape(message)}")

    @contextmanager
    def task(self, description: str, total: float | None = None, unit: str = "") -> Iterator[Any]:
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
            TransferSpeedColumn,
        )

        cols: list[Any] = [TextColumn("{task.description}"), BarColumn()]
        if unit == "bytes":
            cols += [DownloadColumn(), TransferSpeedColumn()]
        else:
            cols += [MofNCompleteColumn()]
        cols.append(TimeRemainingColumn())
        progress = Progress(*cols, console=err(), transient=True, disable=self.quiet or not err().is_terminal)  # no bars (nor blank lines) in logs and pipes
        with progress:
            tid = progress.add_task(description, total=total)

            class _T:
                def advance(self, n: float = 1) -> None:
                    progress.advance(tid, n)

                def update(self, *, total: float | None = None, description: str | None = None) -> None:
                    kw: dict[str, Any] = {}
                    if total is not None:
                        kw["total"] = total
                    if description is not None:
                        kw["description"] = description
                    progress.update(tid, **kw)

            yield _T()


def reporter(json_mode: bool = False) -> RichReporter:
    return RichReporter(quiet=False)


# ---------------------------------------------------------------- confirmation


def confirm(question: str, yes: bool) -> None:
    """Ask on the terminal; refuse (never hang) when stdin is not a terminal."""
    if yes:
        return
    if not sys.stdin.isatty():
        raise Aborted("confirmation needed but stdin is not a terminal", "pass -y/--yes to proceed")
    from rich.prompt import Confirm

    if not Confirm.ask(question, console=err(), default=True):
        raise Aborted("aborted by the user")


# ---------------------------------------------------------------- JSON


def to_jsonable(obj: Any) -> Any:
    if hasattr(obj, "to_json"):
        return to_jsonable(obj.to_json())
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_jsonable(getattr(obj, f.name)) for f in dataclasses.fields(obj) if not f.name.startswith("_")}
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set, frozenset)):
        seq = [to_jsonable(v) for v in obj]
        return sorted(seq, key=str) if isinstance(obj, (set, frozenset)) else seq
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, enum.Enum):
        return obj.value
    return obj


def envelope(command: str, *, data: Any = None, error: LlmosError | None = None, warnings: list[str] | None = None) -> dict:
    env: dict[str, Any] = {"schema": JSON_SCHEMA, "command": command, "ok": error is None}
    if error is None:
        env["data"] = to_jsonable(data)
    else:
        env["error"] = error.to_json()
    env["warnings"] = list(warnings or [])
    return env


def print_json(obj: Any) -> None:
    sys.stdout.write(_json.dumps(obj, indent=2, ensure_ascii=False, sort_keys=False) + "\n")
    sys.stdout.flush()


# ---------------------------------------------------------------- execute


def report_error(command: str, exc: LlmosError, json_mode: bool) -> int:
    if json_mode:
        print_json(envelope(command, error=exc))
    msg = f"[bold red]error:[/] {_escape(exc.message)}"
    err().print(msg, soft_wrap=True)  # one line, even in a narrow terminal or a log
    if exc.hint:
        err().print(f"[dim]hint:[/] {_escape(exc.hint)}", soft_wrap=True)
    return int(exc.exit_code)


def execute(
    command: str,
    json_mode: bool,
    work: Callable[[], Any],
    human: Callable[[Any], None] | None = None,
    *,
    rep: RichReporter | None = None,
) -> Any:
    """Run ``work`` and render; return its result, or raise ``typer.Exit`` with a non-zero code."""
    import sqlite3  # lazily: only for mapping state-database errors

    try:
        result = work()
    except LlmosError as exc:
        if debug_enabled():
            import traceback

            traceback.print_exc(file=sys.stderr)
        raise typer.Exit(report_error(command, exc, json_mode)) from None
    except KeyboardInterrupt:
        err().print("[bold red]interrupted[/]")
        raise typer.Exit(int(ExitCode.INTERRUPTED)) from None
    except OSError as exc:
        from llmos_cli.errors import from_os_error

        if debug_enabled():
            import traceback

            traceback.print_exc(file=sys.stderr)
        raise typer.Exit(report_error(command, from_os_error(exc, f"running {command}"), json_mode)) from None
    except sqlite3.Error as exc:  # the state database read outside open_state: "locked" is exit 7 wherever it surfaces
        from llmos_cli.paths import get_paths
        from llmos_cli.state.db import sqlite_error

        if debug_enabled():
            import traceback

            traceback.print_exc(file=sys.stderr)
        raise typer.Exit(report_error(command, sqlite_error(exc, get_paths().db), json_mode)) from None
    code = int(getattr(result, "exit_code", 0) or 0)
    if json_mode:
        warnings = [m for lvl, m in (rep.messages if rep else []) if lvl == "warning"]
        print_json(envelope(command, data=result, warnings=warnings))
    elif human is not None:
        human(result)
    if code:
        raise typer.Exit(code)
    return result


def run_command(
    command: str,
    json_mode: bool,
    work: Callable[[RichReporter], Any],
    human: Callable[[Any], None] | None = None,
) -> Any:
    """The one way a command runs: a reporter for ``work``, then :func:`execute`.

    ``command`` is the name in the JSON envelope (``"list"``, ``"source add"``).
    """
    rep = reporter(json_mode)
    return execute(command, json_mode, lambda: work(rep), human, rep=rep)
