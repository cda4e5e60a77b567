"""One run (or served request) as a prompt-log entry (``state.logs``)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from llmos_cli.paths import Paths
from llmos_cli.progress import Reporter
from llmos_cli.state import logs


def _prompt_text(req: Any) -> str:
    if req.messages is not None:
        turns = [m for m in req.messages if m.get("role") != "system"]
        if len(turns) == 1:
            return str(turns[0].get("content") or "")
        return "\n".join(f"{m.get('role')}: {m.get('content') or ''}" for m in turns)
    try:
        return str(req.user_text())
    except Exception:
        return ""


def entry_for(req: Any, result: Any) -> logs.LogEntry:
    extra = result.extra or {}
    system = [req.system] if req.system else []
    if req.messages is not None:
        system += [str(m.get("content") or "") for m in req.messages if m.get("role") == "system"]
    return logs.LogEntry(
        origin=req.origin,
        prompt=_prompt_text(req),
        system="\n\n".join(system) or None,
        answer=result.text,
        model=result.model.get("name"),
        libraries=[{"name": lib["name"], "version": lib.get("version"), "scale": lib.get("scale")} for lib in result.libraries],
        finish_reason=result.finish_reason,
        citations=[str(k["citation"]) for k in extra.get("knowledge", []) if isinstance(k, dict) and k.get("citation")],
        tool_calls=list(extra.get("tool_calls", [])) + list(extra.get("client_tool_calls", [])),
        usage=dict(result.usage),
        timings=dict(result.timings),
        duration_s=result.timings.get("total_s"),
    )


def log_run(req: Any, result: Any, paths: Paths, reporter: Reporter, *, secrets: Iterable[str] = ()) -> None:
    """Write the entry unless logging is off; a failure to write is a warning, never an error."""
    if not logs.enabled(paths):
        return
    if not logs.write(paths, entry_for(req, result), secrets=secrets):
        reporter.warn(f"could not write the prompt log {logs.log_path(paths)}")
