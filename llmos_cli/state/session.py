"""Opening the state for a command, and recovering from a killed run.

``open_state(paths, command, write=...)`` takes the state lock (for writers),
runs ``recover`` when a killed process left a pending journal or unreferenced
blobs, and yields the ``StateDB``.  Executing a plan is ``state/transaction.py``;
this module is kept apart so that read-only commands (``llmos list``) load
neither the unpacker nor the archive reader.

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
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmos_cli.errors import (
    IOFailure,
    LlmosError,
    LockedError,
)
from llmos_cli.paths import Paths
from llmos_cli.progress import NullReporter, Reporter
from llmos_cli.state.db import StateDB, sqlite_error, state_lock, store_lock
from llmos_cli.state.store import Store

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
