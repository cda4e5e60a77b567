"""Carry out a resolver ``Plan`` all-or-nothing, and recover from a killed run.

The protocol (one switch, the SQLite commit)::

    take the state lock
    recover()                      roll back any transaction a killed process left
    journal: history row 'pending', COMMIT
    fetch every archive, check it is the package the plan names
    stage every payload file into the content-addressed store (hash-verified)
    ONE SQLite transaction: packages/files/marks + history 'done' + meta.gc_needed=1, COMMIT
    gc: delete blobs no file row references, empty staging, clear gc_needed

Blobs of the new set are in the store before the commit, and blobs of the
old set are deleted only after it, so at every instant each ``files`` row
points at a complete blob.  A kill before the commit leaves the old set plus
some unreferenced blobs and a 'pending' row; the next command (``recover``)
marks it ``rolled_back`` and deletes the orphans.  A kill after the commit
leaves the new set and ``gc_needed``; the next command finishes the clean-up.

Test hooks: ``LLMOS_TEST_CRASH_AT=<step>`` makes the process ``os._exit(137)``
at that named step (see ``STEPS``) and ``LLMOS_TEST_STEP_DELAY=<seconds>``
sleeps at every step, so kill tests can hit each instant of a transaction.
``LLMOS_TEST_FILL_AT=<step>:<file>`` fills the disk at that step by writing
``file`` until the file system is full (at most 256 MiB: meant for a small
tmpfs), so disk-full tests hit each instant with a real ``ENOSPC``.
"""

from __future__ import annotations

import json
import os
import sqlite3
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llmos_cli.errors import (
    IOFailure,
    LlmosError,
    LockedError,
    from_os_error,
)
from llmos_cli.paths import Paths
from llmos_cli.progress import NullReporter, Reporter
from llmos_cli.state.db import InstalledFile, InstalledPackage, StateDB, now_iso, sqlite_error, state_lock, store_lock
from llmos_cli.state.store import Store
from llmos_cli.state.unpack import stage_archive

CRASH_ENV = "LLMOS_TEST_CRASH_AT"
DELAY_ENV = "LLMOS_TEST_STEP_DELAY"
FILL_ENV = "LLMOS_TEST_FILL_AT"

#: Named instants of a transaction, in order ("db-written" is inside the
#: SQLite transaction, just before COMMIT).
STEPS = ("locked", "journal", "fetched", "staging", "staged", "db-written", "committed", "gc", "done")


def checkpoint(step: str) -> None:
    """Test hook: crash or pause at a named step; a no-op in normal use."""
    delay = os.environ.get(DELAY_ENV)
    if delay:
        try:
            time.sleep(float(delay))
        except ValueError:
            pass
    fill = os.environ.get(FILL_ENV)
    if fill and fill.partition(":")[0] == step:
        _fill_disk(Path(fill.partition(":")[2]))
    if os.environ.get(CRASH_ENV) == step:
        try:
            sys.stderr.write(f"[test hook] crashing at step {step}\n")
            sys.stderr.flush()
        finally:
            os._exit(137)


def _fill_disk(path: Path, limit: int = 256 << 20) -> None:
    """Test hook: write ``path`` until the disk is full (or ``limit`` bytes)."""
    block = b"\0" * 4096
    written = 0
    try:
        with open(path, "ab", buffering=0) as fh:
            while written < limit:
                written += fh.write(block)
    except OSError:
        pass


# ---------------------------------------------------------------- opening state


def _sqlite_error(exc: sqlite3.Error, db_path: Any, paths: Paths | None = None) -> LlmosError:
    return sqlite_error(exc, db_path, paths)


@contextmanager
def open_state(paths: Paths, command: str, *, write: bool, reporter: Reporter | None = None) -> Iterator[StateDB]:
    """Open the state DB for a command, recovering a killed transaction first.

    ``write=True`` holds the state lock for the whole block.  A read-only
    command recovers only when the lock is free right now (a pending row
    under a held lock is a transaction still running, not a dead one).
    SQLite errors inside the block become StateError/LockedError/IOFailure.
    """
    rep = reporter or NullReporter()
    try:
        if write:
            with state_lock(paths, command):
                checkpoint("locked")
                db = StateDB.open(paths)
                try:
                    recover(paths, db, rep)
                    yield db
                finally:
                    db.close()
        else:
            db = StateDB.open(paths)
            try:
                if needs_recovery(paths, db):
                    try:
                        with state_lock(paths, command, timeout=0):
                            recover(paths, db, rep)
                    except LockedError:
                        pass  # a live transaction; its owner cleans up
                    except (IOFailure, sqlite3.OperationalError) as exc:
                        # a full or read-only disk must not stop a command that only reads
                        err = exc if isinstance(exc, LlmosError) else _sqlite_error(exc, paths.db, paths)
                        if isinstance(err, LockedError):
                            pass
                        elif isinstance(err, IOFailure):
                            rep.warn(f"recovery of an interrupted transaction is unfinished ({err.message}); the next command retries it")
                        else:
                            raise err from exc
                yield db
            finally:
                db.close()
    except sqlite3.Error as exc:
        raise _sqlite_error(exc, paths.db, paths) from exc


@contextmanager
def reading_store(paths: Paths) -> Iterator[None]:
    """Hold the store's reader lock: no blob is deleted until the block ends (``llmos verify``)."""
    with store_lock(paths, shared=True):
        yield


# ---------------------------------------------------------------- recovery


@dataclass
class Recovered:
    txid: int
    command_line: str

    def message(self) -> str:
        return f"recovered from an interrupted `{self.command_line}` (transaction {self.txid}): rolled back"

    def to_json(self) -> dict:
        return {"txid": self.txid, "command": self.command_line, "status": "rolled_back"}


def _command_line(row: sqlite3.Row) -> str:
    try:
        argv = json.loads(row["argv"])
        if isinstance(argv, list) and argv:
            return " ".join(str(a) for a in argv)
    except (ValueError, TypeError):
        pass
    return f"llmos {row['command']}"


def needs_recovery(paths: Paths, db: StateDB) -> bool:
    if db.get_meta("gc_needed"):
        return True
    if db.conn.execute("SELECT 1 FROM history WHERE status='pending' LIMIT 1").fetchone():
        return True
    try:
        return paths.staging.is_dir() and any(paths.staging.iterdir())
    except OSError:
        return False


def recover(paths: Paths, db: StateDB, reporter: Reporter) -> list[Recovered]:
    """Roll back transactions a killed process left pending; finish clean-ups.

    Call only while holding the state lock.  Idempotent: a kill during
    recovery is recovered by the next command.
    """
    if not needs_recovery(paths, db):
        return []
    out: list[Recovered] = []
    pending = db.pending_history()
    # Space first: llmos's own staging files and orphan blobs go before anything is
    # written, so a full disk cannot wedge every command.  Deleting them needs no
    # database write: a pending transaction never committed, so nothing references
    # its blobs.  A kill in between is recovered again by the next command.
    collected = _free_space(paths, db, reporter) is not None
    with db.transaction():
        for row in pending:
            db.finish_history(int(row["id"]), "rolled_back")
        db.set_meta("gc_needed", None if collected else "1")
    for row in pending:
        rec = Recovered(int(row["id"]), _command_line(row))
        out.append(rec)
        reporter.warn(rec.message())
    return out


def _free_space(paths: Paths, db: StateDB, reporter: Reporter) -> int | None:
    """Empty staging and delete unreferenced blobs: how many; None when a reader of the store (``verify``) defers it."""
    with store_lock(paths, shared=False, blocking=False) as got:
        if not got:
            reporter.debug("another llmos process is reading the store: unreferenced files are left for the next command")
            return None
        store = Store(paths)
        store.clean_staging()
        removed = store.gc(db.referenced_blobs(), on_delete=lambda _sha: checkpoint("gc"))
    if removed:
        reporter.debug(f"removed {removed} unreferenced file(s) from the store")
    return removed


def collect_garbage(paths: Paths, db: StateDB, reporter: Reporter) -> int:
    """Empty staging, delete unreferenced blobs, clear ``gc_needed`` (left set when a reader defers it)."""
    removed = _free_space(paths, db, reporter)
    if removed is None:
        return 0
    if db.get_meta("gc_needed"):
        with db.transaction():
            db.set_meta("gc_needed", None)
    return removed


# ---------------------------------------------------------------- execution


@dataclass
class StagedPackage:
    """An install/upgrade/downgrade action whose payload is in the store."""

    action: Any  # llmos_cli.resolve.Action
    manifest: Any  # llmos_cli.pkg.manifest.Manifest
    files: list[InstalledFile]
    source: str | None
    archive_sha256: str | None


@dataclass
class Executed:
    txid: int
    actions: list[dict]
    staged_files: int = 0
    staged_bytes: int = 0
    removed_blobs: int = 0
    archives: list[str] = field(default_factory=list)


def action_record(a: Any) -> dict:
    return {
        "action": a.op,
        "name": a.name,
        "old_version": a.old_version,
        "new_version": a.new_version,
        "auto": bool(a.auto),
        "reason": a.reason,
    }


def execute(
    paths: Paths,
    db: StateDB,
    plan: Any,
    *,
    command: str,
    argv: list[str],
    fetch: Callable[[Any, Reporter], tuple[Path, str | None, str | None]],
    reporter: Reporter,
    validate: Callable[..., None] | None = None,
) -> Executed:
    """Run ``plan`` (a resolver Plan) inside an already-open, locked ``db``.

    ``fetch(action, reporter) -> (archive path, source name, archive sha256)``
    supplies the archive of an install/upgrade/downgrade action, already
    checked against its index entry; its content is checked while staging.
    ``validate(manifest, locate, label=...)`` then checks each staged package
    (its GGUF files: ``locate(rel)`` is a payload file's path in the store)
    before anything is committed; it raises to refuse the package.
    """

    records = [action_record(a) for a in plan.actions]
    with db.transaction():
        txid = db.begin_history(command, argv, records)
    checkpoint("journal")
    store = Store(paths)
    result = Executed(txid, records)
    try:
        # 1. fetch every archive (downloads, checked against the index) before touching the store
        fetched: list[tuple[Any, Path, str | None, str | None]] = []
        for a in plan.actions:
            if a.op in ("install", "upgrade", "downgrade"):
                path, source, sha = fetch(a, reporter)
                fetched.append((a, Path(path), source, sha))
                result.archives.append(str(path))
        checkpoint("fetched")
        # 2. stage every payload file into the store: one streaming pass per archive, every file hash-verified
        staged: list[StagedPackage] = []
        with reporter.task("Unpacking", total=None, unit="bytes") as task:
            for a, path, source, sha in fetched:
                task.update(description=f"Unpacking {a.name} {a.new_version}")
                # sha: the bytes staged must be the bytes verified (one read of one descriptor, issue 11 item 11)
                st = stage_archive(store, path, name=a.name, version=a.new_version, sha256=sha, progress=task.advance, on_file=lambda: checkpoint("staging"))
                if validate is not None:
                    blobs = {f.path: store.path_for(f.sha256) for f in st.files}
                    validate(st.manifest, blobs.get, label=f"{a.name} {a.new_version}")
                staged.append(StagedPackage(a, st.manifest, st.files, source, sha))
                result.staged_files += len(st.files)
                result.staged_bytes += sum(f.size for f in st.files)
        checkpoint("staged")
        # 3. the single switch: one SQLite transaction
        by_name = {s.action.name: s for s in staged}
        with db.transaction():
            for a in plan.actions:
                old = db.get(a.name, with_files=False)
                if a.op == "remove":
                    db.delete_package(a.name)
                elif a.op in ("mark-manual", "mark-auto"):
                    db.set_flag(a.name, "auto", int(a.op == "mark-auto"))
                else:
                    s = by_name[a.name]
                    db.put_package(
                        InstalledPackage(
                            meta=s.manifest.meta,
                            manifest=s.manifest.raw,
                            auto=bool(a.auto),
                            held=old.held if old else False,
                            attached=old.attached if old else True,
                            scale=old.scale if old else None,
                            source=s.source,
                            archive_sha256=s.archive_sha256,
                            installed_at=now_iso(),
                            files=s.files,
                        ),
                        txid,
                    )
            db.finish_history(txid, "done")
            db.set_meta("gc_needed", "1")
            checkpoint("db-written")
    except BaseException as exc:
        _abort(paths, db, txid, reporter)
        if isinstance(exc, OSError):
            raise from_os_error(exc, "installing") from exc
        if isinstance(exc, sqlite3.Error):
            raise _sqlite_error(exc, paths.db) from exc
        raise
    checkpoint("committed")
    # 4. clean up: blobs of the old set that nothing references any more.  The
    # transaction is done: whatever fails from here on is a warning, never a failure.
    try:
        result.removed_blobs = collect_garbage(paths, db, reporter)
    except (LlmosError, OSError, sqlite3.Error) as exc:  # the next command retries
        msg = exc.message if isinstance(exc, LlmosError) else str(exc)
        reporter.warn(f"transaction {txid} is done, but its clean-up failed ({msg}); the next command retries it")
    checkpoint("done")
    return result


def _abort(paths: Paths, db: StateDB, txid: int, reporter: Reporter) -> None:
    """Roll back in-process after a failure before the commit (best effort).

    The staged blobs are deleted first (no database write needed: nothing
    references them), then the journal row is closed; on a full disk the
    first step is what makes room for the second.
    """
    try:
        if db.conn.in_transaction:
            db.conn.execute("ROLLBACK")
    except sqlite3.Error as exc:
        reporter.debug(f"rollback of transaction {txid}: {exc}")
    collected = False
    try:
        collected = _free_space(paths, db, reporter) is not None
    except (sqlite3.Error, OSError, LlmosError) as exc:
        reporter.debug(f"clean-up after transaction {txid} incomplete: {exc}")
    try:
        with db.transaction():
            db.finish_history(txid, "rolled_back")
            db.set_meta("gc_needed", None if collected else "1")
    except (sqlite3.Error, OSError, LlmosError) as exc:  # the next command recovers
        reporter.debug(f"in-process rollback of transaction {txid} incomplete: {exc}")


def record_simple(db: StateDB, command: str, argv: list[str], records: list[dict], apply: Callable[[], None]) -> int:
    """A change that touches only the database (hold/unhold): one commit, one history row."""
    with db.transaction():
        txid = db.begin_history(command, argv, records)
        apply()
        db.finish_history(txid, "done")
    return txid
