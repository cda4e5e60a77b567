"""Turn an unsatisfiable problem into sentences a person can follow.

Every hard constraint of the SAT encoding belongs to a *group* that knows
what it means in words ("med-lib 2.0 depends on bio-core>=2", "law-lib 1.0 is
installed and held", ...).  When the problem has no solution we ask the SAT
solver for an unsatisfiable core over the group selectors, shrink it to a
minimal one (deletion-based MUS: drop each group in turn and keep it out when
the rest is still unsatisfiable), and print only those groups, ordered as a
chain that starts at the request and follows the names each line mentions
(the way PubGrub reports: who needs what, and what stands in the way).
Lines about several versions of one package with the same relation are
merged ("med-lib 1.0 and 2.0 depend on bio-core>=2").
"""

from __future__ import annotations

from dataclasses import dataclass, field

from llmos_cli.pkg.meta import Dependency, Req

from .model import Candidate
from .pool import Pool


@dataclass
class Group:
    """One hard constraint, in words and in clauses."""

    kind: str  # request | remove | held | depends | base | conflicts | one-version
    name: str  # the package whose choice triggers it ("" for a request)
    rel: object  # the relation (Dependency, Req or name); rendered only when explaining
    cand: Candidate | None = None
    targets: list[Candidate] = field(default_factory=list)
    clauses: list[list[int]] = field(default_factory=list)

    @property
    def text(self) -> str:
        return str(self.rel)


def minimal_core(groups: list[Group], solver_name: str) -> list[Group]:
    """A minimal unsatisfiable subset of ``groups`` (assumes the whole set is UNSAT)."""
    from pysat.solvers import Solver

    top = max((abs(lit) for g in groups for cl in g.clauses for lit in cl), default=0)
    selectors = [top + 1 + i for i in range(len(groups))]
    with Solver(name=solver_name) as solver:
        for sel, group in zip(selectors, groups):
            for clause in group.clauses:
                solver.add_clause(list(clause) + [-sel])
        if solver.solve(assumptions=selectors):
            raise AssertionError("minimal_core called on a satisfiable problem")
        core = _ordered(solver.get_core() or selectors, selectors, groups)
        # deletion-based shrinking; try the groups that explain least first
        i = 0
        while i < len(core):
            trial = core[:i] + core[i + 1 :]
            if not solver.solve(assumptions=trial):
                smaller = set(solver.get_core() or trial)
                core = [s for s in trial if s in smaller]
            else:
                i += 1
    index = {sel: g for sel, g in zip(selectors, groups)}
    return [index[s] for s in core]


_DISPLAY_ORDER = {"request": 0, "remove": 1, "depends": 2, "base": 2, "conflicts": 3, "one-version": 4, "held": 5}
_DROP_ORDER = {"one-version": 0, "conflicts": 1, "depends": 2, "base": 2, "held": 3, "remove": 4, "request": 5}


def _ordered(core: list[int], selectors: list[int], groups: list[Group]) -> list[int]:
    kind = {sel: g.kind for sel, g in zip(selectors, groups)}
    pos = {sel: i for i, sel in enumerate(selectors)}
    return sorted(set(core), key=lambda s: (_DROP_ORDER.get(kind[s], 9), pos[s]))


# ---------------------------------------------------------------- wording


def _versions(cands: list[Candidate]) -> str:
    vs = [c.meta.version for c in cands]
    if len(vs) <= 2:
        return " and ".join(vs)
    return ", ".join(vs[:-1]) + " and " + vs[-1]


def _names(cands: list[Candidate]) -> str:
    seen: dict[str, list[str]] = {}
    for c in cands:
        seen.setdefault(c.meta.name, []).append(c.meta.version)
    return ", ".join(f"{n} {'/'.join(vs)}" for n, vs in seen.items())


def _available(pool: Pool, name: str, versioned: bool = False) -> str:
    vs = [c.meta.version for c in pool.versions(name)]
    if not vs:
        provs = pool.providers(name)
        if not provs:
            return f"no package named {name} exists"
        if not versioned:
            return f"{name} is only a virtual name"
        given = sorted({v for c in provs for p in c.meta.provides if p == name and (v := getattr(p, "parsed_version", None)) is not None})
        if not given:
            return f"{name} is only a virtual name, and no provider gives it a version"
        return f"{name} is a virtual name; its providers give {', '.join(str(v) for v in given[:8])}"
    return f"available: {', '.join(vs[:8])}{' ...' if len(vs) > 8 else ''}"


@dataclass
class _Line:
    subject: str
    mentions: list[str]
    text: str


def render(core: list[Group], pool: Pool) -> list[str]:
    """Sentences for a minimal core, as a chain from the request outwards."""
    merged: dict[tuple, list[Group]] = {}
    for g in sorted(core, key=lambda g: _DISPLAY_ORDER.get(g.kind, 9)):
        key = (g.kind, g.name, g.text) if g.kind in ("depends", "base", "conflicts") else (g.kind, g.name, g.text, id(g))
        merged.setdefault(key, []).append(g)
    lines: list[_Line] = []
    for gs in merged.values():
        g = gs[0]
        cands = sorted((x.cand for x in gs if x.cand is not None), key=lambda c: c.meta.parsed_version)
        all_versions = len(cands) > 1 and len(cands) == len(pool.versions(g.name))
        who = f"{g.name} {_versions(cands)}" if cands else g.name
        if all_versions:
            who = f"every version of {g.name} ({_versions(cands)})"
        plural = len(cands) > 1 and not all_versions
        targets: list[Candidate] = []
        for x in gs:
            targets += [t for t in x.targets if t not in targets]
        mentions = sorted({t.meta.name for t in targets})
        if g.kind == "request":
            if targets:
                text = f"you asked for {g.text}"
            else:
                text = f"you asked for {g.text}, but no version matches ({_available(pool, _req_name(g.text), _versioned(g.text))})"
            lines.append(_Line("", mentions, text))
        elif g.kind == "remove":
            lines.append(_Line("", [g.name], f"you asked to remove {g.name}"))
        elif g.kind == "held":
            lines.append(_Line(g.name, [], f"{g.name} {g.cand.meta.version if g.cand else ''} is installed and held".replace("  ", " ")))
        elif g.kind == "one-version":
            lines.append(_Line(g.name, [], f"only one version of {g.name} can be installed at a time"))
        elif g.kind == "depends":
            verb = "depend on" if plural else "depends on"
            text = f"{who} {verb} {g.text}"
            if not targets:
                text += f", which nothing satisfies ({_alts_available(pool, g.text)})"
            lines.append(_Line(g.name, mentions, text))
        elif g.kind == "base":
            verb = "need" if plural else "needs"
            text = f"{who} {verb} the base model {g.text}"
            if not targets:
                text += f", but no model package matches ({_base_available(pool, g.text)})"
            lines.append(_Line(g.name, mentions, text))
        elif g.kind == "conflicts":
            verb = "conflict with" if plural else "conflicts with"
            text = f"{who} {verb} {g.text}"
            shown = _names(targets)
            if shown and shown != g.text:
                text += f" ({shown})"
            lines.append(_Line(g.name, mentions, text))
    return [ln.text for ln in _chain(lines)]


def _chain(lines: list[_Line]) -> list[_Line]:
    """Order lines breadth-first from the requests along the names they mention."""
    out: list[_Line] = []
    left = list(lines)
    frontier = [""]
    seen = {""}
    while left:
        step = [ln for ln in left if ln.subject in frontier]
        if not step:  # constraints declared by a package that only gets mentioned (a conflict of an installed one)
            step = [ln for ln in left if any(m in seen for m in ln.mentions)]
        if not step:  # the rest is not reachable from a request (e.g. a hold that breaks by itself)
            step = [left[0]]
        for ln in step:
            left.remove(ln)
            out.append(ln)
        nxt = []
        for ln in step:
            for name in [ln.subject] + ln.mentions:
                if name not in seen:
                    seen.add(name)
                    nxt.append(name)
        frontier = nxt or [ln.subject for ln in left[:1]]
    return out


def _req_name(text: str) -> str:

    try:
        return Req.parse(text).name
    except ValueError:
        return text


def _versioned(text: str) -> bool:
    try:
        return bool(len(Req.parse(text).spec))
    except ValueError:
        return False


def _alts_available(pool: Pool, text: str) -> str:

    dep = Dependency.parse(text)
    return "; ".join(_available(pool, alt.name, bool(len(alt.spec))) for alt in dep.alternatives)


def _base_available(pool: Pool, text: str) -> str:
    name = _req_name(text)
    cands = pool.versions(name)
    libs = [c for c in cands if c.meta.kind != "model"]
    if libs:
        return f"{_names(libs)} is a {libs[0].meta.kind}, not a model"
    models = [c for c in cands if c.meta.kind == "model"]
    if models:
        return f"model versions: {', '.join(c.meta.version for c in models)}"
    return _available(pool, name)
