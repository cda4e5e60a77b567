"""``resolve()``: check the request, solve (``encode.py``), and turn the answer into a Plan.

Before solving: unknown names (NotFoundError with a "did you mean"), holds
touched by a remove/upgrade request, and removals that would leave an
installed package without a dependency (DependentsError naming the
dependents, unless they are removed too).  After solving: actions with
marks and reasons, in a safe order (removals with dependents first, then
installs/upgrades with dependencies first, then mark changes), the auto
packages no longer needed, and what an upgrade had to keep back.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping

from llmos_cli.errors import DependentsError, NotFoundError, UnsatisfiableError

from . import encode
from .encode import SAT_SOLVER
from .explain import minimal_core, render
from .graph import InstalledSet, autoremovable, deps_first, drop_unneeded
from .model import Action, Candidate, InstalledInfo, Op, Plan, Request
from .pool import Pool
from .universe import CandidateSource


def resolve(universe: Iterable[Candidate] | CandidateSource, installed: Mapping[str, InstalledInfo], request: Request) -> Plan:
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
    chosen, enc = encode.solve(pool, installed, request, removing, upgrading)
    if chosen is None:
        raise _explain(enc, request)
    keep = set(installed) | {r.name for r in request.install if r.name in chosen}  # asked for by name: stays
    for name in drop_unneeded({n: c.meta for n, c in chosen.items()}, keep, request.install):
        del chosen[name]  # an alternative a planned package already satisfies (apt keeps it)
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
        details={"dependents": {gone: sorted({u.split(" ")[0] for u in users}) for gone, users in blocked.items()}},
    )


# ---------------------------------------------------------------- failures


def _explain(enc, request: Request) -> UnsatisfiableError:
    core = minimal_core(enc.groups, SAT_SOLVER)
    lines = render(core, enc.pool)
    what = []
    if request.install:
        what.append("install " + ", ".join(str(r) for r in request.install))
    if request.remove:
        what.append("remove " + ", ".join(request.remove))
    if request.upgrade or request.upgrade_all:
        what.append("upgrade " + (", ".join(request.upgrade) or "all packages"))
    held = [g.name for g in core if g.kind == "held"]
    if held:
        hint = f"run `llmos unhold {' '.join(held)}` to let llmos change {'them' if len(held) > 1 else 'it'}"
    elif any(not g.targets and g.kind in ("request", "depends", "base") for g in core):
        hint = "run `llmos update` to refresh the package lists, or relax the version constraint"
    else:
        hint = "ask for other versions, or remove one of the conflicting packages first"
    summary = "; ".join(lines)
    if len(summary) > 400 and len(lines) > 4:  # keep the request and the final cause; the rest is in details
        summary = "; ".join([lines[0], f"... ({len(lines) - 3} more steps) ...", *lines[-2:]])
    return UnsatisfiableError(
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
        elif not len(req.spec):
            requested.update(new_set.satisfiers(req)[:1])

    changed = {n for n in set(old) | set(chosen) if old.get(n) is not chosen.get(n)}

    users_of: dict[str, list[tuple[bool, str, bool]]] = {}
    for user in sorted(chosen):
        for base, sats, _text in new_set.needs(user):
            for name in sats:
                if name != user:
                    users_of.setdefault(name, []).append((user not in changed, user, base is not None))

    def conflicting(name: str, cand: Candidate) -> Candidate | None:
        for other in sorted(chosen):
            o = chosen[other]
            if other != name and _conflict(pool, cand, o):
                return o
        return None

    def why_changed(name: str) -> str:
        """Why a package that was not asked for is installed, upgraded or downgraded."""
        if name in old:
            hit = conflicting(name, old[name])
            if hit is not None:
                return f"{old[name]} conflicts with {hit}"
            unmet = _unmet_by(new_set, chosen, name, old[name], [u for _x, u, _b in users_of.get(name, ())])
            if unmet:
                return unmet
        users = users_of.get(name)
        if not users:
            return "upgrade" if name in upgrading else "needed to satisfy the request"
        _unchanged, user, via_base = min(users)
        what = "base model of" if via_base else "dependency of"
        return f"{what} {user} {chosen[user].meta.version}"

    def why_removed(name: str) -> str:
        if name in removing:
            return "requested"
        cand = old[name]
        hit = conflicting(name, cand)
        if hit is not None:
            return f"conflicts with {hit}"
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
                marks.append(Action(Op.MARK_MANUAL, name, o.meta.version, n.meta.version, None, False, "requested"))
            continue
        if n is None:
            assert o is not None and info is not None  # only installed packages are removed
            actions[name] = Action(Op.REMOVE, name, o.meta.version, None, None, info.auto, why_removed(name))
            continue
        auto = name not in requested and (info.auto if info else True)
        if name in requested:
            reason = "requested"
        elif name in upgrading:
            reason = "upgrade requested" if name in request.upgrade else "upgrade"
        else:
            reason = why_changed(name)
        if o is None:
            op = Op.INSTALL
        else:
            op = Op.UPGRADE if n.meta.parsed_version > o.meta.parsed_version else Op.DOWNGRADE
        actions[name] = Action(op, name, o.meta.version if o else None, n.meta.version, n, auto, reason)

    removals = [n for n, a in actions.items() if a.op is Op.REMOVE]
    installs = [n for n, a in actions.items() if a.op is not Op.REMOVE]
    # a removal goes after the removals of its dependents
    dependents: dict[str, set[str]] = {}
    for m in removals:
        for n in old_set.dependencies_of(m):
            dependents.setdefault(n, set()).add(m)
    ordered = deps_first(removals, lambda n: dependents.get(n, ()))
    # a package goes in after its dependencies, and after the change of a package whose old
    # version it conflicts with (unless that package depends on it: dependencies win)
    inside = set(installs)
    deps = {n: new_set.dependencies_of(n) & inside for n in installs}
    for r in [n for n in installs if n in old]:
        for n in installs:
            if n != r and _conflict(pool, chosen[n], old[r]) and not _reaches(deps, r, n):
                deps[n].add(r)
    ordered += deps_first(installs, lambda n: deps[n])
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


def _conflict(pool: Pool, a: Candidate, b: Candidate) -> bool:
    """Whether a and b cannot coexist (a conflict declared by either side)."""
    return any(b in pool.satisfiers(c) for c in a.meta.all_conflicts()) or any(a in pool.satisfiers(c) for c in b.meta.all_conflicts())


def _unmet_by(new_set: InstalledSet, chosen: dict, name: str, old: Candidate, users: list[str]) -> str | None:
    """A relation of one of ``users`` that the old version of ``name`` would not satisfy."""
    trial = InstalledSet({**new_set.metas, name: old.meta})
    for user in sorted(users):
        for base, sats, text in trial.needs(user):
            if not sats:
                return f"{chosen[user]} needs {'the base model ' if base is not None else ''}{text}"
    return None


def _reaches(edges: dict[str, set[str]], start: str, goal: str) -> bool:
    seen, todo = {start}, [start]
    while todo:
        for nxt in edges.get(todo.pop(), ()):
            if nxt == goal:
                return True
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return False
