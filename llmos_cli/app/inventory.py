"""``llmos list``: what is installed, read from the state database.

Kept apart from ``app/install.py`` so that listing loads neither the resolver
nor the registry code: ``llmos list`` is one of the start-up benchmarks.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from llmos_cli.errors import UsageError
from llmos_cli.paths import Paths, get_paths
from llmos_cli.pkg.meta import KINDS
from llmos_cli.progress import Reporter
from llmos_cli.state import session
from llmos_cli.state.db import InstalledPackage


@dataclass
class ListResult:
    packages: list[InstalledPackage]
    kind: str | None = None
    file_counts: dict[str, int] = field(default_factory=dict)

    def to_json(self) -> dict:
        return {
            "kind": self.kind,
            "packages": [{**p.to_json(), "files": self.file_counts.get(p.name, 0)} for p in self.packages],
        }


def list_installed(kind: str | None = None, *, reporter: Reporter | None = None, paths: Paths | None = None) -> ListResult:
    if kind is not None and kind not in KINDS:
        raise UsageError(f"unknown kind {kind!r}", f"use one of: {', '.join(KINDS)}")
    paths = paths or get_paths()
    with session.open_state(paths, "list", write=False, reporter=reporter) as db:
        pkgs = [p for p in db.installed().values() if kind is None or p.kind == kind]
        counts = {r[0]: int(r[1]) for r in db.conn.execute("SELECT package, COUNT(*) FROM files GROUP BY package")}
    return ListResult(pkgs, kind, counts)
