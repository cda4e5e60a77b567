"""llmos build and the archive reader: determinism, layout, and every refusal."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import shutil
import tarfile
import tomllib
from pathlib import Path

import pytest
import tomli_w

from llmos_cli.app.build import build_package
from llmos_cli.errors import IntegrityError, InvalidPackageError, NotFoundError
from llmos_cli.pkg.archive import PackageArchive
from llmos_cli.pkg.manifest import MANIFEST_NAME


def _lib(root: Path, write_source, **kw) -> Path:
    files = {
        "docs/a.md": "# A\n\nAlpha facts.\n",
        "docs/b.md": "# B\n\nBeta facts.\n",
        "glossary.toml": '[terms]\nalpha = "the first letter"\n',
        "bin/tool.sh": "#!/bin/sh\necho hi\n",
        "docs/" + "long-name-" * 12 + "é.md": "# Ünïcode and a path over 100 bytes (PAX header)\n",
    }
    extra = {"knowledge": {"documents": ["docs/*.md"]}, "glossary": {"file": "glossary.toml"}}
    folder = write_source(root, "demo", files=files, extra=extra, **kw)
    os.chmod(folder / "bin/tool.sh", 0o755)
    return folder


def _members(path: Path) -> list[tarfile.TarInfo]:
    with tarfile.open(path, "r:gz") as tf:
        return tf.getmembers()


def _manifest_of(path: Path) -> dict:
    with tarfile.open(path, "r:gz") as tf:
        return tomllib.loads(tf.extractfile(MANIFEST_NAME).read().decode())


# ---------------------------------------------------------------- layout and determinism


def test_build_layout_and_files_table(tmp_path, write_source):
    src = _lib(tmp_path / "src", write_source)
    res = build_package(src, tmp_path / "out")
    assert res.path == tmp_path / "out" / "demo_1.0.0.llmos"
    assert (res.name, res.version, res.kind) == ("demo", "1.0.0", "library")
    raw = res.path.read_bytes()
    assert res.sha256 == hashlib.sha256(raw).hexdigest() and res.size == len(raw)

    members = _members(res.path)
    names = [m.name for m in members]
    assert names[0] == MANIFEST_NAME
    payload = names[1:]
    assert payload == sorted(payload)
    assert {"docs/a.md", "docs/b.md", "glossary.toml", "bin/tool.sh"} <= set(payload)
    for m in members:
        assert m.isreg() and m.mtime == 0 and m.uid == 0 and m.gid == 0 and m.uname == "" and m.gname == ""
    modes = {m.name: m.mode for m in members}
    assert modes["bin/tool.sh"] == 0o755 and modes["docs/a.md"] == 0o644

    data = _manifest_of(res.path)
    assert data["package"]["name"] == "demo"
    assert set(data["files"]) == set(payload)  # every payload file, generated ones included
    import importlib.util

    if importlib.util.find_spec("llmos_cli.knowledge.indexer"):  # the build hook adds the search index
        assert any(n.startswith(".llmos/") for n in payload)
    with tarfile.open(res.path, "r:gz") as tf:
        for name in payload:
            content = tf.extractfile(name).read()
            assert data["files"][name] == {"sha256": hashlib.sha256(content).hexdigest(), "size": len(content)}
    assert res.files == len(payload)

    # gzip header: mtime 0 and no file name
    assert raw[:3] == b"\x1f\x8b\x08"
    flags, mtime = raw[3], int.from_bytes(raw[4:8], "little")
    assert mtime == 0 and not flags & 0x08


def test_build_is_deterministic(tmp_path, write_source):
    src = _lib(tmp_path / "src", write_source)
    a = build_package(src, tmp_path / "a")
    # other mtimes, another location, another build: same bytes
    for p in src.rglob("*"):
        os.utime(p, (1_500_000_000, 1_500_000_000))
    copy = tmp_path / "elsewhere" / "demo-src"
    shutil.copytree(src, copy)
    b = build_package(src, tmp_path / "b")
    c = build_package(copy, tmp_path / "c")
    assert a.sha256 == b.sha256 == c.sha256
    assert a.path.read_bytes() == b.path.read_bytes() == c.path.read_bytes()
    # a content change changes the hash
    (src / "docs/a.md").write_text("# A\n\nChanged.\n")
    assert build_package(src, tmp_path / "d").sha256 != a.sha256


def test_source_date_epoch_sets_mtime(tmp_path, write_source, monkeypatch):
    src = write_source(tmp_path, "demo")
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    res = build_package(src, tmp_path / "out")
    assert {m.mtime for m in _members(res.path)} == {1700000000}


def test_junk_and_llmosignore_are_left_out(tmp_path, write_source):
    src = write_source(tmp_path, "demo")
    for rel in (".git/config", "__pycache__/x.cpython-311.pyc", "mod.pyc", ".DS_Store", "scratch/notes.txt", "big.bin", "old_0.9.llmos"):
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).write_bytes(b"junk")
    (src / "keep.txt").write_text("keep")
    (src / ".llmosignore").write_text("# comment\nscratch/\n*.bin\n")
    res = build_package(src, tmp_path / "out")
    names = {m.name for m in _members(res.path)}
    assert "keep.txt" in names and "docs/readme.md" in names
    assert not names & {".git/config", "mod.pyc", ".DS_Store", "scratch/notes.txt", "big.bin", ".llmosignore", "old_0.9.llmos"}
    assert not any(n.startswith("__pycache__") for n in names)


def test_model_build_records_gguf_header(tmp_path, write_source):
    from tests.helpers.pkgtools import minimal_gguf

    src = write_source(tmp_path, "tiny-model", kind="model", files={"model.gguf": minimal_gguf("qwen2", 4096)})
    res = build_package(src, tmp_path / "out")
    model = _manifest_of(res.path)["model"]
    assert model["file"] == "model.gguf"
    assert model["architecture"] == "qwen2" and model["context_length"] == 4096
    assert model["fingerprint"].startswith("sha256:")


def test_model_with_unreadable_gguf_is_refused(tmp_path, write_source):
    src = write_source(tmp_path, "bad-model", kind="model", files={"model.gguf": b"not a gguf at all, just text" * 3})
    with pytest.raises(InvalidPackageError, match="GGUF"):
        build_package(src, tmp_path / "out")
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())


def test_symlink_inside_is_stored_as_content(tmp_path, write_source):
    src = write_source(tmp_path, "demo")
    (src / "docs/link.md").symlink_to("readme.md")
    res = build_package(src, tmp_path / "out")
    members = {m.name: m for m in _members(res.path)}
    assert members["docs/link.md"].isreg()
    with tarfile.open(res.path, "r:gz") as tf:
        assert tf.extractfile("docs/link.md").read() == (src / "docs/readme.md").read_bytes()


# ---------------------------------------------------------------- build refusals


def test_symlink_outside_is_refused(tmp_path, write_source):
    src = write_source(tmp_path, "demo")
    (tmp_path / "secret.txt").write_text("secret")
    (src / "docs/leak.md").symlink_to(tmp_path / "secret.txt")
    with pytest.raises(InvalidPackageError, match="outside"):
        build_package(src, tmp_path / "out")


def test_fifo_is_refused(tmp_path, write_source):
    src = write_source(tmp_path, "demo")
    os.mkfifo(src / "docs/pipe")
    with pytest.raises(InvalidPackageError, match="special file"):
        build_package(src, tmp_path / "out")


@pytest.mark.parametrize("bad", ["../outside.tsv", "/etc/passwd"])
def test_manifest_path_escaping_is_refused(tmp_path, write_source, bad):
    src = write_source(tmp_path, "demo", files={"g.tsv": "a\tb\n"}, extra={"glossary": {"file": bad}})
    with pytest.raises(InvalidPackageError, match="glossary.file"):
        build_package(src, tmp_path / "out")


def test_missing_declared_file_is_refused(tmp_path, write_source):
    src = write_source(tmp_path, "demo", files={"g.tsv": "a\tb\n"}, extra={"glossary": {"file": "nope.tsv"}})
    with pytest.raises(InvalidPackageError, match="glossary.file"):
        build_package(src, tmp_path / "out")


@pytest.mark.parametrize(
    "text, match",
    [("", "empty"), ("[package\nname=", "not valid TOML"), ("schema = 1\n[package]\nname = 'x'\n", "package.version")],
)
def test_bad_manifest_is_refused(tmp_path, text, match):
    src = tmp_path / "src"
    src.mkdir()
    (src / MANIFEST_NAME).write_text(text)
    with pytest.raises(InvalidPackageError, match=match):
        build_package(src, tmp_path / "out")


def test_no_manifest_and_no_folder(tmp_path):
    (tmp_path / "src").mkdir()
    with pytest.raises(InvalidPackageError, match="no llmos.toml"):
        build_package(tmp_path / "src", tmp_path)
    with pytest.raises(NotFoundError):
        build_package(tmp_path / "nope", tmp_path)


# ---------------------------------------------------------------- reading archives


def _craft(path: Path, members: list[tuple[str, bytes | None, bytes]], manifest: bytes | None = None) -> Path:
    """Write a tar.gz with given members: (name, type, data); type tarfile.*TYPE."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for name, typ, data in members:
            ti = tarfile.TarInfo(name)
            ti.type = typ
            if typ in (tarfile.SYMTYPE, tarfile.LNKTYPE):
                ti.linkname = data.decode()
                tf.addfile(ti)
            elif typ == tarfile.REGTYPE:
                ti.size = len(data)
                tf.addfile(ti, io.BytesIO(data))
            else:
                tf.addfile(ti)
    path.write_bytes(gzip.compress(buf.getvalue()))
    return path


def _good_manifest(files: dict[str, bytes]) -> bytes:
    data = {
        "schema": 1,
        "package": {"name": "evil", "version": "1.0", "kind": "library", "summary": "s", "license": "MIT", "maintainer": "m"},
        "files": {k: {"sha256": hashlib.sha256(v).hexdigest(), "size": len(v)} for k, v in files.items()},
    }
    return tomli_w.dumps(data).encode()


def test_open_reads_manifest_members_and_payload(tmp_path, write_source):
    src = _lib(tmp_path / "src", write_source)
    res = build_package(src, tmp_path / "out")
    arch = PackageArchive.open(res.path)
    assert arch.manifest.name == "demo" and arch.sha256 == res.sha256 and arch.size == res.size
    assert MANIFEST_NAME not in arch.members()
    assert set(arch.members()) == set(arch.manifest.files)
    arch.verify()
    seen = {}
    for rel, fh, rec in arch.iter_payload():
        seen[rel] = fh.read()
        assert hashlib.sha256(seen[rel]).hexdigest() == rec.sha256
    assert seen["docs/a.md"] == (src / "docs/a.md").read_bytes()
    assert arch.read_member("glossary.toml") == (src / "glossary.toml").read_bytes()


R = tarfile.REGTYPE


@pytest.mark.parametrize(
    "members, match",
    [
        ([("llmos.toml", R, None), ("../evil.txt", R, b"x")], "unsafe member path"),
        ([("llmos.toml", R, None), ("/etc/evil", R, b"x")], "unsafe member path"),
        ([("llmos.toml", R, None), ("docs/../../evil", R, b"x")], "unsafe member path"),
        ([("llmos.toml", R, None), ("link", tarfile.SYMTYPE, b"/etc/passwd")], "link"),
        ([("llmos.toml", R, None), ("hard", tarfile.LNKTYPE, b"llmos.toml")], "link"),
        ([("llmos.toml", R, None), ("fifo", tarfile.FIFOTYPE, b"")], "not a regular file"),
        ([("llmos.toml", R, None), ("dev", tarfile.CHRTYPE, b"")], "not a regular file"),
        ([("llmos.toml", R, None), ("a.txt", R, b"x"), ("a.txt", R, b"y")], "duplicate"),
        ([("llmos.toml", R, None), ("llmos.toml", R, b"x")], "duplicate"),
        ([("a.txt", R, b"x"), ("llmos.toml", R, None)], "first member"),
        ([], "no llmos.toml"),
    ],
)
def test_unsafe_or_malformed_archives_are_refused(tmp_path, members, match):
    manifest = _good_manifest({"a.txt": b"x"})
    members = [(n, t, manifest if d is None else d) for n, t, d in members]
    p = _craft(tmp_path / "evil.llmos", members)
    with pytest.raises(InvalidPackageError, match=match):
        PackageArchive.open(p)


def test_empty_truncated_and_junk_archives(tmp_path, write_source):
    res = build_package(write_source(tmp_path, "demo"), tmp_path / "out")
    raw = res.path.read_bytes()
    cases = {
        "empty.llmos": (b"", "empty archive"),
        "trunc.llmos": (raw[: len(raw) // 2], "truncated|not a valid"),
        "junk.llmos": (os.urandom(2000), "not a valid"),
        "plain.llmos": (gzip.compress(b"hello world" * 100), "not a valid"),
    }
    for name, (data, match) in cases.items():
        p = tmp_path / name
        p.write_bytes(data)
        with pytest.raises(InvalidPackageError, match=match):
            PackageArchive.open(p)


def test_bad_manifest_inside_archive(tmp_path):
    p = _craft(tmp_path / "a.llmos", [("llmos.toml", R, b"[package\n")])
    with pytest.raises(InvalidPackageError, match="not valid TOML"):
        PackageArchive.open(p)
    # a manifest without [files] is a source manifest, not an archive's
    data = tomllib.loads(_good_manifest({}).decode())
    del data["files"]
    p = _craft(tmp_path / "b.llmos", [("llmos.toml", R, tomli_w.dumps(data).encode())])
    with pytest.raises(InvalidPackageError, match=r"\[files\]"):
        PackageArchive.open(p)


def test_tampered_member_extra_and_missing(tmp_path):
    manifest = _good_manifest({"a.txt": b"original", "b.txt": b"bee"})
    tampered = _craft(tmp_path / "t.llmos", [("llmos.toml", R, manifest), ("a.txt", R, b"0riginal"), ("b.txt", R, b"bee")])
    arch = PackageArchive.open(tampered)  # opening is fine: the content check is verify's
    with pytest.raises(IntegrityError, match="a.txt"):
        arch.verify()
    with pytest.raises(IntegrityError, match="a.txt"):
        for _rel, fh, _rec in arch.iter_payload():
            fh.read()

    extra = _craft(tmp_path / "e.llmos", [("llmos.toml", R, manifest), ("a.txt", R, b"original"), ("b.txt", R, b"bee"), ("c.txt", R, b"!")])
    with pytest.raises(IntegrityError, match="c.txt"):
        PackageArchive.open(extra).verify()

    missing = _craft(tmp_path / "m.llmos", [("llmos.toml", R, manifest), ("a.txt", R, b"original")])
    with pytest.raises(InvalidPackageError, match="b.txt"):
        PackageArchive.open(missing).verify()
    with pytest.raises(InvalidPackageError, match="b.txt"):
        list(PackageArchive.open(missing).iter_payload())


def test_iter_payload_rechecks_a_file_changed_after_open(tmp_path):
    manifest = _good_manifest({"a.txt": b"original"})
    p = _craft(tmp_path / "a.llmos", [("llmos.toml", R, manifest), ("a.txt", R, b"original")])
    arch = PackageArchive.open(p)
    arch.verify()
    _craft(p, [("llmos.toml", R, manifest), ("a.txt", R, b"changed!")])  # swapped under our feet
    with pytest.raises(IntegrityError):
        for _ in arch.iter_payload():
            pass


# ---------------------------------------------------------------- CLI


def test_cli_build_json_and_default_output(tmp_path, write_source, cli, monkeypatch):
    src = write_source(tmp_path, "demo")
    r = cli("build", src, "-o", tmp_path / "out", "--json")
    assert r.exit_code == 0, r
    env = r.json()
    assert env["command"] == "build" and env["ok"] is True
    assert {"path", "name", "version", "kind", "sha256", "size", "files"} <= set(env["data"])  # keys are only ever added
    assert Path(env["data"]["path"]).is_file()

    monkeypatch.chdir(tmp_path / "out")
    r = cli("build", src)
    assert r.exit_code == 0, r
    assert r.stdout.strip().endswith("demo_1.0.0.llmos")
    r = cli("build", src, "-o", tmp_path / "named.llmos")
    assert r.exit_code == 0 and (tmp_path / "named.llmos").is_file()


def test_cli_build_simulate_writes_nothing(tmp_path, write_source, cli):
    src = write_source(tmp_path, "demo")
    out = tmp_path / "out"
    out.mkdir()
    r = cli("build", src, "-o", out, "-s", "--json")
    assert r.exit_code == 0, r
    assert r.json()["data"]["filename"] == "demo_1.0.0.llmos" and "docs/readme.md" in r.json()["data"]["files"]
    assert list(out.iterdir()) == []


def test_cli_build_refusal_exit_code_and_no_leftovers(tmp_path, write_source, cli):
    src = write_source(tmp_path, "demo")
    (src / "docs/leak.md").symlink_to("/etc/hostname")
    out = tmp_path / "out"
    out.mkdir()
    r = cli("build", src, "-o", out)
    assert r.exit_code == 5, r
    assert "error:" in r.stderr and "outside" in r.stderr and "hint:" in r.stderr
    assert list(out.iterdir()) == []
    r = cli("build", tmp_path / "nope")
    assert r.exit_code == 3, r


def test_cli_build_unwritable_output_is_an_io_error(tmp_path, write_source, cli):
    src = write_source(tmp_path, "demo")
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    r = cli("build", src, "-o", blocker / "sub")
    assert r.exit_code == 9, r
    assert "error:" in r.stderr
