"""The Hugging Face Hub source and ``publish --to hf://``, against a loopback fake Hub.

huggingface_hub reads ``HF_ENDPOINT``/``HF_HUB_OFFLINE`` when it is imported,
and the test harness sets ``HF_HUB_OFFLINE=1``; so every command that talks to
the (loopback) Hub runs as a real subprocess with its own environment.  The
offline tests then run in-process against the cache those subprocesses built
with huggingface_hub's own download code.

The last test checks that a folder, an HTTP and a Hub source behave the same
for update, search, show, install and upgrade.
"""

from __future__ import annotations

import json

import pytest

from llmos_cli.errors import ExitCode
from tests.helpers.httpserver import FakeHub, RegistryServer
from tests.helpers.installtools import db_rows, store_listing

REPO = "team/reg"


def _err(r) -> str:
    return " ".join(r.stderr.split())


@pytest.fixture
def archives(tmp_path, write_source, cli):
    out = tmp_path / "out"
    specs = [
        dict(name="tiny-chat", kind="model"),
        dict(name="calc-tools"),
        dict(name="med-lib", base="tiny-chat>=1.0", depends=["calc-tools"], summary="medical knowledge"),
        dict(name="med-lib", version="1.1.0", base="tiny-chat>=1.0", depends=["calc-tools"], summary="medical knowledge"),
    ]
    paths = {}
    for spec in specs:
        name = spec.pop("name")
        folder = write_source(tmp_path / "src", name, **spec)
        assert cli("build", str(folder), "-o", str(out)).exit_code == 0
        version = spec.get("version", "1.0.0")
        paths[(name, version)] = str(out / f"{name}_{version}.llmos")
    return paths


def _first(archives):
    return [p for (n, v), p in archives.items() if v == "1.0.0"]


@pytest.fixture
def hub(tmp_path, llmos_proc):
    with FakeHub() as h:
        h.create_repo(REPO)
        env = {"HF_ENDPOINT": h.url, "HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "0", "HF_HUB_DISABLE_TELEMETRY": "1"}
        h.env = env
        h.run = lambda *args: llmos_proc(*args, env=env, timeout=120)
        yield h


@pytest.mark.slow
def test_publish_update_install_upgrade(hub, archives, cli, llmos_home):
    pub = cli("key", "generate", "pub").stdout.strip()
    r = hub.run("publish", *_first(archives), "--to", f"hf://{REPO}", "--sign", "pub", "--json")
    assert r.exit_code == 0, r
    data = r.json()["data"]
    assert data["signed"] and data["index_version"] == 1 and data["commit"] == hub.branches[REPO]["main"]
    files = hub.commits[data["commit"]]
    assert {"index.json", "index.json.sig", "pool/med-lib_1.0.0.llmos"} <= set(files)
    assert len(hub.commits) == 2  # initial + ONE commit holding archives, index and signature together

    assert cli("source", "add", "hub", f"hf://{REPO}", "--key", pub).exit_code == 0
    r = hub.run("update", "hub")
    assert r.exit_code == 0, r
    r = cli("search", "medical", "--json")  # from the local list, no network
    assert "med-lib" in json.dumps(r.json()["data"])
    r = hub.run("install", "med-lib", "-y")
    assert r.exit_code == 0, r
    assert {row[0] for row in db_rows(llmos_home)["packages"]} == {"tiny-chat", "calc-tools", "med-lib"}

    r = hub.run("publish", archives[("med-lib", "1.1.0")], "--to", f"hf://{REPO}", "--sign", "pub")
    assert r.exit_code == 0, r
    assert hub.run("update", "hub").exit_code == 0
    r = hub.run("upgrade", "-y")
    assert r.exit_code == 0, r
    assert dict((row[0], row[1]) for row in db_rows(llmos_home)["packages"])["med-lib"] == "1.1.0"
    # publishing without the key would drop the signature: refused, nothing committed
    n = len(hub.commits)
    r = hub.run("publish", archives[("med-lib", "1.1.0")], "--to", f"hf://{REPO}")
    assert r.exit_code == ExitCode.TRUST, r
    assert len(hub.commits) == n


def test_offline_from_the_hub_cache(hub, archives, cli, llmos_home, tmp_path, monkeypatch):
    assert hub.run("publish", *_first(archives), "--to", f"hf://{REPO}").exit_code == 0
    assert cli("source", "add", "hub", f"hf://{REPO}", "--allow-unsigned").exit_code == 0
    assert hub.run("install", "med-lib", "-y").exit_code == 0
    # another llmos home on the same machine, the Hub unreachable: served from huggingface_hub's cache
    hub.__exit__(None, None, None)
    monkeypatch.setenv("LLMOS_HOME", str(tmp_path / "home2"))
    monkeypatch.setenv("HF_HOME", hub.env["HF_HOME"])
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert cli("source", "add", "hub", f"hf://{REPO}", "--allow-unsigned").exit_code == 0
    r = cli("update", "hub")
    assert r.exit_code == 0, r
    r = cli("install", "med-lib", "-y")
    assert r.exit_code == 0, r
    assert {row[0] for row in db_rows(tmp_path / "home2")["packages"]} == {"tiny-chat", "calc-tools", "med-lib"}
    # something never downloaded is a clear network error, not a crash
    assert cli("source", "add", "other", "hf://team/other", "--allow-unsigned").exit_code == 0
    r = cli("update", "other")
    assert r.exit_code == ExitCode.NETWORK, r
    assert "HF_HUB_OFFLINE" in _err(r)


@pytest.mark.slow
def test_revision_pinning(hub, archives, cli, llmos_home):
    r = hub.run("publish", *_first(archives), "--to", f"hf://{REPO}", "--json")
    first_commit = r.json()["data"]["commit"]
    assert hub.run("publish", archives[("med-lib", "1.1.0")], "--to", f"hf://{REPO}").exit_code == 0
    assert cli("source", "add", "pinned", f"hf://{REPO}@{first_commit}", "--allow-unsigned").exit_code == 0
    r = hub.run("update", "pinned", "--json")
    assert r.exit_code == 0, r
    assert [s["version"] for s in r.json()["data"]["sources"]] == [1]
    r = hub.run("install", "med-lib", "-y")
    assert r.exit_code == 0, r
    assert dict((row[0], row[1]) for row in db_rows(llmos_home)["packages"])["med-lib"] == "1.0.0"


@pytest.mark.slow
def test_tampered_archive_on_the_hub(hub, archives, cli, llmos_home, tmp_path):
    pub = cli("key", "generate", "pub").stdout.strip()
    assert hub.run("publish", *_first(archives), "--to", f"hf://{REPO}", "--sign", "pub").exit_code == 0
    assert cli("source", "add", "hub", f"hf://{REPO}", "--key", pub).exit_code == 0
    assert hub.run("update").exit_code == 0
    files = hub.commits[hub.branches[REPO]["main"]]
    data = bytearray(files["pool/med-lib_1.0.0.llmos"])
    data[100] ^= 0xFF
    files["pool/med-lib_1.0.0.llmos"] = bytes(data)
    before = (db_rows(llmos_home).get("packages"), store_listing(llmos_home))
    r = hub.run("install", "med-lib", "-y")
    assert r.exit_code == ExitCode.INTEGRITY, r
    assert "sha256 mismatch" in _err(r) or "does not match" in _err(r)
    assert (db_rows(llmos_home).get("packages"), store_listing(llmos_home)) == before
    blobs = list((tmp_path / "hf").rglob("blobs/*"))
    assert all(b.read_bytes() != bytes(data) for b in blobs)  # the bad bytes were not kept
    # a tampered index pushed to the Hub (a new commit, as any change there is)
    files = dict(files, **{"index.json": files["index.json"].replace(b"medical knowledge", b"medical Knowledge")})
    hub.new_commit(REPO, files)
    r = hub.run("update", "hub")
    assert r.exit_code == ExitCode.TRUST, r
    assert "changed after it was signed" in _err(r)


# ---------------------------------------------------------------- same behaviour for every kind

_VOLATILE = {"installed_at", "started", "finished", "updated", "created", "txid", "archives", "path", "url", "commit", "signed_by"}


def _normal(obj):
    if isinstance(obj, dict):
        return {k: _normal(v) for k, v in obj.items() if k not in _VOLATILE}
    if isinstance(obj, list):
        return [_normal(v) for v in obj]
    return obj


@pytest.mark.slow
def test_dir_http_hf_behave_the_same(hub, archives, cli, llmos_proc, tmp_path, monkeypatch):
    transcripts = {}
    for kind in ("dir", "http", "hf"):
        monkeypatch.setenv("LLMOS_HOME", str(tmp_path / f"home-{kind}"))
        reg = tmp_path / f"reg-{kind}"
        if kind == "hf":
            run = hub.run
            repo = f"team/{kind}"
            hub.create_repo(repo)
            url, publish_to = f"hf://{repo}", f"hf://{repo}"
        else:
            run = cli
            url, publish_to = str(reg), str(reg)
        server = RegistryServer(reg) if kind == "http" else None
        if server:
            server.__enter__()
            url = server.url
        try:
            assert run("publish", *_first(archives), "--to", publish_to).exit_code == 0
            assert cli("source", "list").exit_code == 0
            assert cli("source", "remove", "embedded").exit_code == 0
            assert cli("source", "add", "reg", url, "--allow-unsigned").exit_code == 0
            steps = [("update",), ("search", "med"), ("show", "med-lib"), ("install", "med-lib", "-y")]
            out = []
            for args in steps:
                r = run(*args, "--json")
                assert r.exit_code == 0, (kind, args, r)
                out.append(_normal(r.json()))
            assert run("publish", archives[("med-lib", "1.1.0")], "--to", publish_to).exit_code == 0
            for args in [("update",), ("upgrade", "-y"), ("list",), ("show", "med-lib")]:
                r = run(*args, "--json")
                assert r.exit_code == 0, (kind, args, r)
                out.append(_normal(r.json()))
            transcripts[kind] = out
        finally:
            if server:
                server.__exit__(None, None, None)
    assert transcripts["dir"] == transcripts["http"]
    assert transcripts["dir"] == transcripts["hf"]
    assert any("1.1.0" in json.dumps(step) for step in transcripts["dir"][-2:])
