"""``llmos source list|add|remove`` and ``llmos update``; the work is ``llmos_cli.app.sources``."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from llmos_cli.cli._common import JsonOpt, RichReporter, SimulateOpt, YesOpt, run_command
from llmos_cli.cli._render import line, note, table


def _trust_label(d: dict) -> str:
    if d.get("signed_by"):
        return f"pinned key {d['signed_by'][:16]}…"
    return "unsigned allowed" if d.get("trust") == "unsigned-allowed" else "unsigned (refused for installs)"


#: ``llmos source list|add|remove``
source_app = typer.Typer(name="source", help="Manage package sources (registries).", no_args_is_help=True, rich_markup_mode=None)


@source_app.command("list")
def source_list(json: JsonOpt = False) -> Any:
    """List sources with their trust (pinned key or unsigned-allowed)."""

    def work(rep: RichReporter) -> Any:
        from llmos_cli.app import sources

        return sources.list_sources()

    def human(rows: Any) -> None:
        table(
            ("name", "kind", "url", "trust", "priority", "index", "updated"),
            [
                (
                    d["name"],
                    d["kind"],
                    d["url"] + (f" ({d['path']})" if d["url"] == "embedded:" else ""),
                    _trust_label(d),
                    str(d["priority"]),
                    "-" if d["index_version"] is None else str(d["index_version"]),
                    d["updated"] or "never",
                )
                for d in rows
            ],
        )

    return run_command("source list", json, work, human)


@source_app.command("add")
def source_add(
    name: Annotated[str, typer.Argument(help="Name for the source.")],
    url: Annotated[str, typer.Argument(help="Folder path, file://, http(s):// or hf://owner/repo[@revision].")],
    key: Annotated[str | None, typer.Option("--key", help="Pin the ed25519 public key (base64, or a .pub file) that must sign the index.")] = None,
    allow_unsigned: Annotated[bool, typer.Option("--allow-unsigned", help="Allow installs from this source although its index is not signed.")] = False,
    priority: Annotated[int, typer.Option("--priority", help="Higher wins when sources offer the same version.")] = 0,
    json: JsonOpt = False,
    simulate: SimulateOpt = False,
    yes: YesOpt = False,
) -> Any:
    """Add a source.  Run `llmos update` afterwards to fetch its index."""

    def work(rep: RichReporter) -> Any:
        from llmos_cli.app import sources

        return sources.add_source(name, url, key=key, allow_unsigned=allow_unsigned, priority=priority, simulate=simulate)

    def human(res: Any) -> None:
        d = res.to_json()["source"]
        verb = "would add" if res.simulated else "added"
        line(f"{verb} source {d['name']} ({d['kind']}) {d['url']}: {_trust_label(d)}")
        if not res.simulated:
            note("run `llmos update` to fetch its index")

    return run_command("source add", json, work, human)


@source_app.command("remove")
def source_remove(
    name: Annotated[str, typer.Argument(help="Source to remove.")],
    json: JsonOpt = False,
    simulate: SimulateOpt = False,
    yes: YesOpt = False,
) -> Any:
    """Remove a source and its local index copy (installed packages stay)."""

    def work(rep: RichReporter) -> Any:
        from llmos_cli.app import sources

        return sources.remove_source(name, simulate=simulate)

    def human(res: Any) -> None:
        verb = "would remove" if res.simulated else "removed"
        line(f"{verb} source {res.source.name} ({res.source.url})")

    return run_command("source remove", json, work, human)


def update(
    names: Annotated[list[str] | None, typer.Argument(help="Only these sources (default: every enabled one).")] = None,
    json: JsonOpt = False,
    simulate: SimulateOpt = False,
    yes: YesOpt = False,
) -> Any:
    """Refresh the local copy of every source's index."""

    def work(rep: RichReporter) -> Any:
        from llmos_cli.app import sources

        return sources.update(names or None, simulate=simulate, reporter=rep)

    def human(res: Any) -> None:
        for s in res.sources:
            if s.version is None:
                line(f"{s.name}: no index (offers no packages)")
                continue
            state = "changed" if s.changed else "unchanged"
            sig = "signed" if s.signed else "unsigned"
            verb = "would fetch" if res.simulated else "fetched"
            line(f"{s.name}: {verb} index version {s.version} ({s.packages} package(s), {sig}, {state})")

    return run_command("update", json, work, human)
