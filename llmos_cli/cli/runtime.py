"""Runtime commands: run, stack, attach, detach, import-model, default-model, doctor.

Parsing and rendering only; the work is in ``llmos_cli.app`` and
``llmos_cli.runtime`` (imported inside each command: llama_cpp is never loaded
by ``llmos --help``).
``run`` streams the answer to stdout as it is generated; every message goes
to stderr.
"""

from __future__ import annotations

import sys
from typing import Annotated, Any

import typer

from llmos_cli.cli._common import STATE, JsonOpt, RichReporter, SimulateOpt, YesOpt, confirm, run_command
from llmos_cli.cli._render import kv, simulated, table
from llmos_cli.cli._render import line as _print
from llmos_cli.cli._render import note as _note


def _fmt_scale(v: float) -> str:
    return f"{v:g}"


# ---------------------------------------------------------------- renderers


def _render_stack(stack: Any) -> None:
    m = stack.model
    ver = f" {m.version}" if m.version else ""
    ctx = f", context {m.context_length}" if m.context_length else ""
    _print(f"model: {m.name}{ver} ({m.architecture or 'unknown architecture'}{ctx}; {m.origin})")
    if m.fingerprint:
        _print(f"fingerprint: {m.fingerprint}")
    if stack.selection == "none":
        _print("libraries: none (--no-libs)")
    elif not stack.libraries:
        _print("libraries: none attached")
    if stack.libraries or stack.left_out:
        rows = []
        for lib, used in [(lib, "yes") for lib in stack.libraries] + [(lib, "no" if lib.attached else "detached") for lib in stack.left_out]:
            fits = "-" if lib.fits is None else ("yes" if lib.fits else "NO")
            rows.append((lib.name, lib.version, _fmt_scale(lib.scale), "yes" if lib.adapter else "no", fits, used))
        table(("LIBRARY", "VERSION", "SCALE", "ADAPTER", "FITS", "USED"), rows)
    for lib in stack.libraries + stack.left_out:
        for p in lib.problems[:3]:
            _note(f"{lib.name}: {p}")
    for n in stack.notes:
        _note(n)


def _render_attach(result: Any) -> None:
    verb = "attached" if result.command == "attach" else "detached"
    for c in result.changed:
        scale = f" at scale {_fmt_scale(c['scale'])}" if result.command == "attach" else ""
        _note(f"{'would be ' if result.simulated else ''}{verb}: {c['name']} {c['version']}{scale}")
    for n in result.unchanged:
        _note(f"{n} is already {verb}")
    if result.simulated:
        simulated()


def _render_default(result: Any) -> None:
    if result.name is None:
        _note("no default model (none installed, or several and none chosen)")
        return
    if result.changed:
        _note(f"{'would set' if result.simulated else 'default model:'} {result.name} {result.version}")
        if result.simulated:
            simulated()
    else:
        _print(f"{result.name} {result.version}" + (" (the only installed model)" if result.implicit else ""))


def _render_import(result: Any) -> None:
    ctx = f", context {result.context_length}" if result.context_length else ""
    tmpl = "with" if result.has_chat_template else "WITHOUT"
    _note(f"{result.file.name}: {result.architecture}{ctx}, {tmpl} a chat template")
    if result.simulated:
        _print(f"import {result.name} {result.version} into {result.registry} and install it")
        simulated()
        return
    _note(f"built {result.archive} in the local registry (source 'local')")
    stored = {"hardlink": "hard-linked into the store (no copy)", "reflink": "reflinked into the store (no copy)", "copy": "copied into the store once"}
    if result.stored in stored:
        _note(f"{result.file.name}: {stored[result.stored]}")
    _note(f"installed {result.name} {result.version}" + ("; it is now the default model" if result.default_set else ""))


def _render_doctor(report: Any) -> None:
    lc = report.llama_cpp
    _print(f"llmos {report.llmos} (Python {report.python}, {report.platform})")
    if lc.get("importable"):
        _print(f"llama-cpp-python {lc.get('version')}: GPU offload {'yes' if lc.get('gpu_offload') else 'no'}, max devices {lc.get('max_devices')}")
        _print(f"  {lc.get('system_info')}")
    else:
        _print(f"llama-cpp-python: NOT usable ({lc.get('error')})")
    t = report.threads
    db = report.database

    def state(d: dict[str, Any]) -> str:
        return "ok" if d["exists"] and d["writable"] else ("missing" if not d["exists"] else "read-only")

    kv(
        [("threads", f"{t['usable']} usable of {t['cpu_count']} cores; llama.cpp default {t['default_threads']}")]
        + [(key, f"{d['path']} ({state(d)})") for key, d in report.paths.items()]
        + [("database", f"{db['path']} ({db.get('integrity')})"), ("default model", report.default_model or "-")]
    )
    for c in report.checks:
        (_print if c.ok else _note)(f"[{'ok' if c.ok else 'FAIL'}] {c.name}: {c.message}")


# ---------------------------------------------------------------- commands


def _stdin_text() -> str | None:
    """Piped stdin as text (invalid UTF-8 replaced, never an error); None on a terminal."""
    try:
        if sys.stdin is None or sys.stdin.isatty():
            return None
        buf = getattr(sys.stdin, "buffer", None)
        if buf is not None:
            return buf.read().decode("utf-8", errors="replace")
        return sys.stdin.read()
    except (OSError, ValueError):
        return None


def run(
    prompt: Annotated[str | None, typer.Argument(help="The question; piped stdin text is put before it.")] = None,
    system: Annotated[str | None, typer.Option("--system", "-s", help="System prompt.")] = None,
    max_tokens: Annotated[
        int | None,
        typer.Option("--max-tokens", "-n", help="Most tokens to generate (0: until the context is full). Default: the model package's, else 256."),
    ] = None,
    temperature: Annotated[
        float | None, typer.Option("--temperature", "-t", help="Sampling temperature; 0 is greedy. Default: the model package's, else 0.8.")
    ] = None,
    top_p: Annotated[float | None, typer.Option("--top-p", help="Nucleus sampling threshold. Default: the model package's, else 0.95.")] = None,
    seed: Annotated[int | None, typer.Option("--seed", help="Random seed (with --temperature 0 a run is reproducible).")] = None,
    stop: Annotated[list[str] | None, typer.Option("--stop", help="Stop at this text (repeatable).")] = None,
    model: Annotated[str | None, typer.Option("--model", "-m", help="Model name (or a .gguf path); default: the default model.")] = None,
    lib: Annotated[list[str] | None, typer.Option("--lib", "-l", metavar="NAME[:SCALE]", help="Use exactly these libraries (repeatable).")] = None,
    no_libs: Annotated[bool, typer.Option("--no-libs", help="Use the bare base model.")] = False,
    device: Annotated[str, typer.Option("--device", help="auto, cpu or gpu.")] = "auto",
    gpu_layers: Annotated[int | None, typer.Option("--gpu-layers", help="Layers to offload to the GPU (-1: all).")] = None,
    ctx: Annotated[int, typer.Option("--ctx", help="Context window in tokens (0: the model's own, at most 4096).")] = 0,
    threads: Annotated[int | None, typer.Option("--threads", help="CPU threads (default: half the cores).")] = None,
    knowledge: Annotated[
        str,
        typer.Option(
            "--knowledge",
            metavar="off|auto|N",
            help="Retrieved document chunks in the prompt: auto up to 5 relevant ones, N up to N; off turns retrieval off "
            "(glossary definitions stay: see --no-refine).",
        ),
    ] = "auto",
    no_refine: Annotated[
        bool,
        typer.Option("--no-refine", help="Add no glossary definitions of the terms in the prompt (retrieved chunks stay: see --knowledge off)."),
    ] = False,
    grounded: Annotated[
        bool,
        typer.Option(
            "--grounded",
            help="Answer only from retrieved chunks and glossary entries, citing them; otherwise print 'not found in the attached libraries' and exit 19.",
        ),
    ] = False,
    long: Annotated[
        str,
        typer.Option(
            "--long",
            metavar="index|map-reduce|refuse",
            help="Input (stdin or --file) longer than the context: index it and use the parts that match the prompt (default), "
            "answer from each part then combine, or fail (exit 13).",
        ),
    ] = "index",
    file: Annotated[str | None, typer.Option("--file", metavar="PATH", help="Read the input from this file instead of stdin (cited by its name).")] = None,
    explain: Annotated[bool, typer.Option("--explain", help="Print the assembled prompt with each part's token count; do not generate.")] = False,
    allow_tool: Annotated[list[str] | None, typer.Option("--allow-tool", metavar="NAME", help="Let this library tool run (repeatable).")] = None,
    allow_tools: Annotated[bool, typer.Option("--allow-tools", help="Let every library tool run, except denied ones.")] = False,
    tool_choice: Annotated[
        str | None, typer.Option("--tool-choice", metavar="auto|none|NAME", help="Let the model choose, forbid tools, or force a call of NAME.")
    ] = None,
    chain_limit: Annotated[int, typer.Option("--chain-limit", help="Most rounds of tool calls.")] = 5,
    tools_debug: Annotated[bool, typer.Option("--tools-debug", help="Print tool calls and results on stderr.")] = False,
    no_builtin_tools: Annotated[
        bool, typer.Option("--no-builtin-tools", help="Offer only the libraries' tools: leave out the built-in calculator and lookup.")
    ] = False,
    route: Annotated[
        bool,
        typer.Option("--route", help="Apply only the attached libraries relevant to this prompt (glossary and knowledge match); --json says which and why."),
    ] = False,
    server: Annotated[
        str | None,
        typer.Option("--server", metavar="URL", help='Send the run to an llmos serve at URL (default: $LLMOS_SERVER; "" runs in-process).'),
    ] = None,
    no_log: Annotated[bool, typer.Option("--no-log", help="Do not write this run to the prompt log (llmos logs).")] = False,
    json: JsonOpt = False,
) -> Any:
    """Answer a prompt with the model and its attached libraries (streams to stdout)."""
    stdin_text = _stdin_text()
    streamed: list[str] = []

    def on_text(chunk: str) -> None:
        try:
            sys.stdout.write(chunk)
            sys.stdout.flush()
        except BrokenPipeError:
            from llmos_cli.errors import Aborted

            raise Aborted("stdout was closed; generation stopped") from None
        streamed.append(chunk)

    def work(rep: RichReporter) -> Any:
        from llmos_cli.cli.serve import server_url

        input_text, label = stdin_text, "stdin"
        if file is not None:  # --file: the input read from a file instead of stdin
            from llmos_cli.app.longinput import read_input_file
            from llmos_cli.errors import UsageError

            if stdin_text and stdin_text.strip():
                raise UsageError("input both piped and given with --file", "give the input one way")
            input_text, label = read_input_file(file)
        given: dict[str, Any] = {"max_tokens": max_tokens, "temperature": temperature, "top_p": top_p}
        url = server_url(server)
        if url:  # the pipeline runs on the server; this process imports neither it nor llama.cpp
            from llmos_cli.serve.remote import request_json, run_remote

            body = request_json(
                prompt=prompt,
                stdin_text=input_text,
                system=system,
                model=model,
                libs=list(lib) if lib else None,
                no_libs=no_libs,
                sampling={"seed": seed, "stop": list(stop or []), **{k: v for k, v in given.items() if v is not None}},
                explicit_sampling={k for k, v in given.items() if v is not None},
                route=route,
                log=not no_log,
                prompt_options={
                    "knowledge": knowledge,
                    "explain": explain,
                    "allow_tool": list(allow_tool or []),
                    "allow_tools": allow_tools,
                    "tool_choice": tool_choice,
                    "chain_limit": chain_limit,
                    "builtin_tools": not no_builtin_tools,
                    "refine": not no_refine,
                    "grounded": grounded,
                    "long": long,
                    "input_label": label,
                },
            )
            return run_remote(url, body, on_text=None if json else on_text, reporter=rep)

        from llmos_cli.app.run import RunRequest
        from llmos_cli.app.run import run as do_run
        from llmos_cli.cli.knowledge import run_prompt_options
        from llmos_cli.runtime.engine import SamplingParams

        req = RunRequest(
            prompt=prompt,
            stdin_text=input_text,
            system=system,
            model=model,
            libs=list(lib) if lib else None,
            no_libs=no_libs,
            sampling=SamplingParams(
                seed=seed,
                stop=list(stop or []),
                **{k: v for k, v in given.items() if v is not None},
            ),
            explicit_sampling={k for k, v in given.items() if v is not None},
            device=device,
            gpu_layers=gpu_layers,
            n_ctx=ctx,
            threads=threads,
            verbose=STATE.verbose,
            prompt_options=run_prompt_options(
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
                input_label=label,
            ),
            route=route,
            log=not no_log,
        )
        return do_run(req, on_text=None if json else on_text, reporter=rep)

    def human(result: Any) -> None:
        from llmos_cli.cli.knowledge import render_run_extras

        if render_run_extras(result):  # --explain
            return
        text = "".join(streamed)
        if not text.endswith("\n"):
            try:
                sys.stdout.write("\n")
                sys.stdout.flush()
            except BrokenPipeError:
                pass
        cited = (result.extra or {}).get("citations") or []
        if cited:  # the sources, after the answer, off stdout
            _note("sources: " + " ".join(cited))
        if STATE.verbose:
            t, u = result.timings, result.usage
            _note(
                f"[{result.model['name']}; {u['prompt_tokens']} prompt + {u['completion_tokens']} generated tokens; "
                f"load {t['load_s']:.3f}s, prompt {t['prompt_s']:.3f}s, generate {t['generate_s']:.3f}s; {result.finish_reason}]"
            )

    return run_command("run", json, work, human)


def stack(
    model: Annotated[str | None, typer.Option("--model", "-m", help="Model name (default: the default model).")] = None,
    lib: Annotated[list[str] | None, typer.Option("--lib", "-l", metavar="NAME[:SCALE]", help="Show exactly these libraries.")] = None,
    no_libs: Annotated[bool, typer.Option("--no-libs", help="Show the bare base.")] = False,
    json: JsonOpt = False,
) -> Any:
    """Show what a run would use: model, libraries, scales, and whether each adapter fits."""

    def work(rep: RichReporter) -> Any:
        from llmos_cli.runtime.stack import show_stack

        return show_stack(model=model, libs=list(lib) if lib else None, no_libs=no_libs, reporter=rep)

    return run_command("stack", json, work, _render_stack)


def attach(
    names: Annotated[list[str], typer.Argument(metavar="NAME...", help="Installed libraries.")],
    scale: Annotated[float | None, typer.Option("--scale", help="Adapter scale (default: keep the current one).")] = None,
    simulate: SimulateOpt = False,
    yes: YesOpt = False,
    json: JsonOpt = False,
) -> Any:
    """Put libraries back into runs (optionally at a new scale)."""

    def work(rep: RichReporter) -> Any:
        from llmos_cli.runtime.stack import attach as do_attach

        return do_attach(list(names), scale=scale, simulate=simulate, reporter=rep)

    return run_command("attach", json, work, _render_attach)


def detach(
    names: Annotated[list[str], typer.Argument(metavar="NAME...", help="Installed libraries.")],
    simulate: SimulateOpt = False,
    yes: YesOpt = False,
    json: JsonOpt = False,
) -> Any:
    """Keep libraries installed but leave them out of runs."""

    def work(rep: RichReporter) -> Any:
        from llmos_cli.runtime.stack import detach as do_detach

        return do_detach(list(names), simulate=simulate, reporter=rep)

    return run_command("detach", json, work, _render_attach)


def import_model(
    file: Annotated[str, typer.Argument(metavar="FILE.gguf", help="A local GGUF model file.")],
    name: Annotated[str | None, typer.Option("--name", help="Package name (default: from the file name).")] = None,
    version: Annotated[str, typer.Option("--version", help="Package version.")] = "1.0.0",
    summary: Annotated[str | None, typer.Option("--summary", help="One-line summary.")] = None,
    license: Annotated[str, typer.Option("--license", help="The model's license.")] = "unknown",
    from_hf: Annotated[
        bool,
        typer.Option(
            "--from-hf",
            help="FILE is a Hugging Face Llama checkpoint folder: write its GGUF (tokenizer and chat template included) first; needs the train extra.",
        ),
    ] = False,
    link: Annotated[
        bool,
        typer.Option(
            "--link",
            help="Hard-link (or reflink) the GGUF into the store after hashing it instead of copying it (same file system only); do not edit the file in place afterwards.",
        ),
    ] = False,
    simulate: SimulateOpt = False,
    yes: YesOpt = False,
    json: JsonOpt = False,
) -> Any:
    """Turn a local GGUF into a model package (local registry) and install it."""

    def ask(proposal: Any) -> None:
        if proposal.needs_confirmation:
            confirm("Do you want to continue?", yes)

    def work(rep: RichReporter) -> Any:
        from llmos_cli.app import models

        do_import = models.import_hf_model if from_hf else models.import_model
        return do_import(file, name=name, version=version, summary=summary, license=license, simulate=simulate, reporter=rep, confirm=ask, link=link)

    return run_command("import-model", json, work, _render_import)


def default_model(
    name: Annotated[str | None, typer.Argument(help="Installed model to make the default; none: show it.")] = None,
    simulate: SimulateOpt = False,
    yes: YesOpt = False,
    json: JsonOpt = False,
) -> Any:
    """Show or set the model `llmos run` uses without --model."""

    def work(rep: RichReporter) -> Any:
        from llmos_cli.runtime import models

        if name is None:
            return models.get_default_model(reporter=rep)
        return models.set_default_model(name, simulate=simulate, reporter=rep)

    return run_command("default-model", json, work, _render_default)


def doctor(json: JsonOpt = False) -> Any:
    """Check the llama.cpp build, GPU offload, threads, data directories and the state database."""

    def work(rep: RichReporter) -> Any:
        from llmos_cli.runtime.doctor import doctor as do_doctor

        return do_doctor(reporter=rep)

    return run_command("doctor", json, work, _render_doctor)
