"""Retrieval that can return nothing: the relevance rule (``knowledge.retrieve.Relevance``).

Real FTS5 indexes written by the indexer; no model.  The rule was chosen on
the demo's dev questions (bench/grounding.py); these tests pin its behaviour:
a chunk that shares only a common word with the question never enters the
prompt, in auto mode and with ``--knowledge N``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from llmos_cli.app.route import proper_nouns, score_libraries
from llmos_cli.knowledge.glossary import parse_glossary
from llmos_cli.knowledge.indexer import write_index
from llmos_cli.knowledge.retrieve import DEFAULT_RELEVANCE, KnowledgeIndex, capitalised_words, generic_names, search
from llmos_cli.pkg.manifest import Manifest
from llmos_cli.prompt.assemble import PromptRequest, retrieve_for

GEO = """# Regions

## Brindor

The capital of Brindor is Kiofin. The river Malth flows through Brindor. People in Brindor speak Zelic.

## Tarvos

The capital of Tarvos is Pellin. The river Osk flows through Tarvos. People in Tarvos speak Zelic.
"""
LAW = "\n\n".join(
    f"## {n} Act\n\nThe {n} Act was passed in {y}. The {n} Act regulates horse racing and applies in Brindor."
    for n, y in [("Kelmor", 1702), ("Drasten", 1723), ("Vilnor", 1744), ("Sarkel", 1765)]
)


class Lib:
    """A library as prompt assembly sees it (index, glossary, system fragment), on a real index."""

    def __init__(self, name: str, folder: Path, docs: dict[str, str], glossary: str = ""):
        path = folder / f"{name}.sqlite"
        write_index(list(docs.items()), path, chunk_size=60, chunk_overlap=0)
        self.name = name
        self._ix = KnowledgeIndex.open(name, "1.0", path)
        self._g = parse_glossary(glossary, name)
        self.scale = 1.0
        self.manifest = Manifest.from_table({"package": {"name": name, "version": "1.0", "kind": "library"}})

    def index(self) -> KnowledgeIndex:
        return self._ix

    def glossary(self):
        return self._g

    def system_fragment(self) -> str:
        return ""

    def close(self) -> None:
        pass


@pytest.fixture(scope="module")
def libs(tmp_path_factory):
    d = tmp_path_factory.mktemp("relevance")
    geo = Lib("geo-lib", d, {"docs/regions.md": GEO}, '[terms]\nBrindor = "A region; its capital is Kiofin."\n')
    law = Lib("law-lib", d, {"docs/statutes.md": "# Statutes\n\n" + LAW})
    return [geo, law]


def _ix(libs):
    return [lib.index() for lib in libs]


def test_a_chunk_sharing_only_a_common_word_is_not_retrieved(libs):
    q = "What is the capital of France?"
    plain = search(_ix(libs), q, 5)
    assert plain and all("France" not in h.text for h in plain)  # BM25 alone takes "capital" chunks
    assert search(_ix(libs), q, 5, rule=DEFAULT_RELEVANCE) == []
    # no entity named: one shared common word ("horse") is not enough coverage
    q2 = "How many legs does a horse have?"
    assert search(_ix(libs), q2, 5) and search(_ix(libs), q2, 5, rule=DEFAULT_RELEVANCE) == []


def test_a_question_naming_the_entity_gets_its_chunk(libs):
    hits = search(_ix(libs), "What is the capital of Brindor?", 5, rule=DEFAULT_RELEVANCE)
    assert hits and "Kiofin" in hits[0].text and hits[0].library == "geo-lib"
    assert all("Brindor" in h.text for h in hits)
    assert 0 < hits[0].coverage <= 1
    # an invented name shaped like the library's: nothing
    assert search(_ix(libs), "What is the capital of Zorbatrix?", 5, rule=DEFAULT_RELEVANCE) == []


def test_lower_case_names_are_found_through_the_glossary(libs):
    req = PromptRequest(user="what is the capital of brindor?")
    hits = retrieve_for(req, libs)
    assert hits and "Kiofin" in hits[0].text
    # with no name at all, a lower-case question falls back to IDF coverage: both words covered passes,
    # "capital" alone (france is in no index, so it weighs most) does not
    assert search(_ix(libs), "what is the capital of tarvos", 5, rule=DEFAULT_RELEVANCE)[0].coverage == 1.0
    assert search(_ix(libs), "what is the capital of france", 5, rule=DEFAULT_RELEVANCE) == []


@pytest.mark.parametrize("mode", ["auto", 3, 20])
def test_the_rule_applies_with_knowledge_n(libs, mode):
    assert retrieve_for(PromptRequest(user="What is the capital of France?", knowledge=mode), libs) == []
    got = retrieve_for(PromptRequest(user="When was the Drasten Act passed?", knowledge=mode), libs)
    assert got and "1723" in got[0].text
    # relevance=None restores the old behaviour (every match), which is what the rule removes
    assert retrieve_for(PromptRequest(user="What is the capital of France?", knowledge=mode, relevance=None), libs)


def test_generic_capitalised_words_are_not_names(libs):
    assert capitalised_words("What does The Drasten Act regulate?") == ["Drasten", "Act"]
    assert generic_names(_ix(libs), ["Drasten", "Act", "Brindor"]) == {"Act"}
    assert proper_nouns("When was the Drasten Act passed?", _ix(libs)) == ["Drasten"]
    # "Act" alone names nothing: a question about another act retrieves no statute
    assert search(_ix(libs), "When was the Zumbel Act passed?", 5, rule=DEFAULT_RELEVANCE) == []


def test_routing_does_not_choose_a_library_for_a_generic_word(libs):
    scores = {s.name: s for s in score_libraries("When was the Zumbel Act passed?", libs)}
    assert not scores["law-lib"].chosen, scores["law-lib"].reason
    scores = {s.name: s for s in score_libraries("When was the Drasten Act passed?", libs)}
    assert scores["law-lib"].chosen and not scores["geo-lib"].chosen
