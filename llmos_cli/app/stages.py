"""The knowledge and tool stages of ``llmos run`` (called by ``app.run``).

``run_stages(ctx)`` returns one stage that, once the model is loaded:

1. opens each used library's parts (``LibraryView``: index, glossary,
   system fragment, tools);
2. when tools are in play, gathers them (``ToolSet``: built-ins, command
   tools, MCP servers started) so that their rendering is budgeted;
3. assembles the prompt (``prompt.assemble``: refinements, retrieval,
   budget) and writes the system text and user turn back into the context;
4. replaces the generation with the tool loop (``tools.loop``) when tools are
   in play, or with nothing at all for ``--explain``.

Everything it reports goes into the run's JSON under ``extra``:
``knowledge`` (chunks with library, document, score, citation),
``refinements``, ``budget``, ``parts`` (tokens per part), ``tools`` and
``tool_calls`` (with their results).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from llmos_cli.app.grounding import grounded_generation
from llmos_cli.app.longinput import InputSource, map_reduce, parse_long_option
from llmos_cli.app.options import PromptOptions
from llmos_cli.errors import ContextOverflow, UsageError
from llmos_cli.knowledge.libraries import LibraryView
from llmos_cli.prompt.assemble import PromptRequest, assemble, parse_knowledge_option
from llmos_cli.prompt.explain import explain_json
from llmos_cli.prompt.grounding import GROUNDED_INSTRUCTIONS, model_abstention
from llmos_cli.runtime.engine import Generation
from llmos_cli.tools.loop import LoopOptions, run_tool_loop
from llmos_cli.tools.permissions import Policy, load_stored
from llmos_cli.tools.registry import ToolSet


def _options(ctx: Any) -> Any:

    opts = getattr(ctx.request, "prompt_options", None)
    return opts if opts is not None else PromptOptions()


def _reserve(ctx: Any) -> int:
    mt = ctx.request.sampling.max_tokens
    n_ctx = int(ctx.engine.n_ctx)
    if not mt or mt <= 0:  # "until the context is full": keep a quarter for the answer
        return max(1, n_ctx // 4)
    return int(mt)


def _tools_wanted(opts: Any, libraries: list[Any]) -> bool:
    if opts.tool_choice is not None:
        return opts.tool_choice != "none"
    if opts.allow_tools or opts.allow_tool:
        return True
    return any(lib.tool_decls() or lib.mcp_decls() for lib in libraries)


def _empty_generation(ctx: Any) -> Any:

    return Generation(text="", tokens=[], finish_reason="explain", prompt_tokens=0, completion_tokens=0, prompt_s=0.0, generate_s=0.0)


def run_stages(ctx: Any) -> list[Callable[[Any], None]]:
    return [knowledge_stage]


def _libraries(ctx: Any) -> list[Any]:
    """The run's libraries as ``LibraryView``s: those of the stack (only the routed ones under ``--route``),
    then the attached libraries left out for their adapter, whose documents and glossary still serve."""
    routing = ctx.extra.get("routing")
    chosen = {r["name"] for r in routing if r.get("chosen")} if routing is not None else None
    views = [
        LibraryView.from_installed(lib.package, ctx.paths) for lib in ctx.stack.libraries if lib.package is not None and (chosen is None or lib.name in chosen)
    ]
    left_out = []
    for lib in getattr(ctx.stack, "left_out", []):
        documents_only = bool(lib.attached and lib.package is not None)
        left_out.append({"name": lib.name, "reason": getattr(lib, "left_out_reason", "") or "left out", "documents_only": documents_only})
        if documents_only:
            views.append(LibraryView.from_installed(lib.package, ctx.paths))
    if left_out:
        ctx.extra["left_out"] = left_out
    return views


def _abstention(ctx: Any) -> str:
    pkg = getattr(ctx.stack.model, "package", None)
    return model_abstention(getattr(pkg, "typed_manifest", None) if pkg is not None else None)


def knowledge_stage(ctx: Any) -> None:

    opts = _options(ctx)
    user_turns = [m for m in ctx.messages if m.get("role") == "user"]
    if len(user_turns) != 1 or len(ctx.messages) != 1:
        return  # not a one-shot prompt: leave it alone
    libraries = _libraries(ctx)
    user = str(user_turns[0].get("content") or "")
    long_mode = parse_long_option(opts.long)
    request = PromptRequest(
        user=user,
        system="\n\n".join(p.strip() for p in ctx.system_parts if p and p.strip()) or None,
        knowledge=parse_knowledge_option(opts.knowledge),
        max_tokens=_reserve(ctx),
        refine=opts.refine,
        instructions=GROUNDED_INSTRUCTIONS.format(abstain=_abstention(ctx)) if opts.grounded else None,
    )
    toolset = None
    if _tools_wanted(opts, libraries) and not opts.grounded:
        toolset = _toolset(ctx, opts, libraries)
    source: InputSource | None = None

    def close_all() -> None:
        if toolset is not None:
            toolset.close()
        for lib in libraries:
            lib.close()
        if source is not None:
            source.close()

    stdin = ctx.request.stdin_text if getattr(ctx.request, "messages", None) is None else None
    try:
        try:
            ap = assemble(request, libraries, ctx.engine, toolset.openai() if toolset else None)
        except ContextOverflow:
            if not (stdin and stdin.strip()) or long_mode == "refuse":
                raise
            prompt = (ctx.request.prompt or "").strip()
            if not prompt:
                raise UsageError(
                    "the piped input does not fit the context and there is no prompt to answer from it",
                    'give a prompt: cat big.txt | llmos run "what does it say about X"',
                ) from None
            if long_mode == "map-reduce":
                ap = None
            else:
                source = InputSource(opts.input_label, stdin)
                request.user = prompt
                request.query = prompt
                request.input_hits = source.best(prompt)
                ap = assemble(request, libraries, ctx.engine, toolset.openai() if toolset else None)
                used = [h.cite_id for h in ap.knowledge if not h.library]
                ctx.extra["long_input"] = {
                    "mode": "index",
                    "label": opts.input_label,
                    "input_tokens": len(ctx.engine.tokenize(stdin, add_bos=False)),
                    "chunks": int(source.counts["chunks"]),
                    "used": used,
                }
                ctx.reporter.warn(
                    f"the piped input does not fit the context: {len(used)} of its {source.counts['chunks']} parts that best match the prompt "
                    "were used (--long map-reduce reads them all; --long refuse fails instead)"
                )
    except BaseException:
        close_all()
        raise
    if ap is None:  # --long map-reduce
        close_all()
        ctx.generate = _map_reduce_generation(prompt, stdin or "", opts)
        return
    for w in ap.warnings:
        ctx.reporter.warn(w)
    ctx.system_parts = [ap.system] if ap.system else []
    ctx.messages = [{"role": "user", "content": ap.user}]
    ctx.extra.update(
        {
            "knowledge": [h.to_json() for h in ap.knowledge],
            "refinements": [r.to_json() for r in ap.refinements],
            "budget": ap.budget.to_json(),
            "parts": [p.to_json() for p in ap.parts],
            "tools": [t["function"]["name"] for t in ap.tools],
            "citations": [h.citation for h in ap.knowledge],
        }
    )
    if opts.explain:
        ctx.extra["explain"] = explain_json(ap)
        close_all()
        ctx.generate = lambda c, on_text: _empty_generation(c)
        return
    if opts.grounded:
        if _tools_wanted(opts, libraries):
            ctx.reporter.warn("--grounded: tools are not offered; the answer comes from the retrieved text only")
        ctx.generate = grounded_generation(ap, _abstention(ctx), on_done=close_all)
        return
    if toolset is None:
        close_all()
        return
    ctx.generate = _loop_generation(toolset, opts, libraries)


def _map_reduce_generation(prompt: str, text: str, opts: Any) -> Callable[[Any, Any], Any]:
    def generate(ctx: Any, on_text: Callable[[str], None] | None) -> Any:
        system = "\n\n".join(p.strip() for p in ctx.system_parts if p and p.strip())
        with ctx.reporter.task("reading the input part by part", total=None, unit="parts") as task:

            def on_part(done: int, total: int) -> None:
                task.update(total=total)
                task.advance(1)

            gen, report = map_reduce(ctx, prompt, text, opts.input_label, system=system, abstention=_abstention(ctx), on_part=on_part)
        ctx.extra["long_input"] = report.to_json()
        if on_text is not None and gen.text:
            on_text(gen.text)
        return gen

    return generate


def _toolset(ctx: Any, opts: Any, libraries: list[Any]) -> Any:

    ts = ToolSet.for_run(libraries, builtins=getattr(opts, "builtin_tools", True))
    for w in ts.warnings:
        ctx.reporter.warn(w)
    try:
        for name in opts.allow_tool:
            ts.resolve(name)  # a typo in --allow-tool is an error, not a silent no-op
        forced = ts.resolve(opts.tool_choice) if opts.tool_choice not in (None, "auto", "none") else None
    except BaseException:
        ts.close()
        raise
    # only the tools that may run (or may still be asked about on a terminal) are described to the model
    policy = _policy(ctx, opts)
    ts.specs = [s for s in ts.specs if s is forced or policy.offers(s)]
    return ts


def _policy(ctx: Any, opts: Any) -> Policy:
    return Policy(allow=frozenset(opts.allow_tool), allow_all=opts.allow_tools, stored=load_stored(ctx.paths), ask=opts.ask)


def _loop_generation(toolset: Any, opts: Any, libraries: list[Any]) -> Callable[[Any, Any], Any]:
    def generate(ctx: Any, on_text: Callable[[str], None] | None) -> Any:

        if opts.chain_limit < 0:
            raise UsageError(f"--chain-limit must be 0 or more, not {opts.chain_limit}")
        policy = _policy(ctx, opts)
        loop_opts = LoopOptions(
            tool_choice=opts.tool_choice or "auto",
            chain_limit=opts.chain_limit,
            params=ctx.request.sampling,
            policy=policy,
            on_event=opts.on_event,
        )
        try:
            result = run_tool_loop(ctx.engine, ctx.final_messages(), toolset, loop_opts)
        finally:
            toolset.close()
            for lib in libraries:
                lib.close()
        ctx.extra["tool_calls"] = [c.to_json() for c in result.tool_calls]
        ctx.extra["tool_rounds"] = result.rounds
        ctx.extra["tool_format"] = result.format
        ctx.extra["chain_limit_reached"] = result.chain_limit_reached
        if result.chain_limit_reached:
            ctx.reporter.warn(f"--chain-limit {opts.chain_limit} reached; the answer was generated without further tool calls")
        if on_text is not None and result.text:
            on_text(result.text)
        return Generation(
            text=result.text,
            tokens=[],
            finish_reason=result.finish_reason,
            prompt_tokens=result.prompt_tokens,
            completion_tokens=result.completion_tokens,
            prompt_s=result.prompt_s,
            generate_s=result.generate_s,
        )

    return generate
