"""Write one benchmark's section of docs/benchmarks.md.

Each bench script owns the text between ``<!-- bench:NAME -->`` and
``<!-- /bench:NAME -->``; running it replaces that section (or appends it),
so results and their baseline always come from the same run.
"""

from __future__ import annotations

import os
import platform
import re
import sys
import time
from pathlib import Path

DOC = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"
HEADER = "# Benchmarks\n\nEach section is written by the named script in `bench/`; re-run it to refresh.\n"


def machine() -> str:
    try:
        import llama_cpp

        llama = f", llama-cpp-python {llama_cpp.__version__}"
    except Exception:
        llama = ""
    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python {sys.version.split()[0]}{llama}"


def write_section(name: str, title: str, body: str) -> None:
    stamp = time.strftime("%Y-%m-%d", time.gmtime())
    section = f"<!-- bench:{name} -->\n## {title}\n\n_Measured {stamp} by `bench/{name}.py` on {machine()}._\n\n{body.rstrip()}\n<!-- /bench:{name} -->\n"
    text = DOC.read_text() if DOC.exists() else HEADER
    pat = re.compile(rf"<!-- bench:{re.escape(name)} -->.*?<!-- /bench:{re.escape(name)} -->\n?", re.S)
    if pat.search(text):
        text = pat.sub(lambda _m: section, text)
    else:
        text = text.rstrip() + "\n\n" + section
    DOC.parent.mkdir(parents=True, exist_ok=True)
    DOC.write_text(text)


def table(headers: list[str], rows: list[list[object]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines) + "\n"
