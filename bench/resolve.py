"""Resolver benchmark: synthetic registries of 1k, 10k and 50k packages.

The registry is layered like a real ecosystem: a few base models and core
libraries at the bottom that many packages use (popularity is Zipf-like),
and packages at each level depending on lower levels.  Every package has
1-6 versions; dependencies carry version ranges (``>=``, some upper bounds,
some ``==``), some are alternatives ``a | b`` or virtual names satisfied via
``provides``, some versions conflict with other packages, and libraries
name a base model.  For each size we pick the root whose closure (newest
versions) is closest to 200 packages and time ``resolve()`` of it on an empty
installed set, then an ``upgrade_all`` on that closure installed at older
versions.  Target: < 1 s at 10k.

Run: ``python bench/resolve.py`` (writes the "resolve" section of
docs/benchmarks.md; ``--no-write`` only prints).
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from llmos_cli.pkg.meta import PackageMeta  # noqa: E402
from llmos_cli.resolve import Candidate, InstalledInfo, Request, resolve  # noqa: E402
from llmos_cli.pkg.meta import Req  # noqa: E402

LEVELS = 8


def make_registry(n: int, seed: int = 7) -> list[dict]:
    """The registry as index records (what a package list holds)."""
    rng = random.Random(seed)
    names = [f"p{i:05d}" for i in range(n)]
    # level 0 holds ~6% of packages (models + core libs); higher levels get the rest
    level = {}
    for i, name in enumerate(names):
        level[name] = 0 if i < max(10, n * 6 // 100) else 1 + (i * (LEVELS - 1)) // n
    by_level: dict[int, list[str]] = {}
    for name in names:
        by_level.setdefault(level[name], []).append(name)
    models = by_level[0][: max(3, len(by_level[0]) // 8)]
    nversions = {name: rng.choice([1, 2, 2, 3, 3, 3, 4, 4, 5, 6]) for name in names}
    virtuals = [f"virt-{k}" for k in range(max(5, n // 200))]
    providers: dict[str, list[str]] = {v: [] for v in virtuals}
    provides: dict[str, list[str]] = {}
    for name in names:
        if name not in models and rng.random() < 0.05:
            v = rng.choice(virtuals)
            provides[name] = [v]
            providers[v].append(name)
    live_virtuals = [v for v in virtuals if providers[v]]

    def pick_lower(lv: int) -> str:
        # Zipf-like popularity inside a random lower level, favouring the level just below
        target = max(0, lv - 1 - int(rng.expovariate(1.0)))
        pool = by_level[target]
        idx = min(len(pool) - 1, int(rng.paretovariate(1.1)) - 1)
        if rng.random() < 0.5:
            idx = rng.randrange(len(pool))
        return pool[idx]

    out: list[dict] = []
    for name in names:
        lv = level[name]
        nv = nversions[name]
        kind = "model" if name in models else "library"
        # dependencies evolve slowly: each is added at some version and kept; its
        # alternative (if any) and range shape are fixed per package; now and then
        # a legacy dependency exists only in older versions
        deps: list[tuple[str, int, str | None, float]] = []
        if lv > 0:
            fan = min(12, int(rng.expovariate(1 / 3.5)))
            for _ in range(fan):
                dep = pick_lower(lv)
                if dep in models or any(d[0] == dep for d in deps):
                    continue
                alt = pick_lower(lv) if rng.random() < 0.1 else None
                if alt in models or alt == dep:
                    alt = None
                since = 0 if rng.random() < 0.8 else rng.randrange(nv)
                deps.append((dep, since, alt, rng.random()))
        legacy = pick_lower(lv) if lv > 0 and nv > 1 and rng.random() < 0.1 else None
        virtual = rng.choice(live_virtuals) if lv > 0 and live_virtuals and rng.random() < 0.05 else None
        base = rng.choice(models) if kind == "library" and lv > 0 and rng.random() < 0.6 else None
        conflict = None
        if lv > 0 and rng.random() < 0.04:
            conflict = rng.choice(by_level[lv])
        for k in range(nv):
            version = f"{1 + k // 2}.{k % 2}"
            rels = []
            for dep, since, alt, shape in deps:
                if k < since:
                    continue
                dv = nversions[dep]
                lo = min(dv - 1, (k * dv) // nv)  # newer versions need newer dependencies
                lo_v = f"{1 + lo // 2}.{lo % 2}"
                if shape < 0.6:
                    text = f"{dep}>={lo_v}"
                elif shape < 0.8:
                    text = f"{dep}>={lo_v},<{2 + (dv - 1) // 2}.0"
                elif shape < 0.85:
                    text = f"{dep}=={lo_v}"
                else:
                    text = dep
                if alt:
                    text = f"{text} | {alt}"
                rels.append(text)
            if legacy and k < nv - 1 and legacy not in models:
                rels.append(legacy)
            if virtual:
                rels.append(virtual)
            conflicts = []
            if conflict and conflict != name and k == nversions[name] - 1:
                conflicts.append(f"{conflict}<{1 + k // 2}.0" if rng.random() < 0.5 else conflict)
            out.append(
                {
                    "name": name,
                    "version": version,
                    "kind": kind,
                    "depends": rels,
                    "conflicts": conflicts,
                    "provides": provides.get(name, []),
                    "base": f"{base}>=1.0" if base else None,
                }
            )
    return out


def load(records: list[dict]) -> list[Candidate]:
    """Fresh candidates (cold caches), as a command would load them from the lists."""
    return [Candidate(PackageMeta.from_json(r), origin=None, priority=0) for r in records]


def closure_size(universe: list[Candidate], root: str) -> int:
    newest: dict[str, Candidate] = {}
    for c in universe:
        cur = newest.get(c.meta.name)
        if cur is None or c.meta.parsed_version > cur.meta.parsed_version:
            newest[c.meta.name] = c
    seen = {root}
    todo = [root]
    while todo:
        meta = newest[todo.pop()].meta
        for dep in meta.all_depends():
            name = dep.alternatives[0].name
            if name in newest and name not in seen:
                seen.add(name)
                todo.append(name)
    return len(seen)


def pick_root(universe: list[Candidate], want: int = 200) -> tuple[str, int]:
    names = sorted({c.meta.name for c in universe}, reverse=True)  # top levels last in name order
    best = (names[0], 0)
    for name in names[:400]:
        size = closure_size(universe, name)
        if abs(size - want) < abs(best[1] - want):
            best = (name, size)
    return best


def timed(fn, records: list[dict], repeat: int):
    """Median wall time of ``fn(universe)`` over fresh universes (cold caches), untimed loading."""
    times, result = [], None
    for _ in range(repeat):
        universe = load(records)
        t0 = time.perf_counter()
        result = fn(universe)
        times.append(time.perf_counter() - t0)
    return statistics.median(times), result


def run(sizes: list[int], repeat: int) -> list[list[object]]:
    rows = []
    for n in sizes:
        records = make_registry(n)
        universe = load(records)
        root, size = pick_root(universe)
        req = [Req.parse(root)]
        t_install, plan = timed(lambda u: resolve(u, {}, Request(install=req)), records, repeat)
        names = {a.name for a in plan.actions if a.op == "install"}
        # the same closure installed at its oldest versions (not necessarily consistent), then upgrade all
        oldest: dict[str, dict] = {}
        for r in records:
            if r["name"] in names and (r["name"] not in oldest):
                oldest[r["name"]] = r

        def upgrade_all(u):
            installed = {
                name: InstalledInfo(PackageMeta.from_json(r), auto=name != root) for name, r in oldest.items()
            }
            return resolve(u, installed, Request(upgrade_all=True))

        t_up, up = timed(upgrade_all, records, repeat)
        changed = sum(1 for a in up.actions if a.op in ("upgrade", "downgrade", "install", "remove"))
        rows.append(
            [f"{n:,}", f"{len(records):,}", size, len(names), f"{t_install * 1000:.0f} ms", changed, f"{t_up * 1000:.0f} ms"]
        )
        print(rows[-1], flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="1000,10000,50000")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    rows = run([int(x) for x in args.sizes.split(",")], args.repeat)
    if args.no_write:
        return
    from _report import table, write_section

    body = (
        "`resolve()` of one package on an empty installed set (pool building, relevance walk, "
        "MaxSAT optimisation and plan included; median of "
        f"{args.repeat} runs), then `upgrade_all` with that closure installed.\n\n"
        + table(
            ["packages", "versions", "root closure (newest)", "plan installs", "install: resolve time", "upgrade-all: changes", "upgrade-all: resolve time"],
            rows,
        )
    )
    write_section("resolve", "Resolver", body)


if __name__ == "__main__":
    main()
