"""``llmos query`` and ``llmos tools list|allow|deny``; the knowledge and tool flags of ``llmos run``.

Parsing and rendering only: the search is ``llmos_cli.app.query``, the run's
prompt options are ``llmos_cli.app.options.prompt_options``.
"""

from __future__ import annotations

import sys
from typing import Annotated, Any

import typer

from llmos_cli.cli._common import JsonOpt, RichReporter, SimulateOpt, YesOpt, confirm, err, run_command
from llmos_cli.cli._render import line, note, short, table


def query(
    text: Annotated[str, typer.Argument(help="Words to search for in the attached libraries' documents.")],
    lib: Annotated[list[str] | None, typer.Option("--lib", "-l", help="Search only this installed library (repeatable; attached or not).")] = None,
    limit: Annotated[int, typer.Option("--limit", "-n", help="How many chunks to show.")] = 5,
    full: Annotated[bool, typer.Option("--full", help="Print whole chunks instead of a one-line excerpt.")] = False,
    json: JsonOpt = False,
) -> Any:
    """Search the attached knowledge without running the model (BM25 over every library's index)."""

    def work(rep: RichReporter) -> Any:
        from llmos_cli.app.query import run_query

        res = run_query(text, lib, limit)
        if not res.libraries:
            rep.warn("no attached library has documents to search" if not lib else "the named libraries have no documents")
        return res

    def human(res: Any) -> None:
        if not res.results:
            note(f"no match in {len(res.libraries)} librar{'y' if len(res.libraries) == 1 else 'ies'}")
            return
        for h in res.results:
            where = f"  ({h.section})" if h.section else ""
            line(f"{h.rank}. {h.citation}  score {h.score:.2f}{where}")
            body = h.text if full else short(h.text)
            line("   " + body.replace("\n", "\n   "))

    return run_command("query", json, work, human)


#: ``llmos tools list|allow|deny``
tools_app = typer.Typer(name="tools", help="List the tools libraries offer, and allow or deny them.", no_args_is_help=True, rich_markup_mode=None)


@tools_app.command("list")
def tools_list(json: JsonOpt = False) -> Any:
    """Every tool (built-in, library command, MCP) with its source library and whether it may run."""

    def work(rep: RichReporter) -> Any:
        from llmos_cli.tools.registry import list_tools

        return list_tools()

    def human(rows: Any) -> None:
        if not rows:
            note("no tools")
            return
        labels = {"builtin": "yes (built-in)", "allowed": "yes", "denied": "denied", "ask": "ask"}
        table(
            ("tool", "library", "kind", "allowed", "description"),
            [
                (
                    r.name,
                    "-" if r.source == "builtin" else r.source + ("" if r.attached else " (detached)"),
                    r.kind,
                    labels.get(r.status, r.status),
                    short(r.description, 70),
                )
                for r in rows
            ],
            fold=True,
        )

    return run_command("tools list", json, work, human)


def _change(name: str, allowed: bool, simulate: bool, yes: bool) -> Any:
    verb = "allow" if allowed else "deny"

    def work(rep: RichReporter) -> Any:
        from llmos_cli.tools.registry import apply_permission, find_tool_row, plan_permission

        change = plan_permission(name, allowed, simulate=simulate)
        if simulate:
            return change
        if allowed and change.library is not None:
            row = find_tool_row(change.key)
            what = f"tool {change.name!r} from library {change.library} ({row.kind})"
            confirm(f"Allow {what} to run whenever a model calls it?", yes)
        return apply_permission(change)

    def human(ch: Any) -> None:
        prefix = "would " if ch.simulated else ""
        state = "allowed" if ch.allowed else "denied"
        note(f"{prefix}set {ch.key}: {ch.before} -> {state}")

    return run_command(f"tools {verb}", False, work, human)


@tools_app.command("allow")
def tools_allow(
    name: Annotated[str, typer.Argument(help="Tool name, or library:tool when several libraries share the name.")],
    simulate: SimulateOpt = False,
    yes: YesOpt = False,
) -> Any:
    """Allow a library tool to run in every later run (stored in the state database)."""
    return _change(name, True, simulate, yes)


@tools_app.command("deny")
def tools_deny(
    name: Annotated[str, typer.Argument(help="Tool name, or library:tool.")],
    simulate: SimulateOpt = False,
    yes: YesOpt = False,
) -> Any:
    """Deny a tool for good (also a built-in); --allow-tools no longer enables it, --allow-tool NAME still does."""
    del yes  # nothing to confirm: denying only takes a permission away
    return _change(name, False, simulate, True)


# ---------------------------------------------------------------- `llmos run` options (used by cli/runtime.py)


def _tools_debug_printer(kind: str, data: dict[str, Any]) -> None:
    import json as _json

    def shorten(v: Any) -> str:
        s = _json.dumps(v, ensure_ascii=False)
        return s if len(s) <= 500 else s[:499] + "…"

    if kind == "round":
        forced = f", forced call of {data['forced']}" if data.get("forced") else ""
        text = f"[tools] round {data['round']}: prompt {data['prompt_tokens']} tokens{forced}"
    elif kind == "call":
        text = f"[tools] call {data['name']} {shorten(data['arguments'])}"
    else:
        body = shorten(data.get("value")) if data.get("ok") else data.get("error")
        text = f"[tools] {'result' if data.get('ok') else 'error'} {data['name']} ({data.get('seconds', 0):.3f}s): {body}"
    note(text)


def _ask_on_terminal(spec: Any) -> bool:
    from rich.prompt import Confirm

    what = f"tool {spec.name!r} from library {spec.source}"
    if spec.kind == "command":
        what += f" (runs: {' '.join(spec.command)})"
    elif spec.kind == "mcp":
        what += f" (MCP server {spec.server})"
    return bool(Confirm.ask(f"Allow {what} to run now?", console=err(), default=False))


def _stdin_is_terminal() -> bool:
    try:
        return sys.stdin is not None and sys.stdin.isatty()
    except (OSError, ValueError):
        return False


def run_prompt_options(
    *,
    knowledge: str,
    explain: bool,
    allow_tool: list[str] | None,
    allow_tools: bool,
    tool_choice: str | None,
    chain_limit: int,
    tools_debug: bool,
    no_builtin_tools: bool = False,
    no_refine: bool = False,
    grounded: bool = False,
    long: str | None = None,
    input_label: str = "stdin",
) -> Any:
    """``PromptOptions`` for ``llmos run`` from its flags, with the terminal's printer and question (asks on a terminal only)."""
    from llmos_cli.app.options import prompt_options

    return prompt_options(
        knowledge=knowledge,
        explain=explain,
        allow_tool=allow_tool,
        allow_tools=allow_tools,
        tool_choice=tool_choice,
        chain_limit=chain_limit,
        tools_debug=tools_debug,
        no_builtin_tools=no_builtin_tools,
        no_refine=no_refine,
        grounded=grounded,
        long=long,
        input_label=input_label,
        on_event=_tools_debug_printer,
        ask=_ask_on_terminal if _stdin_is_terminal() else None,
    )


def render_run_extras(result: Any) -> bool:
    """Print ``--explain`` output; True when it replaces the normal answer output."""
    explain = (getattr(result, "extra", None) or {}).get("explain")
    if not explain:
        return False
    from llmos_cli.prompt.explain import explain_text

    sys.stdout.write(explain_text(explain))
    sys.stdout.flush()
    return True
