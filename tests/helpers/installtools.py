"""Helpers for the install-engine tests: real registries, state snapshots, consistency checks."""

from __future__ import annotations

import hashlib
import json
import sqlite3
from pathlib import Path
from typing import Any

from tests.helpers.pkgtools import write_source


def build_registry(root: Path, packages: list[dict[str, Any]], *, reg: Path | None = None) -> Path:
    """Write each package source, build it into ``reg/pool`` and index ``reg``.

    Each dict holds ``write_source`` keyword arguments plus ``name``.
    Building into an existing registry adds to it (then re-indexes).
    """
    from llmos_cli.app.build import build_package
    from llmos_cli.registry.index import write_index

    reg = reg or root / "registry"
    pool = reg / "pool"
    pool.mkdir(parents=True, exist_ok=True)
    srcs = root / "sources"
    for spec in packages:
        spec = dict(spec)
        name = spec.pop("name")
        folder = write_source(srcs, name, **spec)
        build_package(folder, pool)
    write_index(reg)
    return reg


def archive_path(reg: Path, name: str, version: str) -> Path:
    return reg / "pool" / f"{name}_{version}.llmos"


def use_registry(cli, reg: Path, name: str = "test") -> None:
    """Make ``reg`` the only source (the embedded registry is removed)."""
    r = cli("source", "remove", "embedded")
    assert r.exit_code in (0, 3), r
    r = cli("source", "add", name, str(reg), "--allow-unsigned")
    assert r.exit_code == 0, r
    r = cli("update")
    assert r.exit_code == 0, r


def db_rows(home: Path) -> dict[str, list]:
    """Every row of the state tables that matter (packages, files, history, meta)."""
    db = home / "state.db"
    if not db.exists():
        return {}
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        out = {}
        for table, order in (("packages", "name"), ("files", "package, path"), ("history", "id"), ("meta", "key"), ("sources", "name"), ("settings", "key")):
            out[table] = [tuple(r) for r in conn.execute(f"SELECT * FROM {table} ORDER BY {order}")]
        return out
    finally:
        conn.close()


def store_listing(home: Path) -> dict[str, str]:
    """relative path -> sha256 of every file under store/ and staging/."""
    out = {}
    for sub in ("store", "staging"):
        base = home / sub
        if base.is_dir():
            for p in sorted(base.rglob("*")):
                if p.is_file():
                    out[str(p.relative_to(home))] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def snapshot(home: Path) -> dict[str, Any]:
    return {"db": db_rows(home), "store": store_listing(home)}


def installed_set(home: Path) -> dict[str, str]:
    """name -> version straight from the database (no recovery runs)."""
    conn = sqlite3.connect(f"file:{home / 'state.db'}?mode=ro", uri=True)
    try:
        return {r[0]: r[1] for r in conn.execute("SELECT name, version FROM packages")}
    finally:
        conn.close()


def check_consistent(home: Path) -> dict[str, str]:
    """Assert the state is whole; return the installed set (name -> version)."""
    db = home / "state.db"
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert conn.execute("PRAGMA foreign_key_check").fetchall() == []
        pending = conn.execute("SELECT id, argv FROM history WHERE status='pending'").fetchall()
        assert pending == [], f"pending transactions left: {pending}"
        installed = {r[0]: r[1] for r in conn.execute("SELECT name, version FROM packages")}
        files = conn.execute("SELECT package, path, sha256, size FROM files").fetchall()
        referenced = {r[2] for r in files}
        for pkg, path, sha, size in files:
            blob = home / "store" / sha[:2] / sha
            assert blob.is_file(), f"{pkg}: {path}: blob {sha[:12]} missing"
            data = blob.read_bytes()
            assert len(data) == size and hashlib.sha256(data).hexdigest() == sha, f"{pkg}: {path}: blob corrupt"
        gc_needed = conn.execute("SELECT value FROM meta WHERE key='gc_needed'").fetchone()
    finally:
        conn.close()
    if not gc_needed:
        stored = {p.name for p in (home / "store").rglob("*") if p.is_file()} if (home / "store").is_dir() else set()
        assert stored <= referenced, f"orphan blobs left: {sorted(stored - referenced)[:3]}"
    staging = home / "staging"
    assert not staging.is_dir() or not any(staging.iterdir()), f"staging not empty: {list(staging.iterdir())}"
    return installed


def pending_transactions(home: Path) -> list[int]:
    db = home / "state.db"
    if not db.exists():
        return []
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return [r[0] for r in conn.execute("SELECT id FROM history WHERE status='pending'")]
    finally:
        conn.close()


def envelope(result) -> dict:
    data = json.loads(result.stdout)
    assert data["schema"] == "llmos/v1"
    return data
