"""Assemble one prompt against the model's context window.

Order of the parts in the final chat:

1. system message = the user's ``--system`` + each library's system fragment
   + *refinements* (glossary definitions of terms found in the user's text)
   + *knowledge* (retrieved chunks, each tagged ``[lib:doc#chunk]``);
2. the tools, handed to the model's chat template;
3. the user's message.

Retrieval keeps only chunks that pass the relevance rule
(``knowledge.retrieve.Relevance``; glossary terms found in the question count
as entity names), in ``auto`` and ``N`` modes alike, so it may keep none.
Chunks of a long piped input (``input_hits``, from ``app.longinput``) come
after the retrieved ones.

Budget: every count comes from the model's own tokenizer (``engine.tokenize``
on the rendered template).  ``available = n_ctx - reserve`` where the reserve
is the answer's ``max_tokens``.  When the parts do not fit, the lowest-ranked
knowledge goes first, then refinements are shortened (first sentence of each
definition), then dropped from the last.  The user's text is never cut: when
it alone (with the template around it) does not fit, ``ContextOverflow`` says
by how many tokens.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from llmos_cli.errors import ContextOverflow, UsageError
from llmos_cli.knowledge.glossary import find_terms
from llmos_cli.knowledge.retrieve import DEFAULT_RELEVANCE, Relevance, search
from llmos_cli.tools.formats import detect_format, prepare_chat

AUTO_MAX_CHUNKS = 5
#: in ``auto`` mode, chunks scoring below this fraction of the best are left out
AUTO_MIN_RELATIVE = 0.3
MAX_CHUNKS = 50

KNOWLEDGE_HEADER = (
    "Excerpts from the attached knowledge libraries follow. Use them where they are relevant and cite each one you use by its tag, e.g. {example}."
)
REFINEMENT_HEADER = "Definitions of terms used in the request:"


class PromptEngine(Protocol):
    """What assembly needs from the runtime (``runtime.engine.Engine`` provides it)."""

    chat_template: str | None

    @property
    def n_ctx(self) -> int: ...

    def tokenize(self, text: str, *, add_bos: bool | None = None, special: bool = True) -> list[int]: ...

    def apply_chat_template(self, messages: Sequence[dict[str, Any]], *, add_generation_prompt: bool = True, tools: list[dict] | None = None) -> str: ...

    def prompt_tokens(self, messages: Sequence[dict[str, Any]], *, tools: list[dict] | None = None) -> list[int]: ...


def chat_prompt(
    engine: PromptEngine, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None
) -> tuple[list[dict[str, Any]], list[dict[str, Any]] | None]:
    """Messages and template tools as the model's template wants them (see ``tools.formats.prepare_chat``)."""

    return prepare_chat(detect_format(getattr(engine, "chat_template", None)), messages, tools)


def count_prompt(engine: PromptEngine, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None) -> int:
    msgs, ttools = chat_prompt(engine, messages, tools)
    return len(engine.prompt_tokens(msgs, tools=ttools))


def render_prompt(engine: PromptEngine, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None) -> str:
    msgs, ttools = chat_prompt(engine, messages, tools)
    return engine.apply_chat_template(msgs, tools=ttools)


@dataclass
class PromptRequest:
    user: str
    system: str | None = None
    #: "off", "auto" or a number of chunks
    knowledge: str | int = "auto"
    #: tokens kept free for the answer
    max_tokens: int = 256
    refine: bool = True
    #: retrieval query; the user's text when None
    query: str | None = None
    #: when a chunk is relevant enough to enter the prompt (None: every match, as before)
    relevance: Relevance | None = DEFAULT_RELEVANCE
    #: extra instructions appended to the system text (``--grounded``)
    instructions: str | None = None
    #: chunks of a long input (``app.longinput``), offered after the retrieved ones, as many as fit
    input_hits: list[Any] = field(default_factory=list)


def parse_knowledge_option(value: str | int | None) -> str | int:
    """``--knowledge off|auto|N`` -> "off" | "auto" | int."""
    if value is None:
        return "auto"
    if isinstance(value, int):
        n = value
    else:
        v = value.strip().lower()
        if v in ("off", "auto"):
            return v
        if v in ("none", "0"):
            return "off"
        try:
            n = int(v)
        except ValueError:
            raise UsageError(f"--knowledge takes off, auto or a number of chunks, not {value!r}") from None
    if n < 0 or n > MAX_CHUNKS:
        raise UsageError(f"--knowledge N must be between 0 and {MAX_CHUNKS}, not {n}")
    return "off" if n == 0 else n


@dataclass
class Refinement:
    term: str
    definition: str
    library: str
    matched: str
    shortened: bool = False

    def line(self) -> str:
        return f"- {self.term}: {self.definition}"

    def to_json(self) -> dict[str, Any]:
        return {
            "term": self.term,
            "definition": self.definition,
            "library": self.library,
            "matched": self.matched,
            "shortened": self.shortened,
        }


@dataclass
class Part:
    name: str
    text: str
    tokens: int

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "tokens": self.tokens}


@dataclass
class Budget:
    context: int
    reserve: int
    available: int
    prompt_tokens: int
    knowledge_candidates: int = 0
    knowledge_dropped: int = 0
    refinements_shortened: int = 0
    refinements_dropped: int = 0

    @property
    def free(self) -> int:
        return self.available - self.prompt_tokens

    def to_json(self) -> dict[str, Any]:
        return {
            "context": self.context,
            "reserve": self.reserve,
            "available": self.available,
            "prompt_tokens": self.prompt_tokens,
            "free": self.free,
            "knowledge_candidates": self.knowledge_candidates,
            "knowledge_dropped": self.knowledge_dropped,
            "refinements_shortened": self.refinements_shortened,
            "refinements_dropped": self.refinements_dropped,
        }


@dataclass
class AssembledPrompt:
    system: str  # the whole system message ("" when none)
    system_base: str
    refinements: list[Refinement]
    knowledge: list[Any]  # retrieve.Hit, best first
    tools: list[dict[str, Any]]
    user: str
    messages: list[dict[str, Any]]
    prompt: str  # the rendered chat template
    parts: list[Part]
    budget: Budget
    warnings: list[str] = field(default_factory=list)

    @property
    def prompt_tokens(self) -> int:
        return self.budget.prompt_tokens

    def part(self, name: str) -> Part:
        return next(p for p in self.parts if p.name == name)

    def to_json(self) -> dict[str, Any]:
        return {
            "parts": [p.to_json() for p in self.parts],
            "budget": self.budget.to_json(),
            "refinements": [r.to_json() for r in self.refinements],
            "knowledge": [h.to_json() for h in self.knowledge],
            "tools": [t["function"]["name"] for t in self.tools],
        }


# ---------------------------------------------------------------- text of the parts


def knowledge_text(hits: Sequence[Any]) -> str:
    if not hits:
        return ""
    blocks = [KNOWLEDGE_HEADER.format(example=hits[0].citation)]
    for h in hits:
        head = f"{h.citation} ({h.section})" if h.section else h.citation
        blocks.append(f"{head}\n{h.text}")
    return "\n\n".join(blocks)


def refinement_text(refs: Sequence[Refinement]) -> str:
    if not refs:
        return ""
    return "\n".join([REFINEMENT_HEADER, *(r.line() for r in refs)])


def _first_sentence(text: str) -> str:
    m = re.match(r"(.+?[.!?])(\s|$)", text)
    return m.group(1) if m else text


def _system_message(base: str, refs: Sequence[Refinement], hits: Sequence[Any]) -> str:
    return "\n\n".join(p for p in (base, refinement_text(refs), knowledge_text(hits)) if p)


def _messages(system: str, user: str) -> list[dict[str, Any]]:
    msgs: list[dict[str, Any]] = []
    if system:
        msgs.append({"role": "system", "content": system})
    msgs.append({"role": "user", "content": user})
    return msgs


# ---------------------------------------------------------------- assembly


def retrieve_for(request: PromptRequest, libraries: Sequence[Any]) -> list[Any]:
    """Knowledge candidates for the request, best first (before budgeting)."""

    mode = request.knowledge
    if mode == "off":
        return []
    indexes = [ix for ix in (lib.index() for lib in libraries) if ix is not None]
    if not indexes:
        return []
    k = AUTO_MAX_CHUNKS if mode == "auto" else int(mode)
    query = request.query if request.query is not None else request.user
    names: list[str] = []
    if request.relevance is not None and request.relevance.entities:
        # glossary terms in the question are entity names whatever their case
        names = [m.matched for m in find_terms([lib.glossary() for lib in libraries], query)]
    hits = search(indexes, query, k, rule=request.relevance, names=names)
    if mode == "auto" and hits:
        floor = hits[0].score * AUTO_MIN_RELATIVE
        hits = [h for h in hits if h.score >= floor]
    return hits


def refine_for(request: PromptRequest, libraries: Sequence[Any]) -> list[Refinement]:

    if not request.refine:
        return []
    matches = find_terms([lib.glossary() for lib in libraries], request.query if request.query is not None else request.user)
    return [Refinement(m.term, m.definition, m.library, m.matched) for m in matches]


def system_base_for(request: PromptRequest, libraries: Sequence[Any]) -> str:
    parts = [request.system.strip()] if request.system and request.system.strip() else []
    for lib in libraries:
        frag = lib.system_fragment()
        if frag:
            parts.append(frag)
    if request.instructions:
        parts.append(request.instructions.strip())
    return "\n\n".join(parts)


def assemble(
    request: PromptRequest,
    libraries: Sequence[Any],
    engine: PromptEngine,
    tools: list[dict[str, Any]] | None = None,
) -> AssembledPrompt:
    """Build the prompt for ``request`` from the libraries' knowledge and glossaries.

    ``libraries`` are ``knowledge.libraries.LibraryView``s (anything with
    ``index()``, ``glossary()`` and ``system_fragment()``).  ``tools`` are in
    the OpenAI shape.  Raises ``ContextOverflow`` when the user's text does
    not fit.
    """
    tools = list(tools or [])
    n_ctx = int(engine.n_ctx)
    reserve = max(0, int(request.max_tokens))
    available = n_ctx - reserve

    def count(system: str, with_tools: bool = True) -> int:
        return count_prompt(engine, _messages(system, request.user), tools if with_tools else None)

    def ntok(text: str) -> int:
        return len(engine.tokenize(text, add_bos=False)) if text else 0

    base = system_base_for(request, libraries)
    fixed = count(base)
    if fixed > available:
        user_only = count_prompt(engine, _messages("", request.user), None)
        where = f"the context holds {n_ctx} tokens and {reserve} are kept for the answer (--max-tokens)"
        if user_only > available:
            raise ContextOverflow(
                f"the prompt is {user_only} tokens but only {available} fit: {where}; it is {user_only - available} tokens too long",
                "shorten the text, lower --max-tokens, or use a model with a longer context",
                details={"prompt_tokens": user_only, "available": available, "over_by": user_only - available},
            )
        raise ContextOverflow(
            f"the prompt with its system text and tools is {fixed} tokens but only {available} fit: {where}; "
            f"{fixed - available} tokens too many (the text alone is {user_only})",
            "use fewer libraries (--lib/--no-libs), --tool-choice none, or lower --max-tokens",
            details={"prompt_tokens": fixed, "available": available, "over_by": fixed - available},
        )

    retrieved = retrieve_for(request, libraries)
    candidates = retrieved + list(request.input_hits)
    refs = refine_for(request, libraries)
    budget = Budget(n_ctx, reserve, available, fixed, knowledge_candidates=len(candidates))

    # estimate each item's cost once, then pick greedily; verify on the real render below
    room = available - fixed
    sep = ntok("\n\n")
    ref_cost = [ntok(r.line()) + 1 for r in refs]
    hdr_r = ntok(REFINEMENT_HEADER) + sep if refs else 0
    if refs and hdr_r + sum(ref_cost) > room:
        # knowledge all goes first; then shorten, then drop refinements from the end
        candidates_kept: list[Any] = []
        for i, r in enumerate(refs):
            short = _first_sentence(r.definition)
            if short != r.definition:
                refs[i] = replace(r, definition=short, shortened=True)
                ref_cost[i] = ntok(refs[i].line()) + 1
        while refs and hdr_r + sum(ref_cost) > room:
            refs.pop()
            ref_cost.pop()
            budget.refinements_dropped += 1
        if not refs:
            hdr_r = 0
    else:
        left = room - (hdr_r + sum(ref_cost))
        candidates_kept = []
        if candidates:
            left -= ntok(KNOWLEDGE_HEADER.format(example=candidates[0].citation)) + sep
            for h in candidates:
                cost = ntok(knowledge_text([h])) - ntok(KNOWLEDGE_HEADER.format(example=h.citation)) + sep
                if cost > left:
                    break
                candidates_kept.append(h)
                left -= cost
    budget.refinements_shortened = sum(r.shortened for r in refs)

    # verify with the real template and tokenizer; trim further if the estimate was short
    while True:
        system = _system_message(base, refs, candidates_kept)
        total = count(system)
        if total <= available:
            break
        if candidates_kept:
            candidates_kept.pop()
        elif refs:
            refs.pop()
            budget.refinements_dropped += 1
        else:  # pragma: no cover - fixed already fitted
            break
    budget.knowledge_dropped = len(candidates) - len(candidates_kept)
    budget.prompt_tokens = total
    hits = [replace(h, rank=i) for i, h in enumerate(candidates_kept, start=1)]

    # per-part counts (each part tokenized on its own; "template" is the rest)
    parts = [
        Part("system", base, ntok(base)),
        Part("refinements", refinement_text(refs), ntok(refinement_text(refs))),
        Part("knowledge", knowledge_text(hits), ntok(knowledge_text(hits))),
        Part("tools", "", (total - count(system, with_tools=False)) if tools else 0),
        Part("user", request.user, ntok(request.user)),
    ]
    overhead = total - sum(p.tokens for p in parts)
    parts.append(Part("template", "", overhead))
    messages = _messages(system, request.user)
    warnings = []
    lib_dropped = len(retrieved) - sum(1 for h in candidates_kept if h in retrieved)
    if lib_dropped and request.knowledge != "auto":
        warnings.append(f"context budget: {lib_dropped} of {len(retrieved)} knowledge chunks left out")
    if budget.refinements_dropped:
        warnings.append(f"context budget: {budget.refinements_dropped} glossary definitions left out")
    return AssembledPrompt(
        system=system,
        system_base=base,
        refinements=refs,
        knowledge=hits,
        tools=tools,
        user=request.user,
        messages=messages,
        prompt=render_prompt(engine, messages, tools),
        parts=parts,
        budget=budget,
        warnings=warnings,
    )
