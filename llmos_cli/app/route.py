"""Per-prompt routing: which attached libraries to apply, and at what scale.

Stacking every attached adapter on every prompt costs decode time and lets
unrelated adapters interfere.  ``route(prompt, libraries)`` scores each
library's relevance to the prompt from what it ships:

* its glossary: a term (or alias) of the library named in the prompt is the
  strongest signal -- glossaries list the entities a library knows about;
* its knowledge index: one BM25 search over every library's chunks together
  (the runtime's own retrieval, so scores are comparable).  A library whose
  best chunk scores at least ``relative`` x the overall best and at least
  ``min_score`` is relevant when that chunk names a proper noun of the
  prompt that no glossary claims (a library merely *mentioning* another
  library's entity is not chosen for it), or, for prompts without proper
  nouns, when it shares at least two content words with the prompt.

Relevant libraries keep their attached scale, the others get 0.  A library
without glossary or documents has nothing to be judged by and keeps its
scale (``keep_unknown``).  No torch needed: this runs inside ``llmos run``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from llmos_cli.knowledge.glossary import find_terms
from llmos_cli.knowledge.libraries import LibraryView
from llmos_cli.knowledge.retrieve import capitalised_words, generic_names, query_terms, search
from llmos_cli.pkg.manifest import Manifest

#: a library's best chunk must reach this fraction of the best chunk overall
RELATIVE = 0.5
#: ... and this BM25 score (a prompt sharing only common words with a library scores below)
MIN_SCORE = 1.0
SEARCH_K = 12


class Route(NamedTuple):
    name: str
    scale: float
    reason: str


@dataclass
class RouteScore:
    name: str
    attached_scale: float
    glossary_terms: list[str] = field(default_factory=list)
    knowledge_score: float = 0.0
    best_chunk: str | None = None
    judged: bool = True
    chosen: bool = False
    scale: float = 0.0
    reason: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "chosen": self.chosen,
            "scale": self.scale,
            "reason": self.reason,
            "glossary_terms": self.glossary_terms,
            "knowledge_score": round(self.knowledge_score, 4),
            "best_chunk": self.best_chunk,
        }


def score_libraries(
    prompt: str,
    libraries: Sequence[Any],
    *,
    relative: float = RELATIVE,
    min_score: float = MIN_SCORE,
    keep_unknown: bool = True,
) -> list[RouteScore]:
    """Relevance of each library (``knowledge.libraries.LibraryView``) to ``prompt``, in input order."""

    scores: list[RouteScore] = []
    indexes = []
    for lib in libraries:
        rs = RouteScore(lib.name, float(getattr(lib, "scale", 1.0)))
        g = lib.glossary()
        if len(g):
            rs.glossary_terms = [m.term for m in find_terms([g], prompt)]
        ix = lib.index()
        if ix is not None:
            indexes.append(ix)
        rs.judged = bool(len(g)) or ix is not None
        scores.append(rs)
    by_name = {s.name: s for s in scores}
    best_text: dict[str, str] = {}
    if indexes:
        for hit in search(indexes, prompt, SEARCH_K):
            s = by_name.get(hit.library)
            if s is not None and hit.score > s.knowledge_score:
                s.knowledge_score = float(hit.score)
                s.best_chunk = hit.citation
                best_text[hit.library] = f"{hit.section}\n{hit.text}"
    best = max((s.knowledge_score for s in scores), default=0.0)
    nouns = proper_nouns(prompt, indexes)
    claimed = {w.casefold() for s in scores for t in s.glossary_terms for w in t.split()}
    free = [n for n in nouns if n.casefold() not in claimed]
    for s in scores:
        why: list[str] = []
        if s.glossary_terms:
            why.append("glossary: " + ", ".join(s.glossary_terms[:5]))
        if best > 0 and s.knowledge_score >= max(min_score, relative * best):
            text = (best_text.get(s.name) or "").casefold()
            named = [n for n in free if n.casefold() in text]
            # without proper nouns, one shared common word ("blood", "horse") is not enough
            if named or (not nouns and _shared_terms(prompt, text) >= 2):
                why.append(f"knowledge: {s.best_chunk} scores {s.knowledge_score:.2f} (best {best:.2f})" + (f", names {', '.join(named)}" if named else ""))
        if why:
            s.chosen = True
            s.reason = "; ".join(why)
        elif not s.judged and keep_unknown:
            s.chosen = True
            s.reason = "no glossary or documents to judge by; kept"
        else:
            s.reason = "no glossary term in the prompt" + (
                f"; best chunk {s.knowledge_score:.2f} below {max(min_score, relative * best):.2f}" if s.knowledge_score else "; no matching document"
            )
    _bring_dependencies(scores, libraries)
    for s in scores:
        s.scale = s.attached_scale if s.chosen else 0.0
    return scores


def _bring_dependencies(scores: list[RouteScore], libraries: Sequence[Any]) -> None:
    """A chosen library brings the attached libraries it depends on -- when its adapter was trained
    with theirs attached (``[train] companions`` in its manifest), so it expects them.  A library
    trained alone is applied alone: stacking it with adapters it never saw can garble it."""

    offers: dict[str, list[RouteScore]] = {}
    needs: dict[str, list[str]] = {}
    for s, lib in zip(scores, libraries):
        manifest: Manifest = lib.manifest
        for n in [s.name, *manifest.meta.provides]:
            offers.setdefault(n, []).append(s)
        wanted: list[str] = []
        trained_with = manifest.train.options.get("companions")
        for d in manifest.meta.depends if trained_with else ():
            wanted += [alt.name for alt in d.alternatives]
        needs[s.name] = wanted
    changed = True
    while changed:
        changed = False
        for s in scores:
            if not s.chosen:
                continue
            for want in needs.get(s.name, []):
                for dep in offers.get(want, []):
                    if not dep.chosen:
                        dep.chosen = True
                        dep.reason = f"needed by {s.name}"
                        changed = True


def _shared_terms(prompt: str, text: str) -> int:

    return sum(1 for t in query_terms(prompt) if t[:5] in text)


def proper_nouns(text: str, indexes: Sequence[Any] = ()) -> list[str]:
    """Capitalised words of ``text`` that name something: not sentence starters, question words or stop
    words, and not generic in the libraries' indexes ("Act" in every statute's name)."""
    words = capitalised_words(text)
    generic = generic_names(list(indexes), words) if indexes else set()
    return [w for w in words if w not in generic]


def route(prompt: str, libraries: Sequence[Any], **kw: Any) -> list[Route]:
    """``(name, scale, reason)`` for every library; scale 0 means "leave it out for this prompt"."""
    return [Route(s.name, s.scale, s.reason) for s in score_libraries(prompt, libraries, **kw)]


# ---------------------------------------------------------------- the ``llmos run --route`` stage


def run_stages(ctx: Any) -> list[Any]:
    """Stage provider for ``runtime.run``: routing only when the run asked for it (``--route``)."""
    return [routing_stage] if getattr(ctx.request, "route", False) else []


def routing_stage(ctx: Any) -> None:
    """Score the run's libraries against the user's text; switch the engine to the chosen adapters."""

    libs = [lib for lib in ctx.stack.libraries if lib.package is not None]
    views = [LibraryView.from_installed(lib.package, ctx.paths) for lib in libs]
    try:
        for lib, view in zip(libs, views):
            view.scale = lib.scale
        user = "\n\n".join(str(m.get("content") or "") for m in ctx.messages if m.get("role") == "user")
        if getattr(ctx.request, "stdin_text", None) and getattr(ctx.request, "prompt", None):
            user = ctx.request.prompt  # route on the question, not on a piped document
        scores = score_libraries(user, views)
    finally:
        for v in views:
            v.close()
    chosen = [(lib.adapter, s.scale) for lib, s in zip(libs, scores) if lib.adapter is not None and s.scale]
    ctx.engine.set_adapters(chosen)
    ctx.extra["routing"] = [s.to_json() for s in scores]
    ctx.reporter.debug("routing: " + "; ".join(f"{s.name} {'on' if s.chosen else 'off'} ({s.reason})" for s in scores))
