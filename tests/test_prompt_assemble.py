"""Prompt assembly against a real model's tokenizer and template: parts, citations, budget, overflow."""

from __future__ import annotations

from pathlib import Path

import pytest

from llmos_cli.errors import ContextOverflow, UsageError
from llmos_cli.knowledge.indexer import build_artifacts
from llmos_cli.knowledge.libraries import LibraryView
from llmos_cli.pkg.manifest import load_manifest
from llmos_cli.prompt.assemble import PromptRequest, assemble, parse_knowledge_option
from llmos_cli.prompt.explain import explain_json, explain_text
from llmos_cli.runtime.engine import EngineOptions, LlamaCppEngine
from tests.helpers.fixtures_models import write_tiny_llama

HEART = "\n\n".join(f"## Part {i}\n\nThe heart part {i} has a note about troponin level {i} and the chest pain of patient {i}." for i in range(1, 13))
GLOSSARY = """
[terms.troponin]
definition = "A heart protein. It rises in the blood after damage to heart muscle, within hours, and stays high for days."

[terms."chest pain"]
definition = "Pain felt in the chest. It has many causes, from muscle strain to a heart attack."
"""


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return write_tiny_llama(tmp_path_factory.mktemp("m") / "tiny.gguf", n_ctx=4096)


def _engine(model, n_ctx: int) -> LlamaCppEngine:
    return LlamaCppEngine(model.path, EngineOptions(n_ctx=n_ctx))


@pytest.fixture
def cardio(tmp_path, write_source) -> LibraryView:
    folder = write_source(
        tmp_path,
        "cardio",
        files={"docs/heart.md": HEART, "glossary.toml": GLOSSARY, "system.txt": "Answer like a cardiologist."},
        extra={
            "knowledge": {"documents": ["docs/*.md"], "chunk_size": 30, "chunk_overlap": 0},
            "glossary": {"file": "glossary.toml"},
            "prompt": {"system": "system.txt"},
        },
    )
    for rel, data in build_artifacts(load_manifest(folder), folder).items():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_bytes(data)
    return LibraryView.from_folder(folder)


def test_all_parts_are_assembled_and_counted(model, cardio):
    with _engine(model, 2048) as engine:
        ap = assemble(PromptRequest("what about troponin and chest pain", system="Be brief.", knowledge=3, max_tokens=64), [cardio], engine)
        assert ap.system_base == "Be brief.\n\nAnswer like a cardiologist."
        assert [r.term for r in ap.refinements] == ["troponin", "chest pain"]
        assert len(ap.knowledge) == 3
        for h in ap.knowledge:
            assert h.citation in ap.system
            assert h.library == "cardio" and h.document == "docs/heart.md"
        assert "Definitions of terms used in the request:\n- troponin: A heart protein." in ap.system
        assert ap.messages == [{"role": "system", "content": ap.system}, {"role": "user", "content": "what about troponin and chest pain"}]
        # counts come from the model's own tokenizer and add up to the real prompt
        real = len(engine.prompt_tokens(ap.messages))
        assert ap.budget.prompt_tokens == real
        assert sum(p.tokens for p in ap.parts) == real
        by = {p.name: p.tokens for p in ap.parts}
        assert by["user"] == len(engine.tokenize("what about troponin and chest pain", add_bos=False))
        assert by["knowledge"] > by["refinements"] > 0 and by["tools"] == 0
        assert ap.budget.available == 2048 - 64 and ap.budget.free == ap.budget.available - real
        assert ap.prompt == engine.apply_chat_template(ap.messages)
        js = ap.to_json()
        assert js["budget"]["prompt_tokens"] == real and js["knowledge"][0]["citation"].startswith("[cardio:docs/heart.md#")


def test_knowledge_off_and_no_refine(model, cardio):
    with _engine(model, 2048) as engine:
        ap = assemble(PromptRequest("troponin", knowledge="off", refine=False, max_tokens=16), [cardio], engine)
        assert ap.knowledge == [] and ap.refinements == []
        assert ap.system == "Answer like a cardiologist."


def test_budget_drops_lowest_ranked_knowledge_first(model, cardio):
    # the context is fixed (llama.cpp rounds n_ctx); the answer reserve sets the room left
    with _engine(model, 2048) as engine:
        req = PromptRequest("troponin chest pain patient", knowledge=8, max_tokens=16)
        full = assemble(req, [cardio], engine)
        assert len(full.knowledge) == 8 and full.budget.knowledge_dropped == 0
        chunk_cost = full.part("knowledge").tokens // 8
        reserve = engine.n_ctx - full.budget.prompt_tokens + 2 * chunk_cost  # about two chunks too many
        ap = assemble(PromptRequest(req.user, knowledge=8, max_tokens=reserve), [cardio], engine)
        assert 0 < len(ap.knowledge) < 8
        assert ap.budget.knowledge_dropped == 8 - len(ap.knowledge)
        # the best ones are kept, in order
        assert [h.citation for h in ap.knowledge] == [h.citation for h in full.knowledge[: len(ap.knowledge)]]
        assert [r.definition for r in ap.refinements] == [r.definition for r in full.refinements]  # untouched
        assert ap.budget.prompt_tokens <= engine.n_ctx - reserve == ap.budget.available
        assert ap.budget.prompt_tokens == len(engine.prompt_tokens(ap.messages))
        assert any("knowledge chunks left out" in w for w in ap.warnings)


def test_then_refinements_are_shortened_then_dropped(model, cardio):
    user = "troponin and chest pain?"
    with _engine(model, 2048) as engine:
        n_ctx = engine.n_ctx
        bare = assemble(PromptRequest(user, knowledge="off", refine=False, max_tokens=8), [cardio], engine).budget.prompt_tokens
        full = assemble(PromptRequest(user, knowledge=4, max_tokens=8), [cardio], engine)
        ref_cost = full.part("refinements").tokens
        # room for shortened refinements but no knowledge
        ap = assemble(PromptRequest(user, knowledge=4, max_tokens=n_ctx - (bare + ref_cost - 20)), [cardio], engine)
        assert ap.knowledge == [] and ap.budget.knowledge_dropped == len(full.knowledge)
        assert ap.refinements and all(r.shortened for r in ap.refinements)
        assert ap.refinements[0].definition == "A heart protein."
        assert ap.budget.prompt_tokens <= ap.budget.available
        # room for nearly nothing: refinements go too, the user's text stays whole
        ap = assemble(PromptRequest(user, knowledge=4, max_tokens=n_ctx - (bare + 3)), [cardio], engine)
        assert ap.knowledge == [] and ap.refinements == []
        assert ap.budget.refinements_dropped == 2
        assert ap.user == user and ap.budget.prompt_tokens == bare <= ap.budget.available


def test_user_text_that_does_not_fit_fails_saying_by_how_much(model, cardio):
    with _engine(model, 256) as engine:
        assert engine.n_ctx == 256
        text = "hello world " * 200
        need = len(engine.prompt_tokens([{"role": "user", "content": text}]))
        with pytest.raises(ContextOverflow) as exc:
            assemble(PromptRequest(text, max_tokens=56), [cardio], engine)
        over = need - 200
        assert exc.value.details["over_by"] == over
        assert f"{over} tokens too long" in exc.value.message
        assert "--max-tokens" in exc.value.message


def test_system_text_that_does_not_fit_is_named(model):
    with _engine(model, 256) as engine:
        with pytest.raises(ContextOverflow, match="with its system text and tools"):
            assemble(PromptRequest("hi", system="be brief " * 100, max_tokens=16), [], engine)


def test_knowledge_option_parsing():
    assert parse_knowledge_option("auto") == "auto"
    assert parse_knowledge_option("OFF") == "off"
    assert parse_knowledge_option("0") == "off"
    assert parse_knowledge_option("7") == 7
    for bad in ("many", "-1", "999"):
        with pytest.raises(UsageError):
            parse_knowledge_option(bad)


def test_explain_shows_every_part_with_tokens(model, cardio):
    with _engine(model, 2048) as engine:
        ap = assemble(PromptRequest("troponin", system="Be brief.", knowledge=2, max_tokens=32), [cardio], engine)
    text = explain_text(ap)
    by = {p.name: p.tokens for p in ap.parts}
    assert f"system ({by['system']} tokens)" in text
    assert f"knowledge: 2 chunks ({by['knowledge']} tokens)" in text
    assert f"refinements: 1 term ({by['refinements']} tokens)" in text
    assert f"user ({by['user']} tokens)" in text
    assert f"context {ap.budget.context} = prompt {ap.budget.prompt_tokens}" in text
    assert ap.knowledge[0].citation in text
    js = explain_json(ap)
    assert js["prompt"] == ap.prompt and js["user"] == "troponin"
    assert explain_text(js) == text


def test_auto_mode_keeps_only_relevant_chunks(model, cardio, tmp_path: Path):
    with _engine(model, 2048) as engine:
        ap = assemble(PromptRequest("troponin level 7 patient 7", max_tokens=16), [cardio], engine)
        assert 1 <= len(ap.knowledge) <= 5
        assert "level 7" in ap.knowledge[0].text
        none = assemble(PromptRequest("zebra crossing", max_tokens=16), [cardio], engine)
        assert none.knowledge == []
