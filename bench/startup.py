"""Start-up time: `llmos --version`, `llmos --help` and `llmos list` against `python -c pass`.

All measured in the same run, on the same interpreter, with a fresh LLMOS_HOME
holding one installed package.  Target: under 150 ms for --version and list.
Also checks that none of these imports llama_cpp, torch or transformers.

    python bench/startup.py [--runs N] [--no-write]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import table, write_section

HEAVY = ("llama_cpp", "torch", "transformers", "peft")


def timeit(cmd: list[str], env: dict, runs: int) -> list[float]:
    out = []
    for _ in range(runs):
        t = time.perf_counter()
        subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
        out.append(time.perf_counter() - t)
    return out


def heavy_imports(cmd: list[str], env: dict) -> list[str]:
    res = subprocess.run([sys.executable, "-X", "importtime", *cmd[1:]], env=env, capture_output=True, text=True)
    mods = {line.rsplit("|", 1)[-1].strip() for line in res.stderr.splitlines() if "|" in line}
    return sorted(m for m in mods if m.split(".")[0] in HEAVY)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        env = dict(os.environ, LLMOS_HOME=str(Path(tmp) / "home"), NO_COLOR="1")
        llmos = [sys.executable, "-m", "llmos_cli"]
        # one real package installed so `list` reads a real database
        src = Path(tmp) / "src"
        src.mkdir()
        (src / "llmos.toml").write_text(
            'schema = 1\n[package]\nname = "bench-lib"\nversion = "1.0.0"\nkind = "library"\n'
            'summary = "startup bench"\nlicense = "MIT"\nmaintainer = "bench"\n'
            '[knowledge]\ndocuments = ["a.md"]\n'
        )
        (src / "a.md").write_text("# a\n")
        subprocess.run([*llmos, "build", str(src), "-o", tmp], env=env, capture_output=True)
        archives = list(Path(tmp).glob("*.llmos"))
        if archives:
            subprocess.run([*llmos, "install", "-y", str(archives[0])], env=env, capture_output=True)
        cases = {
            "python -c pass": [sys.executable, "-c", "pass"],
            "llmos --version": [*llmos, "--version"],
            "llmos --help": [*llmos, "--help"],
            "llmos list": [*llmos, "list"],
        }
        for cmd in cases.values():  # warm the page cache
            timeit(cmd, env, 2)
        rows = []
        results = {}
        for label, cmd in cases.items():
            ts = timeit(cmd, env, args.runs)
            med = statistics.median(ts) * 1000
            results[label] = med
            heavy = heavy_imports(cmd, env) if label != "python -c pass" else []
            rows.append([label, f"{med:.0f}", f"{min(ts) * 1000:.0f}", ", ".join(heavy) or "none"])
            print(f"{label:18s} median {med:6.1f} ms  min {min(ts) * 1000:6.1f} ms  heavy imports: {heavy or 'none'}")
        base = results["python -c pass"]
        body = table(["command", "median ms", "min ms", "heavy modules imported"], rows)
        body += (
            f"\nTarget: under 150 ms for `llmos --version` and `llmos list`. "
            f"Over the bare interpreter: --version +{results['llmos --version'] - base:.0f} ms, "
            f"list +{results['llmos list'] - base:.0f} ms ({args.runs} runs each, median).\n"
        )
        if not args.no_write:
            write_section("startup", "Start-up time", body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
