"""apt-style resolution as weighted MaxSAT (python-sat's RC2).

One boolean per candidate (package version) of every *relevant* name -- the
names reachable from the request and the installed set through depends,
alternatives, provides and base.  Hard clauses (each tagged with a
``Group`` so failures can be explained, see ``explain.py``):

* at most one version of a name;
* ``C -> s1 | s2 | ...`` for each dependency of C (satisfiers of every
  alternative; virtual names via provides, apt's rule for versioned ones);
* ``C -> model satisfiers of C.base`` (the base-model constraint);
* ``not (C and T)`` for each conflict of C and each T it names (so a
  conflict binds whichever side declares it);
* requests: some satisfier of each install requirement, no version of each
  removed name; held packages stay at their installed version.

Soft clauses, lexicographically (each level outweighs all below together):

1. keep every installed package installed;
2. move packages being upgraded to their newest version (rank penalty);
3. keep every other installed package at its version;
4. for alternatives ``a | b`` that no installed package satisfies, prefer
   the first one that can be satisfied (apt's choice);
5. prefer newer versions (rank penalty);
6. install as few new packages as possible.

The optimum is turned into a ``Plan``; see ``docs/resolver.md``.
"""

from __future__ import annotations

import difflib
from typing import Iterable, Mapping

from llmos_cli.errors import DependentsError, NotFoundError, UnsatisfiableError
from llmos_cli.pkg.meta import Req

from .explain import Group, minimal_core, render
from .graph import InstalledSet, autoremovable, deps_first
from .model import Action, Candidate, InstalledInfo, Plan, Request
from .pool import Pool

SAT_SOLVER = "g3"  # glucose 3: fast on small structured instances, supports assumptions and cores


def resolve(universe: Iterable[Candidate], installed: Mapping[str, InstalledInfo], request: Request) -> Plan:
    """Compute the plan that carries out ``request`` on ``installed`` using ``universe``.

    Raises NotFoundError (unknown name), UnsatisfiableError (no solution;
    ``details["explanation"]`` holds the reasons, one sentence per line) and
    DependentsError (a removal would break an installed package that stays).
    """
    installed = dict(installed)
    pool = Pool(universe, installed)
    notes: list[str] = []
    removing, upgrading = _check_request(pool, installed, request, notes)
    _check_dependents(installed, removing)
    problem = _Problem(pool, installed, request, removing, upgrading)
    chosen = problem.solve()
    plan = _build_plan(pool, installed, request, removing, upgrading, chosen)
    plan.notes = notes + plan.notes
    return plan


# ---------------------------------------------------------------- request checks


def _unknown(pool: Pool, name: str, what: str = "package") -> NotFoundError:
    close = difflib.get_close_matches(name, sorted(pool.all_names()), n=3, cutoff=0.6)
    hint = f"did you mean {', '.join(close)}?" if close else "run `llmos update` to refresh the package lists, or `llmos search`"
    return NotFoundError(f"unknown {what} {name!r}", hint)


def _check_request(pool: Pool, installed: dict, request: Request, notes: list[str]) -> tuple[set[str], set[str]]:
    for req in request.install:
        if not pool.known(req.name):
            raise _unknown(pool, req.name)
    removing: set[str] = set()
    for name in request.remove:
        if name in installed:
            if installed[name].held:
                raise _held_error(name, installed[name], "remove")
            removing.add(name)
        elif pool.known(name):
            notes.append(f"{name} is not installed, so not removed")
        else:
            raise _unknown(pool, name)
    upgrading: set[str] = set()
    for name in request.upgrade:
        if name not in installed:
            if not pool.known(name):
                raise _unknown(pool, name)
            raise NotFoundError(f"{name} is not installed", f"install it with `llmos install {name}`")
        if installed[name].held:
            raise _held_error(name, installed[name], "upgrade")
        upgrading.add(name)
    if request.upgrade_all:
        upgrading.update(n for n, i in installed.items() if not i.held and n not in removing)
    upgrading -= removing
    return removing, upgrading


def _held_error(name: str, info: InstalledInfo, verb: str) -> UnsatisfiableError:
    line = f"{name} {info.meta.version} is installed and held"
    return UnsatisfiableError(
        f"cannot {verb} {name}: {line}",
        f"run `llmos unhold {name}` first",
        details={"explanation": [f"you asked to {verb} {name}", line]},
    )


def _check_dependents(installed: dict, removing: set[str]) -> None:
    """Refuse a removal that leaves an installed package (not removed too) without a dependency."""
    if not removing:
        return
    iset = InstalledSet({n: i.meta for n, i in installed.items()})
    blocked: dict[str, list[str]] = {}
    for name in sorted(iset.metas):
        if name in removing:
            continue
        meta = iset.metas[name]
        for base, sats, text in iset.needs(name):
            if not sats or any(s not in removing for s in sats):
                continue  # already broken, or still satisfied by something that stays
            relation = f"base model {text}" if base is not None else text
            for gone in sats:
                blocked.setdefault(gone, []).append(f"{meta.name} {meta.version} ({relation})")
    if not blocked:
        return
    parts = [f"{gone} is needed by {', '.join(users)}" for gone, users in sorted(blocked.items())]
    dependents = sorted({u.split(" ")[0] for users in blocked.values() for u in users})
    raise DependentsError(
        "cannot remove: " + "; ".join(parts),
        f"remove the dependents too: `llmos remove {' '.join(sorted(removing | set(dependents)))}`",
        details={"dependents": {gone: sorted({u.split(' ')[0] for u in users}) for gone, users in blocked.items()}},
    )


# ---------------------------------------------------------------- the SAT problem


class _Problem:
    def __init__(self, pool: Pool, installed: dict, request: Request, removing: set[str], upgrading: set[str]):
        self.pool = pool
        self.installed = installed
        self.request = request
        self.removing = removing
        self.upgrading = upgrading
        self.var: dict[int, int] = {}  # id(candidate) -> variable
        self.cands: list[Candidate] = []  # variable - 1 -> candidate
        self.groups: list[Group] = []
        self.names = self._relevant_names()
        for name in self.names:
            for cand in pool.versions(name):
                self.cands.append(cand)
                self.var[id(cand)] = len(self.cands)
        self._hard()

    def lit(self, cand: Candidate) -> int:
        return self.var[id(cand)]

    def _relevant_names(self) -> list[str]:
        pool = self.pool
        todo = list(self.installed) + list(self.upgrading)
        for req in self.request.install:
            todo += [c.meta.name for c in pool.satisfiers(req)]
            todo.append(req.name)
        seen: set[str] = set()
        while todo:
            name = todo.pop()
            if name in seen:
                continue
            seen.add(name)
            for cand in pool.versions(name):
                meta = cand.meta
                for dep in meta.depends:
                    for alt in dep.alternatives:
                        for s in pool.satisfiers(alt):
                            if s.meta.name not in seen:
                                todo.append(s.meta.name)
                if meta.base is not None:
                    for s in pool.satisfiers(meta.base, model_only=True):
                        if s.meta.name not in seen:
                            todo.append(s.meta.name)
        return sorted(n for n in seen if pool.versions(n))

    def _sat_lits(self, reqs, model_only=False) -> tuple[list[Candidate], list[int]]:
        cands: list[Candidate] = []
        for req in reqs:
            for s in self.pool.satisfiers(req, model_only):
                if id(s) in self.var and s not in cands:
                    cands.append(s)
        return cands, [self.lit(c) for c in cands]

    def _hard(self) -> None:
        pool, add = self.pool, self.groups.append
        for name in self.names:
            versions = pool.versions(name)
            if len(versions) > 1:
                lits = [self.lit(c) for c in versions]
                add(Group("one-version", name, name, clauses=[[-a, -b] for i, a in enumerate(lits) for b in lits[i + 1 :]]))
            for cand in versions:
                v = self.lit(cand)
                meta = cand.meta
                for dep in meta.depends:
                    targets, lits = self._sat_lits(dep.alternatives)
                    add(Group("depends", name, str(dep), cand, targets, [[-v] + lits]))
                if meta.base is not None:
                    targets, lits = self._sat_lits([meta.base], model_only=True)
                    add(Group("base", name, str(meta.base), cand, targets, [[-v] + lits]))
                for conflict in meta.conflicts:
                    targets = [t for t in pool.satisfiers(conflict) if t.meta.name != name and id(t) in self.var]
                    if targets:
                        add(Group("conflicts", name, str(conflict), cand, targets, [[-v, -self.lit(t)] for t in targets]))
        for req in self.request.install:
            targets, lits = self._sat_lits([req])
            add(Group("request", "", str(req), None, targets, [lits]))
        for name in sorted(self.removing):
            add(Group("remove", name, name, None, [], [[-self.lit(c)] for c in pool.versions(name)]))
        for name, info in sorted(self.installed.items()):
            if info.held:
                cand = pool.installed_candidate(name)
                add(Group("held", name, name, cand, [], [[self.lit(cand)]]))

    def _soft_levels(self) -> list[dict[tuple[int, ...], int]]:
        pool = self.pool
        keep, upgrade, stay, alts, newest, fresh = ({} for _ in range(6))
        installed_lits = set()
        for name, info in self.installed.items():
            cand = pool.installed_candidate(name)
            installed_lits.add(self.lit(cand))
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
            for cand in versions:
                for dep in cand.meta.depends:
                    if len(dep.alternatives) < 2:
                        continue
                    prefix: list[int] = []
                    per_alt = []
                    for alt in dep.alternatives:
                        _t, lits = self._sat_lits([alt])
                        per_alt.append(lits)
                    if any(lit in installed_lits for lits in per_alt for lit in lits):
                        continue  # an installed alternative satisfies it: apt keeps that one
                    for lits in per_alt[:-1]:
                        prefix = prefix + [x for x in lits if x not in prefix]
                        if prefix:
                            key = tuple([-self.lit(cand)] + prefix)
                            alts[key] = alts.get(key, 0) + 1
        return [keep, upgrade, stay, alts, newest, fresh]

    def solve(self) -> dict[str, Candidate]:
        if any(not cl for g in self.groups for cl in g.clauses):
            self._explain()
        from pysat.examples.rc2 import RC2Stratified
        from pysat.formula import WCNF

        wcnf = WCNF()
        for g in self.groups:
            for cl in g.clauses:
                wcnf.append(cl)
        levels = self._soft_levels()
        scale = 1
        merged: dict[tuple[int, ...], int] = {}
        for level in reversed(levels):
            for clause, w in level.items():
                merged[clause] = merged.get(clause, 0) + w * scale
            scale *= sum(level.values()) + 1
        for clause, w in merged.items():
            wcnf.append(list(clause), weight=w)
        with RC2Stratified(wcnf, solver=SAT_SOLVER, adapt=True, exhaust=True, minz=True) as rc2:
            model = rc2.compute()
        if model is None:
            self._explain()
        chosen: dict[str, Candidate] = {}
        for lit in model:
            if 0 < lit <= len(self.cands):
                cand = self.cands[lit - 1]
                chosen[cand.meta.name] = cand
        return chosen

    def _explain(self) -> None:
        core = minimal_core(self.groups, SAT_SOLVER)
        lines = render(core, self.pool)
        what = []
        if self.request.install:
            what.append("install " + ", ".join(str(r) for r in self.request.install))
        if self.request.remove:
            what.append("remove " + ", ".join(self.request.remove))
        if self.request.upgrade or self.request.upgrade_all:
            what.append("upgrade " + (", ".join(self.request.upgrade) or "all packages"))
        held = [g.name for g in core if g.kind == "held"]
        if held:
            hint = f"run `llmos unhold {' '.join(held)}` to let llmos change {'them' if len(held) > 1 else 'it'}"
        elif any(not g.targets and g.kind in ("request", "depends", "base") for g in core):
            hint = "run `llmos update` to refresh the package lists, or relax the version constraint"
        else:
            hint = "ask for other versions, or remove one of the conflicting packages first"
        summary = "; ".join(lines)
        if len(summary) > 400:
            summary = "; ".join(lines[:2]) + f"; ... ({len(lines) - 2} more reasons)"
        raise UnsatisfiableError(
            f"cannot {' and '.join(what) or 'satisfy the installed set'}: {summary}",
            hint,
            details={"explanation": lines},
        )


# ---------------------------------------------------------------- the plan


def _build_plan(pool, installed, request, removing, upgrading, chosen) -> Plan:
    old = {n: pool.installed_candidate(n) for n in installed}
    new_set = InstalledSet({n: c.meta for n, c in chosen.items()})
    old_set = InstalledSet({n: i.meta for n, i in installed.items()})
    requested: set[str] = set()
    for req in request.install:
        if req.name in chosen and req.spec.contains(chosen[req.name].meta.parsed_version, prereleases=True):
            requested.add(req.name)
        elif not str(req.spec):
            requested.update(new_set.satisfiers(req)[:1])

    changed = {n for n in set(old) | set(chosen) if old.get(n) is not chosen.get(n)}

    def why_needed(name: str) -> str:
        users = []
        for user in sorted(chosen):
            if user == name:
                continue
            for base, sats, _text in new_set.needs(user):
                if name in sats:
                    users.append((user not in changed, user, base is not None))
                    break
        if not users:
            return "upgrade" if name in upgrading else "kept"
        _unchanged, user, via_base = min(users)
        what = "base model of" if via_base else "dependency of"
        return f"{what} {user} {chosen[user].meta.version}"

    def why_removed(name: str) -> str:
        if name in removing:
            return "requested"
        cand = old[name]
        for other in sorted(chosen):
            o = chosen[other]
            if other == name:
                continue
            hits = any(cand in pool.satisfiers(c) for c in o.meta.conflicts)
            if hits or any(o in pool.satisfiers(c) for c in cand.meta.conflicts):
                return f"conflicts with {other} {o.meta.version}"
        for base, sats, text in InstalledSet({**new_set.metas, name: cand.meta}).needs(name):
            if not sats:
                return f"its {'base model' if base is not None else 'dependency'} {text} would be unmet"
        return "no longer installable"

    actions: dict[str, Action] = {}
    marks: list[Action] = []
    for name in sorted(set(old) | set(chosen)):
        o, n = old.get(name), chosen.get(name)
        info = installed.get(name)
        if o is not None and n is not None and o is n:
            if name in requested and info.auto:
                marks.append(Action("mark-manual", name, o.meta.version, n.meta.version, None, False, "requested"))
            continue
        if n is None:
            actions[name] = Action("remove", name, o.meta.version, None, None, info.auto, why_removed(name))
            continue
        auto = name not in requested and (info.auto if info else True)
        if name in requested:
            reason = "requested"
        elif name in upgrading:
            reason = "upgrade requested" if name in request.upgrade else "upgrade"
        else:
            reason = why_needed(name)
        if o is None:
            op = "install"
        else:
            op = "upgrade" if n.meta.parsed_version > o.meta.parsed_version else "downgrade"
        actions[name] = Action(op, name, o.meta.version if o else None, n.meta.version, n, auto, reason)

    removals = [n for n, a in actions.items() if a.op == "remove"]
    installs = [n for n, a in actions.items() if a.op != "remove"]
    ordered = list(reversed(deps_first(removals, old_set.dependencies_of)))
    ordered += deps_first(installs, new_set.dependencies_of)
    plan = Plan([actions[n] for n in ordered] + marks)

    result = {}
    for name, cand in chosen.items():
        a = actions.get(name)
        info = installed.get(name)
        auto = a.auto if a else (False if name in requested else info.auto)
        result[name] = InstalledInfo(cand.meta, auto=auto, held=bool(info and info.held))
    plan.unneeded = autoremovable(result)
    kept = set()
    for name in upgrading | {n for n, i in installed.items() if i.held and request.upgrade_all}:
        if name in chosen and pool.versions(name) and pool.versions(name)[0] is not chosen[name]:
            if pool.versions(name)[0].meta.parsed_version > chosen[name].meta.parsed_version:
                kept.add(name)
    plan.kept_back = sorted(kept)
    return plan
