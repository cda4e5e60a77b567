"""Tools served by a library's MCP server over stdio (official ``mcp`` SDK).

A library declares::

    [[mcp]]
    name = "units"                         # server name
    command = ["python", "mcp/units.py"]   # run without a shell, like command tools
    tools = ["convert"]                    # the server's tools the library exposes
    timeout = 10                           # seconds per call (optional)

The server is started once per run, in a temporary working copy of the
package with a scrubbed environment (see ``command``), on a private event
loop in a background thread, so the synchronous tool loop can call it.
Only the tools listed in ``tools`` are offered; their descriptions and
schemas come from the server's ``tools/list``.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from llmos_cli.errors import ToolError
from llmos_cli.pkg.manifest import McpDecl
from llmos_cli.tools.command import materialize, resolve_argv, scrubbed_env
from llmos_cli.tools.spec import DEFAULT_TIMEOUT, ToolResult

START_TIMEOUT = 20.0


def _attr(obj: Any, *names: str, default: Any = None) -> Any:
    """mcp 1.x uses camelCase attributes, 2.x snake_case."""
    for n in names:
        if hasattr(obj, n):
            return getattr(obj, n)
    return default


def _leaf(exc: BaseException) -> BaseException:
    """The first real error inside (nested) exception groups from anyio task groups."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc


class McpServer:
    def __init__(self, library: Any, decl: McpDecl):
        self.library = library
        self.decl = decl
        self.name = decl.name
        self.timeout = decl.timeout if decl.timeout is not None else DEFAULT_TIMEOUT
        self.tools: dict[str, dict[str, Any]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._session: Any = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._workdir: Path | None = None
        self._errlog: Any = None

    @property
    def label(self) -> str:
        lib = getattr(self.library, "name", "?")
        return f"MCP server {self.name!r} of library {lib}"

    # ------------------------------------------------------------ lifecycle

    def start(self, timeout: float = START_TIMEOUT) -> dict[str, dict[str, Any]]:
        """Start the server and list its tools: ``{name: {description, parameters}}``."""
        self._workdir = Path(tempfile.mkdtemp(prefix=f"llmos-mcp-{self.name}-"))
        materialize(self.library, self._workdir)
        self._errlog = open(self._workdir / ".stderr.log", "w+", encoding="utf-8", errors="replace")
        self._thread = threading.Thread(target=self._run_loop, name=f"mcp-{self.name}", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            self.close()
            raise ToolError(f"{self.label} did not start within {timeout:g} s", "check the server command, or run it by hand")
        if self._error is not None:
            err = _leaf(self._error)
            tail = self._stderr_tail()
            self.close()
            if isinstance(err, ToolError):
                raise err
            raise ToolError(f"{self.label} failed to start: {err or type(err).__name__}{f' ({tail})' if tail else ''}") from None
        return self.tools

    def _stderr_tail(self) -> str:
        try:
            self._errlog.flush()
            self._errlog.seek(0)
            lines = self._errlog.read().strip().splitlines()
            return lines[-1][:300] if lines else ""
        except (OSError, ValueError, AttributeError):
            return ""

    def _run_loop(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._main())
        except BaseException as exc:
            if not self._ready.is_set():
                self._error = exc
        finally:
            self._ready.set()
            try:
                loop.close()
            except RuntimeError:
                pass

    async def _main(self) -> None:
        from mcp import ClientSession, StdioServerParameters
        from mcp.client.stdio import stdio_client

        assert self._workdir is not None
        argv = resolve_argv(list(self.decl.command), self._workdir)
        params = StdioServerParameters(command=argv[0], args=argv[1:], env=scrubbed_env(self._workdir, self.name), cwd=str(self._workdir))
        self._stop = asyncio.Event()
        async with stdio_client(params, errlog=self._errlog) as streams:
            read, write = streams[0], streams[1]
            async with ClientSession(read, write) as session:
                await session.initialize()
                listed = await session.list_tools()
                wanted = list(self.decl.tools)
                offered = {t.name: t for t in listed.tools}
                missing = [w for w in wanted if w not in offered]
                if missing:
                    raise ToolError(f"{self.label} does not serve the declared tool(s) {', '.join(missing)}")
                for w in wanted:
                    t = offered[w]
                    schema = _attr(t, "input_schema", "inputSchema", default=None) or {"type": "object", "properties": {}}
                    self.tools[w] = {"description": t.description or "", "parameters": dict(schema)}
                self._session = session
                self._ready.set()
                await self._stop.wait()

    def close(self) -> None:
        if self._loop is not None and self._stop is not None and self._thread is not None and self._thread.is_alive():
            try:
                self._loop.call_soon_threadsafe(self._stop.set)
            except RuntimeError:
                pass
        if self._thread is not None:
            self._thread.join(timeout=10)
        if self._errlog is not None:
            try:
                self._errlog.close()
            except OSError:
                pass
        if self._workdir is not None:
            shutil.rmtree(self._workdir, ignore_errors=True)
            self._workdir = None

    # ------------------------------------------------------------ calls

    def call(self, tool: str, arguments: dict[str, Any], timeout: float | None = None) -> ToolResult:
        start = time.monotonic()
        limit = self.timeout if timeout is None else timeout
        if self._session is None or self._loop is None or not (self._thread and self._thread.is_alive()):
            return ToolResult(False, error=f"{self.label} is not running", seconds=0.0)
        fut = asyncio.run_coroutine_threadsafe(self._session.call_tool(tool, arguments), self._loop)
        try:
            res = fut.result(timeout=limit)
        except TimeoutError:
            fut.cancel()
            return ToolResult(False, error=f"tool {tool!r} ({self.label}) timed out after {limit:g} s", seconds=time.monotonic() - start)
        except Exception as exc:
            return ToolResult(False, error=f"tool {tool!r} ({self.label}) failed: {exc}", seconds=time.monotonic() - start)
        seconds = time.monotonic() - start
        texts: list[str] = [t for t in (getattr(c, "text", None) for c in (res.content or [])) if isinstance(t, str)]
        if _attr(res, "is_error", "isError", default=False):
            return ToolResult(False, error=f"tool {tool!r} reported an error: {' '.join(texts)[:2000]}", seconds=seconds)
        structured = _attr(res, "structured_content", "structuredContent", default=None)
        if structured is not None:
            value: Any = structured
        elif len(texts) == 1:
            try:
                value = json.loads(texts[0])
            except ValueError:
                value = texts[0]
        else:
            value = texts
        size = len(json.dumps(value, ensure_ascii=False, default=str))
        if size > 64 * 1024:
            return ToolResult(False, error=f"tool {tool!r} returned {size} bytes, more than the 65536 allowed", seconds=seconds, truncated=True)
        return ToolResult(True, value=value, seconds=seconds)
