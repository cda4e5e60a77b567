"""The pool: every candidate the resolver may choose, indexed for lookups.

* ``versions(name)``: the real candidates of a name, newest first, one per
  version (between equal versions the higher source priority wins; the
  installed version is always present even when no source lists it).
* ``satisfiers(req, model_only)``: apt's rule for relations -- an
  unversioned name is satisfied by the real package or by any package that
  *provides* it (a virtual name); a versioned one only by the real package.
  ``model_only`` restricts to ``kind == "model"`` (the base-model constraint).

Grouping is cheap and lazy: versions are parsed and sorted only for names the
resolver actually touches, so a 50,000-package universe costs one pass.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from llmos_cli.pkg.meta import Req

from .model import Candidate, InstalledInfo


class Pool:
    def __init__(self, universe: Iterable[Candidate], installed: Mapping[str, InstalledInfo]):
        self._raw: dict[str, list[Candidate]] = {}
        self._providers_raw: dict[str, list[Candidate]] = {}
        for cand in universe:
            self._raw.setdefault(cand.meta.name, []).append(cand)
            for virt in cand.meta.provides:
                self._providers_raw.setdefault(virt, []).append(cand)
        self.installed = dict(installed)
        self._sorted: dict[str, list[Candidate]] = {}
        self._installed_cand: dict[str, Candidate] = {}
        self._sat_cache: dict[tuple[int, bool], tuple[Req, list[Candidate]]] = {}
        # installed packages that no source lists still count as candidates
        for name, info in self.installed.items():
            if not any(c.meta.parsed_version == info.meta.parsed_version for c in self._raw.get(name, ())):
                cand = Candidate(info.meta, origin=None, priority=-(10**9))
                self._raw.setdefault(name, []).append(cand)
                for virt in info.meta.provides:
                    self._providers_raw.setdefault(virt, []).append(cand)

    # ------------------------------------------------------------ lookups
    def known(self, name: str) -> bool:
        return name in self._raw or name in self._providers_raw

    def all_names(self) -> set[str]:
        return set(self._raw) | set(self._providers_raw)

    def versions(self, name: str) -> list[Candidate]:
        """Real candidates of ``name``, newest first, one per version."""
        got = self._sorted.get(name)
        if got is None:
            raw = sorted(self._raw.get(name, ()), key=lambda c: (c.meta.parsed_version, c.priority), reverse=True)
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
        """Candidates of other names that provide ``virtual``, in a stable order."""
        out = []
        seen = set()
        for cand in self._providers_raw.get(virtual, ()):
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
        return out

    def satisfiers(self, req: Req, model_only: bool = False) -> list[Candidate]:
        # keyed by identity: hashing a SpecifierSet costs more than filtering
        key = (id(req), model_only)
        hit = self._sat_cache.get(key)
        if hit is not None and hit[0] is req:
            return hit[1]
        versions = self.versions(req.name)
        if len(req.spec):
            ok = set(req.spec.filter([c.meta.parsed_version for c in versions], prereleases=True))
            got = [c for c in versions if c.meta.parsed_version in ok]
        else:
            got = versions + self.providers(req.name)
        if model_only:
            got = [c for c in got if c.meta.kind == "model"]
        self._sat_cache[key] = (req, got)
        return got
