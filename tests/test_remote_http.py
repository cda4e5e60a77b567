"""An HTTP source end to end over a real loopback server, and every attack issue 6 lists.

Each attack is refused with a clear error and a named exit code, and leaves
the installed state (packages, files, store) exactly as it was.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from llmos_cli.errors import ExitCode
from llmos_cli.registry.index import Index, utc_iso
from llmos_cli.registry.signing import generate_key, sign_index
from tests.helpers.httpserver import RegistryServer
from tests.helpers.installtools import archive_path, build_registry, db_rows, store_listing

PACKAGES = [
    {"name": "tiny-chat", "kind": "model"},
    {"name": "calc-tools"},
    {"name": "med-lib", "base": "tiny-chat>=1.0", "depends": ["calc-tools"], "summary": "medical knowledge"},
]
MED = "pool/med-lib_1.0.0.llmos"


def installed_state(home):
    rows = db_rows(home)
    return {"packages": rows.get("packages"), "files": rows.get("files"), "store": store_listing(home)}


@pytest.fixture
def web(tmp_path, cli):
    """A signed registry served on 127.0.0.1, added as source ``web`` with its key pinned, updated."""
    key, pub = generate_key("publisher", tmp_path / "keys")
    reg = build_registry(tmp_path, PACKAGES)
    from llmos_cli.registry.index import write_index

    write_index(reg, sign_key=key)
    with RegistryServer(reg) as srv:
        srv.reg, srv.key, srv.pub = reg, key, pub
        assert cli("source", "list").exit_code == 0
        assert cli("source", "remove", "embedded").exit_code == 0
        r = cli("source", "add", "web", srv.url, "--key", pub)
        assert r.exit_code == 0, r
        r = cli("update")
        assert r.exit_code == 0, r
        yield srv


def _err(r) -> str:
    """stderr with rich's line wrapping undone."""
    return " ".join(r.stderr.split())


def _source(cli, name):
    return {d["name"]: d for d in cli("source", "list", "--json").json()["data"]}[name]


def _republish(srv, tmp_path, packages, sign=True):
    build_registry(tmp_path / "more", packages, reg=srv.reg)
    from llmos_cli.registry.index import write_index

    write_index(srv.reg, sign_key=srv.key if sign else None)


def test_update_search_show_install_upgrade(web, cli, tmp_path, llmos_home):
    row = _source(cli, "web")
    assert row["trust"] == "pinned-key" and row["signed_by"] == web.pub
    first = row["index_version"]
    r = cli("search", "medical", "--json")
    assert r.exit_code == 0, r
    found = json.dumps(r.json()["data"])
    assert "med-lib" in found and "calc-tools" not in found
    r = cli("show", "med-lib")
    assert r.exit_code == 0 and "web" in r.stdout, r
    r = cli("install", "med-lib", "-y")
    assert r.exit_code == 0, r
    assert {p[0]: p[1] for p in db_rows(llmos_home)["packages"]} == {"tiny-chat": "1.0.0", "calc-tools": "1.0.0", "med-lib": "1.0.0"}
    assert not any("Range" in str(x) for x in web.requests)
    # a new release, signed; update + upgrade
    _republish(web, tmp_path, [{"name": "med-lib", "version": "1.1.0", "base": "tiny-chat>=1.0", "depends": ["calc-tools"]}])
    r = cli("update", "--json")
    assert r.exit_code == 0, r
    assert [s["version"] for s in r.json()["data"]["sources"] if s["name"] == "web"][0] > first
    r = cli("upgrade", "-y")
    assert r.exit_code == 0, r
    assert {p[0]: p[1] for p in db_rows(llmos_home)["packages"]}["med-lib"] == "1.1.0"
    r = cli("cache", "list", "--json")
    files = r.json()["data"]["files"]
    assert len(files) == 4 and all(f["complete"] for f in files)


def test_tampered_archive_is_refused(web, cli, llmos_home):
    before = installed_state(llmos_home)
    data = bytearray(archive_path(web.reg, "med-lib", "1.0.0").read_bytes())
    data[len(data) // 2] ^= 0x01
    web.replace[MED] = bytes(data)
    r = cli("install", "med-lib", "-y")
    assert r.exit_code == ExitCode.INTEGRITY, r
    assert "sha256 of med-lib_1.0.0.llmos does not match" in _err(r)
    assert installed_state(llmos_home) == before
    assert not list((llmos_home / "cache").glob("*med-lib*"))


def test_tampered_index_is_refused(web, cli, llmos_home):
    raw = (web.reg / "index.json").read_bytes()
    web.replace["index.json"] = raw.replace(b"medical knowledge", b"medical knowledgE")
    list_before = (llmos_home / "lists" / "web.json").read_bytes()
    r = cli("update")
    assert r.exit_code == ExitCode.TRUST, r
    assert "changed after it was signed" in _err(r)
    assert (llmos_home / "lists" / "web.json").read_bytes() == list_before


def test_wrong_key_is_refused(web, cli, tmp_path, llmos_home):
    _other_priv, other_pub = generate_key("mallory", tmp_path / "keys")
    assert cli("source", "add", "web2", web.url, "--key", other_pub).exit_code == 0
    r = cli("update", "web2")
    assert r.exit_code == ExitCode.TRUST, r
    assert "not by the pinned key" in _err(r)
    assert not (llmos_home / "lists" / "web2.json").exists()
    r = cli("install", "med-lib", "-y", "--json")  # still only from the trusted copy of web
    assert r.exit_code == 0, r


def test_unsigned_index_for_pinned_source_is_refused(web, cli, tmp_path, llmos_home):
    before = installed_state(llmos_home)
    _republish(web, tmp_path, [{"name": "extra-lib"}], sign=False)
    assert not (web.reg / "index.json.sig").exists()
    r = cli("update")
    assert r.exit_code == ExitCode.TRUST, r
    assert "not signed" in _err(r)
    r = cli("install", "extra-lib", "-y")
    assert r.exit_code == ExitCode.NOT_FOUND, r
    assert installed_state(llmos_home) == before


def test_replayed_older_index_is_refused(web, cli, tmp_path, llmos_home):
    old_raw, old_sig = (web.reg / "index.json").read_bytes(), (web.reg / "index.json.sig").read_bytes()
    _republish(web, tmp_path, [{"name": "med-lib", "version": "1.1.0", "base": "tiny-chat>=1.0", "depends": ["calc-tools"]}])
    assert cli("update").exit_code == 0
    assert cli("install", "med-lib", "-y").exit_code == 0
    before = installed_state(llmos_home)
    web.replace["index.json"], web.replace["index.json.sig"] = old_raw, old_sig  # validly signed, but version 1 < 2
    r = cli("update")
    assert r.exit_code == ExitCode.TRUST, r
    assert "rollback" in _err(r) and "older than version" in _err(r)
    assert _source(cli, "web")["index_version"] == Index.from_bytes((web.reg / "index.json").read_bytes(), "t").version
    assert installed_state(llmos_home) == before


def test_truncated_download_resumes_then_verifies(web, cli, llmos_home):
    size = archive_path(web.reg, "med-lib", "1.0.0").stat().st_size
    web.cut[MED] = size // 2
    r = cli("install", "med-lib", "-y")
    assert r.exit_code == 0, r
    assert web.ranged(MED) == [f"bytes={size // 2}-"]
    assert "med-lib" in {p[0] for p in db_rows(llmos_home)["packages"]}


def test_stalled_server_times_out(web, cli, llmos_home, monkeypatch):
    monkeypatch.setenv("LLMOS_HTTP_TIMEOUT", "0.5")
    monkeypatch.setenv("LLMOS_HTTP_RETRIES", "1")
    monkeypatch.setenv("LLMOS_HTTP_BACKOFF", "0")
    before = installed_state(llmos_home)
    web.stall[MED] = 100
    r = cli("install", "med-lib", "-y")
    assert r.exit_code == ExitCode.NETWORK, r
    assert "failed after 2 attempts" in _err(r) and "LLMOS_HTTP_TIMEOUT" in _err(r)
    assert installed_state(llmos_home) == before


def test_more_bytes_than_declared_is_refused(web, cli, llmos_home):
    before = installed_state(llmos_home)
    web.extra[MED] = 10_000
    r = cli("install", "med-lib", "-y")
    assert r.exit_code == ExitCode.INTEGRITY, r
    assert "more than the" in _err(r) and "bytes the index declares" in _err(r)
    assert installed_state(llmos_home) == before
    assert not list((llmos_home / "cache").glob("*med-lib*.llmos*"))


def test_source_without_key_needs_allow_unsigned(web, cli, llmos_home):
    assert cli("source", "add", "plain", web.url).exit_code == 0
    rows = {d["name"]: d for d in cli("source", "list", "--json").json()["data"]}
    assert rows["plain"]["trust"] == "untrusted" and rows["web"]["trust"] == "pinned-key"
    r = cli("update", "plain")
    assert r.exit_code == ExitCode.TRUST, r
    assert "--allow-unsigned" in _err(r)
    assert cli("source", "add", "open", web.url, "--allow-unsigned").exit_code == 0
    assert cli("update", "open").exit_code == 0


def test_expired_index_warns(web, cli, llmos_home):
    index = Index.from_bytes((web.reg / "index.json").read_bytes(), "test")
    index.version += 1
    index.expires = utc_iso(datetime.now(UTC) - timedelta(days=2))
    raw = index.to_bytes()
    web.replace["index.json"], web.replace["index.json.sig"] = raw, sign_index(raw, web.key)
    r = cli("update", "--json")
    assert r.exit_code == 0, r
    assert any("expired" in w and "frozen" in w for w in r.json()["warnings"])


def test_cache_clean(web, cli, llmos_home):
    assert cli("install", "calc-tools", "-y").exit_code == 0
    r = cli("cache", "clean", "-s", "--json")
    assert r.exit_code == 0 and r.json()["data"]["simulate"] is True
    assert len(cli("cache", "list", "--json").json()["data"]["files"]) == 1
    r = cli("cache", "clean", "-y")
    assert r.exit_code == 0 and "freed" in r.stdout
    assert cli("cache", "list", "--json").json()["data"]["files"] == []
    assert cli("verify").exit_code == 0  # installed packages do not need the cache


def test_http_index_missing(cli, tmp_path):
    with RegistryServer(tmp_path) as srv:
        assert cli("source", "add", "empty", srv.url, "--allow-unsigned").exit_code == 0
        r = cli("update", "empty")
        assert r.exit_code == ExitCode.NOT_FOUND, r
        assert "no index.json at" in _err(r)
        assert json.loads(cli("source", "list", "--json").stdout)["ok"]
