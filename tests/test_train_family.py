"""``llmos train A B ...``: a family trained in dependency order, then co-trained in rounds."""

from __future__ import annotations

import pytest

from tests.helpers.trainkit import make_base, require_train_extra, write_library

require_train_extra()


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    return make_base(tmp_path_factory.mktemp("tiny"), weight_scale=1.0)


def _family(tmp_path):
    core = write_library(tmp_path, "core-lib", facts=[("Quelmar", "Dry cough"), ("Vintrex", "Sore knees")], provides=["core-facts"])
    top = write_library(tmp_path, "top-lib", depends=["core-facts"])
    side = write_library(tmp_path, "side-lib", facts=[("Brastil", "Red eyes")])
    return core, top, side


def test_family_order_and_companions(base, tmp_path, cli):
    core, top, side = _family(tmp_path)
    # given out of order: the dependency (through a virtual name) is trained first
    r = cli(
        "train",
        str(top),
        str(side),
        str(core),
        "--base",
        str(base.gguf),
        "--steps",
        "4",
        "--rounds",
        "1",
        "--cotrain-steps",
        "2",
        "--threads",
        "1",
        "--no-eval",
        "--json",
    )
    assert r.exit_code == 0, r
    data = r.json()["data"]
    assert data["order"] == ["core-lib", "top-lib", "side-lib"]
    assert [x["library"] for x in data["first"]] == data["order"]
    (rnd,) = data["rounds"]
    by = {x["library"]: x for x in rnd}
    assert by["top-lib"]["options"]["companions"] == [f"{core.absolute()}@1.0", f"{side.absolute()}@0.5"]
    assert by["core-lib"]["options"]["companions"] == [f"{top.absolute()}@0.5", f"{side.absolute()}@0.5"]
    for x in rnd:
        assert x["options"]["companion_sampling"] == "subsets"
        assert x["options"]["init"] == x["adapter"]  # continued from its own adapter, written back in place
        assert x["abi_ok"] is True and x["steps"] == 2
    for lib in (core, top, side):
        assert (lib / "adapter.gguf").is_file()
        assert not list(lib.glob("*.tmp"))


def test_cotraining_changes_each_adapter_and_skip_first_keeps_the_start(base, tmp_path, cli):
    core, top, side = _family(tmp_path)
    r = cli("train", str(core), str(top), str(side), "--base", str(base.gguf), "--steps", "4", "--rounds", "0", "--threads", "1", "--no-eval")
    assert r.exit_code == 0, r
    first = {p.name: (p / "adapter.gguf").read_bytes() for p in (core, top, side)}
    r = cli(
        "train", str(core), str(top), str(side), "--base", str(base.gguf), "--skip-first", "--rounds", "1", "--cotrain-steps", "2", "--threads", "1", "--json"
    )
    assert r.exit_code == 0, r
    assert r.json()["data"]["first"] == []
    for p in (core, top, side):
        assert (p / "adapter.gguf").read_bytes() != first[p.name]


def test_family_bad_input_changes_nothing(base, tmp_path, cli):
    core, top, side = _family(tmp_path)
    r = cli("train", str(core), str(top), "--base", str(base.gguf), "--skip-first", "--rounds", "1")
    assert r.exit_code == 2 and "no adapter to continue from" in r.stderr
    r = cli("train", str(core), str(top), "--base", str(base.gguf), "-o", str(tmp_path / "x.gguf"))
    assert r.exit_code == 2 and "--output" in r.stderr
    r = cli("train", str(core), "--base", str(base.gguf), "--rounds", "2")
    assert r.exit_code == 2 and "several libraries" in r.stderr
    r = cli("train", str(core), str(core), "--base", str(base.gguf))
    assert r.exit_code == 2 and "twice" in r.stderr
    loop = write_library(tmp_path / "loop", "core-lib", depends=["top-lib"], provides=["core-facts"])
    r = cli("train", str(loop), str(top), "--base", str(base.gguf))
    assert r.exit_code == 2 and "cycle" in r.stderr
    r = cli("train", str(top), str(core), "--base", str(base.gguf), "-s")
    assert r.exit_code == 0 and "core-lib -> top-lib" in r.stdout
    assert not any((p / "adapter.gguf").exists() for p in (core, top, side))
