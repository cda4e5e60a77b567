"""``llmos serve``: the OpenAI-compatible HTTP API on starlette and uvicorn.

Endpoints: ``GET /health``, ``GET /v1/models``, ``POST /v1/chat/completions``
(SSE streaming, tools), ``POST /v1/completions``, and ``POST /llmos/v1/run``
(``llmos run --server``).  Each request runs the ``llmos run`` pipeline
(``app.run.run``) in a worker thread, on an engine leased from the ``Pool``;
generation goes through the model's scheduler.

Safety:

* loopback by default; any other address needs an API key (``check_bind``),
  checked as a bearer token on every request but ``/health``;
* the body is at most ``max_body`` bytes (413), each request at most
  ``timeout`` seconds (408); every field is checked before llama.cpp sees it
  (400 in OpenAI's error shape, ``serve.openai``);
* at most ``parallel + max_queue`` requests are in flight; beyond that,
  429 with ``Retry-After``;
* a client that disconnects cancels its generation at the next decode step;
* nothing a client sends reaches a traceback: unexpected errors are a 500
  with a one-line message.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import math
import signal
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse, StreamingResponse
from starlette.routing import Route

from llmos_cli.app import run as app_run
from llmos_cli.app import runlog
from llmos_cli.errors import LlmosError
from llmos_cli.paths import Paths, get_paths
from llmos_cli.progress import NullReporter, Reporter
from llmos_cli.runtime.models import installed_models
from llmos_cli.runtime.stack import build_stack
from llmos_cli.serve import openai as oa
from llmos_cli.serve import remote, wire
from llmos_cli.serve.bind import check_bind, is_loopback  # noqa: F401  (check_bind: tests and cli call it here)
from llmos_cli.serve.pool import Pool, PoolOptions
from llmos_cli.serve.scheduler import Job
from llmos_cli.state import logs
from llmos_cli.state import transaction as tx


@dataclass
class ServerOptions:
    host: str = "127.0.0.1"
    port: int = 8080
    api_key: str | None = None
    max_body: int = 1_000_000
    timeout: float = 600.0
    max_queue: int = 64
    log: bool = True
    pool: PoolOptions = field(default_factory=PoolOptions)


class _Collect(NullReporter):
    """Warnings of one request, forwarded as they happen."""

    def __init__(self, sink: Callable[[str], None] | None = None):
        self.warnings: list[str] = []
        self.sink = sink

    def warn(self, message: str) -> None:
        self.warnings.append(message)
        if self.sink is not None:
            self.sink(message)


class Server:
    def __init__(self, options: ServerOptions | None = None, *, paths: Paths | None = None, reporter: Reporter | None = None):
        self.options = o = options or ServerOptions()
        check_bind(o.host, o.api_key)
        self.paths = paths or get_paths()
        self.reporter = reporter or NullReporter()
        o.pool.scheduler.max_waiting = o.max_queue
        self.pool = Pool(o.pool, reporter=self.reporter)
        self.capacity = o.pool.slots + o.max_queue
        self.inflight = 0
        self._avg_s = 1.0
        self._lock = threading.Lock()
        self.executor = ThreadPoolExecutor(max_workers=self.capacity + 2, thread_name_prefix="llmos-request")
        #: jobs of recent requests (tests read their order and timings)
        self.jobs: list[Job] = []
        self.app = self._build_app()

    # ------------------------------------------------------------ plumbing

    def close(self) -> None:
        self.pool.close()
        self.executor.shutdown(wait=False, cancel_futures=True)

    def _error(self, status: int, message: str, *, type_: str = "invalid_request_error", code: str | None = None, headers: dict | None = None) -> Any:
        return JSONResponse(oa.error_body(status, message, type_=type_, code=code), status_code=status, headers=headers)

    def _llmos_error(self, exc: LlmosError) -> Any:
        status, body = oa.error_for(exc)
        headers = {"Retry-After": str(self._retry_after())} if status in (429, 503) else None
        return JSONResponse(body, status_code=status, headers=headers)

    def _retry_after(self) -> int:
        return max(1, math.ceil(self._avg_s * max(1, self.inflight - self.options.pool.slots + 1) / max(1, self.options.pool.slots)))

    def _authorized(self, request: Any) -> bool:
        key = self.options.api_key
        if not key:
            return True
        got = request.headers.get("authorization", "")
        return got.startswith("Bearer ") and hmac.compare_digest(got[7:].strip().encode(), key.encode())

    async def _body(self, request: Any) -> Any:
        limit = self.options.max_body
        declared = request.headers.get("content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > limit):
            raise _HttpError(413, f"the request body is larger than {limit} bytes")
        data = bytearray()
        async for chunk in request.stream():
            data += chunk
            if len(data) > limit:
                raise _HttpError(413, f"the request body is larger than {limit} bytes")
        try:
            return json.loads(bytes(data).decode("utf-8"))
        except (ValueError, UnicodeDecodeError) as exc:
            raise _HttpError(400, f"the request body is not valid JSON: {exc}") from None

    def _engine_for(self, keep_alive: float | None, cancel: threading.Event, deadline: float) -> Callable[..., Any]:
        def provide(stack: Any, options: Any, rep: Reporter) -> Any:
            return self.pool.lease(stack, rep, keep_alive=keep_alive, cancel=cancel, deadline=deadline, on_job=self._record)

        return provide

    def _record(self, job: Job) -> None:
        with self._lock:
            self.jobs.append(job)
            del self.jobs[:-1000]

    def _execute(
        self, req: app_run.RunRequest, *, stages: Any, more: list[Any], on_text: Any, rep: Reporter, keep_alive: float | None, cancel: threading.Event
    ) -> Any:
        """Run the pipeline (in a worker thread) and log it."""
        t0 = time.perf_counter()
        want_log = req.log and self.options.log
        req.log = False  # logged here, with the API key redacted
        deadline = time.monotonic() + self.options.timeout
        result = app_run.run(
            req, on_text=on_text, stages=stages, more_stages=more, reporter=rep, paths=self.paths, engine_for=self._engine_for(keep_alive, cancel, deadline)
        )
        if want_log and not (req.prompt_options is not None and req.prompt_options.explain):
            runlog.log_run(req, result, self.paths, rep, secrets=[self.options.api_key or ""])
        with self._lock:
            self._avg_s = 0.8 * self._avg_s + 0.2 * (time.perf_counter() - t0)
        return result

    def _admit(self) -> bool:
        with self._lock:
            if self.inflight >= self.capacity:
                return False
            self.inflight += 1
            return True

    def _done(self) -> None:
        with self._lock:
            self.inflight -= 1

    # ------------------------------------------------------------ endpoints

    def _build_app(self) -> Any:
        async def guarded(request: Any, handler: Callable[[Any], Any]) -> Any:
            if request.url.path != "/health" and not self._authorized(request):
                return self._error(
                    401, "missing or wrong API key", type_="authentication_error", code="invalid_api_key", headers={"WWW-Authenticate": "Bearer"}
                )
            try:
                return await handler(request)
            except _HttpError as exc:
                return self._error(exc.status, exc.message)
            except LlmosError as exc:
                return self._llmos_error(exc)
            except Exception as exc:  # never a traceback to the client, never a dead server
                self.reporter.warn(f"internal error: {type(exc).__name__}: {exc}")
                return self._error(500, f"internal error: {type(exc).__name__}", type_="server_error")

        async def http_error(request: Any, exc: Any) -> Any:  # unknown paths and methods, in OpenAI's shape
            code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code)
            return self._error(exc.status_code, f"{request.method} {request.url.path}: {exc.detail}", code=code)

        def route(path: str, handler: Callable[[Any], Any], methods: list[str]) -> Route:
            async def endpoint(request: Any) -> Any:
                return await guarded(request, handler)

            return Route(path, endpoint, methods=methods)

        return Starlette(
            routes=[
                route("/health", self.health, ["GET"]),
                route("/v1/models", self.models, ["GET"]),
                route("/v1/chat/completions", self.chat, ["POST"]),
                route("/v1/completions", self.completions, ["POST"]),
                route(remote.RUN_PATH, self.run, ["POST"]),
            ],
            exception_handlers={HTTPException: http_error},
        )

    async def health(self, request: Any) -> Any:
        return JSONResponse(
            {"status": "ok", "inflight": self.inflight, "capacity": self.capacity, "models": self.pool.status(), "evictions": list(self.pool.evictions)}
        )

    def _list_models(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        with tx.open_state(self.paths, "serve", write=False, reporter=NullReporter()) as db:
            for m in installed_models(db).values():
                try:
                    stack = build_stack(db, self.paths, model=m.name, check_abi=False)
                except LlmosError:
                    continue
                libs = [f"{lib.name}:{lib.scale:g}" if lib.scale != 1.0 else lib.name for lib in stack.libraries]
                ids = [m.name] + ([f"{m.name}+{'+'.join(libs)}"] if libs else []) + [f"{m.name}+{lib}" for lib in libs if len(libs) > 1]
                for i in ids:
                    out.append(
                        {
                            "id": i,
                            "object": "model",
                            "created": 0,
                            "owned_by": "llmos",
                            "llmos": {"model": m.name, "version": m.version, "kind": "model" if i == m.name else "stack"},
                        }
                    )
        return out

    async def models(self, request: Any) -> Any:
        data = await run_in_threadpool(self._list_models)
        return JSONResponse({"object": "list", "data": data})

    async def chat(self, request: Any) -> Any:
        body = await self._body(request)
        call = oa.parse_chat(body, oa.Limits(max_tokens=self.options.pool.max_tokens))
        return await self._serve_call(request, call)

    async def completions(self, request: Any) -> Any:
        body = await self._body(request)
        call = oa.parse_completion(body, oa.Limits(max_tokens=self.options.pool.max_tokens))
        return await self._serve_call(request, call)

    async def _serve_call(self, request: Any, call: oa.Call) -> Any:
        if not self._admit():
            return self._error(
                429,
                f"{self.inflight} requests in flight; the queue is full",
                type_="rate_limit_error",
                code="queue_full",
                headers={"Retry-After": str(self._retry_after())},
            )
        admitted = True
        try:
            loop = asyncio.get_running_loop()
            events: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
            cancel = threading.Event()

            def put(kind: str, value: Any) -> None:
                loop.call_soon_threadsafe(events.put_nowait, (kind, value))

            if call.kind == "completion":
                stages: Any = []
                more = [oa.raw_completion_stage(call.raw_prompt or "")]
            else:
                stages = None
                more = [oa.client_tools_stage(call.client_tools, call.tool_choice)] if call.client_tools else []
            rep = _Collect()

            def work() -> None:
                try:
                    res = self._execute(
                        call.request,
                        stages=stages,
                        more=more,
                        on_text=(lambda t: put("text", t)) if call.stream else None,
                        rep=rep,
                        keep_alive=call.keep_alive,
                        cancel=cancel,
                    )
                    out: tuple[str, Any] = ("done", res)
                except BaseException as exc:  # handed to the event loop, which answers the client
                    out = ("error", exc)
                self._done()  # before the answer, so /health never counts a finished request
                put(*out)

            loop.run_in_executor(self.executor, work)
            admitted = False  # work() releases the slot now
            watcher = asyncio.ensure_future(_watch_disconnect(request, cancel))
            try:
                first = await events.get()
            finally:
                watcher.cancel()
            if first[0] == "error":
                raise first[1]
            if not call.stream:
                return JSONResponse(oa.chat_response(call, first[1]) if call.kind == "chat" else oa.completion_response(call, first[1]))
            return StreamingResponse(self._sse(call, first, events, cancel), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
        finally:
            if admitted:
                self._done()

    async def _sse(self, call: oa.Call, first: tuple[str, Any], events: asyncio.Queue, cancel: threading.Event) -> AsyncIterator[bytes]:
        def sse(obj: Any) -> bytes:
            return b"data: " + json.dumps(obj, ensure_ascii=False).encode("utf-8") + b"\n\n"

        chat = call.kind == "chat"
        try:
            if chat:
                yield sse(oa.chat_chunk(call, {"role": "assistant", "content": ""}))
            ev = first
            while True:
                kind, value = ev
                if kind == "text":
                    yield sse(oa.chat_chunk(call, {"content": value}) if chat else oa.completion_chunk(call, value))
                elif kind == "error":
                    exc = value if isinstance(value, LlmosError) else None
                    status, body = oa.error_for(exc) if exc else (500, oa.error_body(500, f"internal error: {type(value).__name__}", type_="server_error"))
                    yield sse(body)
                    break
                else:  # done
                    result = value
                    calls = oa.tool_calls_json(result)
                    if chat and calls:
                        yield sse(oa.chat_chunk(call, {"tool_calls": [{"index": i, **c} for i, c in enumerate(calls)]}))
                    final = oa.chat_chunk(call, {}, oa.finish_reason(result)) if chat else oa.completion_chunk(call, "", oa.finish_reason(result))
                    final["llmos"] = oa._llmos_part(result)
                    yield sse(final)
                    if call.include_usage:
                        usage = oa.chat_chunk(call, {}) if chat else oa.completion_chunk(call, "")
                        usage["choices"] = []
                        usage["usage"] = dict(result.usage)
                        yield sse(usage)
                    break
                ev = await events.get()
            yield b"data: [DONE]\n\n"
        finally:
            cancel.set()  # a client gone mid-stream stops its generation; after the end this is a no-op

    async def run(self, request: Any) -> Any:
        body = await self._body(request)
        if not isinstance(body, dict):
            raise _HttpError(400, "the request body must be a JSON object")
        req = wire.request_from_json(body.get("request"))
        if not self._admit():
            return self._error(429, "the queue is full", type_="rate_limit_error", code="queue_full", headers={"Retry-After": str(self._retry_after())})
        loop = asyncio.get_running_loop()
        events: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        cancel = threading.Event()

        def put(kind: str, value: Any) -> None:
            loop.call_soon_threadsafe(events.put_nowait, (kind, value))

        rep = _Collect(sink=lambda m: put("warning", m))

        def work() -> None:
            try:
                out: tuple[str, Any] = (
                    "done",
                    self._execute(req, stages=None, more=[], on_text=lambda t: put("text", t), rep=rep, keep_alive=None, cancel=cancel),
                )
            except BaseException as exc:
                out = ("error", exc)
            self._done()
            put(*out)

        loop.run_in_executor(self.executor, work)

        async def lines() -> AsyncIterator[bytes]:
            try:
                while True:
                    kind, value = await events.get()
                    if kind == "text":
                        out = {"type": "text", "text": value}
                    elif kind == "warning":
                        out = {"type": "warning", "message": value}
                    elif kind == "error":
                        err = (
                            value.to_json()
                            if isinstance(value, LlmosError)
                            else {"code": "error", "exit_code": 1, "message": f"internal error: {type(value).__name__}: {value}", "hint": None}
                        )
                        out = {"type": "error", "error": err}
                    else:
                        out = {"type": "result", "result": value.to_json(), "notes": list(value.notes), "exit_code": int(getattr(value, "exit_code", 0))}
                    yield (json.dumps(out, ensure_ascii=False) + "\n").encode("utf-8")
                    if kind in ("done", "error"):
                        return
            finally:
                cancel.set()

        return StreamingResponse(lines(), media_type="application/x-ndjson")


class _HttpError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


async def _watch_disconnect(request: Any, cancel: threading.Event) -> None:
    """Set ``cancel`` when the client goes away while its answer is being made."""
    try:
        while True:
            message = await request.receive()
            if message.get("type") == "http.disconnect":
                cancel.set()
                return
    except (asyncio.CancelledError, RuntimeError):
        return


def serve_forever(server: Server, *, on_ready: Callable[[str], None] | None = None) -> None:
    """Run uvicorn until Ctrl-C or SIGTERM; the pool is closed afterwards."""
    import uvicorn

    class _Uvicorn(uvicorn.Server):
        """Ctrl-C and SIGTERM end the server cleanly (exit 0) instead of being raised again after shutdown."""

        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            if threading.current_thread() is not threading.main_thread():
                yield
                return
            old = {s: signal.signal(s, self.handle_exit) for s in (signal.SIGINT, signal.SIGTERM)}
            try:
                yield
            finally:
                for s, h in old.items():
                    signal.signal(s, h)

    o = server.options
    config = uvicorn.Config(server.app, host=o.host, port=o.port, log_level="warning", access_log=False, lifespan="off", timeout_graceful_shutdown=5)
    userver = _Uvicorn(config)
    if on_ready is not None:
        on_ready(f"http://{o.host}:{o.port}")
    try:
        userver.run()
    finally:
        server.close()


def logging_on(paths: Paths) -> bool:
    return logs.enabled(paths)
