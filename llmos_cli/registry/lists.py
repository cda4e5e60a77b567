"""Local copies of the source indexes (apt's ``/var/lib/apt/lists``) and source management.

``update`` fetches every enabled source's index, validates it, asks the trust
hook (``llmos_cli.registry.signing.check_index_trust``, when present) and
stores the raw bytes atomically as ``lists/<source>.json`` (+ ``.sig``); the
database then records the accepted index version.  ``load_universe`` reads
the stored copies (updating a never-updated source on first use) and returns
every available package with the source it comes from; ``candidate_source``
gives the resolver the same packages lazily, through each list's cache
``lists/<source>.cache`` (``llmos_cli.registry.pkgcache``, apt's pkgcache.bin).

These functions take no lock; the CLI holds ``state_lock`` around them.
"""

from __future__ import annotations

import base64
import binascii
import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from llmos_cli.errors import LlmosError, NotFoundError, UsageError, from_os_error
from llmos_cli.fileio import write_atomic
from llmos_cli.paths import Paths
from llmos_cli.pkg.meta import NAME_RE
from llmos_cli.progress import NullReporter, Reporter
from llmos_cli.registry import pkgcache
from llmos_cli.registry.index import INDEX_NAME, SIG_SUFFIX, Index, IndexEntry
from llmos_cli.registry.kinds import make_source
from llmos_cli.registry.signing import check_index_trust
from llmos_cli.registry.sources import (
    EMBEDDED_NAME,
    EMBEDDED_URL,
    dir_path_for_url,
    kind_for_url,
    normalise_url,
)
from llmos_cli.resolve import Candidate, CandidateSource, ChainSource, MemorySource
from llmos_cli.state.db import SourceRow, StateDB, now_iso

_EMBEDDED_REMOVED = "sources.embedded.removed"


def list_path(paths: Paths, name: str) -> Path:
    return paths.lists / f"{name}.json"


def sig_path(paths: Paths, name: str) -> Path:
    return paths.lists / f"{name}.json{SIG_SUFFIX}"


def cache_path(paths: Paths, name: str) -> Path:
    return paths.lists / f"{name}{pkgcache.CACHE_SUFFIX}"


# ---------------------------------------------------------------- sources table


def ensure_default_sources(db: StateDB) -> None:
    """The embedded registry is source ``embedded`` (trusted, unsigned allowed) unless the user removed it."""
    if any(r.name == EMBEDDED_NAME for r in db.sources()):
        return
    try:
        with db.transaction():
            if db.get_setting(_EMBEDDED_REMOVED) == "1":
                return
            if db.conn.execute("SELECT 1 FROM sources WHERE name=?", (EMBEDDED_NAME,)).fetchone():
                return
            db.add_source(EMBEDDED_NAME, EMBEDDED_URL, "dir", None, allow_unsigned=True, priority=0)
    except sqlite3.OperationalError as exc:  # read-only home: carry on without writing
        if "readonly" not in str(exc):
            raise


def get_source(db: StateDB, name: str) -> SourceRow:
    for r in db.sources():
        if r.name == name:
            return r
    raise NotFoundError(f"no source named {name!r}", "see `llmos source list`")


def parse_key(key: str) -> str:
    """A pinned ed25519 public key: base64 of 32 bytes, given inline or as a file holding it."""
    text = key.strip()
    p = Path(text).expanduser()
    if len(text) < 200 and p.is_file():
        try:
            text = p.read_text().strip().split()[-1] if p.read_text().strip() else ""
        except OSError as exc:
            raise from_os_error(exc, f"reading key {p}") from exc
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) != 32:
        raise UsageError(
            f"--key {key!r} is not an ed25519 public key (base64 of 32 bytes)",
            "pass the public key printed by `llmos key generate`, or the .pub file",
        )
    return text


@dataclass
class SourceChange:
    action: str  # "add" | "remove"
    source: SourceRow
    simulated: bool = False

    def to_json(self) -> dict:
        return {"action": self.action, "simulated": self.simulated, "source": self.source.to_json()}


def add_source(
    paths: Paths,
    db: StateDB,
    name: str,
    url: str,
    *,
    key: str | None = None,
    allow_unsigned: bool = False,
    priority: int = 0,
    simulate: bool = False,
) -> SourceChange:
    if not NAME_RE.match(name or ""):
        raise UsageError(f"invalid source name {name!r}", "use lowercase letters, digits, '.', '+' and '-'")
    kind = kind_for_url(url)
    url = normalise_url(url, kind)
    if kind == "dir":
        folder = dir_path_for_url(url)
        if not folder.is_dir():
            raise NotFoundError(f"{folder}: no such registry folder", "create it and run `llmos index` on it first")
    pinned = parse_key(key) if key else None
    if pinned and allow_unsigned:
        raise UsageError("--key and --allow-unsigned contradict each other", "a pinned key means every index must be signed")
    existing = {r.name for r in db.sources()}
    if name in existing:
        raise UsageError(f"a source named {name!r} already exists", f"remove it first with `llmos source remove {name}`")

    row = SourceRow(name, url, kind, pinned, allow_unsigned or (name == EMBEDDED_NAME and url == EMBEDDED_URL), True, priority, now_iso(), None, None, None)
    if not simulate:
        make_source(row)  # the kind must be usable
        with db.transaction():
            db.add_source(row.name, row.url, row.kind, row.key, row.allow_unsigned, row.priority)
            if name == EMBEDDED_NAME:
                db.set_setting(_EMBEDDED_REMOVED, None)
    return SourceChange("add", row, simulate)


def remove_source(paths: Paths, db: StateDB, name: str, *, simulate: bool = False) -> SourceChange:
    row = get_source(db, name)
    if not simulate:
        with db.transaction():
            db.remove_source(name)
            if name == EMBEDDED_NAME:
                db.set_setting(_EMBEDDED_REMOVED, "1")
        for p in (list_path(paths, name), sig_path(paths, name), cache_path(paths, name)):
            p.unlink(missing_ok=True)
    return SourceChange("remove", row, simulate)


def list_sources(paths: Paths, db: StateDB) -> list[dict[str, Any]]:
    ensure_default_sources(db)
    out = []
    for r in db.sources():
        d = r.to_json()
        if r.kind == "dir":
            d["path"] = str(dir_path_for_url(r.url))
        d["has_list"] = list_path(paths, r.name).is_file()
        out.append(d)
    return out


# ---------------------------------------------------------------- update


@dataclass
class SourceUpdate:
    name: str
    ok: bool
    version: int | None = None
    previous_version: int | None = None
    packages: int = 0
    changed: bool = False
    signed: bool = False
    error: dict | None = None

    def to_json(self) -> dict:
        return {
            "name": self.name,
            "ok": self.ok,
            "version": self.version,
            "previous_version": self.previous_version,
            "packages": self.packages,
            "changed": self.changed,
            "signed": self.signed,
            "error": self.error,
        }


@dataclass
class UpdateResult:
    sources: list[SourceUpdate] = field(default_factory=list)
    simulated: bool = False

    def to_json(self) -> dict:
        return {"simulated": self.simulated, "sources": [s.to_json() for s in self.sources]}


def update_one(paths: Paths, db: StateDB, row: SourceRow, reporter: Reporter = NullReporter(), *, simulate: bool = False) -> SourceUpdate:
    """Fetch, validate, trust-check and store one source's index; raises on failure."""

    src = make_source(row)
    if row.name == EMBEDDED_NAME and row.url == EMBEDDED_URL:
        folder = dir_path_for_url(row.url)
        if not (folder / INDEX_NAME).is_file():
            # an llmos built without registry content: nothing to offer, not an error
            reporter.warn(f"the embedded registry ({folder}) has no {INDEX_NAME}; it offers no packages")
            return SourceUpdate(row.name, True, None, row.index_version, 0, False, False)
    raw, sig = src.fetch_index(reporter)
    parsed = Index.parse(raw, f"source {row.name}")
    index = parsed[0]
    # fails closed: every index is trust-checked (signature against a pinned key, rollback, expiry)
    check_index_trust(row, index, raw, sig, row.index_version, reporter)
    lp = list_path(paths, row.name)
    try:
        old = lp.read_bytes()
    except OSError:
        old = None
    res = SourceUpdate(row.name, True, index.version, row.index_version, len(index.entries), old != raw, sig is not None)
    if simulate:
        return res
    paths.lists.mkdir(parents=True, exist_ok=True)
    sp = sig_path(paths, row.name)
    if sig is None:
        sp.unlink(missing_ok=True)
    write_atomic(lp, raw)
    if sig is not None:
        write_atomic(sp, sig)
    with db.transaction():
        db.mark_source_updated(row.name, index.version, index.created)
    if old != raw or not cache_path(paths, row.name).is_file():
        # the next install reads the cache; a failure here only means it is built then
        cache, _error = pkgcache.load(cache_path(paths, row.name), raw, f"list of source {row.name}", parsed=parsed)
        if cache is not None:
            cache.close()
    return res


def update(paths: Paths, db: StateDB, reporter: Reporter = NullReporter(), names: list[str] | None = None, *, simulate: bool = False) -> UpdateResult:
    """Refresh the local copy of each (named, else every enabled) source's index.

    Every source is tried; if any failed, the first failure is raised afterwards
    (same error class, so the exit code names the problem) with every source's
    outcome in ``details``.
    """
    ensure_default_sources(db)
    rows = db.sources()
    if names:
        known = {r.name for r in rows}
        for n in names:
            if n not in known:
                raise NotFoundError(f"no source named {n!r}", "see `llmos source list`")
        rows = [r for r in rows if r.name in names]
    else:
        rows = [r for r in rows if r.enabled]
    result = UpdateResult(simulated=simulate)
    failures: list[tuple[str, LlmosError]] = []
    with reporter.task("updating sources", total=len(rows)) as task:
        for row in rows:
            try:
                su = update_one(paths, db, row, reporter, simulate=simulate)
                reporter.debug(f"{row.name}: index version {su.version}, {su.packages} package(s){'' if su.changed else ' (unchanged)'}")
            except LlmosError as exc:
                failures.append((row.name, exc))
                su = SourceUpdate(row.name, False, error=exc.to_json())
            except OSError as exc:
                err = from_os_error(exc, f"updating source {row.name}")
                failures.append((row.name, err))
                su = SourceUpdate(row.name, False, error=err.to_json())
            result.sources.append(su)
            task.advance()
    if failures:
        name, first = failures[0]
        more = f" (and {len(failures) - 1} more source(s) failed)" if len(failures) > 1 else ""
        msg = first.message if f"source {name}" in first.message or f"source {name!r}" in first.message else f"source {name}: {first.message}"
        raise type(first)(msg + more, first.hint, details={"sources": [s.to_json() for s in result.sources]})
    return result


# ---------------------------------------------------------------- universe


def _stored_lists(paths: Paths, db: StateDB, reporter: Reporter) -> Iterator[tuple[SourceRow, bytes]]:
    """(source, list bytes) of each enabled source, updating a never-updated source first."""
    ensure_default_sources(db)
    for row in db.sources():
        if not row.enabled:
            continue
        lp = list_path(paths, row.name)
        if not lp.is_file():
            try:
                update_one(paths, db, row, reporter)
                row = get_source(db, row.name)
            except LlmosError as exc:
                reporter.warn(f"source {row.name} skipped: {exc.message}")
                continue
            if not lp.is_file():  # e.g. an empty embedded registry
                continue
        try:
            raw = lp.read_bytes()
        except OSError as exc:
            reporter.warn(f"source {row.name} skipped: {exc}")
            continue
        yield row, raw


def _warn_expired(row: SourceRow, index: Index, reporter: Reporter) -> None:
    if index.is_expired():
        reporter.warn(f"source {row.name}: index expired on {index.expires}; run `llmos update`")


def load_universe(paths: Paths, db: StateDB, reporter: Reporter = NullReporter()) -> list[tuple[IndexEntry, SourceRow]]:
    """Every package version offered by the enabled sources, from the local lists.

    A source never updated is updated now (so ``install`` works on a fresh
    machine); if that fails, it is skipped with a warning.
    """
    out: list[tuple[IndexEntry, SourceRow]] = []
    for row, raw in _stored_lists(paths, db, reporter):
        try:
            index = Index.from_bytes(raw, f"list of source {row.name}")
        except LlmosError as exc:
            reporter.warn(f"source {row.name} skipped: {exc.message} (run `llmos update`)")
            continue
        _warn_expired(row, index, reporter)
        out.extend((e, row) for e in index.entries)
    return out


def candidate_source(
    paths: Paths,
    db: StateDB,
    make: Callable[[IndexEntry, SourceRow], Candidate],
    reporter: Reporter = NullReporter(),
) -> CandidateSource:
    """What ``load_universe`` offers, as the resolver's lazy ``CandidateSource``.

    Each list is read through its cache (built now if missing or stale), so
    only the records of the names the resolver touches are parsed;
    ``make(entry, source)`` builds each candidate.  Where no cache can be
    written the list is parsed in memory.  Same warnings and skips as
    ``load_universe``.
    """
    sources: list[CandidateSource] = []
    for row, raw in _stored_lists(paths, db, reporter):
        origin = f"list of source {row.name}"
        cache, error = pkgcache.load(cache_path(paths, row.name), raw, origin)
        if error is not None:
            reporter.warn(f"source {row.name} skipped: {error.message} (run `llmos update`)")
            continue
        if cache is not None:
            _warn_expired(row, cache.info.as_index(), reporter)
            cache.make = partial(_make_for, make, row)
            sources.append(cache)
            continue
        try:
            index = Index.from_bytes(raw, origin)
        except LlmosError as exc:
            reporter.warn(f"source {row.name} skipped: {exc.message} (run `llmos update`)")
            continue
        _warn_expired(row, index, reporter)
        sources.append(MemorySource(make(e, row) for e in index.entries))
    return ChainSource(sources)


def _make_for(make: Callable[[IndexEntry, SourceRow], Candidate], row: SourceRow, entry: IndexEntry) -> Candidate:
    return make(entry, row)
