"""The store and the transaction protocol: atomic staging, journal, recovery, GC, the lock."""

from __future__ import annotations

import hashlib
import io
import json
import subprocess
import sys
import textwrap

import pytest

from llmos_cli.errors import IntegrityError
from llmos_cli.paths import get_paths
from llmos_cli.pkg.manifest import FileRecord
from llmos_cli.state.db import StateDB, lock_held, state_lock
from llmos_cli.state.store import Store
from tests.helpers.installtools import build_registry, check_consistent, db_rows, snapshot, store_listing, use_registry


def rec(data: bytes) -> FileRecord:
    return FileRecord(hashlib.sha256(data).hexdigest(), len(data))


# ---------------------------------------------------------------- store


def test_store_keeps_one_read_only_copy_per_content(llmos_home):
    store = Store(get_paths())
    a = store.add_stream(io.BytesIO(b"same bytes"), rec(b"same bytes"))
    b = store.add_stream(io.BytesIO(b"same bytes"), rec(b"same bytes"))
    assert a == b == hashlib.sha256(b"same bytes").hexdigest()
    p = store.path_for(a)
    assert p == llmos_home / "store" / a[:2] / a
    assert p.read_bytes() == b"same bytes" and p.stat().st_mode & 0o777 == 0o444
    assert list(store.iter_blobs()) == [a]
    assert store.verify_blob(a)


@pytest.mark.parametrize("data", [b"other bytes", b"same byte", b"same bytes plus more"])
def test_store_refuses_bytes_that_do_not_match_and_leaves_nothing(llmos_home, data):
    store = Store(get_paths())
    with pytest.raises(IntegrityError):
        store.add_stream(io.BytesIO(data), rec(b"same bytes"))
    assert list(store.iter_blobs()) == []
    assert list((llmos_home / "staging").iterdir()) == []


def test_store_refuses_a_digest_that_is_not_one(llmos_home):
    with pytest.raises(IntegrityError):
        Store(get_paths()).path_for("../../etc/passwd")


def test_store_gc_deletes_only_unreferenced_blobs(llmos_home):
    store = Store(get_paths())
    keep = store.add_bytes(b"keep")
    drop = store.add_bytes(b"drop")
    assert store.gc({keep}) == 1
    assert store.has(keep) and not store.has(drop)
    assert not (llmos_home / "store" / drop[:2]).exists() or drop[:2] == keep[:2]


def test_verify_blob_detects_changed_and_missing(llmos_home):
    store = Store(get_paths())
    s = store.add_bytes(b"content")
    p = store.path_for(s)
    p.chmod(0o644)
    p.write_bytes(b"CONTENT")
    assert not store.verify_blob(s)
    p.unlink()
    assert store.hash_blob(s) is None


# ---------------------------------------------------------------- lock


def test_state_lock_is_reentrant_within_a_process(llmos_home):
    paths = get_paths()
    with state_lock(paths, "outer", timeout=0):
        assert lock_held(paths)
        with state_lock(paths, "inner", timeout=0):
            assert lock_held(paths)
        assert lock_held(paths)
    assert not lock_held(paths)


HOLD_LOCK = textwrap.dedent(
    """
    import sys, time
    from llmos_cli.paths import get_paths
    from llmos_cli.state.db import state_lock
    with state_lock(get_paths(), "test holder"):
        print("locked", flush=True)
        time.sleep(float(sys.argv[1]))
    """
)


def hold_lock(seconds: float) -> subprocess.Popen:
    p = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(seconds)], stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "locked"
    return p


# ---------------------------------------------------------------- recovery


@pytest.fixture
def reg(tmp_path, cli):
    r = build_registry(
        tmp_path,
        [
            dict(name="ta", files={"docs/a.md": "a\n"}),
            dict(name="tb", depends=["ta"], files={f"docs/b{i}.md": f"b{i}\n" for i in range(5)}),
        ],
    )
    use_registry(cli, r)
    return r


def fake_crash(home, argv=("llmos", "install", "tx"), junk=True) -> tuple[int, str]:
    """Leave what a process killed mid-transaction leaves: a pending row, an orphan blob, a staging temp."""
    paths = get_paths()
    db = StateDB.open(paths)
    with db.transaction():
        txid = db.begin_history("install", list(argv), [{"action": "install", "name": "tx"}])
    db.close()
    orphan = Store(paths).add_bytes(b"orphan blob of an unfinished install")
    if junk:
        (home / "staging").mkdir(exist_ok=True)
        (home / "staging" / "deadbeef.123.abcd.incomplete").write_bytes(b"half a fi")
    return txid, orphan


def test_next_command_rolls_back_a_killed_transaction_with_a_message(reg, cli, llmos_home):
    assert cli("install", "ta").exit_code == 0
    installed_before = db_rows(llmos_home)["packages"]
    txid, orphan = fake_crash(llmos_home)
    r = cli("list")
    assert r.exit_code == 0, r
    assert f"recovered from an interrupted `llmos install tx` (transaction {txid}): rolled back" in r.stderr
    hist = {t["id"]: t["status"] for t in cli("history", "--json").json()["data"]["transactions"]}
    assert hist[txid] == "rolled_back"
    assert not Store(get_paths()).has(orphan)
    assert list((llmos_home / "staging").iterdir()) == []
    assert db_rows(llmos_home)["packages"] == installed_before
    check_consistent(llmos_home)
    r = cli("list")  # once only
    assert "recovered" not in r.stderr


def test_recovery_notice_is_a_json_warning(reg, cli, llmos_home):
    txid, _ = fake_crash(llmos_home, junk=False)
    r = cli("list", "--json")
    env = r.json()
    assert env["ok"] is True
    assert env["warnings"] == [f"recovered from an interrupted `llmos install tx` (transaction {txid}): rolled back"]


def test_changing_command_recovers_first_then_runs(reg, cli, llmos_home):
    txid, orphan = fake_crash(llmos_home)
    r = cli("install", "tb", "-y")
    assert r.exit_code == 0, r
    assert f"(transaction {txid}): rolled back" in r.stderr
    assert check_consistent(llmos_home) == {"ta": "1.0.0", "tb": "1.0.0"}
    assert not Store(get_paths()).has(orphan)


def test_unfinished_cleanup_after_commit_is_finished_silently(reg, cli, llmos_home):
    assert cli("install", "ta").exit_code == 0
    paths = get_paths()
    orphan = Store(paths).add_bytes(b"blob of a package removed just before a kill")
    db = StateDB.open(paths)
    with db.transaction():
        db.set_meta("gc_needed", "1")
    db.close()
    r = cli("list")
    assert r.exit_code == 0 and "recovered" not in r.stderr
    assert not Store(paths).has(orphan)
    assert db_rows(llmos_home)["meta"] == [("schema_version", "1")]


def test_read_only_command_leaves_a_live_transaction_alone(reg, cli, llmos_home):
    txid, orphan = fake_crash(llmos_home, junk=False)
    holder = hold_lock(60)
    try:
        r = cli("list")
        assert r.exit_code == 0, r
        assert "recovered" not in r.stderr
        assert Store(get_paths()).has(orphan)
        assert [t["status"] for t in cli("history", "--json").json()["data"]["transactions"]] == ["pending"]
    finally:
        holder.kill()
        holder.wait()
    r = cli("list")
    assert f"(transaction {txid}): rolled back" in r.stderr


def test_failure_while_staging_rolls_back_in_process(tmp_path, reg, cli, llmos_home):
    """A write error halfway through staging: old set kept, staged blobs removed, history says rolled_back."""
    assert cli("install", "ta").exit_code == 0
    before = snapshot(llmos_home)
    # block the store folder of tb's last file with a plain file: staging its first files works, this one fails
    digests = {f"b{i}": hashlib.sha256(f"b{i}\n".encode()).hexdigest() for i in range(5)}
    last = digests["b4"]
    others = {d[:2] for k, d in digests.items() if k != "b4"} | {p.split("/")[1] for p in before["store"]}
    assert last[:2] not in others
    (llmos_home / "store" / last[:2]).write_bytes(b"in the way")
    r = cli("install", "tb", "--json")
    assert r.exit_code == 9, r
    assert r.json()["error"]["code"] == "io"
    (llmos_home / "store" / last[:2]).unlink()
    assert snapshot(llmos_home)["store"] == before["store"]
    assert db_rows(llmos_home)["packages"] == before["db"]["packages"]
    tr = cli("history", "--json").json()["data"]["transactions"]
    assert tr[0]["status"] == "rolled_back" and tr[0]["argv"] == ["llmos", "install", "tb"]
    check_consistent(llmos_home)
    # and the same install works once the obstacle is gone
    assert cli("install", "tb").exit_code == 0
    assert check_consistent(llmos_home) == {"ta": "1.0.0", "tb": "1.0.0"}


def test_second_process_waits_for_the_lock(reg, cli, llmos_home, llmos_proc):
    holder = hold_lock(2)
    try:
        r = llmos_proc("install", "ta", env={"LLMOS_LOCK_TIMEOUT": "60"})
        assert r.exit_code == 0, r
    finally:
        holder.wait()
    assert check_consistent(llmos_home) == {"ta": "1.0.0"}


def test_history_rows_are_json(reg, cli, llmos_home):
    assert cli("install", "tb", "-y").exit_code == 0
    row = db_rows(llmos_home)["history"][-1]
    assert row[4] == json.dumps(["llmos", "install", "tb"]) and row[5] == "done"
    actions = json.loads(row[6])
    assert [a["name"] for a in actions] == ["ta", "tb"]
    assert store_listing(llmos_home)
