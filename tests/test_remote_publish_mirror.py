"""``llmos publish`` to a folder and ``llmos mirror`` into an offline folder registry."""

from __future__ import annotations

import os

import pytest

from llmos_cli.errors import ExitCode
from llmos_cli.registry.index import Index
from tests.helpers.httpserver import RegistryServer
from tests.helpers.installtools import db_rows


def _err(r) -> str:
    return " ".join(r.stderr.split())


@pytest.fixture
def archives(tmp_path, write_source, cli):
    """Built archives: a model, two alternatives (one virtual), a library needing them, and an unrelated one."""
    out = tmp_path / "out"
    specs = [
        dict(name="tiny-chat", kind="model"),
        dict(name="tiny-chat", version="2.0.0", kind="model"),
        dict(name="calc-tools"),
        dict(name="math-tools", provides=["calc"]),
        dict(name="med-lib", base="tiny-chat>=1.0,<2", depends=["calc-tools | calc"]),
        dict(name="law-lib", base="tiny-chat>=2"),
    ]
    paths = {}
    for spec in specs:
        name = spec.pop("name")
        folder = write_source(tmp_path / "src", name, **spec)
        r = cli("build", str(folder), "-o", str(out))
        assert r.exit_code == 0, r
        paths[(name, spec.get("version", "1.0.0"))] = out / f"{name}_{spec.get('version', '1.0.0')}.llmos"
    return paths


def _index(reg):
    return Index.from_bytes((reg / "index.json").read_bytes(), "test")


def test_publish_to_folder(archives, cli, tmp_path, llmos_home):
    reg = tmp_path / "reg"
    r = cli("key", "generate", "pub")
    pub = r.stdout.strip()
    r = cli("publish", *map(str, archives.values()), "--to", str(reg), "--sign", "pub", "--json")
    assert r.exit_code == 0, r
    data = r.json()["data"]
    assert data["signed"] and data["index_version"] == 1
    assert {p["status"] for p in data["packages"]} == {"added"}
    assert sorted(p.name for p in (reg / "pool").iterdir()) == sorted(p.name for p in archives.values())
    assert len(_index(reg).entries) == 6
    # the same bytes again: a no-op that still re-indexes (version counts up)
    r = cli("publish", str(archives[("calc-tools", "1.0.0")]), "--to", str(reg), "--sign", "pub", "--json")
    assert r.exit_code == 0 and r.json()["data"]["packages"][0]["status"] == "unchanged"
    assert _index(reg).version == 2
    # a signed registry stays signed
    r = cli("publish", str(archives[("calc-tools", "1.0.0")]), "--to", str(reg))
    assert r.exit_code == ExitCode.TRUST and "would drop the signature" in _err(r), r
    # simulate changes nothing
    before = (reg / "index.json").read_bytes()
    r = cli("publish", str(archives[("calc-tools", "1.0.0")]), "--to", str(reg), "--sign", "pub", "-s")
    assert r.exit_code == 0 and "would write index version 3" in r.stdout, r
    assert (reg / "index.json").read_bytes() == before
    # the published folder is a working signed source
    assert cli("source", "add", "team", str(reg), "--key", pub).exit_code == 0
    r = cli("update", "team")
    assert r.exit_code == 0, r


def test_publish_refuses_changed_release(archives, cli, tmp_path, write_source):
    reg = tmp_path / "reg"
    assert cli("publish", str(archives[("calc-tools", "1.0.0")]), "--to", str(reg)).exit_code == 0
    before = sorted(os.listdir(reg / "pool")), (reg / "index.json").read_bytes()
    folder = write_source(tmp_path / "src2", "calc-tools", summary="other bytes, same version")
    assert cli("build", str(folder), "-o", str(tmp_path / "out2")).exit_code == 0
    r = cli("publish", str(tmp_path / "out2" / "calc-tools_1.0.0.llmos"), "--to", str(reg))
    assert r.exit_code == ExitCode.INVALID_PACKAGE, r
    assert "already published with different content" in _err(r) and "bump the version" in _err(r)
    assert (sorted(os.listdir(reg / "pool")), (reg / "index.json").read_bytes()) == before


def test_publish_bad_input(cli, tmp_path):
    junk = tmp_path / "junk.llmos"
    junk.write_bytes(b"not an archive")
    r = cli("publish", str(junk), "--to", str(tmp_path / "reg"))
    assert r.exit_code == ExitCode.INVALID_PACKAGE, r
    assert not (tmp_path / "reg" / "index.json").exists()
    r = cli("publish", str(junk), "--to", "ftp://x/y")
    assert r.exit_code in (ExitCode.INVALID_PACKAGE, ExitCode.USAGE)
    r = cli("publish", str(junk), "--to", str(tmp_path / "reg"), "--sign", "nokey")
    assert r.exit_code == ExitCode.NOT_FOUND and "llmos key generate" in _err(r)


@pytest.fixture
def served(archives, cli, tmp_path):
    """The archives published (signed) and served over HTTP as source ``web``."""
    reg = tmp_path / "reg"
    pub = cli("key", "generate", "pub").stdout.strip()
    assert cli("publish", *map(str, archives.values()), "--to", str(reg), "--sign", "pub").exit_code == 0
    with RegistryServer(reg) as srv:
        assert cli("source", "add", "web", srv.url, "--key", pub).exit_code == 0
        assert cli("update", "web").exit_code == 0
        srv.pub = pub
        yield srv


def test_mirror_print_uris(served, cli, tmp_path):
    r = cli("mirror", "web", str(tmp_path / "m"), "med-lib", "--print-uris")
    assert r.exit_code == 0, r
    lines = r.stdout.strip().splitlines()
    # med-lib, both alternatives (calc-tools and the provider of the virtual calc), base tiny-chat<2 only
    names = sorted(line.split()[1] for line in lines)
    assert names == ["calc-tools_1.0.0.llmos", "math-tools_1.0.0.llmos", "med-lib_1.0.0.llmos", "tiny-chat_1.0.0.llmos"]
    for line in lines:
        uri, _file, size, sha = line.split()
        assert uri.startswith(f"'{served.url}/pool/") and size.isdigit() and sha.startswith("SHA256:")
    assert not (tmp_path / "m").exists()
    assert not served.ranged(".llmos") and not [p for _m, p, _r in served.requests if p.endswith(".llmos")]


def test_mirror_names_works_offline(served, cli, tmp_path, llmos_home, monkeypatch):
    m = tmp_path / "m"
    r = cli("mirror", "web", str(m), "law-lib", "--sign", "pub", "--json")
    assert r.exit_code == 0, r
    data = r.json()["data"]
    assert sorted(p["name"] for p in data["packages"]) == ["law-lib", "tiny-chat"]
    assert [p["version"] for p in data["packages"] if p["name"] == "tiny-chat"] == ["2.0.0"]
    assert data["signed"] and not data["verbatim_index"]
    # offline machine: a fresh home, the server gone, the mirror pinned with our key
    monkeypatch.setenv("LLMOS_HOME", str(tmp_path / "offline-home"))
    served.__exit__(None, None, None)
    assert cli("source", "list").exit_code == 0
    assert cli("source", "remove", "embedded").exit_code == 0
    assert cli("source", "add", "usb", str(m), "--key", served.pub).exit_code == 0
    r = cli("install", "law-lib", "-y")
    assert r.exit_code == 0, r
    assert sorted(row[0] for row in db_rows(tmp_path / "offline-home")["packages"]) == ["law-lib", "tiny-chat"]


def test_full_mirror_keeps_publisher_signature(served, cli, tmp_path, monkeypatch):
    m = tmp_path / "m"
    r = cli("mirror", "web", str(m), "--json")
    assert r.exit_code == 0, r
    data = r.json()["data"]
    assert data["verbatim_index"] and data["signed"] and len(data["packages"]) == 6
    assert (m / "index.json").read_bytes() == (tmp_path / "reg" / "index.json").read_bytes()
    assert (m / "index.json.sig").read_bytes() == (tmp_path / "reg" / "index.json.sig").read_bytes()
    # again: nothing to copy
    r = cli("mirror", "web", str(m), "--json")
    assert {p["status"] for p in r.json()["data"]["packages"]} == {"unchanged"}
    monkeypatch.setenv("LLMOS_HOME", str(tmp_path / "offline-home"))
    assert cli("source", "add", "usb", str(m), "--key", served.pub).exit_code == 0  # the publisher's key
    r = cli("install", "med-lib", "-y")
    assert r.exit_code == 0, r


def test_mirror_bad_input(served, cli, tmp_path):
    r = cli("mirror", "web", str(tmp_path / "m"), "no-such-lib")
    assert r.exit_code == ExitCode.NOT_FOUND, r
    r = cli("mirror", "web", str(tmp_path / "m"), "med-lib>=5")
    assert r.exit_code == ExitCode.UNSATISFIABLE, r
    r = cli("mirror", "nowhere", str(tmp_path / "m"))
    assert r.exit_code == ExitCode.NOT_FOUND, r
    r = cli("mirror", "web", str(tmp_path / "m"), "med-lib", "-s", "--json")
    assert r.exit_code == 0 and r.json()["data"]["simulate"], r
    assert not (tmp_path / "m").exists()
    # a tampered archive on the server never reaches the mirror
    served.replace["pool/law-lib_1.0.0.llmos"] = b"x" * (tmp_path / "reg" / "pool" / "law-lib_1.0.0.llmos").stat().st_size
    r = cli("mirror", "web", str(tmp_path / "m2"), "law-lib")
    assert r.exit_code == ExitCode.INTEGRITY, r
    assert not (tmp_path / "m2" / "index.json").exists()


def test_publish_restores_a_missing_archive(archives, cli, tmp_path):
    reg = tmp_path / "reg"
    calc = str(archives[("calc-tools", "1.0.0")])
    assert cli("publish", calc, "--to", str(reg)).exit_code == 0
    (reg / "pool" / "calc-tools_1.0.0.llmos").unlink()
    r = cli("publish", calc, "--to", str(reg), "--json")
    assert r.exit_code == 0 and r.json()["data"]["packages"][0]["status"] == "added", r
    assert [e.name for e in _index(reg).entries] == ["calc-tools"]
