"""``llmos export``: a library or a stack as a PEFT adapter folder (for vLLM and transformers+peft)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from llmos_cli.cli._common import JsonOpt, RichReporter, run_command
from llmos_cli.cli._render import line, note


def export(
    spec: Annotated[
        str,
        typer.Argument(
            metavar="LIB[:SCALE][+LIB[:SCALE]...]",
            help="An installed library, a .llmos archive or a library source folder; several joined by + are one cat-merged adapter.",
        ),
    ],
    fmt: Annotated[str, typer.Option("--format", "-f", help="Output format: peft (adapter_config.json + adapter_model.safetensors).")] = "peft",
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Folder to write (default: $LLMOS_HOME/exports/MODEL/STACK, which serve --engine vllm serves).")
    ] = None,
    model: Annotated[str | None, typer.Option("--model", "-m", help="Base model (installed name or .gguf) if not the one the libraries declare.")] = None,
    base_model: Annotated[
        str | None,
        typer.Option(
            "--base-model", help="Hugging Face id or folder of the base to name in adapter_config.json (default: the GGUF's, else a converted folder)."
        ),
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Write again even when unchanged; replace a folder that is not an llmos export.")] = False,
    json: JsonOpt = False,
) -> Any:
    """Export a library's adapter (or a stack of them, cat-merged) as a PEFT adapter folder, for vLLM."""

    def work(rep: RichReporter) -> Any:
        from llmos_cli.app.export import export_peft

        return export_peft(spec, out=output, fmt=fmt, model=model, base_model=base_model, force=force, reporter=rep)

    def human(res: Any) -> None:
        line(str(res.out))
        libs = ", ".join(f"{lib.name} {lib.version}" + ("" if lib.scale == 1.0 else f" at {lib.scale:g}") for lib in res.libraries)
        how = "unchanged, kept" if res.reused else "written"
        note(f"{res.stack}: {libs} as one PEFT adapter of rank {res.rank} ({', '.join(res.target_modules)}) on {res.base_model}; {how}")

    return run_command("export", json, work, human)


def serve_vllm(
    *,
    engine: str = "vllm",
    model: str | None = None,
    host: str = "127.0.0.1",
    port: int | None = None,
    api_key: str | None = None,
    print_only: bool = False,
    max_loras: int | None = None,
    base_model: str | None = None,
    vllm_args: list[str] | None = None,
    json: bool = False,
) -> Any:
    """``llmos serve --engine vllm [--print]``: export what vLLM needs, then print or launch ``vllm serve``.

    Called by the ``serve`` command when ``--engine vllm`` is given; its other
    options map onto these parameters (the same defaults: 127.0.0.1:8080).
    """

    def work(rep: RichReporter) -> Any:
        from llmos_cli.errors import UsageError
        from llmos_cli.serve.vllm import DEFAULT_PORT, check_bind, launch, plan_vllm

        if engine not in ("llmos", "vllm"):
            raise UsageError(f"--engine {engine!r}: choose llmos or vllm")
        if engine != "vllm":
            raise UsageError("--print goes with --engine vllm", "llmos serve --engine vllm --print")
        check_bind(host, api_key)
        plan = plan_vllm(
            model=model, host=host, port=port or DEFAULT_PORT, base_model=base_model, max_loras=max_loras, extra_args=list(vllm_args or []), reporter=rep
        )
        if print_only:
            return plan
        rep.info(f"starting: {plan.command}")
        return launch(plan, api_key=api_key)

    def human(plan: Any) -> None:
        if print_only:
            line(plan.command)
            if api_key:
                note("the API key goes to vLLM as VLLM_API_KEY in its environment")
        elif plan.exit_code:
            note(f"vllm exited with code {plan.exit_code}")

    res = run_command("serve", json, work, human)
    if res is not None and getattr(res, "exit_code", None):
        raise typer.Exit(int(res.exit_code))
    return res
