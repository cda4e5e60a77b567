"""The state database (SQLite, ``$LLMOS_HOME/state.db``).

It is the single source of truth for what is installed.  Payload files live in
the content-addressed store (``llmos_cli.state.store``); a blob is referenced
by the ``files`` table and is only deleted once no row references it.

Schema changes go through ``MIGRATIONS`` (forward only).  A database written
by a newer llmos is refused with ``StateError``.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llmos_cli.errors import IOFailure, LlmosError, LockedError, StateError, from_os_error
from llmos_cli.fileio import fsync_dir
from llmos_cli.paths import Paths
from llmos_cli.pkg.meta import MetaView, PackageMeta

if TYPE_CHECKING:
    from llmos_cli.pkg.manifest import Manifest

SCHEMA_VERSION = 1

MIGRATIONS: dict[int, str] = {
    1: """
    CREATE TABLE meta(key TEXT PRIMARY KEY, value TEXT);
    CREATE TABLE packages(
        name TEXT PRIMARY KEY,
        version TEXT NOT NULL,
        kind TEXT NOT NULL,
        meta TEXT NOT NULL,            -- PackageMeta JSON (relations)
        manifest TEXT NOT NULL,        -- the full manifest as JSON (llmos.toml of the archive)
        auto INTEGER NOT NULL DEFAULT 0,
        held INTEGER NOT NULL DEFAULT 0,
        attached INTEGER NOT NULL DEFAULT 1,
        scale REAL,                    -- NULL: the manifest's adapter.scale (or 1.0)
        source TEXT,
        archive_sha256 TEXT,
        installed_at TEXT NOT NULL,
        txid INTEGER
    );
    CREATE TABLE files(
        package TEXT NOT NULL REFERENCES packages(name) ON DELETE CASCADE,
        path TEXT NOT NULL,
        sha256 TEXT NOT NULL,
        size INTEGER NOT NULL,
        mode INTEGER NOT NULL DEFAULT 420,
        PRIMARY KEY(package, path)
    );
    CREATE INDEX files_sha256 ON files(sha256);
    CREATE TABLE history(
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        started TEXT NOT NULL,
        finished TEXT,
        command TEXT NOT NULL,
        argv TEXT NOT NULL,            -- JSON list
        status TEXT NOT NULL,          -- pending | done | rolled_back
        actions TEXT NOT NULL          -- JSON list of {action, name, old_version, new_version}
    );
    CREATE TABLE sources(
        name TEXT PRIMARY KEY,
        url TEXT NOT NULL,
        kind TEXT NOT NULL,            -- dir | http | hf
        key TEXT,                      -- pinned ed25519 public key (base64), like apt's Signed-By
        allow_unsigned INTEGER NOT NULL DEFAULT 0,
        enabled INTEGER NOT NULL DEFAULT 1,
        priority INTEGER NOT NULL DEFAULT 0,
        added TEXT NOT NULL,
        index_version INTEGER,         -- version counter of the last accepted index (rollback protection)
        index_created TEXT,
        updated TEXT
    );
    CREATE TABLE settings(key TEXT PRIMARY KEY, value TEXT NOT NULL);
    CREATE TABLE tool_permissions(tool TEXT PRIMARY KEY, allowed INTEGER NOT NULL, changed TEXT NOT NULL);
    """,
}


def now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


# ---------------------------------------------------------------- opening and creating

_SQLITE_MAGIC = b"SQLite format 3\x00"
_RESTORE = "restore state.db from a backup; llmos changed nothing (delete it only if nothing was ever installed in this LLMOS_HOME)"


def apply_migrations(conn: sqlite3.Connection, current: int) -> None:
    """Apply every migration after ``current`` on ``conn`` (inside the caller's transaction)."""
    for version in range(current + 1, SCHEMA_VERSION + 1):
        for stmt in MIGRATIONS[version].split(";"):
            if stmt.strip():
                conn.execute(stmt)
        conn.execute("INSERT OR REPLACE INTO meta(key, value) VALUES('schema_version', ?)", (str(version),))


def _inspect_db_file(db: Path) -> bool:
    """Whether ``state.db`` exists; refuse (``StateError``) one that is empty or not SQLite."""
    try:
        with open(db, "rb") as fh:
            head = fh.read(len(_SQLITE_MAGIC))
    except FileNotFoundError:
        return False
    except IsADirectoryError:
        raise StateError(f"state database {db} is a directory", _RESTORE) from None
    except OSError as exc:
        raise IOFailure(f"cannot read the state database {db}: {exc.strerror or exc}", _PERM_HINT) from None
    if not head:
        raise StateError(f"state database {db} is empty (0 bytes)", _RESTORE)
    if head != _SQLITE_MAGIC:
        raise StateError(f"state database {db} is not an SQLite database", _RESTORE)
    return True


def _store_has_blobs(paths: Paths) -> bool:
    try:
        return paths.store.is_dir() and any(paths.store.iterdir())
    except OSError as exc:
        raise from_os_error(exc, "reading the store") from exc


def _create_db(paths: Paths) -> None:
    """Create ``state.db`` complete or not at all, safely when several processes start at once.

    The schema is written into a private temp file, which is then hard-linked
    to ``state.db`` (``link`` fails when the name exists, so the first process
    wins and the others open its database).  Where hard links are not
    supported, the temp file is renamed under the state lock instead.
    """
    import uuid

    db = paths.db
    try:
        paths.home.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise from_os_error(exc, "creating LLMOS_HOME") from exc
    tmp = paths.home / f".state.db.{os.getpid()}.{uuid.uuid4().hex[:8]}.init"
    try:
        try:
            conn = sqlite3.connect(str(tmp), isolation_level=None)
            try:
                conn.execute("BEGIN IMMEDIATE")
                apply_migrations(conn, 0)
                conn.execute("COMMIT")
                conn.execute("PRAGMA journal_mode=WAL")  # recorded in the file header
            finally:
                conn.close()
            with open(tmp, "rb+") as fh:
                os.fsync(fh.fileno())
        except sqlite3.Error as exc:
            raise sqlite_error(exc, tmp, paths) from exc
        except OSError as exc:
            raise from_os_error(exc, "creating the state database") from exc
        try:
            os.link(tmp, db)
        except FileExistsError:
            pass  # another process created it first: use that one
        except OSError:
            with state_lock(paths, "creating the state database"):
                if not db.exists():
                    os.replace(tmp, db)
        fsync_dir(paths.home)
    finally:
        for p in (tmp, tmp.with_name(tmp.name + "-wal"), tmp.with_name(tmp.name + "-shm"), tmp.with_name(tmp.name + "-journal")):
            try:
                p.unlink()
            except OSError:
                pass


_PERM_HINT = "check the permissions of LLMOS_HOME, or point LLMOS_HOME somewhere writable"


def _os_reason(db: Path, paths: Paths | None) -> str | None:
    """The operating system's reason why ``db`` (or LLMOS_HOME) cannot be written, if there is one."""
    import uuid

    try:
        with open(db, "rb+"):
            pass
    except FileNotFoundError:
        pass
    except OSError as exc:
        return f"{db}: {exc.strerror or exc}"
    home = paths.home if paths is not None else db.parent
    probe = home / f".llmos-write-probe.{os.getpid()}.{uuid.uuid4().hex[:6]}"
    try:
        fd = os.open(str(probe), os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    except OSError as exc:
        return f"{home}: {exc.strerror or exc}"
    os.close(fd)
    try:
        probe.unlink()
    except OSError:
        pass
    return None


def sqlite_error(exc: sqlite3.Error, db_path: Any, paths: Paths | None = None) -> LlmosError:
    """Name what an SQLite error means for the user, with the right exit code.

    locked or busy: ``LockedError`` (7); full, read-only, permission, I/O:
    ``IOFailure`` (9) with the OS reason; anything else: ``StateError`` (8).
    """
    text = str(exc).lower()
    code = getattr(exc, "sqlite_errorcode", None)
    if "locked" in text or "busy" in text or code in (getattr(sqlite3, "SQLITE_BUSY", 5), getattr(sqlite3, "SQLITE_LOCKED", 6)):
        return LockedError(f"the state database {db_path} is locked by another process", "wait for it to finish, or raise LLMOS_LOCK_TIMEOUT")
    if "full" in text:
        return IOFailure(f"no space left on device while writing {db_path}", "free some disk space and try again")
    if "readonly" in text or "read-only" in text or "unable to open" in text or "disk i/o" in text or "permission" in text:
        reason = _os_reason(Path(db_path), paths)
        if reason:
            return IOFailure(f"cannot write the state database {db_path} ({reason})", _PERM_HINT)
        return IOFailure(f"cannot use the state database {db_path} ({exc})", _PERM_HINT)
    return StateError(f"the state database {db_path} is corrupt: {exc}", "restore state.db from a backup")


@dataclass
class InstalledFile:
    path: str
    sha256: str
    size: int
    mode: int = 0o644


@dataclass
class InstalledPackage(MetaView):
    meta: PackageMeta
    #: the manifest as stored (JSON of the archive's llmos.toml); read it through ``typed_manifest``
    manifest: dict[str, Any]
    auto: bool
    held: bool
    attached: bool
    scale: float | None
    source: str | None
    archive_sha256: str | None
    installed_at: str
    files: list[InstalledFile] = field(default_factory=list)

    @cached_property
    def typed_manifest(self) -> Manifest:
        """The stored manifest's typed view (it was validated when the package was installed)."""
        # The one start-up exception to top-level imports: the manifest schema is loaded on
        # first use, so that `llmos list` (a start-up benchmark) does not pay for it.
        from llmos_cli.pkg.manifest import Manifest

        return Manifest.from_table(self.manifest)

    def effective_scale(self) -> float:
        if self.scale is not None:
            return float(self.scale)
        adapter = self.typed_manifest.adapter
        return adapter.scale if adapter else 1.0

    def to_json(self) -> dict:
        return {
            **self.meta.to_json(),
            "auto": self.auto,
            "held": self.held,
            "attached": self.attached,
            "scale": self.effective_scale(),
            "source": self.source,
            "installed_at": self.installed_at,
        }


@dataclass
class SourceRow:
    name: str
    url: str
    kind: str
    key: str | None
    allow_unsigned: bool
    enabled: bool
    priority: int
    added: str
    index_version: int | None
    index_created: str | None
    updated: str | None

    def to_json(self) -> dict:
        return {
            "name": self.name,
            "url": self.url,
            "kind": self.kind,
            "signed_by": self.key,
            "trust": "pinned-key" if self.key else ("unsigned-allowed" if self.allow_unsigned else "untrusted"),
            "enabled": self.enabled,
            "priority": self.priority,
            "index_version": self.index_version,
            "updated": self.updated,
        }


class StateDB:
    """Thin wrapper around the sqlite3 connection with typed accessors."""

    def __init__(self, conn: sqlite3.Connection, path: Path):
        self.conn = conn
        self.path = path

    # ------------------------------------------------------------ opening

    @classmethod
    def open(cls, paths: Paths, *, create: bool = True) -> StateDB:
        """Open ``state.db``; create it (atomically, complete) when LLMOS_HOME has none.

        A file that is empty or not SQLite is refused (``StateError``, exit 8)
        and left as it is: it is never taken for a fresh database, so nothing
        in the store is collected because of it.  Permission and read-only
        problems are ``IOFailure`` (exit 9) with the operating system's reason;
        a lock held too long is ``LockedError`` (exit 7).
        """
        db = paths.db
        if not _inspect_db_file(db):
            store_has_blobs = _store_has_blobs(paths)
            if store_has_blobs:
                raise StateError(
                    f"state database {db} is missing but the store holds installed files",
                    "restore state.db from a backup, or move LLMOS_HOME away to start afresh",
                )
            if not create:
                raise StateError(f"no state database at {db}", "install something first, or check LLMOS_HOME")
            _create_db(paths)
        conn = None
        try:
            wait = _lock_timeout()  # SQLite waits for another process as long as the state lock does
            conn = sqlite3.connect(str(db), timeout=wait, isolation_level=None)
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA foreign_keys=ON")
            conn.execute(f"PRAGMA busy_timeout={max(0, int(wait * 1000))}")
            if conn.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
                conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            self = cls(conn, db)
            self._migrate()
        except sqlite3.Error as exc:
            if conn is not None:
                conn.close()
            raise sqlite_error(exc, db, paths) from exc
        except BaseException:
            if conn is not None:
                conn.close()
            raise
        return self

    def close(self) -> None:
        self.conn.close()

    def _schema_version(self) -> int:
        if not self.conn.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='meta'").fetchone():
            return 0
        row = self.conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
        try:
            return int(row[0]) if row else 0
        except (TypeError, ValueError):
            raise StateError(f"state database {self.path} has an invalid schema_version {row[0]!r}", "restore state.db from a backup") from None

    def _migrate(self) -> None:
        """Bring the schema forward.  The version is read again inside the write transaction,
        so two processes migrating at once cannot both apply a step."""
        current = self._schema_version()
        if current > SCHEMA_VERSION:
            raise StateError(
                f"state database schema {current} is newer than this llmos understands ({SCHEMA_VERSION})",
                "upgrade llmos",
            )
        if current == SCHEMA_VERSION:
            return
        with self.transaction():
            apply_migrations(self.conn, self._schema_version())

    @contextmanager
    def snapshot(self) -> Iterator[StateDB]:
        """Every read inside sees one consistent state (a deferred read transaction in WAL mode)."""
        self.conn.execute("BEGIN")
        try:
            yield self
        finally:
            self.conn.execute("COMMIT")

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE ... COMMIT; rolls back on any exception."""
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            yield self.conn
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        else:
            self.conn.execute("COMMIT")

    # ------------------------------------------------------------ meta/settings

    def get_meta(self, key: str) -> str | None:
        row = self.conn.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return row[0] if row else None

    def set_meta(self, key: str, value: str | None) -> None:
        if value is None:
            self.conn.execute("DELETE FROM meta WHERE key=?", (key,))
        else:
            self.conn.execute("INSERT OR REPLACE INTO meta(key, value) VALUES(?, ?)", (key, value))

    def get_setting(self, key: str, default: str | None = None) -> str | None:
        row = self.conn.execute("SELECT value FROM settings WHERE key=?", (key,)).fetchone()
        return row[0] if row else default

    def set_setting(self, key: str, value: str | None) -> None:
        if value is None:
            self.conn.execute("DELETE FROM settings WHERE key=?", (key,))
        else:
            self.conn.execute("INSERT OR REPLACE INTO settings(key, value) VALUES(?, ?)", (key, value))

    # ------------------------------------------------------------ packages

    def _row_to_pkg(self, row: sqlite3.Row, with_files: bool) -> InstalledPackage:
        pkg = InstalledPackage(
            meta=PackageMeta.from_json(json.loads(row["meta"])),
            manifest=json.loads(row["manifest"]),
            auto=bool(row["auto"]),
            held=bool(row["held"]),
            attached=bool(row["attached"]),
            scale=row["scale"],
            source=row["source"],
            archive_sha256=row["archive_sha256"],
            installed_at=row["installed_at"],
        )
        if with_files:
            pkg.files = self.files(pkg.name)
        return pkg

    def installed(self, *, with_files: bool = False) -> dict[str, InstalledPackage]:
        rows = self.conn.execute("SELECT * FROM packages ORDER BY name").fetchall()
        return {r["name"]: self._row_to_pkg(r, with_files) for r in rows}

    def get(self, name: str, *, with_files: bool = True) -> InstalledPackage | None:
        row = self.conn.execute("SELECT * FROM packages WHERE name=?", (name,)).fetchone()
        return self._row_to_pkg(row, with_files) if row else None

    def files(self, name: str) -> list[InstalledFile]:
        rows = self.conn.execute("SELECT path, sha256, size, mode FROM files WHERE package=? ORDER BY path", (name,)).fetchall()
        return [InstalledFile(r["path"], r["sha256"], r["size"], r["mode"]) for r in rows]

    def put_package(self, pkg: InstalledPackage, txid: int | None) -> None:
        """Insert or replace a package and its files (call inside ``transaction()``)."""
        self.conn.execute("DELETE FROM packages WHERE name=?", (pkg.name,))
        self.conn.execute(
            "INSERT INTO packages(name, version, kind, meta, manifest, auto, held, attached, scale, source, archive_sha256, installed_at, txid)"
            " VALUES(?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (
                pkg.name,
                pkg.version,
                pkg.kind,
                json.dumps(pkg.meta.to_json(), sort_keys=True),
                json.dumps(pkg.manifest, sort_keys=True),
                int(pkg.auto),
                int(pkg.held),
                int(pkg.attached),
                pkg.scale,
                pkg.source,
                pkg.archive_sha256,
                pkg.installed_at,
                txid,
            ),
        )
        self.conn.executemany(
            "INSERT INTO files(package, path, sha256, size, mode) VALUES(?,?,?,?,?)",
            [(pkg.name, f.path, f.sha256, f.size, f.mode) for f in pkg.files],
        )

    def delete_package(self, name: str) -> None:
        self.conn.execute("DELETE FROM packages WHERE name=?", (name,))

    def set_flag(self, name: str, column: str, value: Any) -> None:
        if column not in ("auto", "held", "attached", "scale"):
            raise ValueError(column)
        self.conn.execute(f"UPDATE packages SET {column}=? WHERE name=?", (value, name))

    def referenced_blobs(self) -> set[str]:
        return {r[0] for r in self.conn.execute("SELECT DISTINCT sha256 FROM files")}

    # ------------------------------------------------------------ history

    def begin_history(self, command: str, argv: list[str], actions: list[dict]) -> int:
        cur = self.conn.execute(
            "INSERT INTO history(started, command, argv, status, actions) VALUES(?,?,?,?,?)",
            (now_iso(), command, json.dumps(argv), "pending", json.dumps(actions)),
        )
        assert cur.lastrowid is not None
        return int(cur.lastrowid)

    def finish_history(self, txid: int, status: str) -> None:
        self.conn.execute("UPDATE history SET status=?, finished=? WHERE id=?", (status, now_iso(), txid))

    def pending_history(self) -> list[sqlite3.Row]:
        return self.conn.execute("SELECT * FROM history WHERE status='pending' ORDER BY id").fetchall()

    def history(self, limit: int | None = None) -> list[dict]:
        q = "SELECT * FROM history ORDER BY id DESC"
        rows = self.conn.execute(q + (f" LIMIT {int(limit)}" if limit else "")).fetchall()
        return [
            {
                "id": r["id"],
                "started": r["started"],
                "finished": r["finished"],
                "command": r["command"],
                "argv": json.loads(r["argv"]),
                "status": r["status"],
                "actions": json.loads(r["actions"]),
            }
            for r in rows
        ]

    # ------------------------------------------------------------ sources

    def sources(self) -> list[SourceRow]:
        rows = self.conn.execute("SELECT * FROM sources ORDER BY priority DESC, name").fetchall()
        return [
            SourceRow(
                name=r["name"],
                url=r["url"],
                kind=r["kind"],
                key=r["key"],
                allow_unsigned=bool(r["allow_unsigned"]),
                enabled=bool(r["enabled"]),
                priority=r["priority"],
                added=r["added"],
                index_version=r["index_version"],
                index_created=r["index_created"],
                updated=r["updated"],
            )
            for r in rows
        ]

    def add_source(self, name: str, url: str, kind: str, key: str | None = None, allow_unsigned: bool = False, priority: int = 0) -> None:
        self.conn.execute(
            "INSERT INTO sources(name, url, kind, key, allow_unsigned, priority, added) VALUES(?,?,?,?,?,?,?)",
            (name, url, kind, key, int(allow_unsigned), priority, now_iso()),
        )

    def remove_source(self, name: str) -> bool:
        return self.conn.execute("DELETE FROM sources WHERE name=?", (name,)).rowcount > 0

    def mark_source_updated(self, name: str, index_version: int | None, index_created: str | None) -> None:
        self.conn.execute(
            "UPDATE sources SET index_version=?, index_created=?, updated=? WHERE name=?",
            (index_version, index_created, now_iso(), name),
        )


# ---------------------------------------------------------------- the lock


def _lock_timeout() -> float:
    try:
        return float(os.environ.get("LLMOS_LOCK_TIMEOUT", "30"))
    except ValueError:
        return 30.0


#: lock file -> nesting depth of ``state_lock`` in this process
_HELD: dict[str, int] = {}


def lock_held(paths: Paths) -> bool:
    """True when this process already holds the state lock."""
    return bool(_HELD.get(str(paths.lock)))


@contextmanager
def state_lock(paths: Paths, command: str = "llmos", timeout: float | None = None) -> Iterator[None]:
    """Serialise every llmos process that changes state.

    The second process waits up to ``LLMOS_LOCK_TIMEOUT`` seconds (default 30)
    and then fails with ``LockedError`` naming the holder.
    """
    from filelock import FileLock, Timeout

    key = str(paths.lock)
    if _HELD.get(key):
        # Re-entrant within one process: a command holding the lock may call
        # helpers (e.g. ``update`` on first use) that take it again.
        _HELD[key] += 1
        try:
            yield
        finally:
            _HELD[key] -= 1
        return
    try:
        paths.home.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise from_os_error(exc, "creating LLMOS_HOME") from exc
    lock = FileLock(str(paths.lock), timeout=_lock_timeout() if timeout is None else timeout)
    owner = paths.home / "lock.owner"
    try:
        lock.acquire()
    except Timeout:
        holder = ""
        try:
            holder = owner.read_text().strip()
        except OSError:
            pass
        raise LockedError(
            f"another llmos process holds the state lock{f' ({holder})' if holder else ''}",
            "wait for it to finish, or raise LLMOS_LOCK_TIMEOUT",
        ) from None
    except OSError as exc:
        raise from_os_error(exc, "taking the state lock") from exc
    _HELD[key] = 1
    try:
        try:
            owner.write_text(f"pid {os.getpid()}: {command}, since {time.strftime('%H:%M:%S')}")
        except OSError:
            pass
        yield
    finally:
        _HELD.pop(key, None)
        lock.release()


@contextmanager
def store_lock(paths: Paths, *, shared: bool, blocking: bool = True) -> Iterator[bool]:
    """A reader/writer lock on the store's blobs (``flock`` on ``$LLMOS_HOME/store.lock``).

    Readers (``llmos verify``) hold it shared while they read the file list
    and hash the blobs; garbage collection takes it exclusive, without
    waiting: while anyone reads, unreferenced blobs stay until the next
    command.  So a reader never sees a blob of its snapshot deleted.  Yields
    whether the lock was taken (always True when ``blocking``).  Where
    ``fcntl`` does not exist (Windows) it yields True and locks nothing.
    """
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not on POSIX
        yield True
        return
    try:
        paths.home.mkdir(parents=True, exist_ok=True)
        fd = os.open(str(paths.store_lock), os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        if shared and not paths.home.is_dir():
            yield True  # nothing installed, nothing to protect
            return
        raise from_os_error(exc, "opening the store lock") from exc
    try:
        op = (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | (0 if blocking else fcntl.LOCK_NB)
        try:
            fcntl.flock(fd, op)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
