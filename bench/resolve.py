"""Resolver benchmarks: in-memory registries of 1k-50k packages, and a 65k-version registry end to end.

**Part 1, the solver alone.**  A layered synthetic registry: a few base
models and core libraries at the bottom that many packages use (Zipf-like
popularity), packages at each level depending on lower levels.  Every
package has 1-6 versions; dependencies carry version ranges (``>=``, some
upper bounds, some ``==``), some are alternatives ``a | b`` or virtual names
satisfied via ``provides``, some versions conflict with other packages, and
libraries name a base model.  For each size we pick the root whose closure
(newest versions) is closest to 200 packages and time ``resolve()`` of it on
an empty installed set, then an ``upgrade_all`` on that closure installed at
older versions, and a request that fails 30 dependencies deep.

**Part 2, a 65,000-version registry from the lists.**  The same generator at
about 20,000 names with Debian-like fan-out added: ~2,500 virtual names, a
fifth of the packages providing one or two of them (half with a version,
``virt (= 1.2)``), versioned and unversioned dependencies on virtual names,
names that are also virtual, alternatives, conflicts and breaks, names such
as ``p00050++`` and ``lib5.3-p00070``, and index records with the fields a
real index carries (summary, description, license, maintainer, filename,
size, sha256).  The registry is written as a folder source, ``llmos update``
stores the list (and, now, its cache), and then a *fresh process* per run
loads what ``llmos install`` loads and resolves the ~200-package closure of
the chosen root: load and solve are timed separately.

"Today" is the code before this work, run by the same script in the same
run (``--before DIR``: a ``git worktree`` of that commit, imported through
PYTHONPATH).  That code knows no versioned provides and refuses names that
end in ``+``, so it gets the same registry in the form it can read: provides
without versions, versioned dependencies on virtual names without their
version, ``+`` at the end of a name spelled ``p``, no breaks (the same size
and shape otherwise).

Run: ``python bench/resolve.py --before /tmp/resolver-before`` (writes the
"resolve" section of docs/benchmarks.md; ``--no-write`` only prints).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import random
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LEVELS = 8


# ---------------------------------------------------------------- generators


def make_registry(n: int, seed: int = 7, *, rich: bool = False) -> list[dict]:
    """The registry as index records (what a package list holds).

    ``rich`` adds part 2's Debian-like features (versioned provides, many
    virtual names, breaks, apt-style names, full index records).
    """
    rng = random.Random(seed)
    names = [f"p{i:05d}" for i in range(n)]
    if rich:  # apt-style names: g++-like suffixes and dotted sonames
        for i in range(n):
            if i % 50 == 0 and i:
                names[i] = f"p{i:05d}++"
            elif i % 70 == 0 and i:
                names[i] = f"lib5.3-p{i:05d}"
    # level 0 holds ~6% of packages (models + core libs); higher levels get the rest
    level = {}
    for i, name in enumerate(names):
        level[name] = 0 if i < max(10, n * 6 // 100) else 1 + (i * (LEVELS - 1)) // n
    by_level: dict[int, list[str]] = {}
    for name in names:
        by_level.setdefault(level[name], []).append(name)
    models = by_level[0][: max(3, len(by_level[0]) // 8)]
    nversions = {name: rng.choice([1, 2, 2, 3, 3, 3, 4, 4, 5, 6]) for name in names}
    nvirt = max(5, n // 8 if rich else n // 200)
    virtuals = [f"virt-{k}" for k in range(nvirt)]
    if rich:  # some virtual names are also real packages (apt's "awk", "mail-transport-agent")
        virtuals += rng.sample([x for x in names if x not in models and level[x] > 0], n // 100)
    providers: dict[str, list[str]] = {v: [] for v in virtuals}
    provides: dict[str, list[tuple[str, bool]]] = {}  # name -> [(virtual, versioned)]
    share = 0.2 if rich else 0.05
    for name in names:
        if name not in models and rng.random() < share:
            for v in rng.sample(virtuals, rng.choice([1, 1, 2]) if rich else 1):
                if v == name:
                    continue
                provides.setdefault(name, []).append((v, rich and rng.random() < 0.5))
                providers[v].append(name)
    live_virtuals = [v for v in virtuals if providers[v]]
    versioned_virtuals = [v for v in live_virtuals if any(vv for p in providers[v] for w, vv in provides[p] if w == v)]

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
                alt = pick_lower(lv) if rng.random() < (0.12 if rich else 0.1) else None
                if alt in models or alt == dep:
                    alt = None
                since = 0 if rng.random() < 0.8 else rng.randrange(nv)
                deps.append((dep, since, alt, rng.random()))
        legacy = pick_lower(lv) if lv > 0 and nv > 1 and rng.random() < 0.1 else None
        virtual = rng.choice(live_virtuals) if lv > 0 and live_virtuals and rng.random() < (0.08 if rich else 0.05) else None
        vvirtual = rng.choice(versioned_virtuals) if rich and lv > 0 and versioned_virtuals and rng.random() < 0.04 else None
        base = rng.choice(models) if kind == "library" and lv > 0 and rng.random() < 0.6 else None
        conflict = rng.choice(by_level[lv]) if lv > 0 and rng.random() < 0.04 else None
        breaks = rng.choice(by_level[max(0, lv - 1)]) if rich and lv > 0 and rng.random() < 0.01 else None
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
            if vvirtual:
                rels.append(f"{vvirtual}>=1.0")
            conflicts = []
            if conflict and conflict != name and k == nversions[name] - 1:
                conflicts.append(f"{conflict}<{1 + k // 2}.0" if rng.random() < 0.5 else conflict)
            rec = {
                "name": name,
                "version": version,
                "kind": kind,
                "depends": rels,
                "conflicts": conflicts,
                "provides": [f"{v} (= {version})" if versioned else v for v, versioned in provides.get(name, [])],
                "base": f"{base}>=1.0" if base else None,
            }
            if rich:
                if breaks and breaks != name and k == nv - 1:
                    rec["breaks"] = [f"{breaks}<1.1"]
                rec.update(_index_fields(rng, name, version))
            out.append(rec)
    return out


def _index_fields(rng: random.Random, name: str, version: str) -> dict:
    words = ["knowledge", "library", "adapter", "documents", "glossary", "tools", "medical", "legal", "geo", "chemistry"]
    return {
        "summary": f"{rng.choice(words)} {rng.choice(words)} for {name}",
        "license": rng.choice(["MIT", "Apache-2.0", "CC-BY-4.0"]),
        "maintainer": f"Maintainer {rng.randrange(500)} <m{rng.randrange(500)}@example.org>",
        "description": " ".join(rng.choice(words) for _ in range(24)),
        "filename": f"pool/{name[:1]}/{name}_{version}.llmos",
        "size": rng.randrange(10_000, 50_000_000),
        "sha256": f"{rng.getrandbits(256):064x}",
    }


def compat(records: list[dict]) -> list[dict]:
    """The same registry in the form the code before this work reads (see the docstring)."""

    def name(n: str) -> str:
        return re.sub(r"\+(?=\+*$)", "p", n)

    def rel(text: str) -> str:
        out = []
        for alt in text.split("|"):
            m = re.match(r"\s*([a-z0-9.+-]*[a-z0-9+])(.*)$", alt.strip())
            n, spec = m.group(1), m.group(2)
            if n.startswith("virt-"):
                spec = ""  # versioned dependencies on virtual names cannot be met without versioned provides
            out.append(name(n) + spec)
        return " | ".join(out)

    out = []
    for r in records:
        r = dict(r)
        r.pop("breaks", None)
        r["name"] = name(r["name"])
        r["depends"] = [rel(d) for d in r["depends"]]
        r["conflicts"] = [rel(c) for c in r["conflicts"]]
        r["provides"] = [name(p.split(" (", 1)[0]) for p in r["provides"]]
        r["base"] = rel(r["base"]) if r["base"] else None
        if "filename" in r:
            r["filename"] = f"pool/{r['name'][:1]}/{r['name']}_{r['version']}.llmos"
        out.append(r)
    return out


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
                m = re.match(r"[a-z0-9][a-z0-9.+-]*?(?=[<>=!~ |]|$)", rel.strip())
                name = m.group(0) if m else ""
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


# ---------------------------------------------------------------- part 1: the solver alone (child process)


def _settle() -> None:
    """Collect, then freeze what is alive: a full collection over the 500k+ objects of
    several in-memory registries costs ~0.5 s and would land in a random timed region."""
    gc.collect()
    gc.freeze()


def memory_child(sizes: list[int], repeat: int) -> list[dict]:
    from llmos_cli.errors import UnsatisfiableError
    from llmos_cli.pkg.meta import PackageMeta, Req
    from llmos_cli.resolve import Candidate, InstalledInfo, Request, resolve

    def load(records: list[dict]) -> list:
        return [Candidate(PackageMeta.from_json(r), origin=None, priority=0) for r in records]

    def unsatisfiable(records: list[dict], root: str, depth: int = 30) -> tuple[float, float, int]:
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
        _settle()
        t0, c0 = time.perf_counter(), time.process_time()
        try:
            resolve(universe, installed, Request(install=[Req.parse("chain-00")]))
        except UnsatisfiableError as exc:
            return time.perf_counter() - t0, time.process_time() - c0, len(exc.details["explanation"])
        raise AssertionError("the chain should not be installable")

    rows = []
    for n in sizes:
        records = make_registry(n)
        root, size = pick_root(records)
        t0 = time.perf_counter()
        universe = load(records)
        t_load = time.perf_counter() - t0
        request = Request(install=[Req.parse(root)])
        _settle()
        t0, c0 = time.perf_counter(), time.process_time()
        plan = resolve(universe, {}, request)
        cold, cold_cpu = time.perf_counter() - t0, time.process_time() - c0
        warm = []
        for _ in range(repeat):
            t0 = time.perf_counter()
            resolve(universe, {}, request)
            warm.append(time.perf_counter() - t0)
        names = {a.name for a in plan.actions if a.op == "install"}
        oldest: dict[str, dict] = {}
        for r in records:
            if r["name"] in names and r["name"] not in oldest:
                oldest[r["name"]] = r
        installed = {name: InstalledInfo(PackageMeta.from_json(r), auto=name != root) for name, r in oldest.items()}
        universe = load(records)
        _settle()
        t0, c0 = time.perf_counter(), time.process_time()
        up = resolve(universe, installed, Request(upgrade_all=True))
        t_up, up_cpu = time.perf_counter() - t0, time.process_time() - c0
        changed = sum(1 for a in up.actions if a.op in ("upgrade", "downgrade", "install", "remove"))
        t_unsat, unsat_cpu, lines = unsatisfiable(records, root)
        rows.append(
            dict(
                n=n,
                versions=len(records),
                closure=size,
                installs=len(names),
                cold=cold,
                cold_cpu=cold_cpu,
                warm=statistics.median(warm),
                changed=changed,
                up=t_up,
                up_cpu=up_cpu,
                unsat=t_unsat,
                unsat_cpu=unsat_cpu,
                lines=lines,
                load=t_load,
            )
        )
    return rows


# ---------------------------------------------------------------- part 2: 65k versions from the lists (child process)


def lists_child(root: str, mode: str) -> dict:
    """One cold run in a fresh process: what ``llmos install ROOT -s`` loads and solves."""
    t_start = time.perf_counter()
    from llmos_cli.app import install as inst
    from llmos_cli.errors import LlmosError
    from llmos_cli.paths import get_paths
    from llmos_cli.pkg.meta import Req
    from llmos_cli.progress import NullReporter
    from llmos_cli.registry import lists
    from llmos_cli.resolve import Request, resolve
    from llmos_cli.state.db import StateDB

    t_import = time.perf_counter() - t_start
    paths = get_paths()
    db = StateDB.open(paths)
    if mode == "update":
        t0, c0 = time.perf_counter(), time.process_time()
        lists.update(paths, db)
        return {"update": time.perf_counter() - t0, "update_cpu": time.process_time() - c0}
    if mode == "nocache":
        for p in paths.lists.glob("*.cache"):
            p.unlink()
    lazy = hasattr(inst, "_resolver_universe")
    t0, c0 = time.perf_counter(), time.process_time()
    universe = inst._resolver_universe(paths, db, NullReporter()) if lazy else inst._universe(paths, db, NullReporter())
    t_load, c_load = time.perf_counter() - t0, time.process_time() - c0
    t0, c0 = time.perf_counter(), time.process_time()
    try:
        plan = resolve(universe, inst._installed_infos(db), Request(install=[Req.parse(root)]))
        result = {"installs": sum(1 for a in plan.actions if a.op == "install"), "error": None}
    except LlmosError as exc:
        result = {"installs": 0, "error": exc.message[:160]}
    t_solve, c_solve = time.perf_counter() - t0, time.process_time() - c0
    return {"import": t_import, "load": t_load, "load_cpu": c_load, "solve": t_solve, "solve_cpu": c_solve, **result}


def _child(code: Path, args: list[str], home: Path | None = None) -> dict:
    env = {**os.environ, "PYTHONPATH": str(code), "LLMOS_BENCH_CODE": str(code)}
    if home is not None:
        env["LLMOS_HOME"] = str(home)
    out = subprocess.run([sys.executable, __file__, *args], env=env, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise SystemExit(f"child {args} with {code} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def write_registry(folder: Path, records: list[dict]) -> int:
    folder.mkdir(parents=True, exist_ok=True)
    index = {"schema": 1, "created": "2026-12-01T00:00:00Z", "version": 1, "expires": None, "packages": records}
    raw = (json.dumps(index, indent=1, ensure_ascii=False) + "\n").encode()
    (folder / "index.json").write_bytes(raw)
    return len(raw)


def setup_home(code: Path, home: Path, registry: Path) -> dict:
    """A home whose only source is ``registry`` (the embedded one removed), updated by ``code``."""
    script = (
        "from llmos_cli.paths import get_paths\n"
        "from llmos_cli.state.db import StateDB\n"
        "from llmos_cli.registry import lists\n"
        "p = get_paths(); db = StateDB.open(p)\n"
        "lists.ensure_default_sources(db)\n"
        "lists.remove_source(p, db, 'embedded')\n"
        f"lists.add_source(p, db, 'big', {str(registry)!r}, allow_unsigned=True)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(code), "LLMOS_HOME": str(home)}
    subprocess.run([sys.executable, "-c", script], env=env, check=True, cwd=code)  # "-c" puts the cwd first on sys.path
    return _child(code, ["--child", "lists", "--mode", "update", "--root", "-"], home)


def part2(before: Path | None, versions: int, runs: int) -> dict:
    n = round(versions / 3.27)
    records = make_registry(n, seed=11, rich=True)
    root, closure = pick_root(records)
    out: dict = {"names": n, "versions": len(records), "root": root, "closure": closure}
    out["virtuals"] = len({p.split(" (")[0] for r in records for p in r["provides"]})
    out["versioned_provides"] = sum(1 for r in records for p in r["provides"] if "(=" in p)
    out["alternatives"] = sum(1 for r in records for d in r["depends"] if "|" in d)
    out["conflicts"] = sum(len(r["conflicts"]) + len(r.get("breaks", [])) for r in records)
    with tempfile.TemporaryDirectory(prefix="llmos-bench-resolve-") as td:
        tmp = Path(td)
        out["list_bytes"] = write_registry(tmp / "reg-now", records)
        codes = [("now", ROOT, tmp / "reg-now", root)]
        if before is not None:
            write_registry(tmp / "reg-before", compat(records))
            codes.insert(0, ("before", before, tmp / "reg-before", re.sub(r"\+(?=\+*$)", "p", root)))
        for label, code, registry, rootname in codes:
            home = tmp / f"home-{label}"
            upd = setup_home(code, home, registry)
            runs_out = [_child(code, ["--child", "lists", "--root", rootname], home) for _ in range(runs)]
            res = {"update": upd, "runs": runs_out}
            if label == "now":
                res["nocache"] = _child(code, ["--child", "lists", "--mode", "nocache", "--root", rootname], home)
                res["cache_bytes"] = sum(p.stat().st_size for p in (home / "lists").glob("*.cache"))
            out[label] = res
    return out


# ---------------------------------------------------------------- report


def _ms(x: float) -> str:
    return f"{x * 1000:.0f} ms"


def _med(runs: list[dict], key: str) -> float:
    return statistics.median(r[key] for r in runs)


def render(p1: dict[str, list[dict]], p2: dict, runs: int, elapsed: float, load_before: float, load_after: float) -> str:
    from _report import table

    rows = []
    for label, res in p2.items():
        if label not in ("before", "now"):
            continue
        rs = res["runs"]
        total = [r["load"] + r["solve"] for r in rs]
        outcome = rs[0]["error"] or f"{rs[0]['installs']} installs"
        rows.append(
            [
                "today (before)" if label == "before" else "now (list cache)",
                f"{_ms(_med(rs, 'load'))} / {_ms(_med(rs, 'load_cpu'))}",
                f"{_ms(_med(rs, 'solve'))} / {_ms(_med(rs, 'solve_cpu'))}",
                f"**{_ms(statistics.median(total))}** (max {_ms(max(total))})",
                _ms(_med(rs, "import")),
                f"{res['update']['update']:.1f} s",
                outcome,
            ]
        )
        if label == "now":
            nc = res["nocache"]
            rows.append(
                [
                    "now, first load with no cache (it is built)",
                    _ms(nc["load"]),
                    _ms(nc["solve"]),
                    _ms(nc["load"] + nc["solve"]),
                    _ms(nc["import"]),
                    "",
                    nc["error"] or f"{nc['installs']} installs",
                ]
            )
    now = p2["now"]
    body = (
        "### A 65,000-version registry, from the lists\n\n"
        f"{p2['versions']:,} versions of {p2['names']:,} packages ({p2['list_bytes'] / 1e6:.0f} MB list; "
        f"{p2['virtuals']:,} virtual names, {p2['versioned_provides']:,} versioned provides, {p2['alternatives']:,} "
        f"dependencies with alternatives, {p2['conflicts']:,} conflicts and breaks). Request: `install {p2['root']}`, "
        f"whose newest-version closure has {p2['closure']} packages. Each run is a fresh process that loads what "
        "`llmos install` loads (`app.install`'s universe: every list, through its cache now) and resolves; "
        f"median of {runs} runs, wall / CPU. *Total* is load + solve, the figure the target (under 1 s) is about; "
        "Python start-up and imports are the separate column. *Update* is `llmos update` of that source (it now also "
        f"builds the cache, {now['cache_bytes'] / 1e6:.0f} MB). Today's code reads the same registry without the "
        "features it lacks (see the script's docstring).\n\n"
        + table(["code", "load (wall / CPU)", "solve (wall / CPU)", "total", "imports", "update", "outcome"], rows)
    )
    body += "\n### The solver alone, in memory\n\n"
    body += (
        "Per size, `resolve()` of the root whose newest-version closure is nearest 200 packages, on an empty installed set, "
        "from candidates already in memory (index loading excluded; its cost is the last column). *Cold* is the first call "
        "on fresh objects; *warm* the median of 3 more. Then `upgrade_all` with that closure installed at its oldest "
        "versions, and a request that fails 30 dependencies deep (explanation included). Before each timed call the "
        "bench collects garbage and freezes what is alive (`gc.freeze()`), so that a full collection over the registries "
        "held in memory does not land in one of them at random.\n\n"
    )
    rows = []
    for label, rs in p1.items():
        for r in rs:
            rows.append(
                [
                    label,
                    f"{r['n']:,}",
                    f"{r['versions']:,}",
                    r["closure"],
                    r["installs"],
                    f"{_ms(r['cold'])} / {_ms(r['cold_cpu'])}",
                    _ms(r["warm"]),
                    r["changed"],
                    f"{_ms(r['up'])} / {_ms(r['up_cpu'])}",
                    f"{_ms(r['unsat'])} / {_ms(r['unsat_cpu'])}, {r['lines']} lines",
                    f"{r['load']:.1f} s",
                ]
            )
    body += table(
        [
            "code",
            "packages",
            "versions",
            "root closure",
            "plan installs",
            "install, cold (wall / CPU)",
            "install, warm",
            "upgrade-all changes",
            "upgrade-all, cold (wall / CPU)",
            "30-deep failure (wall / CPU)",
            "`PackageMeta.from_json` of all",
        ],
        rows,
    )
    body += (
        f"\nThe whole run took {elapsed / 60:.1f} min. Load average (1 min) on this {os.cpu_count()}-core machine: "
        f"{load_before:.1f} before, {load_after:.1f} after (other work shares it, hence CPU beside wall time).\n"
    )
    return body


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="1000,10000,50000")
    ap.add_argument("--versions", type=int, default=65000, help="part 2: about this many versions")
    ap.add_argument("--runs", type=int, default=5, help="part 2: cold runs per code")
    ap.add_argument("--repeat", type=int, default=3, help="part 1: warm repetitions")
    ap.add_argument("--before", type=Path, help="a checkout of the code before this work, for today's figures")
    ap.add_argument("--no-write", action="store_true")
    ap.add_argument("--child", choices=["memory", "lists"])
    ap.add_argument("--mode", default="run")
    ap.add_argument("--root")
    args = ap.parse_args()
    if args.child:
        sys.path.insert(0, os.environ.get("LLMOS_BENCH_CODE", str(ROOT)))
        if args.child == "memory":
            res: object = memory_child([int(x) for x in args.sizes.split(",")], args.repeat)
        else:
            res = lists_child(args.root, args.mode)
        print(json.dumps(res))
        return
    t_start = time.perf_counter()
    load_before = os.getloadavg()[0]
    p2 = part2(args.before, args.versions, args.runs)
    print(json.dumps(p2, indent=1), flush=True)
    p1: dict[str, list[dict]] = {}
    for label, code in ([("today", args.before)] if args.before else []) + [("now", ROOT)]:
        p1[label] = _child(code, ["--child", "memory", "--sizes", args.sizes, "--repeat", str(args.repeat)])
        print(label, json.dumps(p1[label]), flush=True)
    load_after = os.getloadavg()[0]
    body = render(p1, p2, args.runs, time.perf_counter() - t_start, load_before, load_after)
    print(body)
    if not args.no_write:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from _report import write_section

        write_section("resolve", "Resolver", body)


if __name__ == "__main__":
    main()
