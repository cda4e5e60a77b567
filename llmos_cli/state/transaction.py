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

Opening the state, recovery and the test hooks (``checkpoint``) live in
``state/session.py``; their names are re-exported here.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llmos_cli.errors import (
    LlmosError,
    from_os_error,
)
from llmos_cli.paths import Paths
from llmos_cli.pkg.manifest import Manifest
from llmos_cli.progress import Reporter
from llmos_cli.resolve import Action
from llmos_cli.state.db import InstalledFile, InstalledPackage, StateDB, now_iso
from llmos_cli.state.session import (  # noqa: F401  (re-exported: callers use tx.open_state, tx.recover ...)
    CRASH_ENV,
    DELAY_ENV,
    FILL_ENV,
    STEPS,
    Recovered,
    _command_line,
    _fill_disk,
    _free_space,
    _sqlite_error,
    checkpoint,
    collect_garbage,
    needs_recovery,
    open_state,
    reading_store,
    recover,
)
from llmos_cli.state.store import Store
from llmos_cli.state.unpack import stage_archive


@dataclass
class StagedPackage:
    """An install/upgrade/downgrade action whose payload is in the store."""

    action: Action
    manifest: Manifest
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
