"""Prompt logs, as the ``llm`` tool keeps them: every run and served request in SQLite.

The log lives in its own database, ``$LLMOS_HOME/logs.db``, apart from the
package state: writing a log entry never takes the state lock, and a run that
only reads the state stays a reader.  Each row holds the prompt (the user's
text or the conversation), the stack (model and libraries with scales), the
answer, citations, tool calls, token counts and timings, and where it came
from (``run`` or ``serve``).

* ``llmos run --no-log`` skips one run; ``llmos logs off`` (a marker file
  ``logs-off`` in LLMOS_HOME, as ``llm logs off`` does) or ``LLMOS_NO_LOG=1``
  turns logging off everywhere, ``llmos logs on`` back on.
* Logs never hold API keys: the server's key and anything shaped like a bearer
  token or an ``sk-`` key are replaced by ``[redacted]`` before a row is
  written.
* A log that cannot be written (disk full, read-only home) never fails the
  run: ``write`` returns False and the caller may warn.
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llmos_cli.errors import StateError
from llmos_cli.paths import Paths

SCHEMA_VERSION = 1
_SCHEMA = """
CREATE TABLE IF NOT EXISTS logs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    time REAL NOT NULL,
    origin TEXT NOT NULL,
    model TEXT,
    libraries TEXT NOT NULL,
    system TEXT,
    prompt TEXT NOT NULL,
    answer TEXT NOT NULL,
    finish_reason TEXT,
    citations TEXT NOT NULL,
    tool_calls TEXT NOT NULL,
    usage TEXT NOT NULL,
    timings TEXT NOT NULL,
    duration_s REAL
);
CREATE INDEX IF NOT EXISTS logs_time ON logs(time);
"""

_TOKENISH = re.compile(r"(?i)(bearer\s+)[A-Za-z0-9._~+/=-]{8,}|\bsk-[A-Za-z0-9_-]{12,}")


def log_path(paths: Paths) -> Path:
    return paths.home / "logs.db"


def off_marker(paths: Paths) -> Path:
    return paths.home / "logs-off"


def enabled(paths: Paths) -> bool:
    if os.environ.get("LLMOS_NO_LOG", "").strip() not in ("", "0"):
        return False
    return not off_marker(paths).exists()


def set_enabled(paths: Paths, on: bool) -> None:
    marker = off_marker(paths)
    if on:
        marker.unlink(missing_ok=True)
    else:
        paths.home.mkdir(parents=True, exist_ok=True)
        marker.write_text("prompt logging is off (llmos logs on turns it back on)\n")


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    for s in secrets:
        if s:
            text = text.replace(s, "[redacted]")
    return _TOKENISH.sub(lambda m: (m.group(1) or "") + "[redacted]", text)


@dataclass
class LogEntry:
    origin: str  # "run" | "serve"
    prompt: str
    answer: str
    model: str | None = None
    libraries: list[dict[str, Any]] = field(default_factory=list)
    system: str | None = None
    finish_reason: str | None = None
    citations: list[str] = field(default_factory=list)
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    usage: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, Any] = field(default_factory=dict)
    duration_s: float | None = None
    time: float = field(default_factory=time.time)
    id: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.time)),
            "origin": self.origin,
            "model": self.model,
            "libraries": self.libraries,
            "system": self.system,
            "prompt": self.prompt,
            "answer": self.answer,
            "finish_reason": self.finish_reason,
            "citations": self.citations,
            "tool_calls": self.tool_calls,
            "usage": self.usage,
            "timings": self.timings,
            "duration_s": self.duration_s,
        }


def _connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(str(path), timeout=10, isolation_level=None)
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA busy_timeout=10000")
    conn.execute("PRAGMA journal_mode=WAL")
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    if version > SCHEMA_VERSION:
        conn.close()
        raise StateError(f"{path} is from a newer llmos (log schema {version})", "upgrade llmos, or move the file away")
    if version < SCHEMA_VERSION:
        conn.executescript(_SCHEMA)
        conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
    return conn


def write(paths: Paths, entry: LogEntry, *, secrets: Iterable[str] = ()) -> bool:
    """Append one entry (redacted); False when it could not be written."""
    secrets = [s for s in secrets if s]
    r = lambda s: redact(s, secrets) if s else s  # noqa: E731

    def j(value: Any) -> str:
        return r(json.dumps(value, ensure_ascii=False, default=str))

    try:
        paths.home.mkdir(parents=True, exist_ok=True)
        conn = _connect(log_path(paths))
        try:
            cur = conn.execute(
                "INSERT INTO logs (time, origin, model, libraries, system, prompt, answer, finish_reason, citations, tool_calls, usage, timings, duration_s)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    entry.time,
                    entry.origin,
                    entry.model,
                    j(entry.libraries),
                    r(entry.system),
                    r(entry.prompt),
                    r(entry.answer),
                    entry.finish_reason,
                    j(entry.citations),
                    j(entry.tool_calls),
                    j(entry.usage),
                    j(entry.timings),
                    entry.duration_s,
                ),
            )
            entry.id = cur.lastrowid
        finally:
            conn.close()
    except (sqlite3.Error, OSError, StateError):
        return False
    return True


def read(paths: Paths, n: int = 3) -> list[LogEntry]:
    """The newest ``n`` entries (all when ``n`` <= 0), newest first."""
    path = log_path(paths)
    if not path.exists():
        return []
    try:
        conn = _connect(path)
        try:
            sql = "SELECT * FROM logs ORDER BY id DESC" + (" LIMIT ?" if n > 0 else "")
            rows = conn.execute(sql, (n,) if n > 0 else ()).fetchall()
        finally:
            conn.close()
    except sqlite3.DatabaseError as exc:
        raise StateError(f"{path}: the prompt log is unreadable: {exc}", "move the file away; llmos starts a new one") from None
    return [
        LogEntry(
            id=row["id"],
            time=row["time"],
            origin=row["origin"],
            model=row["model"],
            libraries=json.loads(row["libraries"]),
            system=row["system"],
            prompt=row["prompt"],
            answer=row["answer"],
            finish_reason=row["finish_reason"],
            citations=json.loads(row["citations"]),
            tool_calls=json.loads(row["tool_calls"]),
            usage=json.loads(row["usage"]),
            timings=json.loads(row["timings"]),
            duration_s=row["duration_s"],
        )
        for row in rows
    ]
