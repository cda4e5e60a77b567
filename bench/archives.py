"""Archive reading: install time for many small files, and time/peak RSS on hostile archives.

Runs real ``llmos`` subprocesses (peak RSS from ``os.wait4``) for this
checkout and for a baseline checkout (``--baseline DIR``, e.g. a
``git worktree`` of the commit before issue 11's archive work), in the same
run, and writes the "archives" section of docs/benchmarks.md.

    git worktree add /tmp/arch-base 22b9ccb
    python bench/archives.py --baseline /tmp/arch-base

``LLMOS_HOME`` lives on /dev/shm when it exists, so that the per-blob fsync
of the store (a disk property, the same before and after) does not hide the
reading cost.  Each baseline run gets ``--timeout`` seconds (default 120) and
an address-space limit (``--mem-limit-gb``, default 2.5) so that the old
bombs cannot take the machine down; hitting either is reported as such.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench._report import table, write_section  # noqa: E402
from tests import hostile  # noqa: E402

HOSTILE = [
    "sparse_gnu_bad_map",
    "sparse_negative_size",
    "sparse_terabyte",
    "declared_terabyte",
    "longname_bomb",
    "pax_bomb",
    "gzip_bomb",
    "gzip_bomb_lying",
    "gzip_bomb_padding",
    "gzip_no_trailer",
    "gzip_bad_crc",
]


def run(tree: Path, args: list[str], home: Path, timeout: float, mem_gb: float) -> tuple[str, float, float]:
    """(outcome, seconds, peak RSS MB) of ``llmos ARGS`` run from ``tree``."""
    env = dict(os.environ, LLMOS_HOME=str(home), PYTHONPATH=str(tree), NO_COLOR="1", LLMOS_EMBEDDED_REGISTRY=str(home.parent / "empty-registry"))
    (home.parent / "empty-registry").mkdir(exist_ok=True)
    limit = int(mem_gb * (1 << 30))

    def preexec() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        t0 = time.monotonic()
        p = subprocess.Popen(
            [sys.executable, "-m", "llmos_cli", *args], cwd=tree, env=env, stdout=out, stderr=err, stdin=subprocess.DEVNULL, preexec_fn=preexec
        )
        killed = False
        while True:
            pid, status, ru = os.wait4(p.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() - t0 > timeout:
                p.kill()
                _, status, ru = os.wait4(p.pid, 0)
                killed = True
                break
            time.sleep(0.01)
        secs = time.monotonic() - t0
        err.seek(0)
        text = err.read().decode(errors="replace")
    code = os.waitstatus_to_exitcode(status)
    if killed:
        outcome = f"killed after {timeout:.0f} s"
    elif "MemoryError" in text:
        outcome = f"MemoryError at the {mem_gb} GB limit (exit {code})"
    elif "Traceback" in text:
        last = [ln for ln in text.splitlines() if ln.strip()][-1][:60]
        outcome = f"traceback, exit {code}: {last}"
    else:
        outcome = f"exit {code}"
    return outcome, secs, ru.ru_maxrss / 1024


def biggest_manifest(p: Path) -> Path:
    """A valid archive whose llmos.toml is just under the manifest limit (12 MiB: 120k empty files): the most a manifest can cost."""
    files = {f"{i:06d}": b"" for i in range(120_000)}
    parts = [hostile.member("llmos.toml", hostile.manifest(files))] + [hostile.header(k, 0) for k in files] + [hostile.END]
    return hostile.gz(p, parts)


def fresh_home(root: Path, tree: Path, timeout: float, mem_gb: float) -> Path:
    home = Path(tempfile.mkdtemp(dir=root)) / "home"
    run(tree, ["source", "remove", "embedded"], home, timeout, mem_gb)
    return home


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--baseline", type=Path, help="checkout of the baseline commit")
    ap.add_argument("--sizes", default="2500,10000,20000,100000")
    ap.add_argument("--timeout", type=float, default=900, help="seconds allowed to each run of this checkout")
    ap.add_argument("--baseline-timeout", type=float, default=120, help="seconds allowed to each baseline run")
    ap.add_argument("--mem-limit-gb", type=float, default=2.5)
    ap.add_argument("--no-write", action="store_true")
    a = ap.parse_args()
    t_start = time.monotonic()
    shm = Path("/dev/shm")
    root = Path(tempfile.mkdtemp(prefix="llmos-bench-archives-", dir=shm if shm.is_dir() else None))
    data = Path(tempfile.mkdtemp(prefix="llmos-bench-archives-data-"))
    trees = [("now", REPO)] + ([("baseline", a.baseline.resolve())] if a.baseline else [])
    try:
        rows_files = []
        for n in [int(x) for x in a.sizes.split(",")]:
            path = hostile.many_small_files(data / "evil_1.0.0.llmos", n)
            row: list[object] = [f"{n:,}", f"{path.stat().st_size / 1e6:.1f} MB"]
            for label, tree in trees:
                limit = a.timeout if label == "now" else a.baseline_timeout
                for cmd in (["check", str(path)], ["install", "-y", str(path)]):
                    home = fresh_home(root, tree, limit, a.mem_limit_gb)
                    outcome, secs, rss = run(tree, cmd, home, limit, a.mem_limit_gb)
                    row.append(f"{secs:.1f} s, {rss:.0f} MB" + ("" if outcome == "exit 0" else f" ({outcome})"))
                    shutil.rmtree(home.parent, ignore_errors=True)
                    print(label, n, cmd[0], outcome, f"{secs:.1f}s {rss:.0f}MB", flush=True)
            rows_files.append(row)
            path.unlink()
        rows_hostile = []
        for name in [*HOSTILE, "manifest_at_the_limit"]:
            gen, cls = hostile.CORPUS[name] if name in hostile.CORPUS else (biggest_manifest, "memory (largest manifest allowed)")
            path = gen(data / f"{name}.llmos")
            row = [f"`{name}`", cls, f"{path.stat().st_size:,} B"]
            for label, tree in trees:
                limit = a.timeout if label == "now" else a.baseline_timeout
                for cmd in (["check", str(path)], ["install", "-y", str(path)]):
                    home = fresh_home(root, tree, limit, a.mem_limit_gb)
                    outcome, secs, rss = run(tree, cmd, home, limit, a.mem_limit_gb)
                    row.append(f"{outcome}, {secs:.1f} s, {rss:.0f} MB")
                    shutil.rmtree(home.parent, ignore_errors=True)
                    print(label, name, cmd[0], outcome, f"{secs:.1f}s {rss:.0f}MB", flush=True)
            rows_hostile.append(row)
            path.unlink()
    finally:
        shutil.rmtree(root, ignore_errors=True)
        shutil.rmtree(data, ignore_errors=True)
    took = time.monotonic() - t_start
    heads = [f"{lbl} {c}" for lbl, _t in trees for c in ("check", "install")]
    body = (
        "Real `llmos` subprocesses, `LLMOS_HOME` on tmpfs (so the per-blob fsync, a disk cost the same before and after, is left out); "
        f"time and peak RSS (`os.wait4`). Baseline: the archive code before issue 11 (`{a.baseline}`), same run, "
        f"each baseline run capped at {a.baseline_timeout:.0f} s, every run at a {a.mem_limit_gb} GB address space. The whole run took {took / 60:.1f} min.\n\n"
        "### Many small files (issue 11 item 5)\n\n" + table(["files", "archive", *heads], rows_files) + "\n"
        "### Hostile archives (items 2, 3, 4, 12): outcome, time, peak RSS\n\n" + table(["file", "class", "size", *heads], rows_hostile)
    )
    print(body)
    if not a.no_write:
        write_section("archives", "Archives: many small files and hostile inputs", body)


if __name__ == "__main__":
    main()
