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
import os
import random
import re
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from llmos_cli.errors import UnsatisfiableError
from llmos_cli.pkg.meta import (
    PackageMeta,
    Req,
)
from llmos_cli.resolve import Candidate, InstalledInfo, Request, resolve

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


def pick_root(records: list[dict], want: int = 200) -> tuple[str, int]:
    """The top-level package whose closure (newest versions, first alternatives) is nearest ``want``."""
    newest: dict[str, dict] = {}
    for r in records:  # records list each name's versions oldest first
        newest[r["name"]] = r

    def closure(root: str) -> int:
        seen = {root}
        todo = [root]
        while todo:
            r = newest[todo.pop()]
            rels = list(r["depends"]) + ([r["base"]] if r["base"] else [])
            for rel in rels:
                name = re.match(r"[a-z0-9.+-]*[a-z0-9]", rel.strip()).group(0)
                if name in newest and name not in seen:
                    seen.add(name)
                    todo.append(name)
        return len(seen)

    best = ("", -(10**9))
    for name in sorted(newest, reverse=True)[:400]:  # the top level: names are numbered bottom-up
        size = closure(name)
        if abs(size - want) < abs(best[1] - want):
            best = (name, size)
    return best


def unsatisfiable(records: list[dict], root: str, depth: int = 30) -> tuple[float, int]:
    """A request that fails deep down: chain-00 -> ... -> chain-29 (-> root), and chain-29
    conflicts with a held package.  Returns (wall time incl. explanation, explanation lines)."""
    extra = []
    for i in range(depth):
        for version in ("1.0", "2.0"):
            nxt = f"chain-{i + 1:02d}" if i + 1 < depth else root
            extra.append({"name": f"chain-{i:02d}", "version": version, "kind": "library", "depends": [nxt]})
            if i + 1 == depth:
                extra[-1]["conflicts"] = ["anchor"]
    anchor = {"name": "anchor", "version": "1.0", "kind": "library"}
    universe = load(records + extra + [anchor])
    installed = {"anchor": InstalledInfo(PackageMeta.from_json(anchor), held=True)}
    t0 = time.perf_counter()
    try:
        resolve(universe, installed, Request(install=[Req.parse("chain-00")]))
    except UnsatisfiableError as exc:
        return time.perf_counter() - t0, len(exc.details["explanation"])
    raise AssertionError("the chain should not be installable")


def run(sizes: list[int], repeat: int) -> list[list[object]]:
    rows = []
    for n in sizes:
        records = make_registry(n)
        root, size = pick_root(records)
        t0 = time.perf_counter()
        universe = load(records)  # fresh objects: nothing parsed or cached yet, as in a new llmos process
        t_load = time.perf_counter() - t0
        request = Request(install=[Req.parse(root)])
        t0, c0 = time.perf_counter(), time.process_time()
        plan = resolve(universe, {}, request)
        cold, cold_cpu = time.perf_counter() - t0, time.process_time() - c0
        warm = []
        for _ in range(repeat):
            t0 = time.perf_counter()
            resolve(universe, {}, request)
            warm.append(time.perf_counter() - t0)
        names = {a.name for a in plan.actions if a.op == "install"}
        # that closure installed at its oldest versions (not necessarily consistent), then upgrade everything
        oldest: dict[str, dict] = {}
        for r in records:
            if r["name"] in names and r["name"] not in oldest:
                oldest[r["name"]] = r
        installed = {name: InstalledInfo(PackageMeta.from_json(r), auto=name != root) for name, r in oldest.items()}
        universe = load(records)
        t0, c0 = time.perf_counter(), time.process_time()
        up = resolve(universe, installed, Request(upgrade_all=True))
        t_up, up_cpu = time.perf_counter() - t0, time.process_time() - c0
        changed = sum(1 for a in up.actions if a.op in ("upgrade", "downgrade", "install", "remove"))
        t_unsat, lines = unsatisfiable(records, root)
        rows.append(
            [
                f"{n:,}",
                f"{len(records):,}",
                size,
                len(names),
                f"{cold * 1000:.0f} / {cold_cpu * 1000:.0f} ms",
                f"{statistics.median(warm) * 1000:.0f} ms",
                changed,
                f"{t_up * 1000:.0f} / {up_cpu * 1000:.0f} ms",
                f"{t_unsat * 1000:.0f} ms, {lines} lines",
                f"{t_load:.1f} s",
            ]
        )
        print(rows[-1], flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="1000,10000,50000")
    ap.add_argument("--repeat", type=int, default=3, help="warm repetitions")
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    load_before = os.getloadavg()[0]
    rows = run([int(x) for x in args.sizes.split(",")], args.repeat)
    load_after = os.getloadavg()[0]
    if args.no_write:
        return
    from _report import table, write_section

    body = (
        "Synthetic layered registry (see the script's docstring): per size, `resolve()` of the root whose "
        "newest-version closure is nearest 200 packages, on an empty installed set. *Cold* is the first call on "
        "freshly loaded metadata (what one `llmos install` pays: versions and specifiers parsed on first use); "
        f"*warm* is the median of {args.repeat} more calls on the same objects. Then `upgrade_all` (cold) with "
        "that closure installed at its oldest versions; and a request that fails 30 dependencies deep "
        "(conflict with a held package), explanation included. Pool building, scope growth, MaxSAT and plan building "
        "are all included; loading the index is not (its cost is the last column). CPU time is given beside wall time because this machine is "
        "shared (the load average during the run is in the note below).\n\n"
        + table(
            [
                "packages",
                "versions",
                "root closure (newest)",
                "plan installs",
                "install, cold (wall / CPU)",
                "install, warm (wall)",
                "upgrade-all changes",
                "upgrade-all, cold (wall / CPU)",
                "30-deep failure, cold (incl. explanation)",
                "for comparison: `PackageMeta.from_json` of all versions",
            ],
            rows,
        )
        + f"\nLoad average (1 min) on this {os.cpu_count()}-core machine: {load_before:.1f} before, "
        f"{load_after:.1f} after the run. Target: under 1 s for a ~200-package closure at 10k packages.\n"
    )
    write_section("resolve", "Resolver", body)


if __name__ == "__main__":
    main()
