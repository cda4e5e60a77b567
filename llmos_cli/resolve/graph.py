"""Questions about an installed set that need no solver.

* ``reverse_dependents(installed, name)``: who depends on ``name``.
* ``autoremovable(installed)``: auto packages that no manual (or held) package
  needs, directly or transitively -- apt's autoremove.  Like apt, every
  installed package that satisfies any alternative of a needed package's
  dependency counts as needed (``a | b`` with both installed keeps both).
* ``deps_first(names, edges)``: a deterministic topological order that
  tolerates cycles (used for plan ordering).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence

from llmos_cli.pkg.meta import PackageMeta, Provide, Req

from .model import InstalledInfo


class InstalledSet:
    """An installed set (name -> meta) with apt's relation matching."""

    def __init__(self, metas: Mapping[str, PackageMeta]):
        self.metas = dict(metas)
        self.provided: dict[str, list[tuple[str, Provide | str]]] = {}
        for name in sorted(self.metas):
            for virt in self.metas[name].provides:
                if virt != name:
                    self.provided.setdefault(str(virt), []).append((name, virt))

    def satisfiers(self, req: Req, model_only: bool = False) -> list[str]:
        """Names satisfying ``req``: the real package first, then providers (versioned ones only for a versioned req)."""
        out = []
        meta = self.metas.get(req.name)
        if meta is not None and req.spec.contains(meta.parsed_version, prereleases=True):
            if not model_only or meta.kind == "model":
                out.append(req.name)
        versioned = bool(len(req.spec))
        for prov, virt in self.provided.get(req.name, ()):
            if versioned:
                pv = getattr(virt, "parsed_version", None)
                if pv is None or not req.spec.contains(pv, prereleases=True):
                    continue
            if (not model_only or self.metas[prov].kind == "model") and prov not in out:
                out.append(prov)
        return out

    def needs(self, name: str) -> list[tuple[Req | None, list[str], str]]:
        """For each dependency (and the base) of ``name``: (None|base req, satisfying names, text)."""
        meta = self.metas[name]
        out: list[tuple[Req | None, list[str], str]] = []
        for dep in meta.depends:
            sats: list[str] = []
            for alt in dep.alternatives:
                for s in self.satisfiers(alt):
                    if s not in sats:
                        sats.append(s)
            out.append((None, sats, str(dep)))
        if meta.base is not None:
            out.append((meta.base, self.satisfiers(meta.base, model_only=True), str(meta.base)))
        return out

    def dependencies_of(self, name: str) -> set[str]:
        got: set[str] = set()
        for _base, sats, _text in self.needs(name):
            got.update(sats)
        got.discard(name)
        return got


def reverse_dependents(installed: Mapping[str, InstalledInfo], name: str) -> list[str]:
    """Installed packages with a dependency (or base) that ``name`` satisfies, sorted."""
    iset = InstalledSet({n: i.meta for n, i in installed.items()})
    return sorted(n for n in iset.metas if n != name and name in iset.dependencies_of(n))


def autoremovable(installed: Mapping[str, InstalledInfo]) -> list[str]:
    """Auto packages that nothing manual or held needs (transitively), sorted."""
    iset = InstalledSet({n: i.meta for n, i in installed.items()})
    needed = {n for n, i in installed.items() if not i.auto or i.held}
    stack = sorted(needed)
    while stack:
        for dep in iset.dependencies_of(stack.pop()):
            if dep not in needed:
                needed.add(dep)
                stack.append(dep)
    return sorted(n for n in installed if n not in needed)


def drop_unneeded(chosen: Mapping[str, PackageMeta], keep: Iterable[str], requests: Sequence[Req]) -> set[str]:
    """New packages of ``chosen`` that nothing needs, because a planned package already satisfies it.

    The optimum prefers the first alternative of ``a | b`` (and a real package
    over providers of its name) relation by relation, so it may add ``a`` to
    a plan that has ``b`` anyway.  apt keeps an or-group that is already
    satisfied; so a package is dropped when every relation it satisfies (of
    the packages that stay, and every request) is also satisfied by another
    package that stays.  ``keep`` (the installed packages) is never dropped.
    Dropping only removes packages, so no conflict can appear; deterministic
    (names in sorted order, repeated until nothing changes).
    """
    iset = InstalledSet(chosen)
    rels: list[tuple[str | None, list[str]]] = []  # (owner, satisfiers)
    for name in sorted(iset.metas):
        for _base, sats, _text in iset.needs(name):
            rels.append((name, sats))
    rels += [(None, iset.satisfiers(req)) for req in requests]
    used_by: dict[str, list[int]] = {}
    for i, (_owner, sats) in enumerate(rels):
        for s in sats:
            used_by.setdefault(s, []).append(i)
    fixed = set(keep)
    dropped: set[str] = set()
    changed = True
    while changed:
        changed = False
        for name in sorted(iset.metas):
            if name in fixed or name in dropped:
                continue
            needed = False
            for i in used_by.get(name, ()):
                owner, sats = rels[i]
                if owner == name or owner in dropped:
                    continue
                if not any(s != name and s not in dropped for s in sats):
                    needed = True
                    break
            if not needed:
                dropped.add(name)
                changed = True
    return dropped


def deps_first(names: Iterable[str], edges: Callable[[str], Iterable[str]]) -> list[str]:
    """Order ``names`` so that each comes after the names it points to.

    ``edges(n)`` gives n's dependencies; only those inside ``names`` count.
    Cycles are broken deterministically (alphabetical DFS).  Iterative, so
    deep chains do not hit the recursion limit.
    """
    todo = sorted(set(names))
    inside = set(todo)
    done: set[str] = set()
    order: list[str] = []
    for root in todo:
        if root in done:
            continue
        done.add(root)
        stack = [(root, iter(sorted(d for d in edges(root) if d in inside)))]
        while stack:
            node, it = stack[-1]
            nxt = next((d for d in it if d not in done), None)
            if nxt is None:
                stack.pop()
                order.append(node)
            else:
                done.add(nxt)
                stack.append((nxt, iter(sorted(d for d in edges(nxt) if d in inside))))
    return order
