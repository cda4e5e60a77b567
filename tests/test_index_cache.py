"""The list cache (apt's pkgcache.bin) and apt-style names end to end.

Real lists written by ``llmos update`` from real registries; real SQLite
caches; installs through the in-process CLI; an HTTP source on 127.0.0.1.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from llmos_cli.errors import InvalidPackageError
from llmos_cli.paths import get_paths
from llmos_cli.pkg.meta import Req
from llmos_cli.registry import lists, pkgcache
from llmos_cli.registry.index import Index
from llmos_cli.resolve import Candidate, Request, resolve
from llmos_cli.state.db import StateDB
from tests.helpers.httpserver import RegistryServer
from tests.helpers.installtools import build_registry, installed_set, use_registry


def _make(entry, row) -> Candidate:
    return Candidate(entry.meta, origin=(entry, row.name), priority=int(row.priority or 0))


def _source():
    paths = get_paths()
    db = StateDB.open(paths)
    return paths, db, lists.candidate_source(paths, db, _make)


def _versions(src, name: str) -> list[str]:
    return sorted(c.meta.version for c in src.named(name))


PACKAGES = [
    {"name": "mailer", "version": "1.0", "depends": ["mail-transport-agent>=2", "g++ | clang"]},
    {"name": "exim", "version": "4.0", "provides": ["mail-transport-agent (= 2.5)"]},
    {"name": "bare-mta", "version": "1.0", "provides": ["mail-transport-agent"]},
    {"name": "g++", "version": "12.0", "depends": ["libdb5.3++"]},
    {"name": "libdb5.3++", "version": "5.3"},
    {"name": "clang", "version": "15.0"},
]


@pytest.fixture
def registry(tmp_path, cli) -> Path:
    reg = build_registry(tmp_path, PACKAGES)
    use_registry(cli, reg)
    return reg


def test_update_builds_the_cache_and_it_answers_like_the_list(registry):
    paths = get_paths()
    cache = lists.cache_path(paths, "test")
    assert cache.is_file(), "llmos update builds the cache next to the list"
    raw = lists.list_path(paths, "test").read_bytes()
    conn = sqlite3.connect(cache)
    meta = dict(conn.execute("SELECT key, value FROM meta"))
    assert meta["list_sha256"] == pkgcache.list_digest(raw)
    assert conn.execute("SELECT count(*) FROM pkg").fetchone()[0] == len(PACKAGES)
    conn.close()
    _paths, _db, src = _source()
    index = Index.from_bytes(raw, "list")
    for e in index.entries:
        (cand,) = src.named(e.name)
        assert cand.meta == e.meta and cand.origin[0].to_json() == e.to_json()
    assert sorted(c.meta.name for c in src.providing("mail-transport-agent")) == ["bare-mta", "exim"]
    assert src.named("nothing") == [] and "mail-transport-agent" in src.names()
    # same candidate objects on every lookup (the pool keys variables by identity)
    assert src.named("g++")[0] is src.named("g++")[0]


def test_install_uses_versioned_provides_and_apt_names(registry, cli):
    r = cli("install", "mailer", "-s", "--json")
    assert r.exit_code == 0, r
    actions = {a["name"]: a["op"] for a in r.json()["data"]["plan"]["actions"]}
    assert actions == {"exim": "install", "g++": "install", "libdb5.3++": "install", "mailer": "install"}
    r = cli("install", "-y", "mailer")
    assert r.exit_code == 0, r
    assert installed_set(get_paths().home) == {"exim": "4.0", "g++": "12.0", "libdb5.3++": "5.3", "mailer": "1.0"}
    r = cli("show", "exim", "--json")
    assert r.exit_code == 0, r
    assert "mail-transport-agent (= 2.5)" in json.dumps(r.json()["data"])


def test_a_changed_list_is_never_shadowed_by_its_cache(registry, tmp_path):
    paths = get_paths()
    lp = lists.list_path(paths, "test")
    data = json.loads(lp.read_bytes())
    for p in data["packages"]:
        if p["name"] == "clang":
            p["version"] = "16.0"
    lp.write_bytes(json.dumps(data).encode())  # edited by hand, behind llmos's back
    _paths, _db, src = _source()
    assert _versions(src, "clang") == ["16.0"]
    # the cache was rebuilt from the new list and records its hash
    conn = sqlite3.connect(lists.cache_path(paths, "test"))
    assert dict(conn.execute("SELECT key, value FROM meta"))["list_sha256"] == pkgcache.list_digest(lp.read_bytes())
    conn.close()


def test_a_damaged_or_foreign_cache_is_rebuilt(registry, tmp_path):
    paths = get_paths()
    cache = lists.cache_path(paths, "test")
    cache.write_bytes(b"SQLite format 3\x00" + b"\xff" * 3000)  # damaged
    _paths, _db, src = _source()
    assert _versions(src, "exim") == ["4.0"]
    # the cache of another list under this source's name is ignored and replaced
    other = build_registry(tmp_path / "o", [{"name": "clang", "version": "99.0"}])
    other_raw = (other / "index.json").read_bytes()
    pkgcache.build(cache, other_raw, "other")
    _paths, _db, src = _source()
    assert _versions(src, "clang") == ["15.0"]
    assert pkgcache.ListCache.open(cache, lists.list_path(paths, "test").read_bytes(), "x") is not None


def test_a_cache_damaged_inside_fails_cleanly_and_is_rebuilt_next_time(registry, cli):
    from llmos_cli.errors import ExitCode

    cache = lists.cache_path(get_paths(), "test")
    conn = sqlite3.connect(cache)
    conn.execute("""UPDATE pkg SET record = '{"name": "Bad!"}' WHERE name = 'exim'""")
    conn.commit()
    conn.close()
    r = cli("install", "-s", "mailer")
    assert r.exit_code == ExitCode.STATE, r
    assert "package cache" in r.stderr and "run the command again" in r.stderr and "Traceback" not in r.stderr
    assert not cache.exists()
    r = cli("install", "-s", "mailer")
    assert r.exit_code == 0, r
    assert cache.is_file()


def test_no_writable_cache_falls_back_to_the_list(registry):
    paths = get_paths()
    cache = lists.cache_path(paths, "test")
    cache.unlink()
    cache.mkdir()  # nothing can be written there
    _paths, _db, src = _source()
    assert _versions(src, "g++") == ["12.0"] and cache.is_dir()
    plan = resolve(src, {}, Request(install=[Req.parse("mailer")]))
    assert sorted(a.name for a in plan.actions) == ["exim", "g++", "libdb5.3++", "mailer"]


def test_a_bad_list_is_skipped_with_a_warning_and_no_cache(registry):
    paths = get_paths()
    lp = lists.list_path(paths, "test")
    lp.write_bytes(b'{"schema": 1, "version": 1, "created": "2026-01-01T00:00:00Z", "packages": [{"name": "Bad!"}]}')
    cache, error = pkgcache.load(lists.cache_path(paths, "test"), lp.read_bytes(), "list")
    assert cache is None and isinstance(error, InvalidPackageError)
    warnings: list[str] = []

    class Rep(lists.NullReporter):
        def warn(self, msg: str) -> None:
            warnings.append(msg)

    db = StateDB.open(paths)
    src = lists.candidate_source(paths, db, _make, Rep())
    assert "clang" not in set(src.names())
    assert any(w.startswith("source test skipped: list: bad package entry") or "source test skipped" in w for w in warnings), warnings


def test_removing_a_source_removes_its_cache(registry, cli):
    cache = lists.cache_path(get_paths(), "test")
    assert cache.is_file()
    assert cli("source", "remove", "test").exit_code == 0
    assert not cache.exists()


def test_plus_in_names_is_quoted_in_urls_and_served(tmp_path, cli):
    reg = build_registry(tmp_path, [{"name": "memtest86+", "version": "6.0"}, {"name": "g++", "version": "12.0", "depends": ["memtest86+"]}])
    assert (reg / "pool" / "g++_12.0.llmos").is_file()
    with RegistryServer(reg) as srv:
        assert cli("source", "remove", "embedded").exit_code in (0, 3)
        assert cli("source", "add", "web", srv.url, "--allow-unsigned").exit_code == 0
        r = cli("update")
        assert r.exit_code == 0, r
        from llmos_cli.registry.kinds import make_source

        db = StateDB.open(get_paths())
        row = next(r for r in db.sources() if r.name == "web")
        assert make_source(row).uri("pool/g++_12.0.llmos").endswith("/pool/g%2B%2B_12.0.llmos")
        r = cli("install", "-y", "g++")
        assert r.exit_code == 0, r
        assert installed_set(get_paths().home) == {"g++": "12.0", "memtest86+": "6.0"}
        assert ("GET", "pool/g++_12.0.llmos", None) in srv.requests


def test_breaks_from_a_manifest_to_show_and_install(tmp_path, cli, write_source):
    import tomllib

    import tomli_w

    from llmos_cli.app.build import build_package
    from llmos_cli.registry.index import write_index

    reg = tmp_path / "reg"
    for name, version in (("plugin", "1.0"), ("plugin", "2.0"), ("host", "2.0")):
        folder = write_source(tmp_path / "src", name, version)
        if name == "host":
            toml = folder / "llmos.toml"
            data = tomllib.loads(toml.read_text())
            data["package"]["breaks"] = ["plugin<2"]
            toml.write_text(tomli_w.dumps(data))
        build_package(folder, reg / "pool")
    write_index(reg)
    use_registry(cli, reg)
    assert cli("install", "-y", "plugin==1.0").exit_code == 0
    r = cli("show", "host")
    assert r.exit_code == 0, r
    assert "Breaks: plugin<2" in r.stdout
    r = cli("install", "-y", "host")
    assert r.exit_code == 0, r
    assert installed_set(get_paths().home) == {"host": "2.0", "plugin": "2.0"}
