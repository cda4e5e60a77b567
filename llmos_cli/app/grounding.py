"""``llmos run --grounded``: answer from the sources, cite them, or abstain.

The generation has two steps on the one loaded model:

1. the answer, generated as usual (not streamed: it is shown only once it is
   checked) from a prompt whose system text tells the model to answer only
   from the excerpts and definitions, else to say its abstention phrase;
2. the sources it used: the assistant turn is continued with
   ``"\\nSources: "`` and a grammar (``prompt.grounding.citation_grammar``)
   lets the model write only ``[id]`` tags of the sources in its prompt.

``prompt.grounding.check`` then verifies the citations and that the answer's
content words occur in the cited text.  When nothing relevant was retrieved
the model is not asked at all.  An abstained run prints ``ABSTENTION`` and
ends with exit code ``NOT_GROUNDED`` (19); ``--json`` has the whole story in
``extra.grounding``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

from llmos_cli.errors import ExitCode
from llmos_cli.prompt.grounding import ABSTENTION, Grounding, abstained, check, citation_grammar, parse_citations, sources_of
from llmos_cli.runtime.engine import Generation, SamplingParams

SOURCES_CUE = "\nSources: "


def _empty(text: str) -> Generation:
    return Generation(text=text, tokens=[], finish_reason="abstained", prompt_tokens=0, completion_tokens=0, prompt_s=0.0, generate_s=0.0)


def grounded_generation(ap: Any, abstention: str, on_done: Callable[[], None] | None = None) -> Callable[[Any, Any], Generation]:
    """A ``ctx.generate`` for an assembled prompt ``ap`` (``prompt.assemble.AssembledPrompt``)."""
    sources = sources_of(ap.knowledge, ap.refinements)

    def finish(ctx: Any, g: Grounding, gen: Generation, on_text: Callable[[str], None] | None) -> Generation:
        ctx.extra["grounding"] = g.to_json()
        ctx.extra["citations"] = [f"[{c}]" for c in g.citations] if g.supported else []
        text = g.answer if g.supported else ABSTENTION
        if not g.supported:
            ctx.exit_code = int(ExitCode.NOT_GROUNDED)
        if on_text is not None:
            on_text(text)
        return replace(gen, text=text, finish_reason=gen.finish_reason if g.supported else "abstained")

    def generate(ctx: Any, on_text: Callable[[str], None] | None) -> Generation:
        try:
            if not sources:
                return finish(ctx, abstained("nothing relevant was retrieved from the attached libraries"), _empty(""), on_text)
            engine = ctx.engine
            tokens = engine.prompt_tokens(ctx.final_messages())
            engine.check_fits(len(tokens))
            gen = engine.generate(tokens, ctx.request.sampling)
            answer = gen.text.strip()
            g = check(answer, ["-"], sources, abstention=abstention)  # abstention or no content words: no citation step
            if g.reason in ("the model found no answer in the sources", "the answer has no content words to check"):
                return finish(ctx, g, gen, on_text)
            cont = tokens + engine.tokenize(answer + SOURCES_CUE, add_bos=False, special=False)
            room = engine.n_ctx - len(cont)
            if room < 8:
                return finish(ctx, abstained("no room left in the context for the citations", answer=answer, offered=list(sources)), gen, on_text)
            cite_gen = engine.generate(
                cont,
                SamplingParams(max_tokens=min(room, 96), temperature=0.0, seed=0),
                grammar=citation_grammar(list(sources)),
            )
            cited = parse_citations(cite_gen.text)
            g = check(answer, cited, sources, abstention=abstention)
            gen = replace(
                gen,
                completion_tokens=gen.completion_tokens + cite_gen.completion_tokens,
                generate_s=gen.generate_s + cite_gen.generate_s,
                prompt_s=gen.prompt_s + cite_gen.prompt_s,
            )
            return finish(ctx, g, gen, on_text)
        finally:
            if on_done is not None:
                on_done()

    return generate
