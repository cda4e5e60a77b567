"""Routing: per prompt, which attached libraries to apply, judged by glossary and knowledge index."""

from __future__ import annotations

from pathlib import Path

import pytest
import tomli_w


def _library(root: Path, name: str, facts: dict[str, str], glossary: bool = True) -> Path:
    from llmos_cli.knowledge.indexer import build_artifacts
    from llmos_cli.pkg.manifest import load_manifest

    d = root / name
    (d / "docs").mkdir(parents=True)
    manifest = {
        "schema": 1,
        "package": {"name": name, "version": "1.0.0", "kind": "library", "summary": "s", "license": "MIT", "maintainer": "t <t@e.org>"},
        "knowledge": {"documents": ["docs/*.md"], "chunk_size": 40, "chunk_overlap": 0},
    }
    if glossary:
        manifest["glossary"] = {"file": "glossary.toml"}
        (d / "glossary.toml").write_text(tomli_w.dumps({"terms": {k: {"definition": v} for k, v in facts.items()}}))
    (d / "llmos.toml").write_text(tomli_w.dumps(manifest))
    (d / "docs" / "a.md").write_text("# Facts\n\n" + "".join(f"## {k}\n\n{k}: {v}\n\n" for k, v in facts.items()))
    for rel, data in build_artifacts(load_manifest(d), d).items():
        (d / rel).parent.mkdir(parents=True, exist_ok=True)
        (d / rel).write_bytes(data)
    return d


@pytest.fixture
def libs(tmp_path):
    from llmos_cli.knowledge.libraries import LibraryView

    med = _library(tmp_path, "med-lib", {"Zentravil": "a drug that treats Morvane fever.", "Kalvex": "a drug made by Ostrell Labs."})
    geo = _library(tmp_path, "geo-lib", {"Brask": "the capital of Norland, on the river Vell.", "Norland": "a region whose language is Ostic."})
    law = _library(tmp_path, "law-lib", {"Harven Act": "passed in 1872; regulates river fishing in Norland."}, glossary=False)
    views = [LibraryView.from_folder(p) for p in (med, geo, law)]
    views[0].scale = 0.8
    yield views
    for v in views:
        v.close()


def test_glossary_term_picks_its_library(libs):
    from llmos_cli.app.route import route

    got = {r.name: r for r in route("What does Zentravil treat?", libs)}
    assert got["med-lib"].scale == 0.8 and "Zentravil" in got["med-lib"].reason
    assert got["geo-lib"].scale == 0.0
    assert got["law-lib"].scale == 0.0


def test_knowledge_index_picks_a_library_without_glossary(libs):
    from llmos_cli.app.route import route, score_libraries

    got = {r.name: r for r in route("When was the Harven Act passed?", libs)}
    assert got["law-lib"].scale == 1.0 and "knowledge" in got["law-lib"].reason
    assert got["med-lib"].scale == 0.0
    detail = {s.name: s for s in score_libraries("When was the Harven Act passed?", libs)}
    assert detail["law-lib"].best_chunk.startswith("[law-lib:docs/a.md#")
    assert detail["law-lib"].to_json()["chosen"] is True


def test_several_libraries_and_none(libs):
    from llmos_cli.app.route import route

    both = {r.name for r in route("Does Zentravil help people in Norland?", libs) if r.scale > 0}
    assert both == {"med-lib", "geo-lib"}
    assert all(r.scale == 0.0 for r in route("What colour is the sky?", libs))
    # returned in input order, as (name, scale, reason) triples
    names = [name for name, _scale, _reason in route("hello", libs)]
    assert names == ["med-lib", "geo-lib", "law-lib"]


def test_library_with_nothing_to_judge_by_is_kept(tmp_path, libs):
    from llmos_cli.app.route import route
    from llmos_cli.knowledge.libraries import LibraryView

    d = tmp_path / "bare"
    d.mkdir()
    (d / "llmos.toml").write_text(
        tomli_w.dumps(
            {"schema": 1, "package": {"name": "bare", "version": "1.0.0", "kind": "library", "summary": "s", "license": "MIT", "maintainer": "t <t@e.org>"}}
        )
    )
    got = {r.name: r for r in route("What colour is the sky?", [*libs, LibraryView.from_folder(d)])}
    assert got["bare"].scale == 1.0 and "kept" in got["bare"].reason


def test_a_library_merely_mentioning_an_entity_is_not_chosen(tmp_path):
    from llmos_cli.app.route import route
    from llmos_cli.knowledge.libraries import LibraryView

    bio = _library(tmp_path, "bio", {"Velanin": "a protein made in the liver."})
    med = _library(tmp_path, "med", {"Zentravil": "a drug that blocks Velanin and treats Morvane fever."})
    views = [LibraryView.from_folder(bio), LibraryView.from_folder(med)]
    got = {r.name: r.scale for r in route("Which organ makes Velanin?", views)}
    assert got == {"bio": 1.0, "med": 0.0}
    got = {r.name: r.scale for r in route("Which drug blocks Velanin?", views)}
    assert got["bio"] == 1.0  # the glossary owner; med-lib's text only mentions it
    # a general question sharing one common word with a document picks nothing
    assert all(r.scale == 0 for r in route("Is the liver an organ?", views))


def test_a_chosen_library_brings_its_dependencies(tmp_path):
    import tomllib

    from llmos_cli.app.route import route
    from llmos_cli.knowledge.libraries import LibraryView

    bio = _library(tmp_path, "bio", {"Velanin": "a protein made in the liver."})
    med = _library(tmp_path, "med", {"Zentravil": "a drug that treats Morvane fever."})
    geo = _library(tmp_path, "geo", {"Norland": "a region."})
    for folder, key, value in ((med, "depends", ["biology-basics"]), (bio, "provides", ["biology-basics"])):
        data = tomllib.loads((folder / "llmos.toml").read_text())
        data["package"][key] = value
        (folder / "llmos.toml").write_text(tomli_w.dumps(data))
    # trained alone: applied alone
    views = [LibraryView.from_folder(p) for p in (bio, med, geo)]
    got = {r.name: r.scale for r in route("What does Zentravil treat?", views)}
    assert got == {"bio": 0.0, "med": 1.0, "geo": 0.0}
    # trained with its dependency's adapter attached: brings it
    data = tomllib.loads((med / "llmos.toml").read_text())
    data["train"] = {"companions": ["companions/bio.gguf"]}
    (med / "llmos.toml").write_text(tomli_w.dumps(data))
    views = [LibraryView.from_folder(p) for p in (bio, med, geo)]
    got = {r.name: r for r in route("What does Zentravil treat?", views)}
    assert got["med"].scale == 1.0 and got["bio"].scale == 1.0 and got["geo"].scale == 0.0
    assert got["bio"].reason == "needed by med"
    got = {r.name: r.scale for r in route("Which organ makes Velanin?", views)}
    assert got == {"bio": 1.0, "med": 0.0, "geo": 0.0}  # dependencies do not pull in their dependents
