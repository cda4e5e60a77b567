"""Run a library's command tool: no shell, JSON in, JSON out, in a box.

* ``command`` is an argument list run directly (never through a shell).  A
  first element ``python``/``python3`` means the interpreter running llmos; an
  element naming a file of the package is run from the working copy below.
* The arguments go to stdin as one JSON object; the tool answers with one
  JSON value on stdout.
* Working directory: a fresh temporary folder holding a copy of the
  package's files (not its adapter GGUF nor its ``.llmos/`` artifacts),
  deleted afterwards.
* Environment: scrubbed to ``PATH``, ``LANG``, ``HOME``/``TMPDIR`` (the
  temporary folder) and ``LLMOS_TOOL``; nothing else of the caller leaks.
* Timeout: the whole process group is killed when it runs out.
* Output is capped: a tool flooding stdout is killed at the cap.

Every failure comes back as ``ToolResult(ok=False, error=...)`` for the
model to read; nothing here raises for a misbehaving tool.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from llmos_cli.tools.spec import ToolResult, ToolSpec

SAFE_PATH = "/usr/local/bin:/usr/bin:/bin"
STDERR_TAIL = 2000


def scrubbed_env(workdir: Path, tool: str) -> dict[str, str]:
    return {
        "PATH": SAFE_PATH,
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "HOME": str(workdir),
        "TMPDIR": str(workdir),
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONIOENCODING": "utf-8",
        "LLMOS_TOOL": tool,
    }


def materialize(library: Any, dest: Path) -> None:
    """Copy the package's payload files (read-only) into ``dest``."""
    if library is None:
        return
    for rel, src in sorted(library.files.items()):
        if rel.startswith(".llmos/") or rel.endswith(".gguf"):
            continue
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, target)
        os.chmod(target, 0o555 if os.access(src, os.X_OK) or rel.endswith((".py", ".sh")) else 0o444)


def resolve_argv(command: list[str], workdir: Path) -> list[str]:
    argv = list(command)
    if argv and argv[0] in ("python", "python3"):
        argv[0] = sys.executable
    elif argv and (workdir / argv[0]).is_file():
        argv[0] = str(workdir / argv[0])
    return argv


def _reader(stream, limit: int, sink: bytearray, flooded: threading.Event, on_flood) -> None:
    try:
        while True:
            block = stream.read1(65536) if hasattr(stream, "read1") else stream.read(65536)
            if not block:
                return
            room = limit - len(sink)
            if room > 0:
                sink.extend(block[:room])
            if len(block) > room:
                flooded.set()
                on_flood()
                # keep draining so the child is never blocked on a full pipe
    except (OSError, ValueError):
        return


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    except OSError:
        proc.kill()


def run_command(spec: ToolSpec, arguments: dict[str, Any]) -> ToolResult:
    """Run ``spec.command`` once with ``arguments``; never raises for tool failures."""
    start = time.monotonic()
    workdir = Path(tempfile.mkdtemp(prefix=f"llmos-tool-{spec.name}-"))
    try:
        try:
            materialize(spec.library, workdir)
        except OSError as exc:
            return ToolResult(False, error=f"could not prepare the tool's files: {exc}", seconds=time.monotonic() - start)
        argv = resolve_argv(spec.command, workdir)
        payload = json.dumps(arguments, ensure_ascii=False).encode("utf-8")
        try:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                cwd=str(workdir),
                env=scrubbed_env(workdir, spec.name),
                start_new_session=True,
                close_fds=True,
            )
        except OSError as exc:
            return ToolResult(False, error=f"tool {spec.name!r} could not start: {exc.strerror or exc}", seconds=time.monotonic() - start)
        out = bytearray()
        errb = bytearray()
        flooded = threading.Event()
        err_flood = threading.Event()
        t_out = threading.Thread(target=_reader, args=(proc.stdout, spec.max_output, out, flooded, lambda: _kill_group(proc)), daemon=True)
        t_err = threading.Thread(target=_reader, args=(proc.stderr, 64 * 1024, errb, err_flood, lambda: None), daemon=True)
        t_out.start()
        t_err.start()
        try:
            assert proc.stdin is not None  # opened with stdin=PIPE
            proc.stdin.write(payload)
            proc.stdin.close()
        except (BrokenPipeError, OSError):
            pass
        timed_out = False
        try:
            proc.wait(timeout=spec.timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
            _kill_group(proc)
            proc.wait()
        # the group may hold the pipes open (a grandchild); don't wait for it forever
        _kill_group(proc)
        t_out.join(timeout=2)
        t_err.join(timeout=2)
        for s in (proc.stdout, proc.stderr):
            try:
                if s is not None:
                    s.close()
            except OSError:
                pass
        seconds = time.monotonic() - start
        stderr = errb.decode("utf-8", "replace").strip()[-STDERR_TAIL:]
        if timed_out:
            return ToolResult(False, error=f"tool {spec.name!r} timed out after {spec.timeout:g} s and was stopped", seconds=seconds, stderr=stderr)
        if flooded.is_set():
            return ToolResult(
                False,
                error=f"tool {spec.name!r} wrote more than {spec.max_output} bytes and was stopped",
                seconds=seconds,
                truncated=True,
                stderr=stderr,
            )
        if proc.returncode != 0:
            why = f"killed by signal {-proc.returncode}" if proc.returncode < 0 else f"exited with status {proc.returncode}"
            tail = f": {stderr.splitlines()[-1]}" if stderr else ""
            return ToolResult(False, error=f"tool {spec.name!r} {why}{tail}", seconds=seconds, stderr=stderr)
        text = out.decode("utf-8", "replace").strip()
        if not text:
            return ToolResult(False, error=f"tool {spec.name!r} printed nothing (a JSON value was expected)", seconds=seconds, stderr=stderr)
        try:
            value = json.loads(text)
        except json.JSONDecodeError as exc:
            return ToolResult(False, error=f"tool {spec.name!r} did not print valid JSON ({exc.msg} at char {exc.pos})", seconds=seconds, stderr=stderr)
        return ToolResult(True, value=value, seconds=seconds, stderr=stderr)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
