"""Big payloads: incompressible files are stored (a plain tar), import-model copies a model at most once.

The store's side: a stored archive installs and verifies like a gzip one; a
model imported with ``--link`` shares the file's inode (a hard link; a
reflink on file systems that have them), and ``llmos verify`` notices when
the linked file is edited in place.
"""

from __future__ import annotations

import hashlib
import os
import tarfile
import tomllib
from pathlib import Path

import pytest

from llmos_cli.errors import ExitCode
from tests.helpers.fixtures_models import write_tiny_llama
from tests.helpers.installtools import db_rows

GZIP_MAGIC = b"\x1f\x8b"


@pytest.fixture(scope="module")
def big_gguf(tmp_path_factory) -> Path:
    """A real (tiny-architecture) Llama GGUF of about 5 MB: random float weights, which gzip cannot shrink."""
    d = tmp_path_factory.mktemp("big-gguf")
    return write_tiny_llama(d / "big.gguf", n_embd=256, n_ff=512, n_head=4, n_head_kv=2).path


def _archive_manifest(path: Path) -> dict:
    with tarfile.open(path) as tar:  # transparent: gzip or plain
        fh = tar.extractfile("llmos.toml")
        assert fh is not None
        return tomllib.loads(fh.read().decode())


def _build(cli, folder: Path, out: Path) -> dict:
    r = cli("build", str(folder), "-o", str(out), "--json")
    assert r.exit_code == 0, r
    return r.json()["data"]


def test_a_gguf_model_is_stored_uncompressed_and_deterministic(cli, write_source, tmp_path, big_gguf, llmos_home):
    assert big_gguf.stat().st_size > 4 << 20
    folder = write_source(tmp_path / "src", "big-chat", kind="model", files={"model.gguf": big_gguf.read_bytes()})
    a = _build(cli, folder, tmp_path / "a")
    b = _build(cli, folder, tmp_path / "b")
    assert a["compression"] == "none" and a["sha256"] == b["sha256"]  # deterministic
    path = Path(a["path"])
    assert path.read_bytes()[:2] != GZIP_MAGIC
    assert _archive_manifest(path)["archive"]["compression"] == "none"
    assert big_gguf.stat().st_size < a["size"] < big_gguf.stat().st_size + 64 * 1024  # stored: the tar overhead only
    assert cli("check", str(path)).exit_code == 0
    r = cli("install", str(path), "-y")
    assert r.exit_code == 0, r
    sha = hashlib.sha256(big_gguf.read_bytes()).hexdigest()
    assert (llmos_home / "store" / sha[:2] / sha).read_bytes() == big_gguf.read_bytes()
    assert cli("verify").exit_code == 0


def test_text_stays_gzipped_and_the_choice_can_be_forced(cli, write_source, tmp_path):
    folder = write_source(tmp_path / "src", "text-lib", files={"docs/a.md": "# words\n\n" + "knowledge " * 50_000})
    data = _build(cli, folder, tmp_path / "gz")
    assert data["compression"] == "gzip" and Path(data["path"]).read_bytes()[:2] == GZIP_MAGIC
    forced = write_source(
        tmp_path / "src2",
        "text-lib",
        files={"docs/a.md": "# words\n\nknowledge\n"},
        extra={"knowledge": {"documents": ["docs/*.md"]}, "archive": {"compression": "none"}},
    )
    data = _build(cli, forced, tmp_path / "plain")
    assert data["compression"] == "none" and Path(data["path"]).read_bytes()[:2] != GZIP_MAGIC
    assert cli("install", data["path"], "-y").exit_code == 0
    bad = write_source(
        tmp_path / "src3", "text-lib", files={"docs/a.md": "# a\n"}, extra={"knowledge": {"documents": ["docs/*.md"]}, "archive": {"compression": "zip"}}
    )
    r = cli("build", str(bad), "-o", str(tmp_path / "bad"))
    assert r.exit_code == int(ExitCode.INVALID_PACKAGE) and "archive.compression" in r.stderr and "Traceback" not in r.stderr


def _blob(home: Path, sha: str) -> Path:
    return home / "store" / sha[:2] / sha


def test_import_model_copies_once_and_keeps_the_gguf_out_of_the_archive(cli, tmp_path, big_gguf, llmos_home):
    src = tmp_path / "model.gguf"
    src.write_bytes(big_gguf.read_bytes())
    r = cli("import-model", str(src), "--name", "big", "-y", "--json")
    assert r.exit_code == 0, r
    data = r.json()["data"]
    sha = hashlib.sha256(src.read_bytes()).hexdigest()
    # one copy, made while hashing, into the download cache; the store's blob is a link to it
    assert data["sha256"] == sha and data["stored"] in ("hardlink", "reflink")
    blob = _blob(llmos_home, sha)
    assert blob.read_bytes() == src.read_bytes() and blob.stat().st_ino != src.stat().st_ino
    (cached,) = [p for p in (llmos_home / "cache").iterdir() if p.name.endswith("model.gguf")]
    if data["stored"] == "hardlink":
        assert cached.stat().st_ino == blob.stat().st_ino and blob.stat().st_nlink == 2
    assert Path(data["archive"]).stat().st_size < 64 * 1024  # the archive holds the manifest, not the weights
    files = {row[1]: row[2] for row in db_rows(llmos_home)["files"] if row[0] == "big"}
    assert files == {"model.gguf": sha}
    # the installed copy is independent: editing the original changes nothing installed
    with open(src, "r+b") as fh:
        fh.seek(100)
        fh.write(b"\0" * 8)
    assert cli("verify").exit_code == 0
    # removed and reinstalled: the download cache serves it (the changed original is not read)
    assert cli("remove", "big", "-y").exit_code == 0
    assert not blob.exists()
    assert cli("install", "big", "-y").exit_code == 0 and blob.read_bytes() == big_gguf.read_bytes()
    # without the cache, the only origin is the original file, which changed: refused, nothing installed
    assert cli("remove", "big", "-y").exit_code == 0
    assert cli("cache", "clean", "-y").exit_code == 0
    r = cli("install", "big", "-y")
    assert r.exit_code == int(ExitCode.NETWORK) and "none of its 1 origin" in " ".join(r.stderr.split())
    assert not blob.exists()


def test_import_model_link_shares_the_inode(cli, tmp_path, big_gguf, llmos_home):
    src = tmp_path / "model.gguf"
    src.write_bytes(big_gguf.read_bytes())
    r = cli("import-model", str(src), "--name", "big", "--link", "-y", "--json")
    assert r.exit_code == 0, r
    data = r.json()["data"]
    assert data["stored"] in ("hardlink", "reflink")
    blob = _blob(llmos_home, data["sha256"])
    if data["stored"] == "hardlink":
        assert blob.stat().st_ino == src.stat().st_ino
        # a hard link is the same file: editing it in place is what verify reports
        os.chmod(src, 0o644)
        with open(src, "r+b") as fh:
            fh.seek(100)
            fh.write(b"\1" * 8)
        r = cli("verify")
        assert r.exit_code == int(ExitCode.INTEGRITY) and "model.gguf" in r.stdout + r.stderr
    # remove + reinstall: nothing is copied, the file is linked again after hashing (or refused if changed)
    assert cli("remove", "big", "-y").exit_code == 0
