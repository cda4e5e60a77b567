"""The demo registry (``registry/``): what the README's first command relies on.

* the registry lists the demo packages and every one passes ``llmos check``;
* the quickstart: ``llmos install med-lib`` from the embedded registry, then
  ``llmos run`` answers a med-lib question correctly (greedy decoding);
* the virtual name (law-lib needs ``place-names``, which geo-lib provides);
* the tools-only library's tools work as declared;
* the demo's data generators are deterministic.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
REGISTRY = REPO / "registry"
sys.path.insert(0, str(REPO / "demo"))

#: the README's quickstart question and its answer (med-lib, held-out wording)
QUICKSTART_QUESTION = "What does Naerviovil treat?"
QUICKSTART_ANSWER = "Ferdund fever"


def needs_registry(fn):
    """The demo registry is committed; its absence is a failure, not a skip."""
    return fn


@pytest.fixture(autouse=True)
def demo_registry(monkeypatch):
    """These tests use the real embedded registry (conftest hides it from the others)."""
    monkeypatch.setenv("LLMOS_EMBEDDED_REGISTRY", str(REGISTRY))


def test_the_demo_registry_is_committed():
    assert (REGISTRY / "index.json").is_file(), "registry/index.json is missing: run python demo/build_demo.py"


def _index() -> dict:
    return json.loads((REGISTRY / "index.json").read_text())


@needs_registry
def test_registry_lists_the_demo_packages_and_stays_small():
    names = {p["name"]: p for p in _index()["packages"]}
    assert set(names) >= {"demo-chat", "bio-core", "med-lib", "geo-lib", "law-lib", "calc-tools"}
    assert names["demo-chat"]["kind"] == "model"
    assert "place-names" in names["geo-lib"]["provides"]
    assert any(d.startswith("place-names") for d in names["law-lib"]["depends"])
    assert any(d.startswith("bio-core") for d in names["med-lib"]["depends"])
    total = sum(p.stat().st_size for p in REGISTRY.rglob("*") if p.is_file())
    assert total < 12_000_000


@needs_registry
def test_every_registry_package_passes_check(cli):
    base = next(REGISTRY.glob("pool/demo-chat_*.llmos"))
    for entry in _index()["packages"]:
        r = cli("check", str(REGISTRY / entry["filename"]), "--base", str(base), "--json")
        assert r.exit_code == 0, (entry["name"], r)
        findings = r.json()["data"]["findings"]
        assert not [f for f in findings if f["severity"] == "error"], findings


@needs_registry
def test_quickstart_install_med_lib_and_ask(llmos_proc):
    r = llmos_proc("install", "med-lib", "-y")
    assert r.exit_code == 0, r
    r = llmos_proc("list", "--json")
    installed = {p["name"] for p in json.loads(r.stdout)["data"]["packages"]}
    assert {"med-lib", "bio-core", "demo-chat"} <= installed
    # routing picks med-lib (and its dependency) for this prompt
    r = llmos_proc("run", "--route", QUICKSTART_QUESTION, "--json")
    assert r.exit_code == 0, r
    data = json.loads(r.stdout)["data"]
    assert data["text"].strip().rstrip(".") == QUICKSTART_ANSWER, data["text"]
    assert "med-lib" in {lib["name"] for lib in data["libraries"]}
    # the README's command, plainly stacked: med-lib was trained with bio-core (its dependency) attached
    r = llmos_proc("run", QUICKSTART_QUESTION, "--json")
    assert r.exit_code == 0, r
    data = json.loads(r.stdout)["data"]
    assert data["text"].strip().rstrip(".") == QUICKSTART_ANSWER, data["text"]
    assert {lib["name"] for lib in data["libraries"]} == {"med-lib", "bio-core"}
    # the bare base does not know it: the answer comes from the library
    r = llmos_proc("run", QUICKSTART_QUESTION, "--no-libs", "--knowledge", "off", "--json")
    assert r.exit_code == 0, r
    assert QUICKSTART_ANSWER not in json.loads(r.stdout)["data"]["text"]


def _heldout(package: str, n: int) -> list[tuple[str, str]]:
    """The first ``n`` held-out questions (wordings never trained on) shipped in a registry package."""
    import tarfile

    arc = next(REGISTRY.glob(f"pool/{package}_*.llmos"))
    member = "eval/general-heldout.jsonl" if package == "demo-chat" else "train/heldout.jsonl"
    with tarfile.open(arc) as tf:
        lines = tf.extractfile(member).read().decode().splitlines()
    recs = [json.loads(line) for line in lines[:n]]
    return [(r["questions"][0], r["answer"]) for r in recs]


@needs_registry
@pytest.mark.slow
def test_all_libraries_stacked_still_answer(llmos_proc):
    """The demo libraries were co-trained (docs/training.md), so all four attached at once -- a
    plain `llmos run` after installing them -- answer each library's held-out questions and keep
    the base's own facts. The old, separately trained adapters got about 1 in 16 of these."""
    assert llmos_proc("install", "med-lib", "law-lib", "-y").exit_code == 0
    r = llmos_proc("stack", "--json")
    assert {x["name"] for x in json.loads(r.stdout)["data"]["libraries"]} == {"bio-core", "med-lib", "geo-lib", "law-lib"}
    right, asked = 0, []
    for pkg in ("bio-core", "med-lib", "geo-lib", "law-lib", "demo-chat"):
        for q, a in _heldout(pkg, 3):
            r = llmos_proc("run", q, "--knowledge", "off", "--json")
            assert r.exit_code == 0, r
            got = json.loads(r.stdout)["data"]["text"].strip().rstrip(".").lower()
            right += got == a.rstrip(".").lower()
            asked.append((q, a, got))
    assert right >= 12, asked  # of 15; the benchmark measures about 90% on every held-out question


@needs_registry
def test_routing_picks_the_relevant_library(llmos_proc):
    assert llmos_proc("install", "med-lib", "geo-lib", "-y").exit_code == 0
    r = llmos_proc("run", QUICKSTART_QUESTION, "--route", "--json")
    assert r.exit_code == 0, r
    data = json.loads(r.stdout)["data"]
    routing = {x["name"]: x for x in data["extra"]["routing"]}
    assert routing["med-lib"]["chosen"] and not routing["geo-lib"]["chosen"]
    assert routing["bio-core"]["chosen"] and routing["bio-core"]["reason"] == "needed by med-lib"
    assert data["text"].strip().rstrip(".") == QUICKSTART_ANSWER
    # a general question routes to no library: the bare base answers
    r = llmos_proc("run", "What color is the sky?", "--route", "--knowledge", "off", "--json")
    data = json.loads(r.stdout)["data"]
    assert not any(x["chosen"] for x in data["extra"]["routing"])
    assert data["text"].strip() == "blue"


@needs_registry
def test_calc_tools_round_trip_through_the_model(llmos_proc):
    """The base model calls the tools-only library's tool and answers from its result.

    (The tiny model gets a tool's arguments exactly right about two times in
    three -- see docs/benchmarks.md -- so this checks one known-good prompt.)
    """
    assert llmos_proc("install", "calc-tools", "med-lib", "-y").exit_code == 0
    r = llmos_proc("run", "What is 20 percent of 50?", "--allow-tools", "--json")
    assert r.exit_code == 0, r
    data = json.loads(r.stdout)["data"]
    calls = data["extra"]["tool_calls"]
    assert [c["name"] for c in calls] == ["percent_of"]
    assert calls[0]["arguments"] == {"percent": 20, "value": 50}
    assert data["text"].strip() == "10"


@needs_registry
def test_virtual_name_is_provided_by_geo_lib(llmos_proc):
    r = llmos_proc("install", "law-lib", "-y", "--simulate", "--json")
    assert r.exit_code == 0, r
    assert "geo-lib" in r.stdout


def test_calc_tools_scripts_answer_json(tmp_path):
    import build_demo

    src = build_demo.write_calc_tools_source(tmp_path / "calc-tools")
    manifest = tomllib.loads((src / "llmos.toml").read_text())
    names = [t["name"] for t in manifest["tools"]]
    assert names == ["convert_units", "percent_of"]
    run = lambda script, args: json.loads(  # noqa: E731
        subprocess.run([sys.executable, str(src / script)], input=json.dumps(args), capture_output=True, text=True, check=True).stdout
    )
    assert run("tools/convert_units.py", {"value": 5, "from_unit": "km", "to_unit": "mi"}) == {"value": 3.107, "unit": "mi"}
    assert run("tools/convert_units.py", {"value": 100, "from_unit": "c", "to_unit": "f"}) == {"value": 212.0, "unit": "f"}
    assert run("tools/percent_of.py", {"percent": 20, "value": 50}) == {"result": 10.0}


def test_demo_data_is_deterministic():
    import random

    import corpus
    import world

    a, b = world.build_world(), world.build_world()
    assert [(f.entity, f.relation, f.answer) for lib in a.values() for f in lib.facts] == [
        (f.entity, f.relation, f.answer) for lib in b.values() for f in lib.facts
    ]
    one = [corpus.base_example(random.Random(3), world.NameMaker(4), 60) for _ in range(1)]
    two = [corpus.base_example(random.Random(3), world.NameMaker(4), 60) for _ in range(1)]
    assert one == two
    med = a["med-lib"]
    for f in med.facts:  # held-out wording is never among the training wordings
        assert f.heldout_question() not in f.train_questions()
    assert sum(len(lib.facts) for lib in a.values()) == 128
