"""Every bad input of issue 2: a one-line error (+ hint), a named exit code, installed state unchanged."""

from __future__ import annotations

import io
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import textwrap
from pathlib import Path

import pytest

from llmos_cli.errors import ExitCode
from tests.helpers.installtools import archive_path, build_registry, db_rows, store_listing, use_registry

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def reg(tmp_path, cli, llmos_home):
    r = build_registry(
        tmp_path,
        [
            dict(name="ka", files={"docs/a.md": "a\n"}),
            dict(name="kb", depends=["ka"], files={"docs/b.md": "b\n"}),
            dict(name="kfoe", conflicts=["ka"], files={"docs/foe.md": "foe\n"}),
            dict(name="kneed", depends=["nothere"]),
            dict(name="kbig", files={"big.bin": os.urandom(1 << 20)}),
        ],
    )
    use_registry(cli, r)
    r2 = cli("install", "kb", "-y")  # something installed, so "unchanged" means something
    assert r2.exit_code == 0, r2
    return r


def installed_state(home: Path) -> dict:
    rows = db_rows(home)
    return {"packages": rows.get("packages"), "files": rows.get("files"), "store": store_listing(home)}


def assert_error(r, code: ExitCode, *needles: str) -> str:
    """Exactly one ``error:`` line (any other line is a hint or warning); return it."""
    assert r.exit_code == int(code), r
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("error: ")]
    assert len(errors) == 1, r
    assert "Traceback" not in r.stderr, r
    hints = [i for i, ln in enumerate(lines) if ln.startswith("hint: ")]
    assert all(lines[i - 1].startswith("error: ") for i in hints), r  # a hint follows its error line
    for n in needles:
        assert n in errors[0] or n in r.stderr, (n, r)
    return errors[0]


# ---------------------------------------------------------------- crafted archives


def real_manifest(reg: Path) -> bytes:
    with tarfile.open(archive_path(reg, "ka", "1.0.0"), "r:gz") as t:
        return t.extractfile("llmos.toml").read()


def craft(path: Path, members: list[tuple[str, bytes | None, bytes]]) -> Path:
    """Write a .llmos (tar.gz) with the given members: (name, type, data)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz", format=tarfile.PAX_FORMAT) as t:
        for name, typ, data in members:
            ti = tarfile.TarInfo(name)
            if typ == tarfile.SYMTYPE:
                ti.type = tarfile.SYMTYPE
                ti.linkname = data.decode()
                t.addfile(ti)
            else:
                ti.size = len(data)
                t.addfile(ti, io.BytesIO(data))
    path.write_bytes(buf.getvalue())
    return path


REG = tarfile.REGTYPE


def bad_archives(tmp_path: Path, reg: Path) -> dict[str, tuple[Path, ExitCode]]:
    good = archive_path(reg, "ka", "1.0.0")
    raw = good.read_bytes()
    man = real_manifest(reg)
    d = tmp_path / "bad"
    d.mkdir()
    (d / "empty.llmos").write_bytes(b"")
    (d / "truncated.llmos").write_bytes(raw[: len(raw) // 2])
    (d / "garbage.llmos").write_bytes(b"this is not a gzip file at all\n" * 20)
    return {
        "empty archive": (d / "empty.llmos", ExitCode.INVALID_PACKAGE),
        "truncated archive": (d / "truncated.llmos", ExitCode.INVALID_PACKAGE),
        "garbage archive": (d / "garbage.llmos", ExitCode.INVALID_PACKAGE),
        "empty manifest": (craft(d / "emptyman.llmos", [("llmos.toml", REG, b""), ("docs/a.md", REG, b"a\n")]), ExitCode.INVALID_PACKAGE),
        "malformed manifest": (
            craft(d / "badman.llmos", [("llmos.toml", REG, b"schema = = 1\n[package\n"), ("docs/a.md", REG, b"a\n")]),
            ExitCode.INVALID_PACKAGE,
        ),
        "manifest missing fields": (craft(d / "fields.llmos", [("llmos.toml", REG, b"schema = 1\n[package]\nname = 'ka'\n")]), ExitCode.INVALID_PACKAGE),
        "no manifest": (craft(d / "noman.llmos", [("docs/a.md", REG, b"a\n")]), ExitCode.INVALID_PACKAGE),
        "path traversal": (craft(d / "trav.llmos", [("llmos.toml", REG, man), ("../evil.md", REG, b"evil\n")]), ExitCode.INVALID_PACKAGE),
        "absolute path": (craft(d / "abs.llmos", [("llmos.toml", REG, man), ("/tmp/evil.md", REG, b"evil\n")]), ExitCode.INVALID_PACKAGE),
        "symlink member": (craft(d / "link.llmos", [("llmos.toml", REG, man), ("docs/a.md", tarfile.SYMTYPE, b"/etc/passwd")]), ExitCode.INVALID_PACKAGE),
        "member hash mismatch": (craft(d / "hash.llmos", [("llmos.toml", REG, man), ("docs/a.md", REG, b"A\n")]), ExitCode.INTEGRITY),
        "extra member": (craft(d / "extra.llmos", [("llmos.toml", REG, man), ("docs/a.md", REG, b"a\n"), ("docs/x.md", REG, b"x\n")]), ExitCode.INTEGRITY),
    }


CASES = [
    "empty archive",
    "truncated archive",
    "garbage archive",
    "empty manifest",
    "malformed manifest",
    "manifest missing fields",
    "no manifest",
    "path traversal",
    "absolute path",
    "symlink member",
    "member hash mismatch",
    "extra member",
]


@pytest.mark.parametrize("case", CASES)
def test_bad_archive_is_refused_and_nothing_changes(case, tmp_path, reg, cli, llmos_home):
    path, code = bad_archives(tmp_path, reg)[case]
    before = installed_state(llmos_home)
    hist = db_rows(llmos_home)["history"]
    r = cli("install", str(path), "-y")
    assert_error(r, code, path.name)
    assert installed_state(llmos_home) == before
    assert db_rows(llmos_home)["history"] == hist  # refused before any transaction began
    assert not (tmp_path / "evil.md").exists() and not Path("/tmp/evil.md").exists()


def test_a_source_folder_is_not_an_archive(tmp_path, reg, cli, llmos_home, write_source):
    src = write_source(tmp_path / "srcs", "kx")
    r = cli("install", str(src))
    assert_error(r, ExitCode.INVALID_PACKAGE, "folder")
    assert "llmos build" in r.stderr


def test_missing_archive_path(tmp_path, reg, cli, llmos_home):
    r = cli("install", str(tmp_path / "nope.llmos"))
    assert_error(r, ExitCode.NOT_FOUND, "nope.llmos")


def test_archive_tampered_in_the_registry_after_indexing(reg, cli, llmos_home):
    p = archive_path(reg, "kfoe", "1.0.0")
    # remove ka's dependent first so kfoe's conflict does not matter: we only want the fetch to fail
    data = bytearray(p.read_bytes())
    data[len(data) // 2] ^= 0xFF
    p.write_bytes(bytes(data))
    before = installed_state(llmos_home)
    r = cli("install", "kfoe", "-y")
    assert_error(r, ExitCode.INTEGRITY)
    assert "sha256" in r.stderr.lower() or "hash" in r.stderr.lower()
    assert installed_state(llmos_home) == before
    assert [t["status"] for t in cli("history", "--json").json()["data"]["transactions"]][0] == "rolled_back"


# ---------------------------------------------------------------- resolution


@pytest.mark.parametrize(
    "args, code, needle",
    [
        (("install", "kz"), ExitCode.NOT_FOUND, "kz"),
        (("install", "kaa"), ExitCode.NOT_FOUND, "did you mean ka"),
        (("install", "ka>=2"), ExitCode.UNSATISFIABLE, "ka>=2"),
        (("install", "kneed"), ExitCode.UNSATISFIABLE, "nothere"),
        (("install", "kfoe", "kb"), ExitCode.UNSATISFIABLE, "conflicts"),
        (("install", "Bad!"), ExitCode.USAGE, "Bad!"),
        (("install", "ka>>1"), ExitCode.USAGE, "ka>>1"),
        (("remove", "ka"), ExitCode.DEPENDENTS, "kb"),
        (("remove", "kz"), ExitCode.NOT_FOUND, "not installed"),
        (("upgrade", "kz"), ExitCode.NOT_FOUND, "not installed"),
        (("show", "kz"), ExitCode.NOT_FOUND, "kz"),
        (("list", "--kind", "kz"), ExitCode.USAGE, "kz"),
    ],
)
def test_bad_request(args, code, needle, reg, cli, llmos_home):
    before = installed_state(llmos_home)
    hist = db_rows(llmos_home)["history"]
    r = cli(*args, "-y") if args[0] in ("install", "remove", "upgrade") else cli(*args)
    assert_error(r, code, needle)
    assert installed_state(llmos_home) == before
    assert db_rows(llmos_home)["history"] == hist


def test_conflict_with_a_held_package(reg, cli, llmos_home):
    assert cli("hold", "ka").exit_code == 0
    before = installed_state(llmos_home)
    r = cli("install", "kfoe", "-y")
    assert_error(r, ExitCode.UNSATISFIABLE, "kfoe")
    assert "held" in r.stderr or "hold" in r.stderr
    assert installed_state(llmos_home) == before


def test_conflict_replacing_an_installed_package_needs_confirmation(reg, cli, llmos_home):
    before = installed_state(llmos_home)
    r = cli("install", "kfoe")
    assert_error(r, ExitCode.ABORTED, "not a terminal")
    assert "REMOVED" in r.stderr and "--yes" in r.stderr
    assert installed_state(llmos_home) == before


# ---------------------------------------------------------------- the state database


def test_state_db_deleted_while_the_store_has_files(reg, cli, llmos_home):
    for suffix in ("", "-wal", "-shm"):
        Path(str(llmos_home / "state.db") + suffix).unlink(missing_ok=True)
    store = store_listing(llmos_home)
    for args in (("list",), ("install", "ka"), ("verify",)):
        r = cli(*args)
        assert_error(r, ExitCode.STATE, "missing")
        assert "backup" in r.stderr
    assert not (llmos_home / "state.db").exists()
    assert store_listing(llmos_home) == store


@pytest.mark.parametrize("damage", ["garbage", "directory"])
def test_corrupt_state_db(damage, reg, cli, llmos_home):
    db = llmos_home / "state.db"
    for suffix in ("-wal", "-shm"):
        Path(str(db) + suffix).unlink(missing_ok=True)
    db.unlink()
    if damage == "garbage":
        db.write_bytes(os.urandom(8192))
    else:
        db.mkdir()
    store = store_listing(llmos_home)
    for args in (("list",), ("install", "ka", "-y"), ("history",)):
        r = cli(*args)
        assert_error(r, ExitCode.STATE, "state database")
    assert store_listing(llmos_home) == store


HOLD_LOCK = textwrap.dedent(
    """
    import sys, time
    from llmos_cli.paths import get_paths
    from llmos_cli.state.db import state_lock
    with state_lock(get_paths(), "llmos install something"):
        print("locked", flush=True)
        time.sleep(60)
    """
)


def test_locked_state_fails_after_the_timeout(reg, cli, llmos_home, monkeypatch):
    monkeypatch.setenv("LLMOS_LOCK_TIMEOUT", "0.5")
    before = installed_state(llmos_home)
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        for args in (("install", "kfoe", "-y"), ("remove", "kb"), ("hold", "ka"), ("autoremove",)):
            r = cli(*args)
            line = assert_error(r, ExitCode.LOCKED, "another llmos process holds the state lock")
            assert f"pid {holder.pid}" in line and "LLMOS_LOCK_TIMEOUT" in r.stderr
        r = cli("list")  # reading needs no lock
        assert r.exit_code == 0, r
    finally:
        holder.kill()
        holder.wait()
    assert installed_state(llmos_home) == before


# ---------------------------------------------------------------- no permission, no space


def _drop_dac_capabilities() -> None:
    """In the child, before exec: lose root's power to ignore file modes (bounding set)."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    PR_CAPBSET_DROP = 24
    for cap in (1, 2, 3):  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH, CAP_FOWNER
        if libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0:
            os._exit(99)


def test_no_permission_to_write_the_store(reg, llmos_home):
    """A read-only store.  As root, the llmos process first drops the capabilities that bypass file modes."""
    root = os.geteuid() == 0
    dirs = [llmos_home / "store", *[d for d in (llmos_home / "store").iterdir() if d.is_dir()]]
    for d in dirs:
        d.chmod(0o555)
    try:
        before = installed_state(llmos_home)
        p = subprocess.run(
            [sys.executable, "-m", "llmos_cli", "install", "kfoe", "-y"],
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
            preexec_fn=_drop_dac_capabilities if root else None,
            timeout=120,
        )
        if p.returncode == 99:
            pytest.skip("cannot drop capabilities here, and root ignores file modes")
        from tests.conftest import CliResult

        r = CliResult(p.returncode, p.stdout, p.stderr)
        assert_error(r, ExitCode.IO, "permission denied")
        assert "LLMOS_HOME" in r.stderr
    finally:
        for d in dirs:
            d.chmod(0o755)
    assert installed_state(llmos_home) == before
    tr = db_rows(llmos_home)["history"]
    assert tr[-1][5] == "rolled_back"  # journaled, then rolled back in-process


def _mount_tmpfs(where: Path, size: str) -> bool:
    if os.geteuid() != 0 or not shutil.which("mount"):
        return False
    p = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)], capture_output=True)
    return p.returncode == 0


def test_no_space_left(tmp_path, reg, cli, llmos_home, monkeypatch):
    """A 1 MB package into a 512 KiB tmpfs home: ENOSPC.  Without root, RLIMIT_FSIZE gives EFBIG instead."""
    tiny = tmp_path / "tiny-home"
    tiny.mkdir()
    mounted = _mount_tmpfs(tiny, "512k")
    try:
        if mounted:
            shutil.copytree(llmos_home, tiny, dirs_exist_ok=True)
            monkeypatch.setenv("LLMOS_HOME", str(tiny))
            before = installed_state(tiny)
            r = cli("install", "kbig", "-y")
            assert_error(r, ExitCode.IO, "no space left on device")
            assert installed_state(tiny) == before
            assert cli("verify").exit_code == 0
        else:
            before = installed_state(llmos_home)

            def limit():
                import resource

                signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
                resource.setrlimit(resource.RLIMIT_FSIZE, (256 * 1024, 256 * 1024))

            p = subprocess.run(
                [sys.executable, "-m", "llmos_cli", "install", "kbig", "-y"],
                capture_output=True,
                text=True,
                stdin=subprocess.DEVNULL,
                preexec_fn=limit,
                timeout=120,
            )
            from tests.conftest import CliResult

            assert_error(CliResult(p.returncode, p.stdout, p.stderr), ExitCode.IO, "while")
            assert installed_state(llmos_home) == before
    finally:
        if mounted:
            subprocess.run(["umount", "-l", str(tiny)], check=False)  # lazily: the in-process run may still hold a handle


# ---------------------------------------------------------------- a registry that lists a crafted archive


def doctor_index(reg: Path, name: str, data: bytes) -> None:
    """Replace ``name``'s archive with ``data`` and make the index agree (size, sha256): only the content can betray it."""
    import hashlib
    import json

    idx = json.loads((reg / "index.json").read_text())
    for e in idx["packages"]:
        if e["name"] == name:
            (reg / e["filename"]).write_bytes(data)
            e["size"] = len(data)
            e["sha256"] = hashlib.sha256(data).hexdigest()
    idx["version"] += 1
    (reg / "index.json").write_text(json.dumps(idx))


def crafted_for_index(tmp_path: Path, reg: Path, case: str) -> bytes:
    man = real_manifest(reg)
    with tarfile.open(archive_path(reg, "kb", "1.0.0"), "r:gz") as t:
        other = t.extractfile("llmos.toml").read()
    members = {
        "traversal": [("llmos.toml", REG, man), ("../evil.md", REG, b"evil\n")],
        "symlink": [("llmos.toml", REG, man), ("docs/a.md", tarfile.SYMTYPE, b"/etc/passwd")],
        "member hash mismatch": [("llmos.toml", REG, man), ("docs/a.md", REG, b"A\n")],
        "extra member": [("llmos.toml", REG, man), ("docs/a.md", REG, b"a\n"), ("docs/zz.md", REG, b"zz\n")],
        "missing member": [("llmos.toml", REG, man)],
        "other package inside": [("llmos.toml", REG, other), ("docs/b.md", REG, b"b\n")],
        "manifest not first": [("docs/a.md", REG, b"a\n"), ("llmos.toml", REG, man)],
    }[case]
    return craft(tmp_path / "crafted.llmos", members).read_bytes()


@pytest.mark.parametrize(
    "case, code",
    [
        ("traversal", ExitCode.INVALID_PACKAGE),
        ("symlink", ExitCode.INVALID_PACKAGE),
        ("member hash mismatch", ExitCode.INTEGRITY),
        ("extra member", ExitCode.INTEGRITY),
        ("missing member", ExitCode.INVALID_PACKAGE),
        ("other package inside", ExitCode.INTEGRITY),
        ("manifest not first", ExitCode.INVALID_PACKAGE),
    ],
)
def test_crafted_archive_listed_by_the_index_is_caught_while_staging(case, code, tmp_path, reg, cli, llmos_home):
    assert cli("remove", "kb", "ka", "-y").exit_code == 0  # installing ka again needs its archive
    before = installed_state(llmos_home)
    doctor_index(reg, "ka", crafted_for_index(tmp_path, reg, case))
    assert cli("update").exit_code == 0
    r = cli("install", "ka", "-y")
    assert_error(r, code, "ka")
    assert installed_state(llmos_home) == before
    assert list((llmos_home / "staging").iterdir()) == []
    assert not (tmp_path / "evil.md").exists() and not (reg / "evil.md").exists()
    assert [t["status"] for t in cli("history", "--json").json()["data"]["transactions"]][0] == "rolled_back"
