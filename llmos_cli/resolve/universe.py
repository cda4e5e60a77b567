"""Where the resolver's candidates come from: an in-memory list, or a lazy source.

The resolver asks only about names it touches: the versions of a name, and
the candidates that provide a virtual name.  A ``CandidateSource`` answers
exactly that, so a 65,000-version index need not be parsed in full before a
request that touches a few hundred names (``llmos_cli.registry.lists`` backs
it with an SQLite cache of each source's list, apt's ``pkgcache.bin``).

* ``MemorySource(candidates)``: groups a list in one pass (tests, local archives).
* ``ChainSource([s1, s2, ...])``: the union of several sources, in order.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Protocol, runtime_checkable

from .model import Candidate


@runtime_checkable
class CandidateSource(Protocol):
    """What the resolver needs from a universe of candidates."""

    def named(self, name: str) -> Sequence[Candidate]:
        """Every candidate whose package name is ``name`` (any order, duplicates allowed)."""
        ...

    def providing(self, virtual: str) -> Sequence[Candidate]:
        """Every candidate that declares ``virtual`` in its provides."""
        ...

    def names(self) -> Iterable[str]:
        """Every real and virtual name (used for "did you mean" suggestions only)."""
        ...


class MemorySource:
    """A list of candidates, grouped by name and by provided name in one pass."""

    def __init__(self, candidates: Iterable[Candidate] = ()):
        self._by_name: dict[str, list[Candidate]] = {}
        self._providers: dict[str, list[Candidate]] = {}
        by_name, providers = self._by_name, self._providers
        for cand in candidates:  # add() inlined: this loop runs once per version of a registry
            meta = cand.meta
            got = by_name.get(meta.name)
            if got is None:
                by_name[meta.name] = [cand]
            else:
                got.append(cand)
            for virt in meta.provides:  # keyed by the plain name: two Provides of one name differ by version
                providers.setdefault(str(virt), []).append(cand)

    def add(self, cand: Candidate) -> None:
        self._by_name.setdefault(cand.meta.name, []).append(cand)
        for virt in cand.meta.provides:
            self._providers.setdefault(str(virt), []).append(cand)

    def named(self, name: str) -> Sequence[Candidate]:
        return self._by_name.get(name, ())

    def providing(self, virtual: str) -> Sequence[Candidate]:
        return self._providers.get(virtual, ())

    def names(self) -> Iterable[str]:
        return set(self._by_name) | set(self._providers)

    def __iter__(self):
        for cands in self._by_name.values():
            yield from cands


class ChainSource:
    """Several sources seen as one."""

    def __init__(self, sources: Iterable[CandidateSource]):
        self.sources = list(sources)

    def named(self, name: str) -> Sequence[Candidate]:
        out: list[Candidate] = []
        for s in self.sources:
            out.extend(s.named(name))
        return out

    def providing(self, virtual: str) -> Sequence[Candidate]:
        out: list[Candidate] = []
        for s in self.sources:
            out.extend(s.providing(virtual))
        return out

    def names(self) -> Iterable[str]:
        out: set[str] = set()
        for s in self.sources:
            out.update(s.names())
        return out


def as_source(universe: Iterable[Candidate] | CandidateSource) -> CandidateSource:
    if isinstance(universe, CandidateSource):
        return universe
    return MemorySource(universe)
