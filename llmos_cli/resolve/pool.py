"""The pool: every candidate the resolver may choose, indexed for lookups.

* ``versions(name)``: the real candidates of a name, newest first, one per
  version (between equal versions the higher source priority wins; the
  installed version is always present even when no source lists it).
* ``satisfiers(req, model_only)``: apt's rule for relations -- the real
  package when its version matches, and every package that *provides* the
  name: any provider for an unversioned relation, only a provider with a
  matching versioned provide (``mta (= 2.0)``) for a versioned one.  Real
  candidates come first.  ``model_only`` restricts to ``kind == "model"``
  (the base-model constraint).
* ``tiers(req)``: the same satisfiers split into (real, providers), which the
  encoding uses to prefer a real package over virtual providers of its name.

The pool is lazy: it asks its ``CandidateSource`` only about names the
resolver touches, and parses and sorts versions only for those, so a
65,000-version universe costs what the request touches.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from llmos_cli.pkg.meta import Req

from .model import Candidate, InstalledInfo
from .universe import CandidateSource, as_source


class Pool:
    def __init__(self, universe: Iterable[Candidate] | CandidateSource, installed: Mapping[str, InstalledInfo]):
        self.source = as_source(universe)
        self.installed = dict(installed)
        self._sorted: dict[str, list[Candidate]] = {}
        self._installed_cand: dict[str, Candidate] = {}
        self._sat_cache: dict[tuple[int, bool], tuple[Req, list[Candidate]]] = {}
        self._split_cache: dict[int, tuple[Req, list[Candidate], list[Candidate]]] = {}
        self._providers: dict[str, list[Candidate]] = {}
        # installed packages that no source lists still count as candidates
        self._extra: dict[str, Candidate] = {}
        self._extra_providers: dict[str, list[Candidate]] = {}
        for name, info in self.installed.items():
            if not any(c.meta.parsed_version == info.meta.parsed_version for c in self.source.named(name)):
                cand = Candidate(info.meta, origin=None, priority=-(10**9))
                self._extra[name] = cand
                for virt in info.meta.provides:
                    self._extra_providers.setdefault(str(virt), []).append(cand)

    # ------------------------------------------------------------ lookups
    def _raw(self, name: str) -> list[Candidate]:
        got = list(self.source.named(name))
        if name in self._extra:
            got.append(self._extra[name])
        return got

    def known(self, name: str) -> bool:
        return bool(self._raw(name)) or bool(self.source.providing(name)) or name in self._extra_providers

    def all_names(self) -> set[str]:
        return set(self.source.names()) | set(self._extra) | set(self._extra_providers)

    def versions(self, name: str) -> list[Candidate]:
        """Real candidates of ``name``, newest first, one per version."""
        got = self._sorted.get(name)
        if got is None:
            raw = sorted(self._raw(name), key=lambda c: (c.meta.parsed_version, c.priority), reverse=True)
            got = []
            for cand in raw:
                if got and got[-1].meta.parsed_version == cand.meta.parsed_version:
                    continue  # an equal version from a lower-priority source
                got.append(cand)
            info = self.installed.get(name)
            if info is not None:
                # the installed version is represented by the winning candidate of equal version
                for cand in got:
                    if cand.meta.parsed_version == info.meta.parsed_version:
                        self._installed_cand[name] = cand
                        break
            self._sorted[name] = got
        return got

    def installed_candidate(self, name: str) -> Candidate | None:
        if name not in self.installed:
            return None
        self.versions(name)
        return self._installed_cand.get(name)

    def providers(self, virtual: str) -> list[Candidate]:
        """Candidates of other names that provide ``virtual`` (any version), in a stable order."""
        got = self._providers.get(virtual)
        if got is not None:
            return got
        out = []
        seen = set()
        for cand in [*self.source.providing(virtual), *self._extra_providers.get(virtual, ())]:
            if cand.meta.name == virtual:
                continue
            # keep only the winning candidate for each (name, version)
            for real in self.versions(cand.meta.name):
                if real.meta.parsed_version == cand.meta.parsed_version and virtual in real.meta.provides:
                    key = (real.meta.name, real.meta.version)
                    if key not in seen:
                        seen.add(key)
                        out.append(real)
                    break
        out.sort(key=lambda c: c.meta.parsed_version, reverse=True)
        out.sort(key=lambda c: c.meta.name)  # stable: by name, newest first within a name
        self._providers[virtual] = out
        return out

    def tiers(self, req: Req) -> tuple[list[Candidate], list[Candidate]]:
        """(real satisfiers, provider satisfiers) of ``req``."""
        key = id(req)  # keyed by identity: hashing a SpecifierSet costs more than filtering
        hit = self._split_cache.get(key)
        if hit is not None and hit[0] is req:
            return hit[1], hit[2]
        versions = self.versions(req.name)
        provs = self.providers(req.name)
        if len(req.spec):
            ok = set(req.spec.filter([c.meta.parsed_version for c in versions], prereleases=True))
            real = [c for c in versions if c.meta.parsed_version in ok]
            virt = [c for c in provs if _provides_matching(c, req)]
        else:
            real, virt = versions, provs
        self._split_cache[key] = (req, real, virt)
        return real, virt

    def satisfiers(self, req: Req, model_only: bool = False) -> list[Candidate]:
        key = (id(req), model_only)
        hit = self._sat_cache.get(key)
        if hit is not None and hit[0] is req:
            return hit[1]
        real, virt = self.tiers(req)
        got = real + virt
        if model_only:
            got = [c for c in got if c.meta.kind == "model"]
        self._sat_cache[key] = (req, got)
        return got


def _provides_matching(cand: Candidate, req: Req) -> bool:
    """Whether ``cand`` has a *versioned* provide of ``req.name`` inside ``req.spec`` (apt's rule)."""
    for p in cand.meta.provides:
        if p == req.name:
            pv = getattr(p, "parsed_version", None)
            if pv is not None and req.spec.contains(pv, prereleases=True):
                return True
    return False
