"""The tool-call loop of a one-shot prompt.

One round: render the conversation and the tools through the model's own
chat template, generate, parse calls in the model's native syntax
(``formats``), run each call (``registry.ToolSet.call``, after the
permission ``Policy`` says yes), append the assistant's calls and the
results to the conversation, and go again.  The loop ends when a reply holds
no call, or after ``chain_limit`` rounds of calls (one last generation then
answers without parsing further calls).

``tool_choice``:

* ``auto`` -- the model decides; its reply is parsed for calls;
* ``none`` -- no tools are rendered and nothing is parsed;
* ``NAME`` -- the first round is a call of that tool: the format's call
  prefix (e.g. ``<tool_call>\\n``) ends the prompt and a grammar built from the
  tool's JSON schema constrains the rest, so the call is always well formed.
  Later rounds are ``auto``.

Every offered tool's grammar is built and parsed by llama.cpp before the
first token is generated, so an inexpressible schema fails early and a
malformed grammar never reaches the sampler.  What goes wrong inside a round
(a call that does not parse, an unknown tool name, invalid arguments, a tool
that fails, hangs, floods or prints junk) is handed back to the model as an
error result; a permission that nobody can grant stops the run, and so does a
call that still cannot be read after the model was asked once to repair it
(``ToolError``, exit 14: more rounds only repeat the failure).

Only the tools the permission policy allows (or may still ask about on a
terminal) are described to the model; denied tools and tools nobody can allow
in this run stay out of the prompt.  A forced tool must be allowed.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from llmos_cli.errors import ToolError, UsageError
from llmos_cli.gbnf import call_grammar, validate_grammar
from llmos_cli.runtime.engine import SamplingParams
from llmos_cli.tools.formats import CallFormat, ParsedCall, assistant_message, detect_format, parse_forced, prepare_chat, tool_message
from llmos_cli.tools.permissions import Policy
from llmos_cli.tools.registry import ToolSet
from llmos_cli.tools.spec import ToolResult

#: --chain-limit default: model turns a tool loop may take
DEFAULT_CHAIN_LIMIT = 5
MAX_CHAIN_LIMIT = 50
#: a result longer than this is cut before the model reads it
MAX_RESULT_CHARS = 8000
#: a forced call may use this many tokens even when --max-tokens (meant for the answer) is smaller
CALL_MIN_TOKENS = 256


@dataclass
class LoopOptions:
    tool_choice: str = "auto"
    chain_limit: int = DEFAULT_CHAIN_LIMIT
    params: Any = None  # runtime.engine.SamplingParams
    policy: Policy = field(default_factory=Policy)
    #: ("call" | "result" | "round", data) for --tools-debug
    on_event: Callable[[str, dict[str, Any]], None] | None = None


@dataclass
class ToolCallRecord:
    round: int
    call: ParsedCall
    source: str | None
    result: ToolResult

    def to_json(self) -> dict[str, Any]:
        d = {
            "round": self.round,
            "id": self.call.id,
            "name": self.call.name,
            "library": None if self.source in (None, "builtin") else self.source,
            "builtin": self.source == "builtin",
            "arguments": self.call.arguments,
        }
        d.update(self.result.to_json())
        return d


@dataclass
class LoopResult:
    text: str
    finish_reason: str
    tool_calls: list[ToolCallRecord]
    rounds: int
    chain_limit_reached: bool
    format: str
    messages: list[dict[str, Any]]
    prompt_tokens: int
    completion_tokens: int
    prompt_s: float
    generate_s: float
    #: the rendered prompt of every generation (for --tools-debug and tests)
    prompts: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "text": self.text,
            "finish_reason": self.finish_reason,
            "format": self.format,
            "rounds": self.rounds,
            "chain_limit_reached": self.chain_limit_reached,
            "tool_calls": [c.to_json() for c in self.tool_calls],
        }


def parse_tool_choice(value: str | None) -> str:
    v = (value or "auto").strip()
    if not v:
        raise UsageError("--tool-choice takes auto, none or a tool name")
    return v


def _vocab(engine: Any) -> Any:
    llm = getattr(engine, "llm", None)
    if llm is None:
        return None
    import llama_cpp

    return llama_cpp.llama_model_get_vocab(llm.model)


def prepare_grammars(engine: Any, toolset: ToolSet, fmt: CallFormat) -> dict[str, str]:
    """A validated call grammar for every tool; raises before any generation."""

    grammars = {s.name: call_grammar(s.name, s.parameters, fmt.args_key) for s in toolset.specs}
    vocab = _vocab(engine)
    if vocab is not None:
        for g in grammars.values():
            validate_grammar(vocab, g)
    return grammars


def _cap(text: str) -> str:
    if len(text) <= MAX_RESULT_CHARS:
        return text
    return text[:MAX_RESULT_CHARS] + f"... [cut: {len(text) - MAX_RESULT_CHARS} more characters]"


def execute_calls(
    calls: Sequence[ParsedCall],
    toolset: ToolSet,
    policy: Policy,
    round_no: int = 1,
    event: Callable[[str, dict[str, Any]], None] | None = None,
    offered: Sequence[str] | None = None,
) -> list[ToolCallRecord]:
    """Run parsed calls; every failure becomes an error result for the model.

    Raises only ``ToolError`` from the policy (a tool nobody may allow).
    """
    emit = event or (lambda kind, data: None)
    out: list[ToolCallRecord] = []
    for call in calls:
        if call.error is not None:
            result = ToolResult(False, error=f"the tool call could not be read: {call.error}")
            emit("result", {"round": round_no, "name": call.name or "?", **result.to_json()})
            out.append(ToolCallRecord(round_no, call, None, result))
            continue
        spec = toolset.get(call.name)
        if spec is not None and offered is not None and spec.name not in offered:
            spec = None  # a tool the model was not told about is unknown to it
        emit("call", {"round": round_no, "name": call.name, "arguments": call.arguments})
        if spec is None:
            names = [n for n in toolset.names() if offered is None or n in offered]
            result = ToolResult(False, error=f"unknown tool {call.name!r}; the tools are: {', '.join(names) or 'none'}")
        elif not policy.check(spec):
            result = ToolResult(False, error=f"the user did not allow tool {call.name!r} to run")
        else:
            result = toolset.call(spec, call.arguments)
        emit("result", {"round": round_no, "name": call.name, **result.to_json()})
        out.append(ToolCallRecord(round_no, call, spec.source if spec else None, result))
    return out


def run_tool_loop(
    engine: Any,
    messages: Sequence[dict[str, Any]],
    toolset: ToolSet,
    options: LoopOptions,
) -> LoopResult:
    """Generate an answer to ``messages``, letting the model call ``toolset``'s tools."""

    params = options.params or SamplingParams()
    if not 0 <= options.chain_limit <= MAX_CHAIN_LIMIT:
        raise UsageError(f"--chain-limit must be between 0 and {MAX_CHAIN_LIMIT}, not {options.chain_limit}")
    choice = parse_tool_choice(options.tool_choice)
    fmt = detect_format(getattr(engine, "chat_template", None))
    use_tools = choice != "none" and bool(toolset.specs)
    forced = None
    grammars: dict[str, str] = {}
    if use_tools:
        if choice != "auto":
            forced = toolset.resolve(choice)
            if options.chain_limit == 0:
                raise UsageError(f"--tool-choice {choice} forces a call but --chain-limit is 0")
        grammars = prepare_grammars(engine, toolset, fmt)
        if forced is not None and not options.policy.check(forced):
            raise ToolError(f"--tool-choice {forced.name}: the tool is denied", f"allow it: llmos tools allow {forced.key}")

    def event(kind: str, data: dict[str, Any]) -> None:
        if options.on_event is not None:
            options.on_event(kind, data)

    convo = [copy.deepcopy(dict(m)) for m in messages]
    offered = [s.name for s in toolset.specs if options.policy.offers(s) or s is forced]
    tools_oa = toolset.openai(only=offered) if use_tools else None
    if use_tools and not tools_oa:
        use_tools = False
    records: list[ToolCallRecord] = []
    prompts: list[str] = []
    rounds = 0
    completion = 0
    prompt_s = gen_s = 0.0
    last_prompt_tokens = 0
    limit_reached = False
    repaired = False  # one repair of an unreadable call is asked for; a second failure ends the run
    while True:
        force_now = forced if rounds == 0 else None
        parse_calls = use_tools and rounds < options.chain_limit
        msgs, ttools = prepare_chat(fmt, convo, tools_oa)
        text_prompt = engine.apply_chat_template(msgs, tools=ttools)
        tokens = engine.prompt_tokens(msgs, tools=ttools)
        grammar = None
        if force_now is not None:
            text_prompt += fmt.prefix
            if fmt.prefix:
                tokens = tokens + engine.tokenize(fmt.prefix, add_bos=False)
            grammar = grammars[force_now.name]
        prompts.append(text_prompt)
        event("round", {"round": rounds + 1, "prompt_tokens": len(tokens), "forced": force_now.name if force_now else None})
        round_params = params
        if force_now is not None and params.max_tokens and params.max_tokens > 0 and params.max_tokens < CALL_MIN_TOKENS:
            round_params = dataclasses.replace(params, max_tokens=CALL_MIN_TOKENS)
        gen = engine.generate(tokens, round_params, grammar=grammar)
        completion += gen.completion_tokens
        prompt_s += gen.prompt_s
        gen_s += gen.generate_s
        last_prompt_tokens = gen.prompt_tokens
        reply = gen.text
        if force_now is not None:
            reply = fmt.prefix + reply + fmt.suffix
        if not parse_calls:
            calls = []
        elif force_now is not None:
            calls = parse_forced(fmt, gen.text)
        else:
            calls = fmt.parse(reply)
        if force_now is not None:
            # a forced call that could not be read keeps the forced tool's name in the records
            for c in calls:
                if c.error is not None and not c.name:
                    c.name = force_now.name
        if not calls:
            if use_tools and not parse_calls and rounds >= options.chain_limit and rounds > 0:
                limit_reached = True
            return LoopResult(
                text=reply.strip() if force_now is None else reply,
                finish_reason=gen.finish_reason,
                tool_calls=records,
                rounds=rounds,
                chain_limit_reached=limit_reached,
                format=fmt.name,
                messages=convo + [{"role": "assistant", "content": reply}],
                prompt_tokens=last_prompt_tokens,
                completion_tokens=completion,
                prompt_s=prompt_s,
                generate_s=gen_s,
                prompts=prompts,
            )
        rounds += 1
        records_now = execute_calls(calls, toolset, options.policy, rounds, event, offered)
        records.extend(records_now)
        results = [(r.call, r.result) for r in records_now if r.call.error is None]
        bad = [r.call for r in records_now if r.call.error is not None]
        content_before = reply.split(fmt.prefix)[0].strip() if fmt.prefix and fmt.prefix in reply else ""
        if results:
            if fmt.name == "llama3":
                # its template takes one call per assistant turn
                for call, result in results:
                    convo.append(assistant_message(fmt, [call]))
                    convo.append(tool_message(call, _cap(result.model_text())))
            else:
                convo.append(assistant_message(fmt, [c for c, _ in results], content_before))
                for call, result in results:
                    convo.append(tool_message(call, _cap(result.model_text())))
        if bad:
            errors = "; ".join(c.error or "" for c in bad)
            if repaired:
                # the model was already asked once to repair an unreadable call: more rounds repeat it
                names = sorted({c.name for c in bad if c.name}) or ([forced.name] if forced is not None else ["?"])
                raise ToolError(
                    f"the model's call of {', '.join(names)} could not be read, again after one repair ({errors}); no answer",
                    "try --tool-choice auto or none, a larger --max-tokens, or a model trained for tool calls",
                    details={"tool": names[0], "tool_calls": [r.to_json() for r in records], "rounds": rounds},
                )
            repaired = True
            convo.append({"role": "assistant", "content": reply})
            convo.append({"role": "user", "content": f"Your tool call could not be read ({errors}). Answer directly or make a valid call."})
