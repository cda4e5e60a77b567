"""Registry indexes: llmos index, the index format, round trips and refusals."""

from __future__ import annotations

import json
import shutil
from datetime import UTC
from pathlib import Path

import pytest

from llmos_cli.app.build import build_package
from llmos_cli.errors import InvalidPackageError
from llmos_cli.registry.index import INDEX_SCHEMA, Index, IndexEntry, build_index, write_index


def make_registry(tmp_path: Path, write_source) -> Path:
    from tests.helpers.pkgtools import minimal_gguf

    reg = tmp_path / "reg"
    srcs = tmp_path / "srcs"
    build_package(write_source(srcs, "zeta", "1.0"), reg / "pool" / "z")
    build_package(write_source(srcs, "alpha", "2.0", depends=["zeta>=1 | omega"], provides=["greek"]), reg / "pool")
    build_package(write_source(srcs, "alpha", "10.0", conflicts=["zeta<1"]), reg / "pool")
    build_package(write_source(srcs, "base-model", "1.0", kind="model", files={"model.gguf": minimal_gguf("llama", 512)}), reg / "models")
    return reg


def test_index_lists_every_version_sorted(tmp_path, write_source):
    reg = make_registry(tmp_path, write_source)
    res = write_index(reg)
    data = json.loads((reg / "index.json").read_bytes())
    assert data["schema"] == INDEX_SCHEMA and data["version"] == 1 and data["expires"] is None
    assert data["created"].endswith("Z")
    pkgs = data["packages"]
    assert [(p["name"], p["version"]) for p in pkgs] == [("alpha", "2.0"), ("alpha", "10.0"), ("base-model", "1.0"), ("zeta", "1.0")]
    a2 = pkgs[0]
    assert a2["filename"] == "pool/alpha_2.0.llmos"
    assert a2["depends"] == ["zeta>=1 | omega"] and a2["provides"] == ["greek"]
    assert a2["license"] == "MIT" and a2["maintainer"].startswith("Test")
    raw = (reg / a2["filename"]).read_bytes()
    import hashlib

    assert a2["size"] == len(raw) and a2["sha256"] == hashlib.sha256(raw).hexdigest()
    model = pkgs[2]
    assert model["kind"] == "model" and model["architecture"] == "llama" and model["context_length"] == 512
    assert model["fingerprint"].startswith("sha256:")
    assert pkgs[3]["filename"] == "pool/z/zeta_1.0.llmos"
    assert res.packages == 4 and res.version == 1 and res.signed is False


def test_version_counter_and_expiry(tmp_path, write_source):
    reg = make_registry(tmp_path, write_source)
    assert write_index(reg).version == 1
    assert write_index(reg).version == 2
    res = write_index(reg, expires_days=7)
    assert res.version == 3
    idx = Index.from_bytes((reg / "index.json").read_bytes(), "test")
    assert idx.expires is not None and not idx.is_expired()
    from datetime import datetime, timedelta

    assert idx.is_expired(datetime.now(UTC) + timedelta(days=8))


def test_round_trip(tmp_path, write_source):
    reg = make_registry(tmp_path, write_source)
    write_index(reg)
    raw = (reg / "index.json").read_bytes()
    idx = Index.from_bytes(raw, "test")
    assert idx.to_bytes() == raw
    again = Index.from_bytes(idx.to_bytes(), "again")
    assert [e.to_json() for e in again.entries] == [e.to_json() for e in idx.entries]
    e = idx.find("base-model")[0]
    assert isinstance(e, IndexEntry) and e.extra["architecture"] == "llama" and e.meta.kind == "model"
    assert str(idx.find("alpha")[0].meta.depends[0]) == "zeta>=1 | omega"


def _valid() -> dict:
    return {
        "schema": 1,
        "created": "2026-01-01T00:00:00Z",
        "version": 3,
        "expires": None,
        "packages": [{"name": "a", "version": "1.0", "kind": "library", "filename": "a_1.0.llmos", "size": 10, "sha256": "0" * 64}],
    }


@pytest.mark.parametrize(
    "mutate, match",
    [
        (lambda d: "not json", "not valid JSON"),
        (lambda d: [1, 2], "not a JSON object"),
        (lambda d: {**d, "schema": 99}, "newer"),
        (lambda d: {k: v for k, v in d.items() if k != "schema"}, "schema"),
        (lambda d: {**d, "version": "7"}, "version counter"),
        (lambda d: {**d, "created": "yesterday"}, "created"),
        (lambda d: {**d, "packages": "many"}, "packages list"),
        (lambda d: {**d, "packages": [{**d["packages"][0], "filename": "../../etc/passwd"}]}, "unsafe"),
        (lambda d: {**d, "packages": [{**d["packages"][0], "filename": "/abs.llmos"}]}, "unsafe"),
        (lambda d: {**d, "packages": [{**d["packages"][0], "sha256": "xyz"}]}, "sha256"),
        (lambda d: {**d, "packages": [{**d["packages"][0], "size": -1}]}, "size"),
        (lambda d: {**d, "packages": [{**d["packages"][0], "version": "banana"}]}, "bad package entry"),
        (lambda d: {**d, "packages": [{**d["packages"][0], "depends": ["x>>1"]}]}, "bad package entry"),
        (lambda d: {**d, "packages": d["packages"] * 2}, "listed twice"),
    ],
)
def test_junk_indexes_are_refused(mutate, match):
    d = mutate(_valid())
    raw = d.encode() if isinstance(d, str) else json.dumps(d).encode()
    with pytest.raises(InvalidPackageError, match=match):
        Index.from_bytes(raw, "src")
    Index.from_bytes(json.dumps(_valid()).encode(), "src")  # the base case is fine


def test_conflicting_duplicates_and_broken_archives_are_refused(tmp_path, write_source):
    reg = make_registry(tmp_path, write_source)
    write_index(reg)
    before = (reg / "index.json").read_bytes()
    # the same archive twice is listed once
    shutil.copy(reg / "pool/alpha_2.0.llmos", reg / "mirror-copy_alpha_2.0.llmos")
    assert write_index(reg).packages == 4
    (reg / "mirror-copy_alpha_2.0.llmos").unlink()
    # same name and version, other content: refused, index untouched
    other = write_source(tmp_path / "other", "alpha", "2.0", summary="different")
    build_package(other, reg / "dup")
    before = (reg / "index.json").read_bytes()
    with pytest.raises(InvalidPackageError, match="twice with different content"):
        write_index(reg)
    assert (reg / "index.json").read_bytes() == before
    shutil.rmtree(reg / "dup")
    # a broken archive: refused, index untouched
    (reg / "pool" / "junk_1.0.llmos").write_bytes(b"garbage")
    with pytest.raises(InvalidPackageError, match="junk_1.0.llmos"):
        write_index(reg)
    assert (reg / "index.json").read_bytes() == before


def test_hidden_folders_are_skipped(tmp_path, write_source):
    reg = make_registry(tmp_path, write_source)
    (reg / ".partial").mkdir()
    (reg / ".partial" / "x_1.0.llmos").write_bytes(b"half written")
    assert write_index(reg).packages == 4


def test_cli_index_json_simulate_and_errors(tmp_path, write_source, cli):
    reg = make_registry(tmp_path, write_source)
    r = cli("index", reg, "-s", "--json")
    assert r.exit_code == 0, r
    assert not (reg / "index.json").exists()
    r = cli("index", reg, "--json")
    assert r.exit_code == 0, r
    data = r.json()["data"]
    assert set(data) == {"path", "version", "created", "expires", "packages", "signed", "entries"}
    assert data["packages"] == 4 and data["version"] == 1 and data["signed"] is False
    assert {"name", "version", "filename", "sha256"} == set(data["entries"][0])
    r = cli("index", reg, "--expires-days", "0")
    assert r.exit_code == 2, r
    r = cli("index", tmp_path / "missing")
    assert r.exit_code == 3, r


def test_signed_index(tmp_path, write_source, cli):
    from llmos_cli.registry import signing

    reg = make_registry(tmp_path, write_source)
    key, pub = signing.generate_key("pub1", tmp_path / "keys")
    r = cli("index", reg, "--sign", key, "--json")
    assert r.exit_code == 0, r
    assert r.json()["data"]["signed"] is True
    raw = (reg / "index.json").read_bytes()
    sig = (reg / "index.json.sig").read_bytes()
    signing.verify_index(raw, sig, pub)  # raises if it does not verify
    # re-indexing without a key drops the stale signature
    assert cli("index", reg).exit_code == 0
    assert not (reg / "index.json.sig").exists()
    # a missing key changes nothing
    before = (reg / "index.json").read_bytes()
    r = cli("index", reg, "--sign", tmp_path / "keys" / "nope.key")
    assert r.exit_code == 3, r
    assert (reg / "index.json").read_bytes() == before


def test_build_index_does_not_write(tmp_path, write_source):
    reg = make_registry(tmp_path, write_source)
    idx = build_index(reg)
    assert len(idx.entries) == 4 and not (reg / "index.json").exists()
