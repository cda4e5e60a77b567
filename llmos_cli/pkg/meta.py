"""Package metadata shared by manifests, registry indexes, the resolver and the state DB.

Relations use PEP 440 versions and specifiers parsed by ``packaging``:

* ``depends = ["bio-core>=1.0", "calc-tools | math-tools>=2"]`` -- each entry is
  one dependency; ``|`` separates alternatives (apt's ``a | b``).
* ``conflicts = ["old-med<2"]``
* ``provides = ["medical-knowledge"]`` -- virtual names (unversioned).
* ``base = "tiny-chat>=1.0,<2"`` -- a library's base model; behaves as a Depends
  that only a ``model`` package may satisfy.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import cached_property, lru_cache

from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.version import InvalidVersion, Version

NAME_RE = re.compile(r"^[a-z0-9](?:[a-z0-9.+-]*[a-z0-9])?$")
_REQ_RE = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._+-]*)\s*(?:\(\s*([^)]*)\s*\)|([<>=!~].*))?\s*$")

KINDS = ("model", "library")


class RelationError(ValueError):
    pass


def parse_version(text: str) -> Version:
    try:
        return Version(str(text))
    except InvalidVersion as exc:
        raise RelationError(f"invalid version {text!r} (PEP 440 expected, e.g. 1.2.0)") from exc


def check_name(name: str) -> str:
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise RelationError(f"invalid package name {name!r}: use lowercase letters, digits, '.', '+' and '-', starting and ending with a letter or digit")
    return name


@dataclass(frozen=True)
class Req:
    """One package name with an optional version specifier, e.g. ``bio-core>=1.0``."""

    name: str
    spec: SpecifierSet = field(default_factory=SpecifierSet)

    @classmethod
    def parse(cls, text: str) -> Req:
        if not isinstance(text, str):
            raise RelationError(f"expected a string, got {type(text).__name__}")
        return _parse_req(text)

    @classmethod
    def _parse_uncached(cls, text: str) -> Req:
        m = _REQ_RE.match(text)
        if not m:
            raise RelationError(f"cannot parse relation {text!r} (expected e.g. 'name>=1.0')")
        name = m.group(1)
        check_name(name)
        spec_text = (m.group(2) or m.group(3) or "").strip()
        try:
            spec = SpecifierSet(spec_text)
        except InvalidSpecifier as exc:
            raise RelationError(f"invalid version constraint {spec_text!r} in {text!r}") from exc
        return cls(name, spec)

    def matches(self, version: str | Version) -> bool:
        v = version if isinstance(version, Version) else Version(str(version))
        return self.spec.contains(v, prereleases=True)

    def __str__(self) -> str:
        return f"{self.name}{self.spec}" if str(self.spec) else self.name


@dataclass(frozen=True)
class Dependency:
    """One Depends entry: a list of alternatives, satisfied by any one of them."""

    alternatives: tuple[Req, ...]

    @classmethod
    def parse(cls, text: str) -> Dependency:
        if not isinstance(text, str) or not text.strip():
            raise RelationError(f"empty dependency {text!r}")
        return _parse_dependency(text)

    def __str__(self) -> str:
        return " | ".join(str(a) for a in self.alternatives)


# Relations repeat a lot across a registry's index ("bio-core>=1.0" in many
# packages); the parsed objects are immutable, so parse each text once.
@lru_cache(maxsize=1 << 16)
def _parse_req(text: str) -> Req:
    return Req._parse_uncached(text)


@lru_cache(maxsize=1 << 16)
def _parse_dependency(text: str) -> Dependency:
    return Dependency(tuple(Req.parse(part) for part in text.split("|")))


@dataclass(frozen=True)
class PackageMeta:
    """What the resolver and indexes need to know about one package version."""

    name: str
    version: str
    kind: str
    summary: str = ""
    depends: tuple[Dependency, ...] = ()
    conflicts: tuple[Req, ...] = ()
    provides: tuple[str, ...] = ()
    base: Req | None = None

    @cached_property
    def parsed_version(self) -> Version:
        return Version(self.version)

    @property
    def id(self) -> str:
        return f"{self.name}={self.version}"

    def all_depends(self) -> tuple[Dependency, ...]:
        """Depends plus the base-model constraint."""
        if self.base is None:
            return self.depends
        return self.depends + (Dependency((self.base,)),)

    def relations_json(self) -> dict:
        return {
            "depends": [str(d) for d in self.depends],
            "conflicts": [str(c) for c in self.conflicts],
            "provides": list(self.provides),
            "base": str(self.base) if self.base else None,
        }

    def to_json(self) -> dict:
        return {"name": self.name, "version": self.version, "kind": self.kind, "summary": self.summary, **self.relations_json()}

    @classmethod
    def from_json(cls, d: dict) -> PackageMeta:
        """Inverse of ``to_json``; raises RelationError on bad data."""
        name = check_name(d["name"])
        parse_version(d["version"])
        kind = d.get("kind", "library")
        if kind not in KINDS:
            raise RelationError(f"unknown kind {kind!r}")
        return cls(
            name=name,
            version=str(d["version"]),
            kind=kind,
            summary=d.get("summary", "") or "",
            depends=tuple(Dependency.parse(x) for x in d.get("depends", []) or []),
            conflicts=tuple(Req.parse(x) for x in d.get("conflicts", []) or []),
            provides=tuple(check_name(x) for x in d.get("provides", []) or []),
            base=Req.parse(d["base"]) if d.get("base") else None,
        )


class MetaView:
    """``name``, ``version`` and ``kind`` of anything that carries a ``meta: PackageMeta``.

    A manifest, an index entry and an installed package each hold one
    ``PackageMeta``; they read the identity from it instead of keeping copies.
    """

    meta: PackageMeta

    @property
    def name(self) -> str:
        return self.meta.name

    @property
    def version(self) -> str:
        return self.meta.version

    @property
    def kind(self) -> str:
        return self.meta.kind
