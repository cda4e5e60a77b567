"""Who may run which tool.

Library tools (command and MCP) never run unless allowed.  For one call the
decision is, first match wins:

1. ``--allow-tool NAME`` (this run; NAME is ``tool`` or ``library:tool``) -> allowed;
2. ``llmos tools deny NAME`` (stored)  -> denied: the model is told so;
3. built-in tools (lookup, calculator) -> allowed;
4. ``--allow-tools`` (this run)        -> allowed;
5. ``llmos tools allow NAME`` (stored) -> allowed;
6. otherwise: ask on the terminal when the CLI gave an ``ask`` callback;
   without one (stdin is not a terminal) the run fails with ``ToolError``
   naming the flags -- it never waits for an answer.

Stored decisions live in the state database's ``tool_permissions`` table,
keyed ``library:tool`` so that another library's tool of the same name is
not allowed by accident.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from llmos_cli.errors import ToolError
from llmos_cli.paths import get_paths
from llmos_cli.state.db import StateDB, now_iso
from llmos_cli.state.transaction import open_state
from llmos_cli.tools.spec import ToolSpec


def load_stored(paths: Any = None) -> dict[str, bool]:

    paths = paths or get_paths()
    if not paths.db.exists():
        return {}
    db = StateDB.open(paths)
    try:
        return {r[0]: bool(r[1]) for r in db.conn.execute("SELECT tool, allowed FROM tool_permissions")}
    finally:
        db.close()


def store(paths: Any, key: str, allowed: bool | None) -> None:
    """Record (or with ``None`` forget) a decision for ``library:tool``."""

    with open_state(paths, f"tools {'allow' if allowed else 'deny'} {key}", write=True) as db:
        with db.transaction() as conn:
            if allowed is None:
                conn.execute("DELETE FROM tool_permissions WHERE tool=?", (key,))
            else:
                conn.execute(
                    "INSERT OR REPLACE INTO tool_permissions(tool, allowed, changed) VALUES(?,?,?)",
                    (key, int(allowed), now_iso()),
                )


@dataclass
class Policy:
    allow: frozenset[str] = frozenset()
    allow_all: bool = False
    stored: dict[str, bool] = field(default_factory=dict)
    #: asks the user on a terminal; None when stdin is not a terminal
    ask: Callable[[ToolSpec], bool] | None = None
    _answers: dict[str, bool] = field(default_factory=dict)

    def status(self, spec: ToolSpec) -> str:
        """ "allowed", "denied" or "ask" (no decision yet)."""
        if spec.name in self.allow or spec.key in self.allow:
            return "allowed"
        if self.stored.get(spec.key) is False:
            return "denied"
        if spec.kind == "builtin" or self.allow_all or self.stored.get(spec.key):
            return "allowed"
        if spec.key in self._answers:
            return "allowed" if self._answers[spec.key] else "denied"
        return "ask"

    def offers(self, spec: ToolSpec) -> bool:
        """Whether the model is told about ``spec``: allowed, or undecided with a terminal to ask."""
        st = self.status(spec)
        return st == "allowed" or (st == "ask" and self.ask is not None)

    def check(self, spec: ToolSpec) -> bool:
        """True to run, False when denied; raises ``ToolError`` when nobody can be asked."""
        st = self.status(spec)
        if st != "ask":
            return st == "allowed"
        if self.ask is None:
            raise ToolError(
                f"tool {spec.name!r} from library {spec.source} is not allowed to run, and stdin is not a terminal to ask",
                f"pass --allow-tool {spec.name} (or --allow-tools) for this run, or allow it for good: llmos tools allow {spec.key}",
                details={"tool": spec.name, "library": spec.source},
            )
        ok = bool(self.ask(spec))
        self._answers[spec.key] = ok
        return ok
