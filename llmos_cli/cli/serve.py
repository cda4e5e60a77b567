"""``llmos serve`` and ``llmos logs``: the LLM pool's server and the prompt log."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Annotated, Any

import typer

from llmos_cli.cli._common import JsonOpt, RichReporter, err, run_command
from llmos_cli.cli._render import line, note, short

_SIZES = {"": 1, "b": 1, "k": 2**10, "kb": 2**10, "kib": 2**10, "m": 2**20, "mb": 2**20, "mib": 2**20, "g": 2**30, "gb": 2**30, "gib": 2**30, "t": 2**40}
_DURATIONS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_size(text: str) -> int:
    """``4G``, ``512M``, ``1.5GiB``, ``1000000`` -> bytes."""
    from llmos_cli.errors import UsageError

    t = text.strip().lower()
    num = t.rstrip("bgikmt")
    unit = t[len(num) :]
    try:
        value = float(num)
    except ValueError:
        value = -1.0
    if unit not in _SIZES or value <= 0:
        raise UsageError(f"--memory {text!r} is not a size", "e.g. --memory 4G, 512M or 2GiB")
    return int(value * _SIZES[unit])


def parse_duration(text: str) -> float:
    """``5m``, ``30s``, ``1h``, ``300`` (seconds), ``-1`` (forever) -> seconds."""
    from llmos_cli.errors import UsageError

    t = text.strip().lower()
    for unit in ("ms", "s", "m", "h"):
        if t.endswith(unit):
            try:
                return float(t[: -len(unit)]) * _DURATIONS[unit]
            except ValueError:
                break
    try:
        return float(t)
    except ValueError:
        raise UsageError(f"--keep-alive {text!r} is not a duration", "e.g. --keep-alive 5m, 30s, 0 (unload when idle) or -1 (never)") from None


@dataclass
class ServeResult:
    url: str
    served_s: float
    models: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"url": self.url, "served_s": round(self.served_s, 3), "models": self.models}


def serve(
    host: Annotated[str, typer.Option("--host", help="Address to bind; anything but loopback needs --api-key.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", "-p", help="TCP port.")] = 8080,
    api_key: Annotated[
        str | None, typer.Option("--api-key", envvar="LLMOS_API_KEY", help="Clients must send Authorization: Bearer KEY (required off loopback).")
    ] = None,
    parallel: Annotated[int, typer.Option("--parallel", help="Sequences decoded together per model (KV slots).")] = 8,
    ctx: Annotated[int, typer.Option("--ctx", help="Context of each sequence in tokens (at most the model's own).")] = 2048,
    max_models: Annotated[int, typer.Option("--max-models", help="Models kept loaded at once (least recently used evicted).")] = 3,
    memory: Annotated[
        str | None, typer.Option("--memory", metavar="SIZE", help="Memory budget for loaded models, e.g. 4G (estimate: file + KV cache).")
    ] = None,
    keep_alive: Annotated[str, typer.Option("--keep-alive", metavar="DURATION", help="Unload a model idle this long (5m, 30s; 0: at once; -1: never).")] = "5m",
    max_queue: Annotated[int, typer.Option("--max-queue", help="Requests that may wait beyond --parallel; more get HTTP 429.")] = 64,
    max_tokens_limit: Annotated[int, typer.Option("--max-tokens-limit", help="Most new tokens one request may ask for.")] = 2048,
    timeout: Annotated[float, typer.Option("--timeout", help="Seconds one request may take (HTTP 408 after).")] = 600.0,
    max_body: Annotated[int, typer.Option("--max-body", help="Largest request body in bytes (HTTP 413 beyond).")] = 1_000_000,
    threads: Annotated[int | None, typer.Option("--threads", help="CPU threads per model (default: half the cores).")] = None,
    device: Annotated[str, typer.Option("--device", help="auto, cpu or gpu.")] = "auto",
    gpu_layers: Annotated[int | None, typer.Option("--gpu-layers", help="Layers to offload to the GPU (-1: all).")] = None,
    no_log: Annotated[bool, typer.Option("--no-log", help="Do not write served requests to the prompt log.")] = False,
    engine: Annotated[str, typer.Option("--engine", help="llmos (this server) or vllm (export the adapters as PEFT and run `vllm serve`).")] = "llmos",
    print_: Annotated[bool, typer.Option("--print", help="With --engine vllm: export, print the vllm serve command, start nothing.")] = False,
    model: Annotated[str | None, typer.Option("--model", "-m", help="With --engine vllm: the base model to serve (default: the default model).")] = None,
    base_model: Annotated[
        str | None,
        typer.Option("--base-model", help="With --engine vllm: Hugging Face id or folder of the base (default: the GGUF's id, else a converted folder)."),
    ] = None,
    max_loras: Annotated[int | None, typer.Option("--max-loras", help="With --engine vllm: adapters in one batch (default: up to 4).")] = None,
    vllm_arg: Annotated[
        list[str] | None,
        typer.Option("--vllm-arg", help="With --engine vllm: one more vllm serve argument (repeatable), e.g. --vllm-arg=--tensor-parallel-size=2."),
    ] = None,
) -> Any:
    """Serve installed models and stacks over an OpenAI-compatible HTTP API (Ctrl-C stops)."""
    from llmos_cli.errors import UsageError

    if engine != "llmos" or print_:
        from llmos_cli.cli.export import serve_vllm

        return serve_vllm(
            engine=engine, model=model, host=host, port=port, api_key=api_key, print_only=print_, max_loras=max_loras, base_model=base_model, vllm_args=vllm_arg
        )

    def work(rep: RichReporter) -> Any:
        from llmos_cli.serve.http import Server, ServerOptions, serve_forever
        from llmos_cli.serve.pool import PoolOptions

        checks = [
            (1 <= port <= 65535, f"--port {port}: must be 1-65535"),
            (1 <= parallel <= 256, f"--parallel {parallel}: must be 1-256"),
            (64 <= ctx <= 1_048_576, f"--ctx {ctx}: must be 64 or more"),
            (max_models >= 1, f"--max-models {max_models}: must be 1 or more"),
            (max_queue >= 0, f"--max-queue {max_queue}: must be 0 or more"),
            (max_tokens_limit >= 1, f"--max-tokens-limit {max_tokens_limit}: must be 1 or more"),
            (timeout > 0, f"--timeout {timeout}: must be positive"),
            (max_body >= 1024, f"--max-body {max_body}: must be 1024 or more"),
            (threads is None or threads >= 1, f"--threads {threads}: must be positive"),
        ]
        for ok, message in checks:
            if not ok:
                raise UsageError(message)
        pool = PoolOptions(
            max_models=max_models,
            memory=parse_size(memory) if memory else None,
            keep_alive=parse_duration(keep_alive),
            slots=parallel,
            seq_ctx=ctx,
            threads=threads,
            device=device,
            gpu_layers=gpu_layers,
            max_tokens=max_tokens_limit,
        )
        options = ServerOptions(
            host=host, port=port, api_key=api_key or None, max_body=max_body, timeout=timeout, max_queue=max_queue, log=not no_log, pool=pool
        )
        server = Server(options, reporter=rep)  # refuses a non-loopback host without a key before binding
        t0 = time.monotonic()
        url = f"http://{host}:{port}"

        def ready(u: str) -> None:
            err().print(f"llmos serve: {u} (parallel {parallel}, ctx {ctx}, up to {max_models} model(s){', key required' if api_key else ''}); Ctrl-C stops")

        models = server.pool.status
        serve_forever(server, on_ready=ready)
        return ServeResult(url, time.monotonic() - t0, models())

    return run_command("serve", False, work, None)


def logs(
    action: Annotated[str | None, typer.Argument(metavar="[on|off|path]", help="on/off: turn prompt logging on or off; path: print the log's file.")] = None,
    n: Annotated[int, typer.Option("-n", "--count", help="Newest entries to show (0: all).")] = 3,
    json: JsonOpt = False,
) -> Any:
    """Show the prompt log: what was asked and answered, by `llmos run` and `llmos serve`."""

    def work(rep: RichReporter) -> Any:
        from llmos_cli.errors import UsageError
        from llmos_cli.paths import get_paths
        from llmos_cli.state import logs as logstore

        paths = get_paths()
        if action in ("on", "off"):
            logstore.set_enabled(paths, action == "on")
            return LogsResult([], logstore.enabled(paths), str(logstore.log_path(paths)), changed=True)
        if action == "path":
            return LogsResult([], logstore.enabled(paths), str(logstore.log_path(paths)), path_only=True)
        if action is not None:
            raise UsageError(f"unknown action {action!r}", "use llmos logs [-n N], llmos logs on|off or llmos logs path")
        if n < 0:
            raise UsageError(f"-n {n}: must be 0 (all) or more")
        return LogsResult([e.to_json() for e in logstore.read(paths, n)], logstore.enabled(paths), str(logstore.log_path(paths)))

    return run_command("logs", json, work, _render_logs)


@dataclass
class LogsResult:
    entries: list[dict[str, Any]]
    enabled: bool
    path: str
    changed: bool = False
    path_only: bool = False

    def to_json(self) -> dict[str, Any]:
        return {"entries": self.entries, "enabled": self.enabled, "path": self.path}


def _render_logs(result: LogsResult) -> None:
    if result.path_only:
        line(result.path)
        return
    if result.changed:
        note(f"prompt logging is {'on' if result.enabled else 'off'}")
        return
    if not result.enabled:
        note("prompt logging is off (llmos logs on turns it back on)")
    if not result.entries:
        note("no prompts logged yet")
        return
    for e in reversed(result.entries):  # oldest first, like a transcript
        libs = "+".join(f"{lib['name']}:{lib['scale']:g}" if lib.get("scale") not in (None, 1.0) else lib["name"] for lib in e["libraries"])
        stack = e["model"] + (f"+{libs}" if libs else "") if e["model"] else "?"
        line(f"# {e['time']}  {e['origin']}  {stack}  ({e['usage'].get('completion_tokens', '?')} tokens, {e['duration_s'] or 0:.2f} s)")
        line("")
        line(f"> {short(e['prompt'], 2000)}")
        line("")
        line(e["answer"])
        if e["citations"]:
            line("cited: " + ", ".join(e["citations"]))
        if e["tool_calls"]:
            line("tools: " + ", ".join(str(c.get("name")) for c in e["tool_calls"]))
        line("")


def server_url(option: str | None) -> str | None:
    """``--server`` or ``LLMOS_SERVER``; an empty value means in-process."""
    v = option if option is not None else os.environ.get("LLMOS_SERVER")
    return v.strip() or None if v else None
