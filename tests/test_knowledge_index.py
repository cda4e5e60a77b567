"""Chunking, the FTS5 index built at package build time, and retrieval across libraries."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from llmos_cli.errors import IntegrityError, InvalidPackageError
from llmos_cli.knowledge.indexer import (
    GLOSSARY_PATH,
    INDEX_PATH,
    build_artifacts,
    chunk_text,
    write_index,
)
from llmos_cli.knowledge.libraries import LibraryView
from llmos_cli.knowledge.retrieve import KnowledgeIndex, fts_query, query_terms, search
from llmos_cli.pkg.manifest import load_manifest

HEART = """# The heart

The heart pumps blood through the body. It has four chambers.

## Symptoms of a heart attack

Chest pain, shortness of breath and sweating are common symptoms of a myocardial infarction.
Troponin levels rise in the blood after the attack.

## Treatment

Aspirin and rapid reperfusion of the blocked coronary artery save heart muscle.
"""

KIDNEY = """Kidneys filter the blood and make urine. Chronic kidney disease slowly reduces the filtration rate.
Dialysis replaces the filtering when the kidneys fail.
"""

COOKING = """# Bread

Knead the dough for ten minutes. Let it rise for an hour, then bake at 220 degrees.
A heart-shaped loaf bakes the same way.
"""


def _library(root: Path, write_source, name: str, docs: dict[str, str], **kn) -> LibraryView:
    folder = write_source(root, name, files=docs, extra={"knowledge": {"documents": ["docs/**/*.md", "docs/*.txt"], **kn}})
    art = build_artifacts(load_manifest(folder), folder)
    for rel, data in art.items():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_bytes(data)
    return LibraryView.from_folder(folder)


# ---------------------------------------------------------------- chunking


def test_chunks_follow_headings_and_overlap():
    words = " ".join(f"w{i}" for i in range(100))
    text = f"# Title\n\nintro words here\n\n## Part\n\n{words}\n"
    chunks = chunk_text(text, "doc.md", chunk_size=30, overlap=10)
    assert chunks[0].section == "Title" and chunks[0].text == "intro words here"
    part = [c for c in chunks if c.section == "Title > Part"]
    assert len(part) == 5  # 100 words, stride 20: 0-30, 20-50, 40-70, 60-90, 80-100
    assert [c.ordinal for c in chunks] == list(range(1, len(chunks) + 1))
    first, second = part[0].text.split(), part[1].text.split()
    assert first[-10:] == second[:10]  # the overlap
    assert all(c.words <= 30 for c in chunks)


def test_chunk_ends_at_sentence_when_one_is_near():
    text = " ".join(["alpha"] * 26) + ". " + " ".join(["beta"] * 40)
    chunks = chunk_text(text, "doc.txt", chunk_size=30, overlap=0)
    assert chunks[0].text.endswith("alpha.")
    assert chunks[0].words == 26


def test_plain_text_has_no_sections_and_code_fences_are_not_headings():
    text = "```\n# not a heading\n```\nbody"
    (c,) = chunk_text(text, "notes.md", 50, 5)
    assert c.section == "" and "# not a heading" in c.text
    (c,) = chunk_text("# looks like a heading\nbody", "notes.txt", 50, 5)
    assert c.section == ""


def test_bad_chunk_settings_are_refused():
    with pytest.raises(ValueError):
        chunk_text("x", "a.md", 0, 0)
    with pytest.raises(ValueError):
        chunk_text("x", "a.md", 10, 10)


# ---------------------------------------------------------------- index files


def test_index_is_byte_reproducible(tmp_path):
    docs = [("docs/heart.md", HEART), ("docs/kidney.txt", KIDNEY)]
    a, b = tmp_path / "a.sqlite", tmp_path / "b.sqlite"
    counts = write_index(docs, a, chunk_size=20, chunk_overlap=5)
    write_index(list(reversed(docs)), b, chunk_size=20, chunk_overlap=5)
    assert a.read_bytes() == b.read_bytes()
    assert counts["documents"] == 2 and counts["chunks"] >= 4
    write_index(docs, b, chunk_size=25, chunk_overlap=5)
    assert a.read_bytes() != b.read_bytes()  # settings change the bytes
    assert not list(tmp_path.glob("*.incomplete"))


def test_build_artifacts_ships_index_and_glossary_deterministically(tmp_path, write_source):
    folder = write_source(
        tmp_path,
        "cardio",
        files={"docs/heart.md": HEART, "glossary.toml": '[terms]\nECG = "Electrocardiogram."\n'},
        extra={"knowledge": {"documents": ["docs/*.md"], "chunk_size": 40, "chunk_overlap": 8}, "glossary": {"file": "glossary.toml"}},
    )
    m = load_manifest(folder)
    one, two = build_artifacts(m, folder), build_artifacts(m, folder)
    assert set(one) == {INDEX_PATH, GLOSSARY_PATH}
    assert one == two
    path = tmp_path / "k.sqlite"
    path.write_bytes(one[INDEX_PATH])
    conn = sqlite3.connect(path)
    meta = dict(conn.execute("SELECT key, value FROM meta"))
    assert meta["chunk_size"] == "40" and meta["chunk_overlap"] == "8" and meta["format"] == "1"
    assert conn.execute("SELECT path FROM docs").fetchall() == [("docs/heart.md",)]


def test_model_and_document_less_libraries_get_no_artifacts(tmp_path, write_source):
    folder = write_source(tmp_path, "plain", files={"prompt.txt": "Be brief."}, extra={"prompt": {"system": "prompt.txt"}})
    assert build_artifacts(load_manifest(folder), folder) == {}


@pytest.mark.parametrize(
    "files, knowledge, message",
    [
        ({"docs/a.md": "x"}, {"documents": ["nothing/*.md"]}, "matches no file"),
        ({"docs/a.pdf": b"%PDF-1.4"}, {"documents": ["docs/*"]}, "not a Markdown or plain-text file"),
        ({"docs/a.md": b"\xff\xfe\x00bad"}, {"documents": ["docs/*.md"]}, "not UTF-8"),
        ({"docs/a.md": "x"}, {"documents": ["docs/*.md"], "chunk_size": 10, "chunk_overlap": 10}, "chunk_overlap"),
    ],
)
def test_bad_documents_are_refused_with_the_field_named(tmp_path, write_source, files, knowledge, message):
    folder = write_source(tmp_path, "bad", files=files, extra={"knowledge": knowledge})
    with pytest.raises(InvalidPackageError, match=message):
        build_artifacts(load_manifest(folder), folder)


# ---------------------------------------------------------------- retrieval


def test_query_terms_drop_stop_words():
    assert query_terms("What are the symptoms of a Heart attack? heart") == ["symptoms", "heart", "attack"]
    assert fts_query("the of and") is None
    assert fts_query('say "hi" OR NEAR(x) AND y*') == '"say" OR "hi" OR "near"'  # FTS syntax is neutralised


def test_search_finds_the_right_chunk_with_citation(tmp_path, write_source):
    lib = _library(tmp_path, write_source, "cardio", {"docs/heart.md": HEART}, chunk_size=30, chunk_overlap=5)
    hits = search([lib.index()], "symptoms of a myocardial infarction", k=3)
    assert hits, "expected a hit"
    top = hits[0]
    assert top.library == "cardio" and top.document == "docs/heart.md"
    assert top.section == "The heart > Symptoms of a heart attack"
    assert top.citation == f"[cardio:docs/heart.md#{top.chunk}]"
    assert "Troponin" in top.text
    assert [h.rank for h in hits] == list(range(1, len(hits) + 1))
    assert search([lib.index()], "the and of", k=3) == []
    # stemming: "pumping" finds "pumps"
    assert search([lib.index()], "pumping", k=1)[0].text.startswith("The heart pumps")


def test_rankings_of_several_libraries_are_merged_by_score(tmp_path, write_source):
    cardio = _library(tmp_path, write_source, "cardio", {"docs/heart.md": HEART}, chunk_size=30, chunk_overlap=5)
    renal = _library(tmp_path, write_source, "renal", {"docs/kidney.txt": KIDNEY}, chunk_size=30, chunk_overlap=5)
    bakery = _library(tmp_path, write_source, "bakery", {"docs/bread.md": COOKING}, chunk_size=30, chunk_overlap=5)
    libs = [bakery.index(), cardio.index(), renal.index()]
    hits = search(libs, "kidney filtration dialysis", k=5)
    assert hits[0].library == "renal"
    assert {h.library for h in hits} == {"renal"}
    # one library matching one word by chance ranks below the one matching all words
    hits = search(libs, "heart attack symptoms chest pain", k=5)
    assert hits[0].library == "cardio"
    libs_order = [h.library for h in hits]
    if "bakery" in libs_order:
        assert libs_order.index("bakery") > 0
    scores = [h.score for h in hits]
    assert scores == sorted(scores, reverse=True)
    # deterministic
    assert search(libs, "heart attack symptoms chest pain", k=5) == hits


def test_missing_or_corrupt_index_is_a_clear_error(tmp_path, write_source):
    lib = _library(tmp_path, write_source, "cardio", {"docs/heart.md": HEART})
    path = lib.files[INDEX_PATH]
    data = path.read_bytes()

    path.write_bytes(b"this is not sqlite at all" * 10)
    with pytest.raises(IntegrityError, match="cardio: knowledge index .* corrupt"):
        KnowledgeIndex.open("cardio", "1.0.0", path)

    path.write_bytes(data[: len(data) // 3])  # truncated
    with pytest.raises(IntegrityError, match="corrupt") as exc:
        ix = KnowledgeIndex.open("cardio", "1.0.0", path)
        ix.search("heart attack symptoms troponin", 3)
    assert "llmos verify cardio" in (exc.value.hint or "")

    path.unlink()
    with pytest.raises(IntegrityError, match="missing"):
        KnowledgeIndex.open("cardio", "1.0.0", path)

    lib2 = LibraryView(lib.name, lib.version, lib.manifest, {k: v for k, v in lib.files.items() if k != INDEX_PATH})
    with pytest.raises(IntegrityError, match="ships no knowledge index"):
        lib2.index()


def test_index_from_another_format_is_refused(tmp_path):
    p = tmp_path / "k.sqlite"
    write_index([("a.md", "some words")], p)
    conn = sqlite3.connect(p)
    conn.execute("UPDATE meta SET value='99' WHERE key='format'")
    conn.commit()
    conn.close()
    with pytest.raises(IntegrityError, match="unknown format '99'"):
        KnowledgeIndex.open("x", "1", p)
