"""The resolver's inputs and outputs: candidates, installed packages, a request, a plan.

These are plain data; ``llmos_cli.resolve.solver.resolve`` turns
(universe, installed, request) into a ``Plan``.  The install engine executes
``Plan.actions`` in order; ``--simulate`` prints the same plan.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from llmos_cli.pkg.meta import PackageMeta, Req


class Op(StrEnum):
    """The kind of one plan step.  A ``StrEnum``: each member equals its JSON text."""

    INSTALL = "install"
    UPGRADE = "upgrade"
    DOWNGRADE = "downgrade"
    REMOVE = "remove"
    MARK_MANUAL = "mark-manual"
    MARK_AUTO = "mark-auto"


OPS = tuple(op.value for op in Op)
#: the ops that put a (new) version in place
CHANGES = (Op.INSTALL, Op.UPGRADE, Op.DOWNGRADE)


@dataclass(frozen=True)
class Candidate:
    """One installable package version.

    ``origin`` is opaque to the resolver (an index entry, a local archive path...)
    and takes no part in equality or hashing, so it may be any object.
    ``priority`` is the source priority: between two candidates with the same
    version, the higher priority wins.
    """

    meta: PackageMeta
    origin: Any = field(default=None, compare=False)
    priority: int = field(default=0, compare=False)

    @property
    def name(self) -> str:
        return self.meta.name

    @property
    def version(self) -> str:
        return self.meta.version

    def __str__(self) -> str:
        return f"{self.meta.name} {self.meta.version}"


@dataclass
class InstalledInfo:
    """One installed package with its marks."""

    meta: PackageMeta
    auto: bool = False
    held: bool = False


@dataclass
class Request:
    """What the user asked for.

    ``install``: requirements to satisfy (the packages become manual).
    ``remove``: names to remove.  ``upgrade``: names to move to their newest
    installable version (pulling in only what they need).  ``upgrade_all``:
    the same for every installed package that is not held.
    """

    install: list[Req] = field(default_factory=list)
    remove: list[str] = field(default_factory=list)
    upgrade: list[str] = field(default_factory=list)
    upgrade_all: bool = False


@dataclass
class Action:
    """One step of a plan.

    ``auto`` is the package's mark after the transaction (meaningless for
    ``remove``).  ``reason`` is short text for people: ``"requested"``,
    ``"dependency of med-lib 1.0"``, ``"base model of med-lib 1.0"``,
    ``"conflicts with law-lib 2.0"``...
    """

    op: Op
    name: str
    old_version: str | None
    new_version: str | None
    candidate: Candidate | None
    auto: bool
    reason: str

    def to_json(self) -> dict:
        return {
            "op": self.op.value,
            "name": self.name,
            "old_version": self.old_version,
            "new_version": self.new_version,
            "kind": self.candidate.meta.kind if self.candidate else None,
            "auto": self.auto,
            "reason": self.reason,
        }

    def __str__(self) -> str:
        if self.op is Op.INSTALL:
            what = f"{self.name} {self.new_version}"
        elif self.op in (Op.UPGRADE, Op.DOWNGRADE):
            what = f"{self.name} {self.old_version} -> {self.new_version}"
        else:
            what = f"{self.name} {self.old_version or self.new_version or ''}".rstrip()
        return f"{self.op.value} {what} ({self.reason})"


@dataclass
class Plan:
    """The resolver's answer.

    ``actions`` are in a safe execution order: removals first (dependents
    before what they depend on), then installs/upgrades/downgrades with
    dependencies before their dependents, then mark changes.
    ``unneeded``: auto packages that nothing manual needs after this plan
    (apt's "no longer required" notice; they are NOT removed).
    ``kept_back``: installed packages that an upgrade could not move to their
    newest version (held, or the newer version cannot be installed).
    ``notes``: notices for people, e.g. "law-lib is not installed, so not removed".
    """

    actions: list[Action] = field(default_factory=list)
    unneeded: list[str] = field(default_factory=list)
    kept_back: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not self.actions

    def by_op(self, op: Op | str) -> list[Action]:
        return [a for a in self.actions if a.op == op]

    def to_json(self) -> dict:
        return {
            "actions": [a.to_json() for a in self.actions],
            "unneeded": list(self.unneeded),
            "kept_back": list(self.kept_back),
            "notes": list(self.notes),
        }
