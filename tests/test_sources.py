"""Sources: llmos source add/list/remove, llmos update, local lists, the dir source kind."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llmos_cli.app.build import build_package
from llmos_cli.errors import IntegrityError, NotFoundError, UsageError
from llmos_cli.paths import get_paths
from llmos_cli.registry import lists
from llmos_cli.registry.index import Index, write_index
from llmos_cli.registry.kinds import make_source
from llmos_cli.registry.sources import DirectorySource, kind_for_url
from llmos_cli.state.db import SourceRow, StateDB


def registry(tmp_path: Path, write_source, name: str = "reg", pkgs=(("demo", "1.0"),)) -> Path:
    reg = tmp_path / name
    for n, v in pkgs:
        build_package(write_source(tmp_path / f"{name}-src", n, v), reg / "pool")
    write_index(reg)
    return reg


def sources_json(cli) -> dict[str, dict]:
    r = cli("source", "list", "--json")
    assert r.exit_code == 0, r
    return {d["name"]: d for d in r.json()["data"]}


def open_db():
    return StateDB.open(get_paths())


# ---------------------------------------------------------------- source list/add/remove


def test_embedded_source_is_present_and_trusted(cli):
    srcs = sources_json(cli)
    emb = srcs["embedded"]
    assert emb["url"] == "embedded:" and emb["kind"] == "dir" and emb["trust"] == "unsigned-allowed"
    from llmos_cli.paths import embedded_registry

    assert emb["path"] == str(embedded_registry())
    assert set(emb) >= {"name", "url", "kind", "signed_by", "trust", "enabled", "priority", "index_version", "updated"}


def test_add_list_remove(tmp_path, write_source, cli, monkeypatch):
    reg = registry(tmp_path, write_source)
    monkeypatch.chdir(tmp_path)
    r = cli("source", "add", "local", "reg", "--allow-unsigned", "--priority", "5", "--json")
    assert r.exit_code == 0, r
    assert r.json()["data"]["source"]["url"] == str(reg)  # stored absolute
    srcs = sources_json(cli)
    assert srcs["local"]["trust"] == "unsigned-allowed" and srcs["local"]["priority"] == 5
    r = cli("source", "list")
    assert r.exit_code == 0 and "local" in r.stdout and "unsigned allowed" in r.stdout

    # a pinned key, given inline or as a .pub file
    from llmos_cli.registry import signing

    _key, pub = signing.generate_key("k", tmp_path / "keys")
    assert cli("source", "add", "pinned", reg, "--key", pub).exit_code == 0
    assert cli("source", "add", "pinned2", f"file://{reg}", "--key", tmp_path / "keys" / "k.pub").exit_code == 0
    srcs = sources_json(cli)
    assert srcs["pinned"]["trust"] == "pinned-key" and srcs["pinned"]["signed_by"] == pub
    assert srcs["pinned2"]["signed_by"] == pub and srcs["pinned2"]["url"] == f"file://{reg}"
    assert "pinned key" in cli("source", "list").stdout

    assert cli("update", "local").exit_code == 0
    assert lists.list_path(get_paths(), "local").is_file()
    r = cli("source", "remove", "local", "--json")
    assert r.exit_code == 0, r
    assert "local" not in sources_json(cli)
    assert not lists.list_path(get_paths(), "local").exists()


def test_add_refusals_leave_state_unchanged(tmp_path, write_source, cli):
    reg = registry(tmp_path, write_source)
    assert cli("source", "add", "local", reg).exit_code == 0
    before = sources_json(cli)
    cases = [
        (("source", "add", "local", reg), 2, "already exists"),
        (("source", "add", "Bad Name", reg), 2, "invalid source name"),
        (("source", "add", "x", tmp_path / "missing"), 3, "no such registry folder"),
        (("source", "add", "x", "ftp://example.org/reg"), 2, "unsupported source URL"),
        (("source", "add", "x", reg, "--key", "not-a-key"), 2, "not an ed25519 public key"),
        (("source", "add", "x", reg, "--key", "AAAA"), 2, "not an ed25519 public key"),
        (("source", "remove", "nope"), 3, "no source named"),
    ]
    for args, code, msg in cases:
        r = cli(*args)
        assert r.exit_code == code, (args, r)
        assert msg in r.stderr, (args, r)
    assert sources_json(cli) == before


def test_simulate_changes_nothing(tmp_path, write_source, cli):
    reg = registry(tmp_path, write_source)
    r = cli("source", "add", "local", reg, "--allow-unsigned", "-s", "--json")
    assert r.exit_code == 0 and r.json()["data"]["simulated"] is True, r
    assert "local" not in sources_json(cli)
    assert cli("source", "add", "local", reg, "--allow-unsigned").exit_code == 0
    r = cli("update", "local", "-s", "--json")
    assert r.exit_code == 0 and r.json()["data"]["simulated"] is True, r
    assert not lists.list_path(get_paths(), "local").exists()
    assert cli("source", "remove", "local", "-s").exit_code == 0
    assert "local" in sources_json(cli)


def test_removed_embedded_source_stays_removed(cli):
    assert "embedded" in sources_json(cli)
    assert cli("source", "remove", "embedded").exit_code == 0
    assert "embedded" not in sources_json(cli)  # not re-added behind the user's back
    assert cli("source", "add", "embedded", "embedded:").exit_code == 0
    srcs = sources_json(cli)
    assert srcs["embedded"]["trust"] == "unsigned-allowed"


# ---------------------------------------------------------------- update


def test_update_stores_exact_index_and_version(tmp_path, write_source, cli):
    reg = registry(tmp_path, write_source, pkgs=(("demo", "1.0"), ("demo", "1.1")))
    assert cli("source", "add", "local", reg, "--allow-unsigned").exit_code == 0
    r = cli("update", "local", "--json")
    assert r.exit_code == 0, r
    (s,) = r.json()["data"]["sources"]
    assert s == {"name": "local", "ok": True, "version": 1, "previous_version": None, "packages": 2, "changed": True, "signed": False, "error": None}
    paths = get_paths()
    assert lists.list_path(paths, "local").read_bytes() == (reg / "index.json").read_bytes()
    assert sources_json(cli)["local"]["index_version"] == 1
    # unchanged on a second run; a re-index bumps the version
    r = cli("update", "local", "--json")
    assert r.json()["data"]["sources"][0]["changed"] is False
    write_index(reg)
    r = cli("update", "local", "--json")
    assert r.json()["data"]["sources"][0]["version"] == 2 and r.json()["data"]["sources"][0]["previous_version"] == 1
    r = cli("update", "local")
    assert r.exit_code == 0 and "local" in r.stdout


def test_update_signed_source(tmp_path, write_source, cli):
    from llmos_cli.registry import signing

    reg = tmp_path / "reg"
    build_package(write_source(tmp_path / "s", "demo"), reg)
    key, pub = signing.generate_key("k", tmp_path / "keys")
    write_index(reg, sign_key=key)
    assert cli("source", "add", "signed", reg, "--key", pub).exit_code == 0
    r = cli("update", "signed", "--json")
    assert r.exit_code == 0, r
    assert r.json()["data"]["sources"][0]["signed"] is True
    paths = get_paths()
    assert lists.sig_path(paths, "signed").read_bytes() == (reg / "index.json.sig").read_bytes()

    # a tampered index is refused by the trust hook; the stored list stays as it was
    stored = lists.list_path(paths, "signed").read_bytes()
    data = json.loads((reg / "index.json").read_bytes())
    data["packages"][0]["summary"] = "evil"
    (reg / "index.json").write_text(json.dumps(data))
    r = cli("update", "signed", "--json")
    assert r.exit_code == 15, r
    assert r.json()["ok"] is False and r.json()["error"]["code"] == "trust"
    assert r.json()["error"]["details"]["sources"][0]["ok"] is False
    assert lists.list_path(paths, "signed").read_bytes() == stored


def test_update_failures_name_the_source_and_keep_going(tmp_path, write_source, cli):
    good = registry(tmp_path, write_source, "good")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "index.json").write_text("{not json")
    assert cli("source", "add", "a-broken", broken, "--allow-unsigned").exit_code == 0
    assert cli("source", "add", "b-good", good, "--allow-unsigned").exit_code == 0
    r = cli("update", "a-broken", "b-good", "--json")
    assert r.exit_code == 5, r
    err = r.json()["error"]
    assert "a-broken" in err["message"]
    outcome = {s["name"]: s["ok"] for s in err["details"]["sources"]}
    assert outcome == {"a-broken": False, "b-good": True}
    assert lists.list_path(get_paths(), "b-good").is_file()  # the good one was still updated
    assert not lists.list_path(get_paths(), "a-broken").exists()
    (broken / "index.json").unlink()
    r = cli("update", "a-broken")
    assert r.exit_code == 3 and "llmos index" in r.stderr, r
    r = cli("update", "no-such-source")
    assert r.exit_code == 3, r


def test_unsigned_source_without_allow_unsigned_is_refused(tmp_path, write_source, cli):
    reg = registry(tmp_path, write_source)
    assert cli("source", "add", "plain", reg).exit_code == 0
    assert sources_json(cli)["plain"]["trust"] == "untrusted"
    r = cli("update", "plain")
    assert r.exit_code == 15, r
    assert not lists.list_path(get_paths(), "plain").exists()


def test_update_waits_for_the_lock(tmp_path, write_source, cli, llmos_proc):
    from llmos_cli.state.db import state_lock

    reg = registry(tmp_path, write_source)
    assert cli("source", "add", "local", reg, "--allow-unsigned").exit_code == 0
    with state_lock(get_paths(), "test holder"):
        r = llmos_proc("update", "local", env={"LLMOS_LOCK_TIMEOUT": "0.5"})
    assert r.exit_code == 7, r
    assert "lock" in r.stderr
    assert not lists.list_path(get_paths(), "local").exists()


# ---------------------------------------------------------------- universe and the dir source


def test_load_universe_updates_on_first_use(tmp_path, write_source):
    reg = registry(tmp_path, write_source, pkgs=(("demo", "1.0"), ("other", "2.0")))
    paths = get_paths()
    db = open_db()
    try:
        lists.add_source(paths, db, "local", str(reg), allow_unsigned=True)
        broken = tmp_path / "broken"
        broken.mkdir()
        lists.add_source(paths, db, "broken", str(broken), allow_unsigned=True)
        from llmos_cli.progress import RecordingReporter

        rep = RecordingReporter()
        uni = lists.load_universe(paths, db, rep)
        got = sorted((e.name, e.version, row.name) for e, row in uni)
        assert ("demo", "1.0", "local") in got and ("other", "2.0", "local") in got
        assert lists.list_path(paths, "local").is_file()
        assert any(lvl == "warning" and "broken" in m for lvl, m in rep.messages)
        assert lists.get_source(db, "local").index_version == 1
    finally:
        db.close()


def test_dir_source_fetch_archive_verifies(tmp_path, write_source):
    reg = registry(tmp_path, write_source)
    row = SourceRow("local", str(reg), "dir", None, True, True, 0, "now", None, None, None)
    src = make_source(row)
    assert isinstance(src, DirectorySource)
    raw, sig = src.fetch_index()
    assert sig is None
    (entry,) = Index.from_bytes(raw, "t").entries
    p = src.fetch_archive(entry, tmp_path / "cache")
    assert p == reg / entry.filename and p.is_file()
    # tampered bytes (same size) and a changed size are both refused
    data = bytearray(p.read_bytes())
    data[100] ^= 0xFF
    p.write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match="sha256"):
        src.fetch_archive(entry, tmp_path / "cache")
    p.write_bytes(bytes(data) + b"x")
    with pytest.raises(IntegrityError, match="size"):
        src.fetch_archive(entry, tmp_path / "cache")
    p.unlink()
    with pytest.raises(NotFoundError):
        src.fetch_archive(entry, tmp_path / "cache")


def test_kind_for_url_and_unknown_kinds():
    assert kind_for_url("/srv/reg") == "dir"
    assert kind_for_url("./reg") == "dir" and kind_for_url("reg") == "dir"
    assert kind_for_url("file:///srv/reg") == "dir" and kind_for_url("embedded:") == "dir"
    assert kind_for_url("http://127.0.0.1:8000/reg") == "http" and kind_for_url("HTTPS://x/y") == "http"
    assert kind_for_url("hf://owner/repo@main") == "hf"
    for bad in ("", "ftp://x/y", "s3://bucket/x"):
        with pytest.raises(UsageError):
            kind_for_url(bad)
    row = SourceRow("x", "gopher://x", "gopher", None, False, True, 0, "now", None, None, None)
    with pytest.raises(UsageError, match="not supported"):
        make_source(row)
