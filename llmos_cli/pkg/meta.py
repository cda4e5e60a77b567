"""Package metadata shared by manifests, registry indexes, the resolver and the state DB.

Relations use PEP 440 versions and specifiers parsed by ``packaging``:

* ``depends = ["bio-core>=1.0", "calc-tools | math-tools>=2"]`` -- each entry is
  one dependency; ``|`` separates alternatives (apt's ``a | b``).
* ``conflicts = ["old-med<2"]``
* ``provides = ["medical-knowledge", "mail-transport-agent (= 2.0)"]`` --
  virtual names, unversioned or with one exact version (apt's versioned
  Provides; ``name==2.0`` is accepted too).  A versioned provide satisfies a
  versioned relation on the virtual name when its version matches; an
  unversioned provide satisfies only unversioned relations (apt's rule).
* ``base = "tiny-chat>=1.0,<2"`` -- a library's base model; behaves as a Depends
  that only a ``model`` package may satisfy.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import cached_property, lru_cache

from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.version import InvalidVersion, Version

# apt's rule (Debian policy 5.6.1): lowercase letters, digits, '+', '-' and '.',
# starting with a letter or digit (``g++``, ``libdb5.3++``, ``memtest86+``).
# Unlike apt, one character is enough (``r``).
NAME_RE = re.compile(r"^[a-z0-9][a-z0-9.+-]*$")
_REQ_RE = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._+-]*)\s*(?:\(\s*([^)]*)\s*\)|([<>=!~].*))?\s*$")
_PROVIDE_RE = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._+-]*)\s*(?:\(\s*==?\s*([^()\s]+)\s*\)|==\s*(\S+))?\s*$")

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
        raise RelationError(f"invalid package name {name!r}: use lowercase letters, digits, '.', '+' and '-', starting with a letter or digit")
    return name


class Provide(str):
    """One ``provides`` entry: a virtual name, optionally with an exact version.

    It *is* the virtual name as a string, so ``name in meta.provides`` and
    ``", ".join(meta.provides)`` keep meaning names; ``version`` is the
    provided version (``None`` for an unversioned provide) and ``text`` the
    entry as written in an index (``mail-transport-agent (= 2.0)``).  Two
    provides are equal when name and version are; a provide equals a plain
    string of its name.
    """

    version: str | None
    parsed_version: Version | None

    def __new__(cls, name: str, version: str | None = None) -> Provide:
        obj = super().__new__(cls, name)
        obj.version = version
        obj.parsed_version = parse_version(version) if version is not None else None
        return obj

    @classmethod
    def parse(cls, text: str) -> Provide:
        if isinstance(text, Provide):
            return text
        if not isinstance(text, str):
            raise RelationError(f"expected a string, got {type(text).__name__}")
        return _parse_provide(text)

    @property
    def name(self) -> str:
        return str.__str__(self)

    @property
    def text(self) -> str:
        return f"{self.name} (= {self.version})" if self.version is not None else self.name

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Provide):
            return str.__eq__(self, other) and self.version == other.version
        return str.__eq__(self, other)

    def __ne__(self, other: object) -> bool:
        return not self == other

    __hash__ = str.__hash__

    def __repr__(self) -> str:
        return f"Provide({self.text!r})"

    def __reduce__(self) -> tuple:
        return (Provide, (self.name, self.version))


@lru_cache(maxsize=1 << 16)
def _parse_provide(text: str) -> Provide:
    m = _PROVIDE_RE.match(text)
    if not m:
        raise RelationError(f"cannot parse provide {text!r} (expected a name, or a name with one exact version: 'mta (= 2.0)')")
    version = m.group(2) or m.group(3)
    if version is not None:
        version = str(parse_version(version))  # normalised, so equal versions compare equal
    return Provide(check_name(m.group(1)), version)


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
    provides: tuple[Provide, ...] = ()
    base: Req | None = None
    #: apt's Breaks; llmos treats it exactly like Conflicts (docs/resolver.md says why)
    breaks: tuple[Req, ...] = ()

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

    def all_conflicts(self) -> tuple[Req, ...]:
        """Conflicts plus Breaks (the resolver treats them alike)."""
        return self.conflicts + self.breaks if self.breaks else self.conflicts

    def relations_json(self) -> dict:
        out = {
            "depends": [str(d) for d in self.depends],
            "conflicts": [str(c) for c in self.conflicts],
            "provides": [p.text if isinstance(p, Provide) else str(p) for p in self.provides],
            "base": str(self.base) if self.base else None,
        }
        if self.breaks:  # only when present, so existing records and JSON keep their shape
            out["breaks"] = [str(b) for b in self.breaks]
        return out

    def to_json(self) -> dict:
        return {"name": self.name, "version": self.version, "kind": self.kind, "summary": self.summary, **self.relations_json()}

    @classmethod
    def from_json(cls, d: dict) -> PackageMeta:
        """Inverse of ``to_json``; raises RelationError on bad data."""
        name = check_name(d["name"])
        version = parse_version(d["version"])
        kind = d.get("kind", "library")
        if kind not in KINDS:
            raise RelationError(f"unknown kind {kind!r}")
        meta = cls(
            name=name,
            version=str(d["version"]),
            kind=kind,
            summary=d.get("summary", "") or "",
            depends=tuple(Dependency.parse(x) for x in d.get("depends", []) or []),
            conflicts=tuple(Req.parse(x) for x in d.get("conflicts", []) or []),
            provides=tuple(Provide.parse(x) for x in d.get("provides", []) or []),
            base=Req.parse(d["base"]) if d.get("base") else None,
            breaks=tuple(Req.parse(x) for x in d.get("breaks", []) or []),
        )
        meta.__dict__["parsed_version"] = version  # already parsed: fill the cached property
        return meta


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


@dataclass(frozen=True)
class FileRecord:
    """One entry of ``[files]``: a payload file's sha256 and size."""

    sha256: str
    size: int

    def to_json(self) -> dict:
        return {"sha256": self.sha256, "size": self.size}
