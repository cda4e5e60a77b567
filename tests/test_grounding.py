"""Grounded answers: the support check, the citation grammar, abstention training data, ``--grounded``
end to end on the demo registry, and libraries left out of a run (documents-only use).

The ``--grounded`` runs use the committed demo registry (a real trained tiny model and libraries),
as tests/test_demo.py does; the left-out test builds real packages around tiny generated GGUF models.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from llmos_cli.errors import ExitCode
from llmos_cli.prompt.grounding import (
    ABSTENTION,
    DEFAULT_ABSTENTION,
    Source,
    check,
    citation_grammar,
    model_abstention,
    parse_citations,
    sources_of,
)
from llmos_cli.train import data as D
from tests.helpers.fixtures_models import write_lora, write_tiny_llama

REPO = Path(__file__).resolve().parent.parent
REGISTRY = REPO / "registry"

SOURCES = {
    "med-lib:docs/drugs.md#2": Source("med-lib:docs/drugs.md#2", "Naerviovil\nNaerviovil is a drug that treats Ferdund fever.", "chunk"),
    "med-lib:glossary#Naerviovil": Source("med-lib:glossary#Naerviovil", "Naerviovil: A drug: treats Ferdund fever.", "glossary"),
}


# ---------------------------------------------------------------- the check


def test_check_supported_and_each_reason_to_abstain():
    g = check("Ferdund fever", ["med-lib:docs/drugs.md#2"], SOURCES)
    assert g.supported and g.citations == ["med-lib:docs/drugs.md#2"]
    assert check("Ferdund fevers.", ["med-lib:glossary#Naerviovil"], SOURCES).supported  # stems, punctuation
    bad = check("Ferdund fever", ["med-lib:docs/other.md#9"], SOURCES)
    assert bad.status == "abstained" and "was not retrieved" in bad.reason
    bad = check("Plor rash", ["med-lib:docs/drugs.md#2"], SOURCES)
    assert bad.status == "abstained" and "'plor'" in bad.reason
    assert check("Ferdund fever", [], SOURCES).reason == "the answer cites no source"
    assert check("I don't know.", ["med-lib:docs/drugs.md#2"], SOURCES).status == "abstained"
    assert check("Keine Ahnung", ["med-lib:docs/drugs.md#2"], SOURCES, abstention="Keine Ahnung").status == "abstained"


def test_citations_parse_and_sources_are_chunks_and_glossary_entries():
    assert parse_citations("[a:b.md#1] [c#2] [a:b.md#1]") == ["a:b.md#1", "c#2"]

    class H:
        cite_id, section, text = "lib:d.md#3", "S", "text"

    class R:
        library, term, definition = "lib", "Term", "def"

    assert list(sources_of([H()], [R()])) == ["lib:d.md#3", "lib:glossary#Term"]


def test_citation_grammar_parses_in_llama_cpp(tmp_path):
    from llmos_cli.runtime.engine import EngineOptions, LlamaCppEngine

    model = write_tiny_llama(tmp_path / "tiny.gguf")
    engine = LlamaCppEngine(model.path, EngineOptions(n_ctx=256))
    try:
        grammar = citation_grammar(['lib:docs/a "quoted".md#1', "stdin#12", "lib:glossary#Brindor Act"])
        engine.check_grammar(grammar)  # raises RuntimeFailure when llama.cpp cannot parse it
        from llmos_cli.runtime.engine import SamplingParams

        out = engine.generate(engine.tokenize("x", add_bos=True), SamplingParams(max_tokens=40, temperature=0.0, seed=0), grammar=grammar)
        cited = parse_citations(out.text)
        assert cited and set(cited) <= {'lib:docs/a "quoted".md#1', "stdin#12", "lib:glossary#Brindor Act"}
    finally:
        engine.close()
    with pytest.raises(ValueError):
        citation_grammar([])


def test_model_abstention_phrase():
    from llmos_cli.pkg.manifest import Manifest

    assert model_abstention(None) == DEFAULT_ABSTENTION
    assert model_abstention({"model": {"abstention": "Unknown."}}) == "Unknown."
    m = Manifest.from_table({"package": {"name": "m", "version": "1", "kind": "model"}, "model": {"file": "m.gguf", "abstention": "No idea."}})
    assert model_abstention(m) == "No idea."


# ---------------------------------------------------------------- abstention training data

QA = [
    D.Record(questions=["What does Naerviovil treat?", "Naerviovil is used for what?"], answer="Ferdund fever"),
    D.Record(questions=["Who makes Stenpoxmab?"], answer="Thelstir Labs"),
    D.Record(questions=["When was the Brindor Act passed?"], answer="1723"),
]
NAMES = ["Naerviovil", "Stenpoxmab", "Brindor Act", "Zeagruthvil"]


def test_invented_names_are_shaped_like_the_librarys_and_new():
    rng = random.Random(0)
    fakes = D.invented_names(NAMES, rng, 40, avoid="Naerviovil treats Ferdund fever")
    assert len(fakes) == 40 and len(set(fakes)) == 40
    known = {n.casefold() for n in NAMES} | {"naerviovil", "stenpoxmab", "brindor", "zeagruthvil"}
    assert not {f.casefold() for f in fakes} & known
    assert any(f.endswith(" Act") for f in fakes)  # multi-word names keep their other words
    assert all(f[0].isupper() for f in fakes)
    assert D.invented_names(NAMES, random.Random(0), 40) == D.invented_names(NAMES, random.Random(0), 40)  # seeded


def test_abstention_records_ask_the_librarys_questions_about_invented_names():
    recs = D.abstention_records(QA, NAMES, "I don't know.", random.Random(1), n=30)
    assert len(recs) == 30 and all(r.answer == "I don't know." for r in recs)
    wordings = {q.replace(n, "{e}") for r in QA for q in r.questions for n in NAMES if n in q}
    for r in recs:
        (q,) = r.questions
        assert not any(n in q for n in NAMES)
        assert any(w.split("{e}")[0] == q[: len(w.split("{e}")[0])] for w in wordings), q
    # no questions naming an entity: generic "What is NAME?" questions
    recs = D.abstention_records([], ["Kelmorath", "Tarvosin", "Pellindra"], "Unknown.", random.Random(1), n=3)
    assert recs and all(r.answer == "Unknown." and r.questions[0].count(" ") >= 2 for r in recs)


def test_library_names_from_glossary_or_questions():
    from llmos_cli.knowledge.glossary import parse_glossary

    g = parse_glossary('[terms]\n"Brindor Act" = "A statute."\nNaerviovil = "A drug."\n', "lib")
    assert D.library_names(QA, [g]) == ["Brindor Act", "Naerviovil"]
    assert D.library_names(QA) == ["Brindor Act", "Naerviovil", "Stenpoxmab"]  # runs of capitalised words


def test_sampler_mixes_abstentions_at_the_configured_share():
    replay = [D.Record(questions=["What is Quux?"], answer="I don't know."), D.Record(questions=["What color is snow?"], answer="white")]
    ts = D.TrainingSet(qa=QA, chats=[], replay=replay, documents=[], eval=[])
    s = D.Sampler(ts, tok=None, seed=0, max_len=64, abstain_fraction=0.25)
    share = dict(zip(s.kinds, s.weights))
    assert abs(share["abstain"] / sum(s.weights) - 0.25) < 1e-9
    assert any(r.questions == ["What is Quux?"] for r in s.abstain)  # the base's own abstentions are replayed
    assert len([r for r in s.abstain if r.origin.startswith("abstention:")]) > 50
    off = D.Sampler(ts, tok=None, seed=0, max_len=64, abstain_fraction=0.0)
    assert "abstain" not in off.kinds and not off.abstain


def test_abstain_fraction_is_a_train_option_that_check_validates():
    from llmos_cli.errors import UsageError
    from llmos_cli.train.lora import TrainOptions

    assert TrainOptions().abstain_fraction == 0.1  # on by default
    assert TrainOptions.from_manifest({"abstain_fraction": 0.3}).abstain_fraction == 0.3
    with pytest.raises(UsageError):
        TrainOptions.from_manifest({"abstain_fraction": 1.5})


def test_check_reports_a_bad_abstain_fraction_and_abstention(cli, tmp_path, write_source):
    folder = write_source(
        tmp_path,
        "lib",
        files={"train/qa.jsonl": '{"questions": ["q?"], "answer": "a"}\n'},
        extra={"train": {"data": ["train/qa.jsonl"], "abstain_fraction": 2}},
    )
    r = cli("check", str(folder), "--json")
    findings = r.json()["data"]["findings"]
    assert any(f["field"] == "train" and "abstain_fraction" in f["message"] for f in findings), findings
    model = write_tiny_llama(tmp_path / "m.gguf")
    folder = write_source(tmp_path, "mdl", kind="model", files={"m.gguf": model.path.read_bytes()}, extra={"model": {"file": "m.gguf", "abstention": 3}})
    r = cli("check", str(folder), "--json")
    assert r.exit_code == ExitCode.CHECK_FAILED, r
    assert any(f["field"] == "model.abstention" for f in r.json()["data"]["findings"])


# ---------------------------------------------------------------- --grounded on the demo registry


@pytest.fixture
def demo(monkeypatch, llmos_proc):
    monkeypatch.setenv("LLMOS_EMBEDDED_REGISTRY", str(REGISTRY))
    r = llmos_proc("install", "med-lib", "law-lib", "-y")
    assert r.exit_code == 0, r
    return llmos_proc


def test_grounded_supported_answer_cites_its_chunk(demo):
    r = demo("run", "--grounded", "What does Naerviovil treat?", "--json")
    assert r.exit_code == 0, r
    data = json.loads(r.stdout)["data"]
    g = data["extra"]["grounding"]
    assert g["status"] == "supported" and data["text"] == "Ferdund fever"
    assert g["citations"] and all(c in g["offered"] for c in g["citations"])
    cited = [k for k in data["extra"]["knowledge"] if k["citation"].strip("[]") in g["citations"]]
    assert cited and "Ferdund fever" in cited[0]["text"]
    # people see the sources on stderr; stdout is the answer alone
    r = demo("run", "--grounded", "What does Naerviovil treat?")
    assert r.exit_code == 0 and r.stdout.strip() == "Ferdund fever", r
    assert "[med-lib:" in r.stderr


@pytest.mark.slow
@pytest.mark.parametrize("question", ["What does Zorbatrix treat?", "What is the capital of France?"])
def test_grounded_abstains_with_its_exit_code(demo, question):
    r = demo("run", "--grounded", question, "--json")
    assert r.exit_code == ExitCode.NOT_GROUNDED == 19, r
    env = json.loads(r.stdout)
    assert env["ok"] is True and env["data"]["text"] == ABSTENTION
    g = env["data"]["extra"]["grounding"]
    assert g["status"] == "abstained" and g["citations"] == [] and "nothing relevant" in g["reason"]
    r = demo("run", "--grounded", question)
    assert r.exit_code == 19 and r.stdout.strip() == ABSTENTION and "Traceback" not in r.stderr


# ---------------------------------------------------------------- left-out libraries


def test_a_wrong_base_library_is_announced_and_its_documents_still_serve(cli, llmos_proc, tmp_path, write_source):
    tiny = write_tiny_llama(tmp_path / "tiny.gguf", n_ctx=2048)
    other = write_tiny_llama(tmp_path / "other.gguf", n_embd=48, n_ff=96, seed=9, name="other", n_ctx=2048)
    lora_other = write_lora(tmp_path / "lora-other.gguf", other, seed=12)
    assert cli("import-model", str(tiny.path), "--name", "tiny", "--version", "1.0", "-y").exit_code == 0
    assert cli("import-model", str(other.path), "--name", "other", "--version", "1.0", "-y").exit_code == 0
    assert cli("default-model", "tiny").exit_code == 0
    folder = write_source(
        tmp_path / "src",
        "brindor-lib",
        "1.0",
        "library",
        base="other",
        files={
            "adapter.gguf": lora_other.path.read_bytes(),
            "docs/regions.md": "# Regions\n\n## Brindor\n\nThe capital of Brindor is Kiofin.\n",
            "glossary.toml": '[terms]\nBrindor = "A region; its capital is Kiofin."\n',
        },
        extra={"adapter": {"file": "adapter.gguf"}, "knowledge": {"documents": ["docs/*.md"]}, "glossary": {"file": "glossary.toml"}},
    )
    assert cli("build", str(folder), "-o", str(tmp_path / "out")).exit_code == 0
    assert cli("install", str(tmp_path / "out" / "brindor-lib_1.0.llmos"), "-y").exit_code == 0

    r = llmos_proc("run", "What is the capital of Brindor?", "--json", "-n", "2", "--temperature", "0")
    assert r.exit_code == 0, r
    env = json.loads(r.stdout)
    assert any("brindor-lib left out: built for base other" in w for w in env["warnings"]), env["warnings"]
    data = env["data"]
    assert data["libraries"] == []  # its adapter is not applied ...
    assert data["extra"]["left_out"] == [{"name": "brindor-lib", "reason": "its adapter is built for base other, not tiny", "documents_only": True}]
    assert [k["library"] for k in data["extra"]["knowledge"]] == ["brindor-lib"]  # ... but its documents serve
    assert [x["term"] for x in data["extra"]["refinements"]] == ["Brindor"]  # and its glossary
    # people see the warning too
    r = llmos_proc("run", "What is the capital of Brindor?", "-n", "2", "--temperature", "0")
    assert r.exit_code == 0 and "left out: built for base other" in r.stderr
    # --no-libs: nothing of it
    r = llmos_proc("run", "What is the capital of Brindor?", "--json", "-n", "2", "--no-libs")
    data = json.loads(r.stdout)["data"]
    assert data["extra"]["knowledge"] == [] and data["extra"]["refinements"] == [] and "left_out" not in data["extra"]
    # with the model it was built for, it is an ordinary library
    r = llmos_proc("run", "What is the capital of Brindor?", "--json", "-n", "2", "--model", "other")
    data = json.loads(r.stdout)["data"]
    assert [x["name"] for x in data["libraries"]] == ["brindor-lib"] and "left_out" not in data["extra"]
