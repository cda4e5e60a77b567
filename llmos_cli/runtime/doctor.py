"""``llmos doctor``: is this machine ready to run models?

Reports the llama.cpp build (llama-cpp-python version, GPU offload support,
the CPU features it was compiled with), threads, the data directories, the
state database's health (``PRAGMA integrity_check`` on a read-only
connection; nothing is created or migrated) and the default model.  Each
problem is a failed check; the exit code is that of the first one
(``RUNTIME`` for an unusable llama.cpp, ``STATE`` for a damaged database,
``IO`` for an unwritable home), 0 when all pass.
"""

from __future__ import annotations

import os
import platform
import sqlite3
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llmos_cli import __version__
from llmos_cli.errors import ExitCode
from llmos_cli.paths import Paths, get_paths
from llmos_cli.progress import NullReporter, Reporter
from llmos_cli.runtime.engine import import_llama


@dataclass
class Check:
    name: str
    ok: bool
    message: str
    exit_code: int = 0

    def to_json(self) -> dict:
        return {"name": self.name, "ok": self.ok, "message": self.message}


@dataclass
class DoctorReport:
    llmos: str
    python: str
    platform: str
    llama_cpp: dict[str, Any]
    threads: dict[str, Any]
    paths: dict[str, Any]
    database: dict[str, Any]
    default_model: str | None
    checks: list[Check] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        for c in self.checks:
            if not c.ok:
                return c.exit_code or int(ExitCode.FAILURE)
        return 0

    def to_json(self) -> dict:
        return {
            "ok": self.exit_code == 0,
            "llmos": self.llmos,
            "python": self.python,
            "platform": self.platform,
            "llama_cpp": self.llama_cpp,
            "threads": self.threads,
            "paths": self.paths,
            "database": self.database,
            "default_model": self.default_model,
            "checks": [c.to_json() for c in self.checks],
        }


def _llama_info(checks: list[Check]) -> dict[str, Any]:
    info: dict[str, Any] = {"importable": False}
    try:
        lc = import_llama()
    except Exception as exc:
        msg = getattr(exc, "message", str(exc))
        info["error"] = msg
        checks.append(Check("llama_cpp", False, msg, int(ExitCode.RUNTIME)))
        return info
    info["importable"] = True
    info["version"] = getattr(lc, "__version__", None)
    info["gpu_offload"] = bool(lc.llama_supports_gpu_offload())
    info["mmap"] = bool(lc.llama_supports_mmap())
    info["mlock"] = bool(lc.llama_supports_mlock())
    info["max_devices"] = int(lc.llama_max_devices())
    sysinfo = lc.llama_print_system_info().decode("utf-8", errors="replace").strip()
    info["system_info"] = sysinfo
    info["library"] = str(Path(lc.__file__).parent)
    note = "GPU offload available" if info["gpu_offload"] else "CPU-only build (see docs/runtime.md for a CUDA or Metal build)"
    checks.append(Check("llama_cpp", True, f"llama-cpp-python {info['version']}: {note}"))
    return info


def _threads() -> dict[str, Any]:
    cores = os.cpu_count() or 1
    try:
        usable = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        usable = cores
    return {"cpu_count": cores, "usable": usable, "default_threads": max(cores // 2, 1)}


def _dir_info(p: Path) -> dict[str, Any]:
    exists = p.exists()
    return {"path": str(p), "exists": exists, "writable": os.access(p, os.W_OK) if exists else None}


def _db_health(paths: Paths, checks: list[Check]) -> tuple[dict[str, Any], str | None]:
    db = paths.db
    out: dict[str, Any] = {"path": str(db), "exists": db.exists()}
    if not db.exists():
        out["integrity"] = "not created yet"
        checks.append(Check("database", True, "no state database yet (created by the first install)"))
        return out, None
    default_model = None
    try:
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
        try:
            rows = [r[0] for r in conn.execute("PRAGMA integrity_check").fetchall()]
            out["integrity"] = "ok" if rows == ["ok"] else "; ".join(rows[:5])
            try:
                row = conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
                out["schema_version"] = int(row[0]) if row else None
                counts = dict(conn.execute("SELECT kind, COUNT(*) FROM packages GROUP BY kind").fetchall())
                out["packages"] = {"model": counts.get("model", 0), "library": counts.get("library", 0)}
                out["pending_transactions"] = conn.execute("SELECT COUNT(*) FROM history WHERE status='pending'").fetchone()[0]
                row = conn.execute("SELECT value FROM settings WHERE key='default_model'").fetchone()
                setting = row[0] if row else None
                models = [r[0] for r in conn.execute("SELECT name FROM packages WHERE kind='model' ORDER BY name")]
                default_model = setting if setting in models else (models[0] if len(models) == 1 else None)
            except sqlite3.DatabaseError as exc:
                out["integrity"] = f"schema unreadable: {exc}"
        finally:
            conn.close()
    except sqlite3.DatabaseError as exc:
        out["integrity"] = f"unreadable: {exc}"
    if out["integrity"] == "ok":
        pend = out.get("pending_transactions") or 0
        msg = "state database ok" + (f" ({pend} interrupted transaction(s): the next command rolls them back)" if pend else "")
        checks.append(Check("database", True, msg))
    else:
        checks.append(Check("database", False, f"state database {db} is damaged: {out['integrity']}", int(ExitCode.STATE)))
    return out, default_model


def doctor(*, reporter: Reporter | None = None, paths: Paths | None = None) -> DoctorReport:

    _ = reporter or NullReporter()
    paths = paths or get_paths()
    checks: list[Check] = []
    llama = _llama_info(checks)
    home = paths.home
    dirs = {
        "home": _dir_info(home),
        "store": _dir_info(paths.store),
        "cache": _dir_info(paths.cache),
        "lists": _dir_info(paths.lists),
        "local_registry": _dir_info(home / "local-registry"),
    }
    # the home must be writable (or creatable) for installs
    probe = home if home.exists() else next((p for p in home.parents if p.exists()), None)
    if probe is None or not os.access(probe, os.W_OK):
        checks.append(Check("home", False, f"{home} is not writable", int(ExitCode.IO)))
    else:
        checks.append(Check("home", True, f"data directory {home}" + ("" if home.exists() else " (created on first use)")))
    database, default_model = _db_health(paths, checks)
    return DoctorReport(
        llmos=__version__,
        python=sys.version.split()[0],
        platform=f"{platform.system()} {platform.machine()}",
        llama_cpp=llama,
        threads=_threads(),
        paths=dirs,
        database=database,
        default_model=default_model,
        checks=checks,
    )
