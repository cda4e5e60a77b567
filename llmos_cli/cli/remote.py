"""``llmos key generate``, ``llmos publish``, ``llmos mirror`` and ``llmos cache list|clean``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from llmos_cli.cli._common import JsonOpt, RichReporter, SimulateOpt, YesOpt, run_command
from llmos_cli.cli._render import human_size, line, note

SignOpt = Annotated[
    str | None,
    typer.Option("--sign", help="Sign the new index with this key (a .key file, or a key name in LLMOS_HOME/keys)."),
]
ExpiresOpt = Annotated[int | None, typer.Option("--expires-days", help="Declare the new index expired after N days (freeze-attack guard).")]


def _sign_path(sign: str | None) -> Path | None:
    if sign is None:
        return None
    from llmos_cli.paths import get_paths
    from llmos_cli.registry.signing import resolve_private_key

    return resolve_private_key(sign, get_paths().keys)


#: ``llmos key generate``
key_app = typer.Typer(name="key", help="Signing keys for registries.", no_args_is_help=True, rich_markup_mode=None)


@key_app.command("generate")
def key_generate(
    name: Annotated[str, typer.Argument(help="Key name; writes NAME.key (secret) and NAME.pub.")],
    directory: Annotated[Path | None, typer.Option("--dir", help="Folder for the key files (default: LLMOS_HOME/keys).")] = None,
    json: JsonOpt = False,
    simulate: SimulateOpt = False,
    yes: YesOpt = False,
) -> Any:
    """Create an ed25519 key pair for `llmos index --sign` / `publish --sign`."""

    def work(rep: RichReporter) -> Any:
        from llmos_cli.paths import get_paths
        from llmos_cli.registry.signing import PRIVATE_SUFFIX, generate_key

        keys_dir = directory or get_paths().keys
        if simulate:
            return {"name": name, "private_key": str(keys_dir / f"{name}{PRIVATE_SUFFIX}"), "public_key": None, "simulate": True}
        private, public = generate_key(name, keys_dir)
        return {"name": name, "private_key": str(private), "public_key": public, "simulate": False}

    def human(d: Any) -> None:
        if d["simulate"]:
            line(f"would write {d['private_key']} and its .pub")
            return
        line(d["public_key"])
        note(f"secret key: {d['private_key']} (keep it private; back it up)", soft_wrap=True)
        note(f"clients pin the public key: llmos source add NAME URL --key {d['public_key']}", soft_wrap=True)

    return run_command("key generate", json, work, human)


def publish(
    archives: Annotated[list[Path], typer.Argument(help="Archives built by `llmos build`.")],
    to: Annotated[str, typer.Option("--to", help="Registry folder, or hf://owner/repo[@branch].")],
    sign: SignOpt = None,
    expires_days: ExpiresOpt = None,
    json: JsonOpt = False,
    simulate: SimulateOpt = False,
    yes: YesOpt = False,
) -> Any:
    """Add packages to a registry (under pool/) and re-index it, signed with --sign."""

    def work(rep: RichReporter) -> Any:
        from llmos_cli.registry.publish import publish as do_publish

        return do_publish(list(archives), to, sign_key=_sign_path(sign), expires_days=expires_days, simulate=simulate, reporter=rep)

    def human(res: Any) -> None:
        for p in res.packages:
            verb = {"added": "would add" if res.simulate else "added", "unchanged": "already there:"}[p.status]
            line(f"{verb} {p.name} {p.version} ({p.filename}, {human_size(p.size)})")
        state = "would write" if res.simulate else "wrote"
        signed = "signed" if res.signed else "unsigned"
        commit = f", commit {res.commit[:12]}" if res.commit else ""
        line(f"{state} index version {res.index_version} of {res.target} ({signed}{commit})")

    return run_command("publish", json, work, human)


def mirror(
    source: Annotated[str, typer.Argument(help="Source name (see `llmos source list`).")],
    dest: Annotated[Path, typer.Argument(help="Folder registry to fill; usable with no network.")],
    names: Annotated[list[str] | None, typer.Argument(help="Packages (with constraints) to copy with their dependencies; default: all.")] = None,
    print_uris: Annotated[bool, typer.Option("--print-uris", help="Print what would be fetched ('URI' file size SHA256:hash); change nothing.")] = False,
    sign: SignOpt = None,
    expires_days: ExpiresOpt = None,
    json: JsonOpt = False,
    simulate: SimulateOpt = False,
    yes: YesOpt = False,
) -> Any:
    """Copy a source's packages (or those NAMES need) into a folder registry for offline machines."""

    def work(rep: RichReporter) -> Any:
        from llmos_cli.registry.mirror import mirror as do_mirror

        return do_mirror(
            source,
            dest,
            names or [],
            print_uris=print_uris,
            sign_key=_sign_path(sign),
            expires_days=expires_days,
            simulate=simulate,
            reporter=rep,
        )

    def human(res: Any) -> None:
        if res.print_uris:
            for item in res.items:
                line(item.apt_line(), soft_wrap=True)
            for blob in res.blobs:  # payloads declared by hash: each origin, in the order tried
                for text in blob.apt_lines():
                    line(text, soft_wrap=True)
            return
        for item in res.items:
            verb = "would copy" if res.simulate else {"added": "copied", "unchanged": "already there:"}.get(item.status, item.status)
            line(f"{verb} {item.name} {item.version} ({human_size(item.size)})")
        for blob in res.blobs:
            verb = "would copy" if res.simulate else {"added": "copied", "unchanged": "already there:"}.get(blob.status, blob.status)
            line(f"{verb} blob {blob.path} of {blob.package} ({human_size(blob.size)})")
        if not res.simulate:
            how = "the publisher's signed index kept" if res.verbatim and res.signed else ("signed" if res.signed else "unsigned")
            line(f"mirror {res.dest}: index version {res.index_version}, {how}")
            note(f"on the offline machine: llmos source add NAME {res.dest} --key PUBKEY (or --allow-unsigned)")

    return run_command("mirror", json, work, human)


#: ``llmos cache list|clean``
cache_app = typer.Typer(name="cache", help="The download cache shared between installs.", no_args_is_help=True, rich_markup_mode=None)


@cache_app.command("list")
def cache_list(json: JsonOpt = False) -> Any:
    """List downloaded archives and partial downloads."""

    def work(rep: RichReporter) -> Any:
        from llmos_cli.app import sources

        return sources.list_cache()

    def human(res: Any) -> None:
        for e in res.entries:
            state = "" if e.complete else "  (partial)"
            line(f"{e.file}  {human_size(e.size)}{state}")
        note(f"{len(res.entries)} file(s), {human_size(res.total_bytes)} in {res.path}")

    return run_command("cache list", json, work, human)


@cache_app.command("clean")
def cache_clean(
    incomplete: Annotated[bool, typer.Option("--incomplete", help="Only delete partial downloads.")] = False,
    json: JsonOpt = False,
    simulate: SimulateOpt = False,
    yes: YesOpt = False,
) -> Any:
    """Delete the download cache (installed packages are not affected)."""

    def work(rep: RichReporter) -> Any:
        from llmos_cli.app import sources

        return sources.clean_cache(incomplete_only=incomplete, simulate=simulate)

    def human(res: Any) -> None:
        verb = "would free" if res.simulate else "freed"
        line(f"{verb} {human_size(res.total_bytes)} ({len(res.entries)} file(s)) in {res.path}")

    return run_command("cache clean", json, work, human)
