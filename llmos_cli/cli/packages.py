"""Package commands: install, remove, autoremove, upgrade, hold, unhold, list, show, search, verify, history.

Parsing and rendering only; the work is in ``llmos_cli.app.install`` (imported
inside each command so ``llmos --help`` stays fast).  Plans and messages go
to stderr, data (tables, ``--json``, the simulated plan) to stdout.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer

from llmos_cli.cli._common import JsonOpt, SimulateOpt, YesOpt, confirm, err, execute, out, reporter

# ---------------------------------------------------------------- plan rendering

_HEADINGS = [
    ("install", "The following NEW packages will be installed:"),
    ("upgrade", "The following packages will be upgraded:"),
    ("downgrade", "The following packages will be DOWNGRADED:"),
    ("remove", "The following packages will be REMOVED:"),
    ("mark-manual", "The following packages will be marked as manually installed:"),
    ("mark-auto", "The following packages will be marked as automatically installed:"),
]


def _action_label(a: Any) -> str:
    if a.op in ("upgrade", "downgrade"):
        return f"{a.name} ({a.old_version} => {a.new_version})"
    if a.op == "install":
        return f"{a.name} ({a.new_version})"
    return f"{a.name} ({a.old_version or a.new_version})"


def plan_summary(proposal: Any) -> list[str]:
    """apt-like summary lines of a plan."""
    plan = proposal.plan
    lines: list[str] = []
    for note in getattr(plan, "notes", []) or []:
        lines.append(note)
    extras = {a.name for a in proposal.extras()}
    for op, heading in _HEADINGS:
        acts = [a for a in plan.actions if a.op == op]
        if not acts:
            continue
        if op == "install" and any(a.name in extras for a in acts):
            extra_installs = [a for a in acts if a.name in extras]
            lines.append("The following additional packages will be installed:")
            lines.append("  " + "  ".join(_action_label(a) for a in extra_installs))
        lines.append(heading)
        lines.append("  " + "  ".join(_action_label(a) for a in acts))
    kept = getattr(plan, "kept_back", []) or []
    if kept:
        lines.append("The following packages have been kept back:")
        lines.append("  " + "  ".join(kept))
    if plan.unneeded:
        lines.append("The following packages were automatically installed and are no longer required:")
        lines.append("  " + "  ".join(plan.unneeded))
        lines.append("Use 'llmos autoremove' to remove them.")
    counts = {op: sum(1 for a in plan.actions if a.op == op) for op, _h in _HEADINGS}
    lines.append(
        f"{counts['upgrade']} upgraded, {counts['install']} newly installed, "
        f"{counts['downgrade']} downgraded, {counts['remove']} to remove, {len(kept)} not upgraded."
    )
    return lines


def _print_lines(lines: list[str]) -> None:
    for line in lines:
        err().print(line, markup=False, highlight=False)


def _confirmer(yes: bool, json_mode: bool):
    def ask(proposal: Any) -> None:
        if not json_mode:
            _print_lines(plan_summary(proposal))
        if proposal.needs_confirmation:
            confirm("Do you want to continue?", yes)

    return ask


def _render_tx(result: Any) -> None:
    plan = result.plan
    if result.simulated:
        _print_lines(plan_summary(result.proposal))
        for a in plan.actions:  # the exact plan, in execution order (apt -s prints Inst/Remv lines)
            src = ""
            origin = getattr(a.candidate, "origin", None) if a.candidate is not None else None
            if origin is not None and hasattr(origin, "source_name"):
                src = f" [{origin.source_name}]"
            out().print(f"{a.op} {_action_label(a)} ({a.reason}){src}", markup=False, highlight=False)
        err().print("Simulation only: nothing was changed.", markup=False)
        return
    if not plan.actions:
        for note in getattr(plan, "notes", []) or []:
            err().print(note, markup=False)
        err().print("Nothing to do.", markup=False)
        return
    err().print(f"Done (transaction {result.txid}).", markup=False)


# ---------------------------------------------------------------- commands


def register(app: typer.Typer) -> None:
    @app.command(rich_help_panel="Packages")
    def install(
        specs: Annotated[list[str], typer.Argument(metavar="NAME[CONSTRAINT]|ARCHIVE...", help="Packages, e.g. med-lib 'bio-core>=1.2', or .llmos archives.")],
        simulate: SimulateOpt = False,
        yes: YesOpt = False,
        json: JsonOpt = False,
    ) -> None:
        """Install packages with their dependencies."""
        rep = reporter(json)

        def work():
            from llmos_cli.app import install as ops

            return ops.install(list(specs), simulate=simulate, reporter=rep, confirm=_confirmer(yes, json))

        execute("install", json, work, _render_tx, rep=rep)

    @app.command(rich_help_panel="Packages")
    def remove(
        names: Annotated[list[str], typer.Argument(metavar="NAME...", help="Installed packages to remove.")],
        simulate: SimulateOpt = False,
        yes: YesOpt = False,
        json: JsonOpt = False,
    ) -> None:
        """Remove packages (refused while other installed packages need them)."""
        rep = reporter(json)

        def work():
            from llmos_cli.app import install as ops

            return ops.remove(list(names), simulate=simulate, reporter=rep, confirm=_confirmer(yes, json))

        execute("remove", json, work, _render_tx, rep=rep)

    @app.command(rich_help_panel="Packages")
    def autoremove(simulate: SimulateOpt = False, yes: YesOpt = False, json: JsonOpt = False) -> None:
        """Remove packages installed as dependencies that nothing needs any more."""
        rep = reporter(json)

        def work():
            from llmos_cli.app import install as ops

            return ops.autoremove(simulate=simulate, reporter=rep, confirm=_confirmer(yes, json))

        execute("autoremove", json, work, _render_tx, rep=rep)

    @app.command(rich_help_panel="Packages")
    def upgrade(
        names: Annotated[list[str] | None, typer.Argument(metavar="[NAME...]", help="Packages to upgrade (default: all not held).")] = None,
        simulate: SimulateOpt = False,
        yes: YesOpt = False,
        json: JsonOpt = False,
    ) -> None:
        """Upgrade packages to their newest installable versions."""
        rep = reporter(json)

        def work():
            from llmos_cli.app import install as ops

            return ops.upgrade(list(names or []), simulate=simulate, reporter=rep, confirm=_confirmer(yes, json))

        execute("upgrade", json, work, _render_tx, rep=rep)

    def _hold_cmd(command: str, value: bool):
        def cmd(
            names: Annotated[list[str], typer.Argument(metavar="NAME...", help="Installed packages.")],
            simulate: SimulateOpt = False,
            yes: YesOpt = False,
            json: JsonOpt = False,
        ) -> None:
            rep = reporter(json)

            def work():
                from llmos_cli.app import install as ops

                fn = ops.hold if value else ops.unhold
                return fn(list(names), simulate=simulate, reporter=rep)

            def human(r: Any) -> None:
                verb = "held" if value else "no longer held"
                for n in r.changed:
                    err().print(f"{n} {'would be ' if r.simulated else ''}{'set on hold' if value else 'taken off hold'}.", markup=False)
                for n in r.unchanged:
                    err().print(f"{n} was already {verb}.", markup=False)
                if r.simulated:
                    err().print("Simulation only: nothing was changed.", markup=False)

            execute(command, json, work, human, rep=rep)

        cmd.__doc__ = "Keep packages at their installed version." if value else "Let held packages be upgraded again."
        return cmd

    app.command("hold", rich_help_panel="Packages")(_hold_cmd("hold", True))
    app.command("unhold", rich_help_panel="Packages")(_hold_cmd("unhold", False))

    @app.command("list", rich_help_panel="Packages")
    def list_(
        kind: Annotated[str | None, typer.Option("--kind", "-k", help="Only this kind: model or library.")] = None,
        json: JsonOpt = False,
    ) -> None:
        """List installed packages."""
        rep = reporter(json)

        def work():
            from llmos_cli.app import install as ops

            return ops.list_installed(kind, reporter=rep)

        execute("list", json, work, _render_list, rep=rep)

    @app.command(rich_help_panel="Packages")
    def show(name: Annotated[str, typer.Argument(help="Package name.")], json: JsonOpt = False) -> None:
        """Show a package: installed and available versions, relations, files, marks."""
        rep = reporter(json)

        def work():
            from llmos_cli.app import install as ops

            return ops.show(name, reporter=rep)

        execute("show", json, work, _render_show, rep=rep)

    @app.command(rich_help_panel="Packages")
    def search(text: Annotated[str, typer.Argument(help="Text to look for in names, summaries, provides and descriptions.")], json: JsonOpt = False) -> None:
        """Search the available packages."""
        rep = reporter(json)

        def work():
            from llmos_cli.app import install as ops

            return ops.search(text, reporter=rep)

        execute("search", json, work, _render_search, rep=rep)

    @app.command(rich_help_panel="Packages")
    def verify(
        names: Annotated[list[str] | None, typer.Argument(metavar="[NAME...]", help="Packages to verify (default: all).")] = None,
        json: JsonOpt = False,
    ) -> None:
        """Re-hash installed files; exit 6 naming each changed or missing file."""
        rep = reporter(json)

        def work():
            from llmos_cli.app import install as ops

            return ops.verify(list(names or []), reporter=rep)

        execute("verify", json, work, _render_verify, rep=rep)

    @app.command(rich_help_panel="Packages")
    def history(
        limit: Annotated[int, typer.Option("--limit", "-n", help="Show only the last N transactions (0: all).")] = 0,
        json: JsonOpt = False,
    ) -> None:
        """Show the transaction history."""
        rep = reporter(json)

        def work():
            from llmos_cli.app import install as ops

            return ops.history(limit, reporter=rep)

        execute("history", json, work, _render_history, rep=rep)


# ---------------------------------------------------------------- data renderers (stdout)


def _table(*columns: str):
    from rich import box
    from rich.table import Table

    t = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    for c in columns:
        t.add_column(c, overflow="fold")
    return t


def _render_list(result: Any) -> None:
    if not result.packages:
        err().print("No packages installed." if result.kind is None else f"No {result.kind} packages installed.", markup=False)
        return
    t = _table("Name", "Version", "Kind", "Marks", "Summary")
    for p in result.packages:
        marks = []
        if p.auto:
            marks.append("auto")
        if p.held:
            marks.append("held")
        if p.kind == "library" and not p.attached:
            marks.append("detached")
        t.add_row(p.name, p.version, p.kind, ",".join(marks) or "-", p.meta.summary)
    out().print(t)


def _render_show(result: Any) -> None:
    data = result.to_json()
    lines: list[str] = [f"Package: {data['name']}"]
    inst = data["installed"]
    if inst:
        marks = ["auto" if inst["auto"] else "manual"] + (["held"] if inst["held"] else [])
        lines += [
            f"Installed: {inst['version']} ({', '.join(marks)}) from {inst['source'] or '-'}",
            f"Kind: {inst['kind']}",
            f"Summary: {inst['summary']}",
        ]
        for key in ("license", "maintainer"):
            if inst.get(key):
                lines.append(f"{key.capitalize()}: {inst[key]}")
        rel = inst
    else:
        lines.append("Installed: (none)")
        rel = data["available"][0] if data["available"] else None
        if rel:
            lines += [f"Kind: {rel['kind']}", f"Summary: {rel['summary']}"]
    if rel:
        if rel.get("depends"):
            lines.append("Depends: " + ", ".join(rel["depends"]))
        if rel.get("base"):
            lines.append(f"Base: {rel['base']}")
        if rel.get("conflicts"):
            lines.append("Conflicts: " + ", ".join(rel["conflicts"]))
        if rel.get("provides"):
            lines.append("Provides: " + ", ".join(rel["provides"]))
    if data["required_by"]:
        lines.append("Required-By: " + ", ".join(data["required_by"]))
    if data["provided_by"]:
        lines.append("Provided-By: " + ", ".join(data["provided_by"]))
    if data["available"]:
        lines.append("Available:")
        for a in data["available"]:
            star = " [installed]" if a["installed"] else ""
            lines.append(f"  {a['version']} from {a.get('source')}{star}")
    if inst and inst.get("description"):
        lines.append("Description:")
        lines += ["  " + line for line in inst["description"].splitlines()]
    if inst:
        lines.append(f"Files ({len(inst['files'])}):")
        lines += [f"  {f['path']}  {f['size']} bytes  sha256:{f['sha256'][:16]}" for f in inst["files"]]
    for line in lines:
        out().print(line, markup=False, highlight=False)


def _render_search(result: Any) -> None:
    if not result.results:
        err().print(f"No packages match {result.query!r}.", markup=False)
        return
    for h in result.results:
        inst = ""
        if h.installed:
            inst = " [installed]" if h.installed == h.version else f" [installed: {h.installed}]"
        out().print(f"{h.name} {h.version} ({h.kind}){inst}", markup=False, highlight=False)
        out().print(f"  {h.summary}", markup=False, highlight=False)


def _render_verify(result: Any) -> None:
    for p in result.problems:
        out().print(f"{p.package} {p.version}: {p.path}: {p.problem}", markup=False, highlight=False)
    if result.ok:
        err().print(f"{result.files} file(s) in {result.packages} package(s) verified: all intact.", markup=False)
    else:
        err().print(
            f"error: {len(result.problems)} installed file(s) changed or missing (of {result.files} checked)",
            markup=False,
        )
        err().print("hint: `llmos remove NAME` then `llmos install NAME` restores a package's files", markup=False)


def _render_history(result: Any) -> None:
    if not result.transactions:
        err().print("No transactions yet.", markup=False)
        return
    t = _table("ID", "Started", "Command", "Status", "Changes")
    for tr in result.transactions:
        changes = []
        for a in tr["actions"]:
            op = a.get("action")
            if op in ("upgrade", "downgrade"):
                changes.append(f"{op} {a['name']} {a['old_version']}->{a['new_version']}")
            else:
                changes.append(f"{op} {a['name']} {a.get('new_version') or a.get('old_version') or ''}".rstrip())
        t.add_row(str(tr["id"]), tr["started"][:19].replace("T", " "), " ".join(tr["argv"]), tr["status"], "; ".join(changes))
    out().print(t)
