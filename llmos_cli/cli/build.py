"""``llmos build``, ``llmos check``, ``llmos index``: making packages and registries."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from llmos_cli.cli._common import JsonOpt, RichReporter, SimulateOpt, YesOpt, run_command
from llmos_cli.cli._render import finding, human_size, line, note


def build(
    src: Annotated[Path, typer.Argument(help="Package source folder holding llmos.toml.")],
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Output folder (default: current) or archive file path.")] = None,
    json: JsonOpt = False,
    simulate: SimulateOpt = False,
    yes: YesOpt = False,
) -> Any:
    """Build a package archive (<name>_<version>.llmos) from a source folder; deterministic."""

    def work(rep: RichReporter) -> Any:
        from llmos_cli.app import build as archive

        if simulate:
            return archive.simulate_build(src, rep)
        return archive.build_package(src, output, rep)

    def human(res: Any) -> None:
        if isinstance(res, dict):
            line(f"would build {res['filename']} with {len(res['files'])} file(s):")
            for f in res["files"]:
                line(f"  {f}")
            return
        line(str(res.path))
        note(f"built {res.name} {res.version} ({res.kind}): {res.files} file(s), {human_size(res.size)}, sha256 {res.sha256}")

    return run_command("build", json, work, human)


def check(
    path: Annotated[Path, typer.Argument(help="Package source folder or .llmos archive.")],
    base: Annotated[
        Path | None,
        typer.Option("--base", help="Base model (archive, source folder or .gguf) to check a library's adapter against."),
    ] = None,
    json: JsonOpt = False,
) -> Any:
    """Validate a source folder or archive (for CI): exit 0 only when there is no error."""

    def work(rep: RichReporter) -> Any:
        from llmos_cli.app.check import check_path

        return check_path(path, base)

    def human(rep_: Any) -> None:
        for f in rep_.findings:
            where = f.field or f.path or ""
            finding(f.severity, f"[{f.code}] {where + ': ' if where else ''}{f.message}")
        n_err, n_warn = len(rep_.errors()), len(rep_.warnings())
        if rep_.ok:
            line(f"{rep_.path}: ok ({n_warn} warning(s))")
        else:
            line(f"{rep_.path}: {n_err} error(s), {n_warn} warning(s)")

    return run_command("check", json, work, human)


def index(
    directory: Annotated[Path, typer.Argument(help="Registry folder (archives anywhere below it).")],
    sign: Annotated[Path | None, typer.Option("--sign", help="Secret key file to sign index.json with.")] = None,
    expires_days: Annotated[int | None, typer.Option("--expires-days", help="Declare the index expired after N days (freeze-attack guard).")] = None,
    json: JsonOpt = False,
    simulate: SimulateOpt = False,
    yes: YesOpt = False,
) -> Any:
    """(Re)write a registry's index.json from its archives; the version counter goes up by one."""

    def work(rep: RichReporter) -> Any:
        from llmos_cli.registry.index import write_index

        return write_index(directory, sign_key=sign, expires_days=expires_days, reporter=rep, simulate=simulate)

    def human(res: Any) -> None:
        verb = "would write" if simulate else "wrote"
        for e in res.entries:
            line(f"{e.name} {e.version}  {e.filename}")
        note(
            f"{verb} {res.path}: version {res.version}, {res.packages} package(s){', signed' if res.signed else ''}"
            + (f", expires {res.expires}" if res.expires else "")
        )

    return run_command("index", json, work, human)
