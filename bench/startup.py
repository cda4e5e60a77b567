"""Start-up time: `llmos --version`, `--help` and `list` beside `python -c pass`.

Every case runs in the same process pool, interleaved (one run of each case in
turn, repeated), so a busy machine slows all of them alike.  `list` runs on an
empty LLMOS_HOME and on one with three installed packages.

Python's bytecode cache is on (a fresh ``PYTHONPYCACHEPREFIX``, warmed before
timing): that is what an installed llmos sees.  ``--no-bytecode`` also times
every case with no cache (``-B`` semantics, as in a checkout run under
PYTHONDONTWRITEBYTECODE=1, where every module is compiled at each start).

``--before PATH`` times a second source tree (e.g. ``git worktree add
/tmp/before 22b9ccb``) in the same run, through ``PYTHONPATH=PATH``, so the
table holds "before" beside "now".  Also records which heavy modules each
command imports (none may import llama_cpp, torch or transformers).

    python bench/startup.py [--runs N] [--before PATH] [--no-bytecode] [--no-write]
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import table, write_section

REPO = Path(__file__).resolve().parent.parent
HEAVY = ("llama_cpp", "torch", "transformers", "peft")
AVOIDABLE = ("numpy", "huggingface_hub", "nacl", "mcp", "gguf")
TARGET_MS = 100

PACKAGES = [("bench-core", "1.0.0", []), ("bench-med", "1.2.0", ["bench-core"]), ("bench-law", "0.3.0", [])]


def _write_source(root: Path, name: str, version: str, depends: list[str]) -> Path:
    src = root / f"{name}-{version}"
    src.mkdir(parents=True)
    dep = f"depends = [{', '.join(repr(d) for d in depends)}]\n" if depends else ""
    (src / "llmos.toml").write_text(
        f'schema = 1\n[package]\nname = "{name}"\nversion = "{version}"\nkind = "library"\n'
        f'summary = "start-up bench library {name}"\nlicense = "MIT"\nmaintainer = "bench"\n{dep}'
        '[knowledge]\ndocuments = ["a.md"]\n'
    )
    (src / "a.md").write_text(f"# {name}\n\nA document.\n")
    return src


class Tree:
    """One source tree of llmos (the checkout, or a worktree given with --before)."""

    def __init__(self, label: str, path: Path, tmp: Path, bytecode: bool) -> None:
        self.label = label
        self.path = path
        self.env = dict(os.environ, NO_COLOR="1", PYTHONPATH=str(path))
        self.env.pop("PYTHONDONTWRITEBYTECODE", None)
        if bytecode:
            self.env["PYTHONPYCACHEPREFIX"] = str(tmp / f"pycache-{label}")
        else:
            self.env["PYTHONDONTWRITEBYTECODE"] = "1"
            self.env["PYTHONPYCACHEPREFIX"] = str(tmp / f"empty-pycache-{label}")  # never written: always compiled
        self.empty_home = tmp / f"home-empty-{label}"
        self.full_home = tmp / f"home-3pkgs-{label}"

    def llmos(self, *args: str, home: Path) -> tuple[list[str], dict[str, str]]:
        return [sys.executable, "-m", "llmos_cli", *args], dict(self.env, LLMOS_HOME=str(home))

    def _run(self, *args: str) -> str:
        cmd, env = self.llmos(*args, home=self.full_home)
        res = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if res.returncode != 0:
            raise SystemExit(f"{self.label}: llmos {' '.join(args)} failed ({res.returncode}): {res.stderr[-2000:]}")
        return res.stdout

    def setup(self, tmp: Path) -> None:
        """Three libraries built and installed into full_home, by this tree's own code."""
        srcs = tmp / f"src-{self.label}"
        out = tmp / f"archives-{self.label}"
        out.mkdir()
        for name, version, deps in PACKAGES:
            src = _write_source(srcs, name, version, deps)
            self._run("build", str(src), "-o", str(out))
        self._run("install", "-y", *sorted(str(p) for p in out.glob("*.llmos")))
        listed = self._run("list", "--json")
        assert all(name in listed for name, _v, _d in PACKAGES), listed

    def cases(self) -> dict[str, tuple[list[str], dict[str, str]]]:
        return {
            "llmos --version": self.llmos("--version", home=self.empty_home),
            "llmos --help": self.llmos("--help", home=self.empty_home),
            "llmos list (empty home)": self.llmos("list", home=self.empty_home),
            "llmos list (3 packages)": self.llmos("list", home=self.full_home),
        }


def run_once(cmd: list[str], env: dict[str, str]) -> tuple[float, float]:
    """Wall-clock and CPU (user + system) seconds of one run."""
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
    wall = time.perf_counter() - t
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)


def imported(cmd: list[str], env: dict[str, str]) -> list[str]:
    """Heavy or avoidable third-party modules the command imports."""
    res = subprocess.run([cmd[0], "-X", "importtime", *cmd[1:]], env=env, capture_output=True, text=True)
    mods = {line.rsplit("|", 1)[-1].strip() for line in res.stderr.splitlines() if "|" in line}
    return sorted({m.split(".")[0] for m in mods if m.split(".")[0] in HEAVY + AVOIDABLE})


def measure(cases: dict[str, tuple[list[str], dict[str, str]]], runs: int) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    for cmd, env in cases.values():  # warm the page cache (and the bytecode cache, when on)
        run_once(cmd, env)
        run_once(cmd, env)
    wall: dict[str, list[float]] = {k: [] for k in cases}
    cpu: dict[str, list[float]] = {k: [] for k in cases}
    for _ in range(runs):
        for label, (cmd, env) in cases.items():
            w, c = run_once(cmd, env)
            wall[label].append(w)
            cpu[label].append(c)
    return wall, cpu


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--before", type=Path, help="another llmos source tree to time in the same run (the baseline)")
    ap.add_argument("--no-bytecode", action="store_true", help="also time every case with no bytecode cache")
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    started = time.perf_counter()
    load_start = _load()
    with tempfile.TemporaryDirectory() as tmp_:
        tmp = Path(tmp_)
        modes = [True] + ([False] if args.no_bytecode else [])
        trees = {}
        for bytecode in modes:
            suffix = "" if bytecode else "-nobc"
            trees[f"now{suffix}"] = Tree(f"now{suffix}", REPO, tmp, bytecode)
            if args.before:
                trees[f"before{suffix}"] = Tree(f"before{suffix}", args.before.resolve(), tmp, bytecode)
        for t in trees.values():
            t.setup(tmp)
        cases: dict[str, tuple[list[str], dict[str, str]]] = {"python -c pass": ([sys.executable, "-c", "pass"], dict(os.environ))}
        for key, t in trees.items():
            for label, c in t.cases().items():
                cases[f"{key}|{label}"] = c
        times, cpu_times = measure(cases, args.runs)
        heavy = {k: imported(*c) for k, c in cases.items() if "|" in k}
    med = {k: statistics.median(v) * 1000 for k, v in times.items()}
    cpu = {k: statistics.median(v) * 1000 for k, v in cpu_times.items()}
    low = {k: min(v) * 1000 for k, v in times.items()}

    def cell(k: str) -> str:
        return f"{med[k]:.0f} (min {low[k]:.0f}; CPU {cpu[k]:.0f})"

    commands = list(Tree("x", REPO, Path("."), True).cases())
    headers = ["command"]
    for key in trees:
        headers.append(f"{key.replace('-nobc', ' (no bytecode cache)')}: median ms (min; CPU median)")
    headers.append("heavy or avoidable modules imported (now)")
    pass_cell = cell("python -c pass")
    rows: list[list[object]] = [["python -c pass", *([pass_cell] * len(trees)), "-"]]
    for name in commands:
        rows.append([name, *(cell(f"{k}|{name}") for k in trees), ", ".join(heavy[f"now|{name}"]) or "none"])
    for r in rows:
        print(" | ".join(str(x) for x in r))
    elapsed = time.perf_counter() - started
    worst = max(med[f"now|{c}"] for c in commands if c != "llmos --version")
    body = table(headers, rows)
    body += (
        f"\nMedians of {args.runs} interleaved runs per case ({len(cases)} cases): wall-clock, and in brackets the fastest run "
        "and the median CPU time of the process (user + system), which a busy machine inflates less; load average "
        f"{load_start} at the start and {_load()} at the end; all in one run of "
        f"{elapsed:.0f} s; `python -c pass` is the bare interpreter in the same run. "
        f"Target: `llmos --help` and `llmos list` under {TARGET_MS} ms with the bytecode cache "
        f"(slowest now: {worst:.0f} ms, {'met' if worst < TARGET_MS else 'NOT met'}). "
    )
    if args.before:
        body += f'"before" is the tree at `{args.before}` (`git -C {args.before} rev-parse --short HEAD`: {_rev(args.before)}), timed in the same run. '
    body += "None of these commands may import " + ", ".join(HEAVY) + "; the last column also names numpy, huggingface_hub, nacl, mcp and gguf when loaded.\n"
    if not args.no_write:
        write_section("startup", "Start-up time", body)
    return 0


def _load() -> str:
    try:
        return " / ".join(f"{x:.1f}" for x in os.getloadavg())
    except OSError:
        return "unknown"


def _rev(path: Path) -> str:
    res = subprocess.run(["git", "-C", str(path), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    return res.stdout.strip() or "?"


if __name__ == "__main__":
    sys.exit(main())
