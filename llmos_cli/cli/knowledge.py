"""``llmos query`` and ``llmos tools list|allow|deny``."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Annotated, Any

import typer

from llmos_cli.cli._common import JsonOpt, SimulateOpt, YesOpt, confirm, err, execute, out, reporter

PANEL = "Knowledge and tools"


@dataclass
class QueryResult:
    query: str
    libraries: list[str]
    results: list[Any] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"query": self.query, "libraries": self.libraries, "results": [h.to_json() for h in self.results]}


def run_query(text: str, libs: list[str] | None, limit: int) -> QueryResult:
    from llmos_cli.errors import UsageError
    from llmos_cli.knowledge.libraries import installed_libraries
    from llmos_cli.knowledge.retrieve import search

    if not text.strip():
        raise UsageError("empty query", 'give the words to search for, e.g. llmos query "heart attack symptoms"')
    if not 1 <= limit <= 100:
        raise UsageError(f"--limit must be between 1 and 100, not {limit}")
    views = installed_libraries(names=libs or None)
    try:
        indexes = [ix for ix in (v.index() for v in views) if ix is not None]
        names = [ix.library for ix in indexes]
        return QueryResult(text, names, search(indexes, text, limit))
    finally:
        for v in views:
            v.close()


def _short(text: str, width: int = 300) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


def register(app: typer.Typer) -> None:
    @app.command("query", rich_help_panel=PANEL)
    def query(
        text: Annotated[str, typer.Argument(help="Words to search for in the attached libraries' documents.")],
        lib: Annotated[list[str] | None, typer.Option("--lib", "-l", help="Search only this installed library (repeatable; attached or not).")] = None,
        limit: Annotated[int, typer.Option("--limit", "-n", help="How many chunks to show.")] = 5,
        full: Annotated[bool, typer.Option("--full", help="Print whole chunks instead of a one-line excerpt.")] = False,
        json: JsonOpt = False,
    ) -> None:
        """Search the attached knowledge without running the model (BM25 over every library's index)."""
        rep = reporter(json)

        def work() -> QueryResult:
            res = run_query(text, lib, limit)
            if not res.libraries:
                rep.warn("no attached library has documents to search" if not lib else "the named libraries have no documents")
            return res

        def human(res: QueryResult) -> None:
            if not res.results:
                err().print(f"no match in {len(res.libraries)} librar{'y' if len(res.libraries) == 1 else 'ies'}", markup=False)
                return
            o = out()
            for h in res.results:
                where = f"  ({h.section})" if h.section else ""
                o.print(f"{h.rank}. {h.citation}  score {h.score:.2f}{where}", markup=False, highlight=False)
                body = h.text if full else _short(h.text)
                o.print("   " + body.replace("\n", "\n   "), markup=False, highlight=False)

        execute("query", json, work, human, rep=rep)

    tools_app = typer.Typer(help="List the tools libraries offer, and allow or deny them.", no_args_is_help=True, rich_markup_mode=None)
    app.add_typer(tools_app, name="tools", rich_help_panel=PANEL)

    @tools_app.command("list")
    def tools_list(json: JsonOpt = False) -> None:
        """Every tool (built-in, library command, MCP) with its source library and whether it may run."""
        rep = reporter(json)

        def work() -> Any:
            from llmos_cli.tools.registry import list_tools

            return list_tools()

        def human(rows: Any) -> None:
            from rich.table import Table

            if not rows:
                err().print("no tools", markup=False)
                return
            labels = {"builtin": "yes (built-in)", "allowed": "yes", "denied": "denied", "ask": "ask"}
            t = Table(box=None, pad_edge=False)
            for col in ("tool", "library", "kind", "allowed", "description"):
                t.add_column(col, overflow="fold")
            for r in rows:
                lib = "-" if r.source == "builtin" else r.source + ("" if r.attached else " (detached)")
                t.add_row(r.name, lib, r.kind, labels.get(r.status, r.status), _short(r.description, 70))
            out().print(t)

        execute("tools list", json, work, human, rep=rep)

    def _change(name: str, allowed: bool, simulate: bool, yes: bool) -> None:
        verb = "allow" if allowed else "deny"
        rep = reporter(False)

        def work() -> Any:
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
            err().print(f"{prefix}set {ch.key}: {ch.before} -> {state}", markup=False)

        execute(f"tools {verb}", False, work, human, rep=rep)

    @tools_app.command("allow")
    def tools_allow(
        name: Annotated[str, typer.Argument(help="Tool name, or library:tool when several libraries share the name.")],
        simulate: SimulateOpt = False,
        yes: YesOpt = False,
    ) -> None:
        """Allow a library tool to run in every later run (stored in the state database)."""
        _change(name, True, simulate, yes)

    @tools_app.command("deny")
    def tools_deny(
        name: Annotated[str, typer.Argument(help="Tool name, or library:tool.")],
        simulate: SimulateOpt = False,
        yes: YesOpt = False,
    ) -> None:
        """Deny a tool for good (also a built-in); --allow-tools no longer enables it, --allow-tool NAME still does."""
        del yes  # nothing to confirm: denying only takes a permission away
        _change(name, False, simulate, True)


# ---------------------------------------------------------------- `llmos run` options (used by cli/runtime.py)


def _tools_debug_printer(kind: str, data: dict[str, Any]) -> None:
    import json as _json

    def short(v: Any) -> str:
        s = _json.dumps(v, ensure_ascii=False)
        return s if len(s) <= 500 else s[:499] + "…"

    if kind == "round":
        forced = f", forced call of {data['forced']}" if data.get("forced") else ""
        line = f"[tools] round {data['round']}: prompt {data['prompt_tokens']} tokens{forced}"
    elif kind == "call":
        line = f"[tools] call {data['name']} {short(data['arguments'])}"
    else:
        body = short(data.get("value")) if data.get("ok") else data.get("error")
        line = f"[tools] {'result' if data.get('ok') else 'error'} {data['name']} ({data.get('seconds', 0):.3f}s): {body}"
    err().print(line, markup=False, highlight=False)


def _ask_on_terminal(spec: Any) -> bool:
    from rich.prompt import Confirm

    what = f"tool {spec.name!r} from library {spec.source}"
    if spec.kind == "command":
        what += f" (runs: {' '.join(spec.command)})"
    elif spec.kind == "mcp":
        what += f" (MCP server {spec.server})"
    return bool(Confirm.ask(f"Allow {what} to run now?", console=err(), default=False))


def run_prompt_options(
    *,
    knowledge: str,
    explain: bool,
    allow_tool: list[str] | None,
    allow_tools: bool,
    tool_choice: str | None,
    chain_limit: int,
    tools_debug: bool,
    no_refine: bool = False,
) -> Any:
    """``PromptOptions`` for ``llmos run`` from its flags (asks on a terminal only)."""
    from llmos_cli.app.options import PromptOptions
    from llmos_cli.errors import UsageError
    from llmos_cli.prompt.assemble import parse_knowledge_option

    if chain_limit < 0:
        raise UsageError(f"--chain-limit must be 0 or more, not {chain_limit}")
    interactive = False
    try:
        interactive = sys.stdin is not None and sys.stdin.isatty()
    except (OSError, ValueError):
        interactive = False
    return PromptOptions(
        knowledge=parse_knowledge_option(knowledge),
        refine=not no_refine,
        explain=explain,
        tool_choice=tool_choice,
        allow_tool=list(allow_tool or []),
        allow_tools=allow_tools,
        chain_limit=chain_limit,
        tools_debug=tools_debug,
        on_event=_tools_debug_printer if tools_debug else None,
        ask=_ask_on_terminal if interactive else None,
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
