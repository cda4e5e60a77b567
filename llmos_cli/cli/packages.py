"""Package commands: install, remove, autoremove, upgrade, hold, unhold, list, show, search, verify, history.

Parsing and rendering only; the work is in ``llmos_cli.app.install`` (imported
inside each command so ``llmos --help`` stays fast).  Plans and messages go
to stderr, data (tables, ``--json``, the simulated plan) to stdout.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer

from llmos_cli.cli._common import JsonOpt, RichReporter, SimulateOpt, YesOpt, confirm, run_command
from llmos_cli.cli._render import line, note, simulated, table

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
    lines += getattr(plan, "notes", []) or []
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
    for text in lines:
        note(text)


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
            line(f"{a.op} {_action_label(a)} ({a.reason}){src}")
        for p in getattr(result, "payload_plan", []):  # [[payload]] files declared by hash
            d = p.to_json()
            what = f"{d['path']} of {d['package']} ({d['size']} bytes, sha256:{d['sha256'][:16]})"
            if d["status"] == "present":
                line(f"payload {what}: already in the store")
            elif d["status"] == "cached":
                line(f"payload {what}: in the download cache")
            else:
                line(f"fetch {what} from: {', '.join(d['origins'])}", soft_wrap=True)
        simulated()
        return
    if not plan.actions:
        for text in getattr(plan, "notes", []) or []:
            note(text)
        note("Nothing to do.")
        return
    note(f"Done (transaction {result.txid}).")


# ---------------------------------------------------------------- commands


def install(
    specs: Annotated[list[str], typer.Argument(metavar="NAME[CONSTRAINT]|ARCHIVE...", help="Packages, e.g. med-lib 'bio-core>=1.2', or .llmos archives.")],
    simulate: SimulateOpt = False,
    yes: YesOpt = False,
    json: JsonOpt = False,
) -> Any:
    """Install packages with their dependencies."""

    def work(rep: RichReporter) -> Any:
        from llmos_cli.app import install as ops

        return ops.install(list(specs), simulate=simulate, reporter=rep, confirm=_confirmer(yes, json))

    return run_command("install", json, work, _render_tx)


def remove(
    names: Annotated[list[str], typer.Argument(metavar="NAME...", help="Installed packages to remove.")],
    simulate: SimulateOpt = False,
    yes: YesOpt = False,
    json: JsonOpt = False,
) -> Any:
    """Remove packages (refused while other installed packages need them)."""

    def work(rep: RichReporter) -> Any:
        from llmos_cli.app import install as ops

        return ops.remove(list(names), simulate=simulate, reporter=rep, confirm=_confirmer(yes, json))

    return run_command("remove", json, work, _render_tx)


def autoremove(simulate: SimulateOpt = False, yes: YesOpt = False, json: JsonOpt = False) -> Any:
    """Remove packages installed as dependencies that nothing needs any more."""

    def work(rep: RichReporter) -> Any:
        from llmos_cli.app import install as ops

        return ops.autoremove(simulate=simulate, reporter=rep, confirm=_confirmer(yes, json))

    return run_command("autoremove", json, work, _render_tx)


def upgrade(
    names: Annotated[list[str] | None, typer.Argument(metavar="[NAME...]", help="Packages to upgrade (default: all not held).")] = None,
    simulate: SimulateOpt = False,
    yes: YesOpt = False,
    json: JsonOpt = False,
) -> Any:
    """Upgrade packages to their newest installable versions."""

    def work(rep: RichReporter) -> Any:
        from llmos_cli.app import install as ops

        return ops.upgrade(list(names or []), simulate=simulate, reporter=rep, confirm=_confirmer(yes, json))

    return run_command("upgrade", json, work, _render_tx)


HeldNames = Annotated[list[str], typer.Argument(metavar="NAME...", help="Installed packages.")]


def _hold(command: str, value: bool, names: list[str], simulate: bool, json: bool) -> Any:
    def work(rep: RichReporter) -> Any:
        from llmos_cli.app import install as ops

        fn = ops.hold if value else ops.unhold
        return fn(list(names), simulate=simulate, reporter=rep)

    def human(r: Any) -> None:
        verb = "held" if value else "no longer held"
        for n in r.changed:
            note(f"{n} {'would be ' if r.simulated else ''}{'set on hold' if value else 'taken off hold'}.")
        for n in r.unchanged:
            note(f"{n} was already {verb}.")
        if r.simulated:
            simulated()

    return run_command(command, json, work, human)


def hold(names: HeldNames, simulate: SimulateOpt = False, yes: YesOpt = False, json: JsonOpt = False) -> Any:
    """Keep packages at their installed version."""
    return _hold("hold", True, names, simulate, json)


def unhold(names: HeldNames, simulate: SimulateOpt = False, yes: YesOpt = False, json: JsonOpt = False) -> Any:
    """Let held packages be upgraded again."""
    return _hold("unhold", False, names, simulate, json)


def list_(
    kind: Annotated[str | None, typer.Option("--kind", "-k", help="Only this kind: model or library.")] = None,
    json: JsonOpt = False,
) -> Any:
    """List installed packages."""

    def work(rep: RichReporter) -> Any:
        from llmos_cli.app.inventory import list_installed  # not app.install: no resolver nor registry code for a listing

        return list_installed(kind, reporter=rep)

    return run_command("list", json, work, _render_list)


def show(name: Annotated[str, typer.Argument(help="Package name.")], json: JsonOpt = False) -> Any:
    """Show a package: installed and available versions, relations, files, marks."""

    def work(rep: RichReporter) -> Any:
        from llmos_cli.app import install as ops

        return ops.show(name, reporter=rep)

    return run_command("show", json, work, _render_show)


def search(text: Annotated[str, typer.Argument(help="Text to look for in names, summaries, provides and descriptions.")], json: JsonOpt = False) -> Any:
    """Search the available packages."""

    def work(rep: RichReporter) -> Any:
        from llmos_cli.app import install as ops

        return ops.search(text, reporter=rep)

    return run_command("search", json, work, _render_search)


def verify(
    names: Annotated[list[str] | None, typer.Argument(metavar="[NAME...]", help="Packages to verify (default: all).")] = None,
    json: JsonOpt = False,
) -> Any:
    """Re-hash installed files; exit 6 naming each changed or missing file."""

    def work(rep: RichReporter) -> Any:
        from llmos_cli.app import install as ops

        return ops.verify(list(names or []), reporter=rep)

    return run_command("verify", json, work, _render_verify)


def history(
    limit: Annotated[int, typer.Option("--limit", "-n", help="Show only the last N transactions (0: all).")] = 0,
    json: JsonOpt = False,
) -> Any:
    """Show the transaction history."""

    def work(rep: RichReporter) -> Any:
        from llmos_cli.app import install as ops

        return ops.history(limit, reporter=rep)

    return run_command("history", json, work, _render_history)


# ---------------------------------------------------------------- data renderers (stdout)


def _render_list(result: Any) -> None:
    if not result.packages:
        note("No packages installed." if result.kind is None else f"No {result.kind} packages installed.")
        return
    rows = []
    for p in result.packages:
        marks = []
        if p.auto:
            marks.append("auto")
        if p.held:
            marks.append("held")
        if p.kind == "library" and not p.attached:
            marks.append("detached")
        rows.append((p.name, p.version, p.kind, ",".join(marks) or "-", p.meta.summary))
    table(("Name", "Version", "Kind", "Marks", "Summary"), rows, heads=True, fold=True)


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
        if rel.get("breaks"):
            lines.append("Breaks: " + ", ".join(rel["breaks"]))
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
    shown = (inst or {}).get("payloads") or (data["available"][0].get("payloads") if data["available"] else None) or []
    if shown:  # [[payload]] files declared by hash, and where they come from
        lines.append("Payloads (by hash):")
        for p in shown:
            lines.append(f"  {p['path']}  {p['size']} bytes  sha256:{p['sha256'][:16]}")
            lines += [f"    origin: {o}" for o in p["origins"]]
    if inst and inst.get("description"):
        lines.append("Description:")
        lines += ["  " + line for line in inst["description"].splitlines()]
    if inst:
        lines.append(f"Files ({len(inst['files'])}):")
        lines += [f"  {f['path']}  {f['size']} bytes  sha256:{f['sha256'][:16]}" for f in inst["files"]]
    for text in lines:
        line(text)


def _render_search(result: Any) -> None:
    if not result.results:
        note(f"No packages match {result.query!r}.")
        return
    for h in result.results:
        inst = ""
        if h.installed:
            inst = " [installed]" if h.installed == h.version else f" [installed: {h.installed}]"
        line(f"{h.name} {h.version} ({h.kind}){inst}")
        line(f"  {h.summary}")


def _render_verify(result: Any) -> None:
    for p in result.problems:
        line(f"{p.package} {p.version}: {p.path}: {p.problem}")
    if result.ok:
        note(f"{result.files} file(s) in {result.packages} package(s) verified: all intact.")
    else:
        note(f"error: {len(result.problems)} installed file(s) changed or missing (of {result.files} checked)")
        note("hint: `llmos remove NAME` then `llmos install NAME` restores a package's files")


def _render_history(result: Any) -> None:
    if not result.transactions:
        note("No transactions yet.")
        return
    rows = []
    for tr in result.transactions:
        changes = []
        for a in tr["actions"]:
            op = a.get("action")
            if op in ("upgrade", "downgrade"):
                changes.append(f"{op} {a['name']} {a['old_version']}->{a['new_version']}")
            else:
                changes.append(f"{op} {a['name']} {a.get('new_version') or a.get('old_version') or ''}".rstrip())
        rows.append((str(tr["id"]), tr["started"][:19].replace("T", " "), " ".join(tr["argv"]), tr["status"], "; ".join(changes)))
    table(("ID", "Started", "Command", "Status", "Changes"), rows, heads=True, fold=True)
