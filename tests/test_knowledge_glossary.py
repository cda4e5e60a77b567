"""Glossary format, normalisation and term matching (instruction refinement)."""

from __future__ import annotations

import pytest

from llmos_cli.errors import InvalidPackageError
from llmos_cli.knowledge.glossary import Glossary, find_terms, parse_glossary

MED = """
[terms."myocardial infarction"]
definition = "Death of heart muscle caused by a blocked coronary artery. Also called a heart attack."
aliases = ["MI", "heart attack"]

[terms.troponin]
definition = "A heart-muscle protein released into the blood when the muscle is damaged."

[terms]
ECG = "Electrocardiogram: a recording of the heart's electrical activity."
"""


def test_parse_normalises_and_round_trips():
    g = parse_glossary(MED, "cardio")
    assert [e.term for e in g.entries] == ["ECG", "myocardial infarction", "troponin"]
    mi = g.entries[1]
    assert mi.aliases == ("MI", "heart attack")
    data = g.dumps()
    assert data == parse_glossary(MED, "cardio").dumps()  # byte-stable
    back = Glossary.loads(data, "cardio")
    assert [e.to_json() for e in back.entries] == [e.to_json() for e in g.entries]


def test_finds_terms_aliases_and_plurals_in_order_of_mention():
    g = parse_glossary(MED, "cardio")
    found = g.find("After two heart  attacks his troponin was high; an ECG showed an old MI.")
    assert [(m.term, m.matched) for m in found] == [
        ("myocardial infarction", "heart  attacks"),
        ("troponin", "troponin"),
        ("ECG", "ECG"),
    ]
    assert found[0].library == "cardio"
    assert "blocked coronary artery" in found[0].definition


def test_acronyms_are_case_sensitive_and_words_whole():
    g = parse_glossary(MED, "cardio")
    assert g.find("the mi of ecg, an Emission") == []
    assert g.find("Troponins matter") and g.find("TROPONIN matters")
    assert g.find("troponinemia") == []  # whole words only
    assert [m.term for m in g.find("MI")] == ["myocardial infarction"]


def test_longest_match_wins():
    g = parse_glossary('[terms]\nheart = "The organ."\n"heart attack" = "An infarction."\n', "x")
    assert [m.term for m in g.find("a heart attack")] == ["heart attack"]
    assert [m.term for m in g.find("a heart")] == ["heart"]


def test_explicit_case_sensitivity():
    g = parse_glossary('[terms.Python]\ndefinition = "A language."\ncase_sensitive = true\n', "x")
    assert g.find("python") == [] and g.find("Python")


def test_several_glossaries_keep_attribution_and_drop_duplicates():
    a = parse_glossary('[terms]\nECG = "Electrocardiogram."\n', "cardio")
    b = parse_glossary('[terms]\nECG = "Electrocardiogram."\nEEG = "Electroencephalogram."\n', "neuro")
    c = parse_glossary('[terms]\nECG = "Something else entirely."\n', "other")
    found = find_terms([a, b, c], "EEG then ECG")
    assert [(m.term, m.library) for m in found] == [("EEG", "neuro"), ("ECG", "cardio"), ("ECG", "other")]


@pytest.mark.parametrize(
    "text, message",
    [
        ("not toml [", "not valid TOML"),
        ("[terms]\nx = 3\n", "must be a string or a table"),
        ('[terms.x]\naliases = ["y"]\n', "definition: missing"),
        ('[terms.x]\ndefinition = "d"\nsynonyms = ["y"]\n', "unknown key"),
        ('[terms.x]\ndefinition = "d"\naliases = "y"\n', "aliases: must be a list"),
        ('[terms]\na = "d"\n[terms.b]\ndefinition = "e"\naliases = ["A"]\n', "also a form of 'a'"),
        ("[other]\nx = 1\n", "unknown top-level key"),
        ('[terms]\nx = "' + "d" * 2100 + '"\n', "keep definitions short"),
    ],
)
def test_bad_glossaries_are_refused(text, message):
    with pytest.raises(InvalidPackageError, match=message):
        parse_glossary(text, "x", origin="glossary.toml")


def test_corrupt_normalised_glossary_is_a_clear_error():
    with pytest.raises(InvalidPackageError, match="glossary .* is corrupt"):
        Glossary.loads(b'{"format": 7}', "cardio")
    with pytest.raises(InvalidPackageError, match="corrupt"):
        Glossary.loads(b"\x00\x01", "cardio")
