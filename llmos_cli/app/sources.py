"""``llmos source list|add|remove``, ``llmos update`` and ``llmos cache list|clean``.

Each use case opens the state database the way every command does: a changing
one under the state lock and after recovering an interrupted transaction.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from llmos_cli.paths import Paths, get_paths
from llmos_cli.progress import NullReporter, Reporter
from llmos_cli.registry import lists
from llmos_cli.registry.download import CacheReport
from llmos_cli.registry.download import clean_cache as _clean_cache
from llmos_cli.registry.download import list_cache as _list_cache
from llmos_cli.state.db import StateDB, state_lock
from llmos_cli.state.transaction import open_state

T = TypeVar("T")


def _with_db(fn: Callable[[Paths, StateDB], T], *, lock: str | None, paths: Paths | None = None) -> T:
    """Open the state DB and call ``fn(paths, db)``; with ``lock`` (the command), under the state lock."""
    paths = paths or get_paths()
    with open_state(paths, lock or "source", write=lock is not None) as db:
        return fn(paths, db)


def list_sources(*, paths: Paths | None = None) -> list[dict[str, Any]]:
    return _with_db(lists.list_sources, lock=None, paths=paths)


def add_source(
    name: str,
    url: str,
    *,
    key: str | None = None,
    allow_unsigned: bool = False,
    priority: int = 0,
    simulate: bool = False,
    paths: Paths | None = None,
) -> Any:
    return _with_db(
        lambda p, db: lists.add_source(p, db, name, url, key=key, allow_unsigned=allow_unsigned, priority=priority, simulate=simulate),
        lock="source add",
        paths=paths,
    )


def remove_source(name: str, *, simulate: bool = False, paths: Paths | None = None) -> Any:
    return _with_db(lambda p, db: lists.remove_source(p, db, name, simulate=simulate), lock="source remove", paths=paths)


def update(names: list[str] | None = None, *, simulate: bool = False, reporter: Reporter | None = None, paths: Paths | None = None) -> lists.UpdateResult:
    rep = reporter or NullReporter()
    return _with_db(lambda p, db: lists.update(p, db, rep, names or None, simulate=simulate), lock="update", paths=paths)


def list_cache(*, paths: Paths | None = None) -> CacheReport:
    return _list_cache((paths or get_paths()).cache)


def clean_cache(*, incomplete_only: bool = False, simulate: bool = False, paths: Paths | None = None) -> CacheReport:
    """Delete the download cache (under the state lock, so no install is reading it)."""
    paths = paths or get_paths()
    if simulate:
        return _clean_cache(paths.cache, incomplete_only=incomplete_only, simulate=True)
    with state_lock(paths, "cache clean"):
        return _clean_cache(paths.cache, incomplete_only=incomplete_only)
