"""``llmos run``: one prompt through the model and its stacked libraries.

The run is a pipeline of plain steps over one ``RunContext``::

    RunRequest ──► stack (model + libraries + scales, ABI-checked)
               ──► messages (system text, stdin + prompt as the user turn)
               ──► engine (load the model once, set the adapter set)
               ──► stages (each ``stage(ctx)`` may edit ctx.system_parts,
                   ctx.messages, ctx.tools, ctx.grammar, ctx.extra)
               ──► prompt tokens (the model's own chat template; context check)
               ──► ctx.generate(ctx, on_text) ──► RunResult

Stages are where knowledge libraries act (retrieval, glossary, budget ...).
They come from ``run(..., stages=[...])`` or, by default, from
``app.stages.run_stages(ctx)`` (knowledge, glossary, tools) and
``app.route.run_stages(ctx)`` (``--route``), called once the engine is loaded.  A stage that
needs several model turns (a tool loop) replaces ``ctx.generate``; the
default ``single_generation`` renders ``ctx.final_messages()`` and generates
once.  ``ctx.extra`` ends up in the JSON result under ``extra``.

The JSON object (``RunResult.to_json``, schema documented in docs/runtime.md)::

    {"text", "finish_reason", "model": {"name", "version", "fingerprint"},
     "libraries": [{"name", "version", "scale", "adapter"}],
     "usage": {"prompt_tokens", "completion_tokens", "total_tokens"},
     "timings": {"load_s", "adapters_s", "prompt_s", "generate_s", "total_s"},
     "device": {"device", "n_gpu_layers", "n_ctx", "threads"}, "seed", "extra"}
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from llmos_cli.app import route, runlog, stages
from llmos_cli.errors import ContextOverflow, UsageError
from llmos_cli.paths import Paths, get_paths
from llmos_cli.progress import NullReporter, Reporter
from llmos_cli.runtime.engine import EngineOptions, Generation, LlamaCppEngine, SamplingParams, plan_device
from llmos_cli.runtime.stack import build_stack, require_fits
from llmos_cli.state import transaction as tx

#: sampling fields a model package may default in ``[model.parameters]``
MODEL_PARAMETERS = ("max_tokens", "temperature", "top_p", "top_k", "min_p", "repeat_penalty")


@dataclass
class RunRequest:
    prompt: str | None = None
    stdin_text: str | None = None
    system: str | None = None
    model: str | None = None  # name, provided virtual name, or a .gguf path; None: the default
    libs: list[str] | None = None  # ["name", "name:0.5"]; None: every attached library
    no_libs: bool = False
    sampling: SamplingParams = field(default_factory=SamplingParams)
    device: str = "auto"
    gpu_layers: int | None = None
    n_ctx: int = 0
    threads: int | None = None
    verbose: int = 0
    #: options of the knowledge/tool stages (``app.options.PromptOptions``); None: their defaults
    prompt_options: Any = None
    #: sampling fields given explicitly (on the command line); the others may come from the model package
    explicit_sampling: set[str] = field(default_factory=lambda: set(MODEL_PARAMETERS))
    #: --route: apply only the libraries relevant to this prompt (``extra.routing`` says which and why)
    route: bool = False
    #: a whole conversation (``llmos serve``'s chat requests): used instead of prompt/stdin; system turns join ``system``
    messages: list[dict[str, Any]] | None = None
    #: write the prompt log (``state.logs``); --no-log turns it off for one run
    log: bool = True
    #: where the run came from, for the prompt log: "run" or "serve"
    origin: str = "run"

    def conversation(self) -> tuple[list[str], list[dict[str, Any]]]:
        """(system parts, turns): the prompt as one user turn, or the given conversation."""
        system = [self.system] if self.system else []
        if self.messages is None:
            return system, [{"role": "user", "content": self.user_text()}]
        turns = [m for m in self.messages if m.get("role") != "system"]
        system += [str(m.get("content") or "") for m in self.messages if m.get("role") == "system"]
        if not turns:
            raise UsageError("nothing to ask", "the conversation needs a user message")
        return system, turns

    def user_text(self) -> str:
        """Piped stdin first, then a blank line, then the prompt (``cat notes | llmos run "summarise"``)."""
        parts = [t.strip("\n") for t in (self.stdin_text, self.prompt) if t and t.strip()]
        if not parts:
            raise UsageError("nothing to ask", 'give a prompt (llmos run "question") or pipe text into llmos run')
        return "\n\n".join(parts)


Stage = Callable[["RunContext"], None]


@dataclass
class RunContext:
    request: RunRequest
    paths: Paths
    stack: Any  # runtime.stack.Stack
    engine: Any  # an Engine
    reporter: Reporter
    messages: list[dict[str, Any]]  # the conversation without the system message
    system_parts: list[str] = field(default_factory=list)
    tools: list[dict[str, Any]] | None = None
    grammar: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    generate: Callable[[RunContext, Callable[[str], None] | None], Generation] | None = None
    #: a stage's verdict on an otherwise successful run (``--grounded`` abstained: NOT_GROUNDED)
    exit_code: int = 0

    def final_messages(self) -> list[dict[str, Any]]:
        system = "\n\n".join(p.strip() for p in self.system_parts if p and p.strip())
        return ([{"role": "system", "content": system}] if system else []) + list(self.messages)


def single_generation(ctx: RunContext, on_text: Callable[[str], None] | None) -> Generation:
    tokens = ctx.engine.prompt_tokens(ctx.final_messages(), tools=ctx.tools)
    ctx.engine.check_fits(len(tokens))
    return ctx.engine.generate(tokens, ctx.request.sampling, on_text=on_text, grammar=ctx.grammar)


@dataclass
class RunResult:
    text: str
    finish_reason: str
    model: dict[str, Any]
    libraries: list[dict[str, Any]]
    usage: dict[str, int]
    timings: dict[str, float]
    device: dict[str, Any]
    seed: int | None
    extra: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    #: the process exit code of a run that answered (0, or NOT_GROUNDED when --grounded abstained)
    exit_code: int = 0
    #: the sampling actually used (command line, else the model package's [model.parameters], else defaults)
    sampling: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict:
        return {
            "text": self.text,
            "finish_reason": self.finish_reason,
            "model": self.model,
            "libraries": self.libraries,
            "usage": self.usage,
            "timings": self.timings,
            "device": self.device,
            "seed": self.seed,
            "sampling": self.sampling,
            "extra": self.extra,
        }


def _provider_stages(ctx: RunContext) -> list[Stage]:
    """The default pre-generation stages: routing first (retrieval then searches only the routed libraries), then knowledge and tools."""
    return [*route.run_stages(ctx), *stages.run_stages(ctx)]


def apply_model_defaults(req: RunRequest, parameters: dict[str, Any], explicit: set[str]) -> None:
    """Fill the sampling fields the user did not give from the model package's parameters."""
    for key in MODEL_PARAMETERS:
        if key in explicit or key not in parameters:
            continue
        value = parameters[key]
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        setattr(req.sampling, key, int(value) if key in ("max_tokens", "top_k") else float(value))


def _hint_longer_context(exc: ContextOverflow, ctx_train: int | None, n_ctx: int) -> None:
    """Name --ctx in the hint when the model was trained for more context than this run uses."""
    if ctx_train and ctx_train > int(n_ctx) and "--ctx" not in (exc.hint or ""):
        more = f"the model supports {ctx_train} tokens of context and this run uses {n_ctx}: try --ctx {ctx_train}"
        exc.hint = f"{more}; or {exc.hint}" if exc.hint else more
        exc.details = {**exc.details, "n_ctx": int(n_ctx), "context_length": int(ctx_train)}


def _validate(req: RunRequest) -> None:
    s = req.sampling
    if s.max_tokens is not None and s.max_tokens < 0:
        raise UsageError(f"--max-tokens must be 0 (until the context is full) or more, not {s.max_tokens}")
    if s.temperature < 0:
        raise UsageError(f"--temperature must be 0 or more, not {s.temperature}")
    if not 0.0 < s.top_p <= 1.0:
        raise UsageError(f"--top-p must be in (0, 1], not {s.top_p}")
    if req.n_ctx < 0:
        raise UsageError(f"--ctx must be positive, not {req.n_ctx}")
    if req.threads is not None and req.threads <= 0:
        raise UsageError(f"--threads must be positive, not {req.threads}")


def run(
    req: RunRequest,
    *,
    on_text: Callable[[str], None] | None = None,
    stages: list[Stage] | None = None,
    reporter: Reporter | None = None,
    paths: Paths | None = None,
    engine_for: Callable[[Any, EngineOptions, Reporter], Any] | None = None,
    more_stages: list[Stage] | None = None,
) -> RunResult:
    """Answer one prompt; ``on_text`` receives the text as it is generated.

    ``engine_for(stack, options, reporter)`` hands in an already-loaded engine
    (``llmos serve``'s pool); its ``close()`` then releases it instead of
    unloading.  ``more_stages`` run after the default stages.
    """

    t_start = time.perf_counter()
    rep = reporter or NullReporter()
    paths = paths or get_paths()
    _validate(req)
    system_parts, turns = req.conversation()
    # the device is checked before any work: a GPU on a CPU-only build fails fast
    device = plan_device(req.device, req.gpu_layers)
    if req.verbose:
        rep.info(f"device: {device.note}")

    with tx.open_state(paths, "run", write=False, reporter=rep) as db:
        stack = build_stack(db, paths, model=req.model, libs=req.libs, no_libs=req.no_libs, reporter=rep)
    for note in stack.notes:  # libraries left out of the run, and why
        rep.warn(note + "; its documents and glossary still serve" if " left out: " in note else note)
    apply_model_defaults(req, stack.model.parameters, req.explicit_sampling)
    if not system_parts and stack.model.system_prompt:
        system_parts = [stack.model.system_prompt]  # the model package's default ([prompt] system); -s replaces it
    _validate(req)  # again: the package's parameters may be out of range too
    require_fits(stack)

    options = EngineOptions(
        n_ctx=req.n_ctx,
        device=req.device,
        gpu_layers=req.gpu_layers,
        n_threads=req.threads,
        verbose=req.verbose >= 2,
    )
    ctx_train = stack.model.context_length
    if req.n_ctx and ctx_train and req.n_ctx > ctx_train:
        rep.warn(f"--ctx {req.n_ctx} is more than {stack.model.name} was trained for ({ctx_train}); answers may degrade")
    if engine_for is not None:
        engine = engine_for(stack, options, rep)
    else:
        engine = LlamaCppEngine(stack.model.path, options, reporter=rep, header=stack.model_header)
    try:
        load_s = engine.load_s
        t_ad = time.perf_counter()
        engine.set_adapters(stack.adapters)
        adapters_s = time.perf_counter() - t_ad
        ctx = RunContext(
            request=req,
            paths=paths,
            stack=stack,
            engine=engine,
            reporter=rep,
            messages=turns,
            system_parts=system_parts,
            generate=single_generation,
        )
        try:
            for stage in [*(stages if stages is not None else _provider_stages(ctx)), *(more_stages or [])]:
                stage(ctx)
            gen_fn = ctx.generate or single_generation
            gen = gen_fn(ctx, on_text)
        except ContextOverflow as exc:
            _hint_longer_context(exc, ctx_train, engine.n_ctx)
            raise
        if gen.finish_reason != "explain" and not gen.text.strip():
            rep.warn(
                f"the model gave an empty answer ({gen.completion_tokens} completion tokens, finish reason {gen.finish_reason}); "
                "try another --system prompt, a higher --temperature or a larger --max-tokens"
            )
        device_info = {
            "device": engine.device.device,
            "n_gpu_layers": engine.device.n_gpu_layers,
            "n_ctx": engine.n_ctx,
            "threads": engine.n_threads,
        }
    finally:
        engine.close()
    total_s = time.perf_counter() - t_start
    sp = req.sampling
    result = RunResult(
        sampling={
            "max_tokens": sp.max_tokens,
            "temperature": sp.temperature,
            "top_p": sp.top_p,
            "top_k": sp.top_k,
            "min_p": sp.min_p,
            "repeat_penalty": sp.repeat_penalty,
            "stop": list(sp.stop),
        },
        text=gen.text,
        finish_reason=gen.finish_reason,
        model={"name": stack.model.name, "version": stack.model.version, "fingerprint": stack.model.ensure_fingerprint()},
        libraries=[{"name": lib.name, "version": lib.version, "scale": lib.scale, "adapter": lib.adapter is not None} for lib in stack.libraries],
        usage={
            "prompt_tokens": gen.prompt_tokens,
            "completion_tokens": gen.completion_tokens,
            "total_tokens": gen.prompt_tokens + gen.completion_tokens,
        },
        timings={
            "load_s": round(load_s, 6),
            "adapters_s": round(adapters_s, 6),
            "prompt_s": round(gen.prompt_s, 6),
            "generate_s": round(gen.generate_s, 6),
            "total_s": round(total_s, 6),
        },
        device=device_info,
        seed=req.sampling.seed,
        extra=ctx.extra,
        notes=list(stack.notes),
        exit_code=ctx.exit_code,
    )
    if req.log and not (req.prompt_options is not None and getattr(req.prompt_options, "explain", False)):
        runlog.log_run(req, result, paths, rep)
    return result
