"""Grounded answers: what may be cited, the citation grammar, and the support check (``--grounded``).

A grounded answer is supported by the chunks and glossary entries that went
into its prompt:

* the sources are the retrieved chunks (``lib:doc#chunk``, or ``stdin#12``
  for a long input) and the glossary definitions (``lib:glossary#Term``);
* the model names the sources it used; ``citation_grammar`` restricts that
  output to the ids of those sources, so it cannot invent one;
* ``check`` then accepts the answer only when every cited id was offered and
  every content word of the answer (stop words dropped, stemmed like the
  index) occurs in the cited texts.  Otherwise, or when the model abstains,
  or when nothing relevant was retrieved, the answer is replaced by
  ``ABSTENTION``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from llmos_cli.gbnf import gbnf_literal
from llmos_cli.knowledge.retrieve import query_terms, terms_of

#: what a grounded run prints when the answer is not supported
ABSTENTION = "not found in the attached libraries"
#: the abstention phrase of a model package without ``[model] abstention``
DEFAULT_ABSTENTION = "I don't know."
GROUNDED_INSTRUCTIONS = "Answer only from the excerpts and definitions above. If they do not contain the answer, say: {abstain}"
_CITE = re.compile(r"\[([^\[\]\n]{1,200})\]")


def model_abstention(manifest: Any) -> str:
    """The model package's abstention phrase (``[model] abstention``), else ``DEFAULT_ABSTENTION``.

    ``manifest``: a typed ``pkg.manifest.Manifest``, the raw table, or None.
    """
    if isinstance(manifest, dict):
        value = (manifest.get("model") or {}).get("abstention")
    else:
        value = getattr(getattr(manifest, "model", None), "abstention", None)
    return value.strip() if isinstance(value, str) and value.strip() else DEFAULT_ABSTENTION


@dataclass(frozen=True)
class Source:
    id: str
    text: str
    kind: str  # chunk | glossary


def sources_of(hits: Sequence[Any], refinements: Sequence[Any]) -> dict[str, Source]:
    """Citable sources of an assembled prompt, by id (chunks first, then glossary entries)."""
    out: dict[str, Source] = {}
    for h in hits:
        out[h.cite_id] = Source(h.cite_id, f"{h.section}\n{h.text}", "chunk")
    for r in refinements:
        sid = f"{r.library}:glossary#{r.term}"
        out[sid] = Source(sid, f"{r.term}: {r.definition}", "glossary")
    return out


def citation_grammar(ids: Sequence[str], most: int = 3) -> str:
    """GBNF for one to ``most`` citations ``[id]`` separated by spaces, each one of ``ids``."""
    if not ids:
        raise ValueError("no sources to cite")
    alts = " | ".join(gbnf_literal(i) for i in ids)
    rest = "".join(' (" " cite' for _ in range(most - 1)) + ")?" * (most - 1)
    return f'root ::= cite{rest}\ncite ::= "[" ({alts}) "]"\n'


def parse_citations(text: str) -> list[str]:
    out: list[str] = []
    for m in _CITE.finditer(text):
        if m.group(1) not in out:
            out.append(m.group(1))
    return out


@dataclass
class Grounding:
    status: str  # supported | abstained
    citations: list[str] = field(default_factory=list)
    reason: str = ""
    #: the model's own answer before the check (also when it was replaced by the abstention)
    answer: str = ""
    #: ids the model could cite
    offered: list[str] = field(default_factory=list)

    @property
    def supported(self) -> bool:
        return self.status == "supported"

    def to_json(self) -> dict[str, Any]:
        return {"status": self.status, "citations": list(self.citations), "reason": self.reason, "answer": self.answer, "offered": list(self.offered)}


def _abstains(answer: str, phrase: str) -> bool:
    norm = lambda t: re.sub(r"[^\w' ]+", "", t.casefold()).strip()  # noqa: E731
    a = norm(answer)
    return not a or a == norm(phrase) or a == norm(DEFAULT_ABSTENTION) or a == norm(ABSTENTION)


def abstained(reason: str, *, answer: str = "", offered: Sequence[str] = (), citations: Sequence[str] = ()) -> Grounding:
    return Grounding("abstained", list(citations), reason, answer, list(offered))


def check(answer: str, cited: Sequence[str], sources: dict[str, Source], *, abstention: str = DEFAULT_ABSTENTION) -> Grounding:
    """Is ``answer`` supported by the ``cited`` sources (module doc)?"""
    offered = list(sources)
    answer = answer.strip()
    if _abstains(answer, abstention):
        return abstained("the model found no answer in the sources", answer=answer, offered=offered)
    if not cited:
        return abstained("the answer cites no source", answer=answer, offered=offered)
    unknown = [c for c in cited if c not in sources]
    if unknown:
        return abstained(f"cited {unknown[0]}, which was not retrieved for this question", answer=answer, offered=offered, citations=cited)
    words = query_terms(answer)
    have = set()
    for c in cited:
        have |= terms_of(sources[c].text)
    missing = [w for w in words if not (terms_of(w) <= have)]
    if not words:
        return abstained("the answer has no content words to check", answer=answer, offered=offered, citations=cited)
    if missing:
        return abstained(f"the cited text does not contain {', '.join(repr(w) for w in missing[:3])}", answer=answer, offered=offered, citations=cited)
    return Grounding("supported", list(cited), "every content word of the answer is in the cited text", answer, offered)
