"""A binary cache of each source's list (apt's ``pkgcache.bin``), read lazily by the resolver.

Parsing a 65,000-version ``lists/<source>.json`` (``json.loads`` plus
``IndexEntry.from_json`` of every record) takes seconds, while a request
touches a few thousand records.  So next to each list llmos keeps
``lists/<source>.cache``, an SQLite file with one row per record (the record's
JSON as the list holds it, keyed by package name) and one row per provided
name.  The resolver's pool asks for a name and gets only those records,
parsed and validated on first use with the same code as the list
(``IndexEntry.from_json``).

The cache is never trusted over the list:

* it records the sha256 of the list bytes it was built from, and every load
  hashes the list (about 20 ms for 30 MB) and rebuilds the cache when they
  differ -- a new list from ``llmos update``, a list edited by hand, a cache
  from another list;
* it is built only from a list that ``Index.parse`` accepted in full (the list
  itself was trust-checked by ``update`` before it was stored);
* a cache that cannot be read (damaged, an older or newer cache schema) is
  rebuilt, and one that cannot be written (read-only home) is skipped: the
  list is then parsed in memory, as before.

Writes are atomic (a temp file renamed over the cache), so a reader never
sees a half-built cache and a killed build leaves the old one.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmos_cli.errors import InvalidPackageError, LlmosError, StateError
from llmos_cli.fileio import atomic_path
from llmos_cli.registry.index import Index, IndexEntry

CACHE_SUFFIX = ".cache"
#: bump when the layout changes; a cache of another schema is rebuilt
CACHE_SCHEMA = 1

Make = Callable[[IndexEntry], Any]


@dataclass(frozen=True)
class ListInfo:
    """The list's header, as recorded in the cache."""

    version: int
    created: str
    expires: str | None
    packages: int

    def as_index(self) -> Index:
        return Index(1, self.created, self.version, self.expires, [])


def list_digest(raw: bytes) -> str:
    return hashlib.sha256(raw).hexdigest()


def build(cache: Path, raw: bytes, origin: str, parsed: tuple[Index, list[dict]] | None = None) -> ListInfo:
    """Parse and validate the list (``InvalidPackageError`` if bad) and write its cache atomically.

    ``parsed``: what ``Index.parse(raw)`` returned, when the caller has it already.
    """
    index, records = parsed or Index.parse(raw, origin)
    info = ListInfo(index.version, index.created, index.expires, len(index.entries))
    with atomic_path(cache, suffix=".tmp") as tmp:
        conn = sqlite3.connect(tmp, isolation_level=None)
        try:
            conn.executescript(
                """
                PRAGMA journal_mode = OFF;
                PRAGMA synchronous = OFF;
                PRAGMA page_size = 8192;
                CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT) WITHOUT ROWID;
                CREATE TABLE pkg (id INTEGER PRIMARY KEY, name TEXT NOT NULL, record TEXT NOT NULL);
                CREATE TABLE prov (virtual TEXT NOT NULL, pkg INTEGER NOT NULL);
                """
            )
            conn.execute("BEGIN")
            dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), check_circular=False).encode
            conn.executemany(
                "INSERT INTO pkg (id, name, record) VALUES (?, ?, ?)",
                ((i, e.name, dumps(rec)) for i, (e, rec) in enumerate(zip(index.entries, records))),
            )
            conn.executemany(
                "INSERT INTO prov (virtual, pkg) VALUES (?, ?)",
                ((str(p), i) for i, e in enumerate(index.entries) for p in dict.fromkeys(e.meta.provides) if str(p) != e.name),
            )
            conn.execute("CREATE INDEX pkg_name ON pkg (name)")
            conn.execute("CREATE INDEX prov_virtual ON prov (virtual)")
            conn.executemany(
                "INSERT INTO meta (key, value) VALUES (?, ?)",
                [
                    ("schema", str(CACHE_SCHEMA)),
                    ("list_sha256", list_digest(raw)),
                    ("info", json.dumps(info.__dict__)),
                ],
            )
            conn.execute("COMMIT")
        finally:
            conn.close()
    return info


class ListCache:
    """One source's cache, opened read-only; a ``CandidateSource`` once given ``make``.

    ``make(entry)`` turns an index entry into the resolver's ``Candidate``
    (the caller decides its origin and priority).  Each record is parsed at
    most once, so the same name always yields the same candidate objects.
    """

    def __init__(self, conn: sqlite3.Connection, info: ListInfo, origin: str, make: Make | None = None, path: Path | None = None):
        self.conn = conn
        self.path = path
        self.info = info
        self.origin = origin
        self.make: Make = make or (lambda e: e)
        self._objs: dict[int, Any] = {}
        self._named: dict[str, list[Any]] = {}
        self._providing: dict[str, list[Any]] = {}

    @classmethod
    def open(cls, cache: Path, raw: bytes, origin: str) -> ListCache | None:
        """The cache if it exists, is readable and was built from exactly ``raw``; else None."""
        if not cache.is_file():
            return None
        try:
            conn = sqlite3.connect(f"{cache.resolve().as_uri()}?mode=ro", uri=True, check_same_thread=False)
        except sqlite3.Error:
            return None
        try:
            meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
            if meta.get("schema") != str(CACHE_SCHEMA) or meta.get("list_sha256") != list_digest(raw):
                conn.close()
                return None
            info = ListInfo(**json.loads(meta["info"]))
        except (sqlite3.Error, ValueError, TypeError, KeyError):
            conn.close()
            return None
        return cls(conn, info, origin, path=cache)

    def close(self) -> None:
        self.conn.close()

    # ------------------------------------------------------------ records
    def _query(self, sql: str, args: tuple = ()) -> list[tuple]:
        try:
            return self.conn.execute(sql, args).fetchall()
        except sqlite3.Error:
            # derived data, damaged after it was opened (its header read fine): drop it so the next run rebuilds it
            if self.path is not None:
                self.path.unlink(missing_ok=True)
            raise StateError(
                f"{self.origin}: its package cache {self.path.name if self.path else ''} is damaged and was removed",
                "run the command again: llmos rebuilds the cache from the list",
            ) from None

    def _entry(self, rowid: int, record: str) -> Any:
        obj = self._objs.get(rowid)
        if obj is None:
            try:
                entry = IndexEntry.from_json(json.loads(record), self.origin)
            except (ValueError, InvalidPackageError):
                # the list passed these checks when the cache was built: the cache itself is damaged
                if self.path is not None:
                    self.path.unlink(missing_ok=True)
                raise StateError(f"{self.origin}: a damaged package cache record; the cache was removed", "run the command again: llmos rebuilds it") from None
            obj = self._objs[rowid] = self.make(entry)
        return obj

    def named(self, name: str) -> Sequence[Any]:
        got = self._named.get(name)
        if got is None:
            rows = self._query("SELECT id, record FROM pkg WHERE name = ?", (name,))
            got = self._named[name] = [self._entry(i, r) for i, r in rows]
        return got

    def providing(self, virtual: str) -> Sequence[Any]:
        got = self._providing.get(virtual)
        if got is None:
            rows = self._query("SELECT pkg.id, pkg.record FROM prov JOIN pkg ON pkg.id = prov.pkg WHERE prov.virtual = ?", (virtual,))
            got = self._providing[virtual] = [self._entry(i, r) for i, r in rows]
        return got

    def names(self) -> set[str]:
        return {n for (n,) in self._query("SELECT DISTINCT name FROM pkg UNION SELECT DISTINCT virtual FROM prov")}

    def __iter__(self) -> Iterator[Any]:
        for i, r in self._query("SELECT id, record FROM pkg ORDER BY id"):
            yield self._entry(i, r)


def load(
    cache: Path, raw: bytes, origin: str, *, write: bool = True, parsed: tuple[Index, list[dict]] | None = None
) -> tuple[ListCache | None, LlmosError | None]:
    """The cache of ``raw``, rebuilt if stale or missing.

    Returns (cache, None); (None, error) when the list itself is bad; and
    (None, None) when no cache can be written here (the caller parses the
    list in memory instead).
    """
    got = ListCache.open(cache, raw, origin)
    if got is not None or not write:
        return got, None
    try:
        build(cache, raw, origin, parsed)
    except LlmosError as exc:
        if isinstance(exc, InvalidPackageError):
            return None, exc
        return None, None  # e.g. a read-only home: no cache, not an error
    except (OSError, sqlite3.Error):
        return None, None
    return ListCache.open(cache, raw, origin), None
