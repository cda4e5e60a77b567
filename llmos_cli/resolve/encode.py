"""The resolution problem as weighted MaxSAT, built lazily over a growing scope.

Variables: one boolean per candidate (package version) of every name in
*scope*.  Hard clauses, each tagged with a ``Group`` so a failure can be
explained (``explain.py``):

* at most one version of a name;
* ``C -> s1 | s2 | ...`` for each dependency of C (the satisfiers of every
  alternative: apt's rules for provides and versioned relations);
* ``C -> model satisfiers of C.base`` (the base-model constraint);
* ``not (C and T)`` for each conflict of C and each T it names, so a
  conflict binds whichever side declares it;
* requests: a satisfier of each install requirement; no version of a
  removed name; held packages stay at their installed version.

Soft clauses, lexicographic (each level outweighs all the levels below it
together):

1. keep every installed package installed;
2. packages being upgraded: newest version (penalty = rank from newest);
3. other installed packages: keep their version;
4. preferred satisfiers: for ``a | b`` the first alternative that can be
   satisfied, and for a name that is both a real package and a virtual one
   the real package (apt's choices) -- unless an installed package already
   satisfies the relation (a package the plan installs anyway is handled
   after solving: ``graph.drop_unneeded``);
5. newer versions (penalty = rank from newest);
6. as few new packages as possible.

Scope.  A registry can be much larger than what a request touches, and the
names reachable through *every* version, alternative and provider are often
ten times the closure that gets installed.  So the scope starts with the
installed names, the requested ones and their *preferred* closure (newest
and installed versions, first alternative, first provider), and a relation
whose satisfiers lie partly outside the scope gets one extra "outside"
variable in its clause.  Choosing an outside variable costs one new package
(level 6) and nothing else, which never exceeds what really installing an
outside package would cost at levels 1-5.  The optimum of this relaxed
problem is therefore a lower bound on levels 1-5; when it uses no outside
variable it is a real solution and optimal on levels 1-5 (level 6 can be
off when two relations would share one outside package).  Otherwise the
needed outside names join the scope and we solve again.  A relaxed problem
with no solution proves the full one has none, and its core explains why.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable

from llmos_cli.pkg.meta import Req

from .explain import Group
from .model import Candidate, Request
from .pool import Pool

EAGER_AFTER = 8  # rounds of preferred growth before the scope takes everything behind a missing name
SAT_SOLVER = "g3"  # glucose 3: fast on small structured instances, supports assumptions and cores


class Scope:
    """The set of names the encoding covers, grown by preferred closure."""

    def __init__(self, pool: Pool, installed: dict):
        self.pool = pool
        self.installed = installed
        self.names: set[str] = set()

    def preferred(self, name: str) -> list[Candidate]:
        out = self.pool.versions(name)[:1]
        inst = self.pool.installed_candidate(name)
        if inst is not None and all(inst is not c for c in out):
            out.append(inst)
        return out

    def best(self, reqs, model_only: bool = False) -> Candidate | None:
        """The satisfier apt would pick first: an installed one, else the first alternative's newest."""
        first = None
        for req in reqs:
            for s in self.pool.satisfiers(req, model_only):
                if s.meta.name in self.names or s.meta.name in self.installed:
                    return s
                if first is None:
                    first = s
        return first

    def grow(self, names, cands: Iterable[Candidate] = ()) -> None:
        todo = [c for c in cands]
        for name in names:
            if name not in self.names and self.pool.versions(name):
                todo += self.preferred(name)
        while todo:
            cand = todo.pop()
            if cand.meta.name not in self.names:
                self.names.add(cand.meta.name)
                todo += self.preferred(cand.meta.name)
            meta = cand.meta
            for reqs, model_only in [(d.alternatives, False) for d in meta.depends] + ([((meta.base,), True)] if meta.base is not None else []):
                pick = self.best(reqs, model_only)
                if pick is not None and pick.meta.name not in self.names:
                    todo.append(pick)

    def grow_all(self, names) -> None:
        """Everything reachable through every version, alternative and provider."""
        todo = list(names)
        while todo:
            name = todo.pop()
            if name in self.names or not self.pool.versions(name):
                continue
            self.names.add(name)
            for cand in self.pool.versions(name):
                meta = cand.meta
                rels = [(alt, False) for d in meta.depends for alt in d.alternatives]
                rels += [(meta.base, True)] if meta.base is not None else []
                for req, model_only in rels:
                    todo += [s.meta.name for s in self.pool.satisfiers(req, model_only) if s.meta.name not in self.names]


class Encoding:
    """One round: hard groups and soft levels over the names in ``scope``."""

    def __init__(
        self,
        pool: Pool,
        installed: dict,
        request: Request,
        removing: set[str],
        upgrading: set[str],
        scope: set[str],
    ):
        self.pool = pool
        self.installed = installed
        self.request = request
        self.removing = removing
        self.upgrading = upgrading
        self.names = sorted(scope)
        self.var: dict[int, int] = {}  # id(candidate) -> variable
        self.cands: list[Candidate] = []  # variable - 1 -> candidate
        for name in self.names:
            for cand in pool.versions(name):
                self.cands.append(cand)
                self.var[id(cand)] = len(self.cands)
        self.out_var: dict[tuple[str, ...], int] = {}  # names outside the scope -> variable
        self.out_pick: dict[int, Candidate] = {}  # variable -> the satisfier apt would try first
        self.groups: list[Group] = []
        self._prefs: list | None = None
        self._hard()

    def lit(self, cand: Candidate) -> int:
        return self.var[id(cand)]

    def _outside(self, names: tuple[str, ...], pick: Candidate) -> int:
        v = self.out_var.get(names)
        if v is None:
            v = len(self.cands) + len(self.out_var) + 1
            self.out_var[names] = v
            self.out_pick[v] = pick
        return v

    def sats(self, reqs, model_only: bool = False) -> tuple[list[Candidate], list[int], int | None]:
        """All satisfiers, the in-scope ones as literals, and the outside variable (or None)."""
        cands: list[Candidate] = []
        lits: list[int] = []
        outside: list[Candidate] = []
        for req in reqs:
            for s in self.pool.satisfiers(req, model_only):
                v = self.var.get(id(s))
                if v is None:
                    outside.append(s)
                    cands.append(s)
                elif v not in lits:
                    cands.append(s)
                    lits.append(v)
        if not outside:
            return cands, lits, None
        return cands, lits, self._outside(tuple(sorted({c.meta.name for c in outside})), outside[0])

    def _implies(self, kind: str, name: str, rel, cand: Candidate | None, reqs, model_only: bool = False) -> None:
        targets, lits, out = self.sats(reqs, model_only)
        head = [-self.lit(cand)] if cand is not None else []
        self.groups.append(Group(kind, name, rel, cand, targets, [head + lits + ([out] if out else [])]))

    def _hard(self) -> None:
        pool, add = self.pool, self.groups.append
        for name in self.names:
            versions = pool.versions(name)
            if len(versions) > 1:
                lits = [self.lit(c) for c in versions]
                add(Group("one-version", name, name, clauses=[[-a, -b] for i, a in enumerate(lits) for b in lits[i + 1 :]]))
            for cand in versions:
                meta = cand.meta
                for dep in meta.depends:
                    self._implies("depends", name, dep, cand, dep.alternatives)
                if meta.base is not None:
                    self._implies("base", name, meta.base, cand, (meta.base,), model_only=True)
                v = self.lit(cand)
                for conflict in meta.all_conflicts():
                    targets = [t for t in pool.satisfiers(conflict) if t.meta.name != name and id(t) in self.var]
                    if targets:
                        add(Group("conflicts", name, conflict, cand, targets, [[-v, -self.lit(t)] for t in targets]))
        for req in self.request.install:
            self._implies("request", "", req, None, (req,))
        for name in sorted(self.removing):
            add(Group("remove", name, name, None, [], [[-self.lit(c)] for c in pool.versions(name)]))
        for name, info in sorted(self.installed.items()):
            if info.held:
                held = pool.installed_candidate(name)
                assert held is not None  # the pool always holds the installed version
                add(Group("held", name, name, held, [], [[self.lit(held)]]))

    def soft_levels(self) -> list[dict[tuple[int, ...], int]]:
        pool = self.pool
        levels: list[dict[tuple[int, ...], int]] = [{} for _ in range(6)]
        keep, upgrade, stay, alts, newest, fresh = levels
        for name, info in self.installed.items():
            cand = pool.installed_candidate(name)
            assert cand is not None  # the pool always holds the installed version
            if name in self.removing or info.held:
                continue
            keep[tuple(self.lit(c) for c in pool.versions(name))] = 1
            if name not in self.upgrading:
                stay[(self.lit(cand),)] = 1
        for name in self.names:
            versions = pool.versions(name)
            rank = upgrade if name in self.upgrading else newest
            for i, cand in enumerate(versions):
                if i:
                    rank[(-self.lit(cand),)] = i
                if name not in self.installed:
                    fresh[(-self.lit(cand),)] = 1
        for _key, cand, tiers in self.preferences():
            if any(self.pool.installed_candidate(c.meta.name) is c for tier in tiers for c in tier):
                continue  # an installed package satisfies it: apt keeps that one
            head = [-self.lit(cand)] if cand is not None else []
            for k in range(1, len(tiers)):
                lits, out = self._lits([c for tier in tiers[:k] for c in tier])
                clause = tuple(head + lits + ([out] if out else []))
                alts[clause] = alts.get(clause, 0) + 1
        for out in self.out_var.values():
            fresh[(-out,)] = 1
        return levels

    def _tiers(self, reqs, model_only: bool = False) -> list[list[Candidate]]:
        """Satisfiers in apt's order of preference: each alternative's real package, then its providers."""
        tiers = []
        for req in reqs:
            for tier in self.pool.tiers(req):
                if model_only:
                    tier = [c for c in tier if c.meta.kind == "model"]
                if tier:
                    tiers.append(tier)
        return tiers

    def preferences(self) -> list[tuple[tuple[int, int], Candidate | None, list[list[Candidate]]]]:
        """(key, the package whose relation it is or None for a request, tiers) of every relation with a preferred satisfier."""
        got = self._prefs
        if got is None:
            got = []
            for name in self.names:
                for cand in self.pool.versions(name):
                    meta = cand.meta
                    rels: list[tuple[object, tuple[Req, ...], bool]] = [(dep, dep.alternatives, False) for dep in meta.depends]
                    if meta.base is not None:
                        rels.append((meta.base, (meta.base,), True))
                    for rel, reqs, model_only in rels:
                        tiers = self._tiers(reqs, model_only)
                        if len(tiers) > 1:
                            got.append(((id(cand), id(rel)), cand, tiers))
            for req in self.request.install:
                tiers = self._tiers((req,))
                if len(tiers) > 1:
                    got.append(((0, id(req)), None, tiers))
            self._prefs = got
        return got

    def _lits(self, cands: list[Candidate]) -> tuple[list[int], int | None]:
        lits: list[int] = []
        outside: list[Candidate] = []
        for c in cands:
            v = self.var.get(id(c))
            if v is None:
                outside.append(c)
            elif v not in lits:
                lits.append(v)
        if not outside:
            return lits, None
        return lits, self._outside(tuple(sorted({c.meta.name for c in outside})), outside[0])

    def optimize(self) -> list[int] | None:
        """The lexicographic optimum (a model), or None when the hard part is unsatisfiable."""
        if any(not cl for g in self.groups for cl in g.clauses):
            return None
        from pysat.examples.rc2 import RC2Stratified
        from pysat.formula import WCNF

        wcnf = WCNF()
        for g in self.groups:
            for cl in g.clauses:
                wcnf.append(cl)
        scale = 1
        merged: dict[tuple[int, ...], int] = {}
        for level in reversed(self.soft_levels()):
            for clause, w in level.items():
                merged[clause] = merged.get(clause, 0) + w * scale
            scale *= sum(level.values()) + 1
        if not merged:  # nothing to optimise (RC2 needs at least one soft clause)
            from pysat.solvers import Solver

            with Solver(name=SAT_SOLVER, bootstrap_with=wcnf.hard) as solver:
                return solver.get_model() if solver.solve() else None
        for clause, w in merged.items():
            wcnf.append(list(clause), weight=w)
        with RC2Stratified(wcnf, solver=SAT_SOLVER, adapt=True, exhaust=True, minz=True) as rc2:
            return rc2.compute()

    def costs(self, chosen: dict[str, Candidate]) -> list[int]:
        """The value of each soft level for a set of chosen candidates (all in scope)."""
        true = {self.lit(c) for c in chosen.values()}
        out = []
        for level in self.soft_levels():
            total = 0
            for clause, w in level.items():
                if not any((lit in true) if lit > 0 else (-lit not in true) for lit in clause):
                    total += w
            out.append(total)
        return out

    def chosen(self, model: list[int]) -> dict[str, Candidate]:
        out: dict[str, Candidate] = {}
        for lit in model:
            if 0 < lit <= len(self.cands):
                cand = self.cands[lit - 1]
                out[cand.meta.name] = cand
        return out

    def needs_outside(self, model: list[int]) -> list[tuple[tuple[str, ...], Candidate]]:
        """The outside variables the optimum uses (each costs, so it is true only when it helps)."""
        true = {lit for lit in model if lit > 0}
        return [(names, self.out_pick[v]) for names, v in self.out_var.items() if v in true]


def solve(pool: Pool, installed: dict, request: Request, removing: set[str], upgrading: set[str], eager: bool = False):
    """Grow the scope until the relaxed optimum needs nothing outside it.

    Returns (chosen name -> candidate, final encoding) or (None, encoding) when
    there is no solution (the encoding then explains it).  ``eager`` starts
    from everything reachable instead (the reference the tests compare with).
    """
    scope = Scope(pool, installed)
    first: list[Candidate] = []
    for req in request.install:
        if eager:
            first += pool.satisfiers(req)
        else:
            pick = scope.best((req,))
            if pick is not None:
                first.append(pick)
    if eager:
        scope.grow_all(list(installed) + sorted(upgrading) + [c.meta.name for c in first])
    else:
        scope.grow(list(installed) + sorted(upgrading), first)
    tried: set[tuple[str, ...]] = set()
    growth = 0
    for _round in itertools.count(1):
        enc = Encoding(pool, installed, request, removing, upgrading, scope.names)
        model = enc.optimize()
        if model is None:
            return None, enc
        missing = enc.needs_outside(model)
        if not missing:
            return enc.chosen(model), enc
        growth += 1
        if growth >= EAGER_AFTER:  # a long chase: take everything reachable behind what is missing
            scope.grow_all([n for outside, _pick in missing for n in outside])
            continue
        grow: list[Candidate] = []
        more: list[str] = []
        for outside, pick in missing:
            if outside in tried:
                more += outside  # the preferred pick was not enough: bring in every outside satisfier
            else:
                tried.add(outside)
                grow.append(pick)
        scope.grow(more, grow)
    raise AssertionError("unreachable")
