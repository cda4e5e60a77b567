"""The LLM pool: loaded models within a budget, each with its scheduler.

* ``Pool.lease(stack, ...)`` returns a ``PooledEngine`` for a run: the model
  is loaded on first use (or found warm), the lease keeps it from being
  evicted, and ``close()`` hands it back.  ``app.run.run(engine_for=...)``
  runs the whole ``llmos run`` pipeline (knowledge, glossary, tools) on it.
* **Budget**: at most ``max_models`` models, and at most ``memory`` bytes by
  estimate (file size + KV cache + adapter files).  Loading another model
  evicts the least recently used idle one; when every loaded model is busy
  the request gets ``PoolBusy`` (HTTP 503 with Retry-After).
* **Idle unload**: a model unused for its ``keep_alive`` (seconds, Ollama's
  name and default of 5 minutes; each request may set it; < 0 keeps it
  forever, 0 unloads it as soon as it is idle) is unloaded by a reaper
  thread.
* **Adapters** are loaded once per model (``LlamaCppEngine.adapter_pointer``)
  and switched per step by the scheduler; a lease only names its set.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llmos_cli.errors import ExitCode, LlmosError, RuntimeFailure
from llmos_cli.gguf_info import read_header
from llmos_cli.progress import NullReporter, Reporter
from llmos_cli.runtime.engine import EngineOptions, Generation, LlamaCppEngine, SamplingParams, require_room
from llmos_cli.serve.batch import BatchContext
from llmos_cli.serve.scheduler import AdapterKey, Job, Scheduler, SchedulerOptions

DEFAULT_KEEP_ALIVE = 300.0


class PoolBusy(LlmosError):
    """Every loaded model is busy and the budget allows no other (HTTP 503)."""

    exit_code = ExitCode.RUNTIME
    slug = "pool_busy"


class Cancelled(LlmosError):
    """The client went away; the generation was stopped."""

    exit_code = ExitCode.INTERRUPTED
    slug = "cancelled"


class TimeLimit(LlmosError):
    """The request ran past the server's time limit."""

    exit_code = ExitCode.RUNTIME
    slug = "timeout"


@dataclass
class PoolOptions:
    max_models: int = 3
    memory: int | None = None  # bytes; None: no limit but max_models
    keep_alive: float = DEFAULT_KEEP_ALIVE
    slots: int = 8  # sequences decoded together per model (--parallel)
    seq_ctx: int = 2048  # context of each sequence (--ctx)
    threads: int | None = None
    device: str = "auto"
    gpu_layers: int | None = None
    scheduler: SchedulerOptions = field(default_factory=SchedulerOptions)
    #: cap on new tokens per request (--max-tokens-limit)
    max_tokens: int = 2048


def estimate_bytes(header: Any, model_path: Path, slots: int, seq_ctx: int) -> int:
    """Model file + f16 KV cache for every slot (keys and values of every layer)."""
    size = model_path.stat().st_size
    kv = header.kv or {}
    arch = header.architecture or "llama"
    n_layer = int(kv.get(f"{arch}.block_count") or 0)
    n_embd = int(kv.get(f"{arch}.embedding_length") or 0)
    n_head = int(kv.get(f"{arch}.attention.head_count") or 1)
    n_head_kv = int(kv.get(f"{arch}.attention.head_count_kv") or n_head)
    kv_width = n_embd * n_head_kv // max(1, n_head)
    return size + 2 * 2 * n_layer * kv_width * slots * seq_ctx


@dataclass
class LoadedModel:
    key: str
    name: str
    engine: LlamaCppEngine
    batch: BatchContext
    scheduler: Scheduler
    size: int
    load_s: float
    leases: int = 0
    last_used: float = field(default_factory=time.monotonic)
    keep_alive: float = DEFAULT_KEEP_ALIVE

    def idle(self) -> bool:
        return self.leases == 0 and self.scheduler.load == 0

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "path": self.key,
            "size_bytes": self.size,
            "leases": self.leases,
            "queue": self.scheduler.load,
            "adapters_loaded": len(self.engine.loaded_adapters),
            "keep_alive_s": self.keep_alive,
            "idle_s": round(time.monotonic() - self.last_used, 3),
        }


class Pool:
    def __init__(self, options: PoolOptions | None = None, *, reporter: Reporter | None = None):
        self.options = options or PoolOptions()
        self.reporter = reporter or NullReporter()
        self.models: dict[str, LoadedModel] = {}
        self.lock = threading.RLock()
        self.evictions: list[str] = []  # names, in order (tests and /health read it)
        self._stop = threading.Event()
        self._reaper = threading.Thread(target=self._reap_loop, name="llmos-pool-reaper", daemon=True)
        self._reaper.start()

    # ------------------------------------------------------------ loading

    def _load(self, stack: Any) -> LoadedModel:
        o = self.options
        path = Path(stack.model.path).resolve()
        header = stack.model_header
        if header is None:
            header = read_header(path, with_vocab=False)
        ctx_train = stack.model.context_length or header.context_length or o.seq_ctx
        seq_ctx = min(o.seq_ctx, ctx_train) if ctx_train else o.seq_ctx
        size = estimate_bytes(header, path, o.slots, seq_ctx)
        if o.memory is not None and size > o.memory:
            raise RuntimeFailure(
                f"{stack.model.name} needs about {size / 2**20:.0f} MiB ({o.slots} sequences of {seq_ctx} tokens), more than --memory {o.memory / 2**20:.0f} MiB",
                "raise --memory, or lower --parallel or --ctx",
            )
        self._make_room(size)
        t0 = time.perf_counter()
        # the engine's own context is only used for tokenizing and templates: keep it small
        engine = LlamaCppEngine(
            path,
            EngineOptions(n_ctx=min(seq_ctx, 512), device=o.device, gpu_layers=o.gpu_layers, n_threads=o.threads),
            reporter=self.reporter,
            header=header,
        )
        try:
            batch = BatchContext(engine, slots=o.slots, seq_ctx=seq_ctx, n_threads=o.threads)
        except BaseException:
            engine.close()
            raise
        scheduler = Scheduler(engine, batch, o.scheduler)
        lm = LoadedModel(str(path), stack.model.name, engine, batch, scheduler, size, time.perf_counter() - t0, keep_alive=o.keep_alive)
        self.models[lm.key] = lm
        return lm

    def _used(self) -> int:
        return sum(m.size for m in self.models.values())

    def _make_room(self, size: int) -> None:
        o = self.options
        while len(self.models) >= o.max_models or (o.memory is not None and self._used() + size > o.memory):
            idle = [m for m in self.models.values() if m.idle()]
            if not idle:
                raise PoolBusy(
                    f"{len(self.models)} model(s) loaded and busy; no room for another within the budget",
                    "retry later, or start the server with a larger --max-models/--memory",
                )
            self._unload(min(idle, key=lambda m: m.last_used))

    def _unload(self, lm: LoadedModel) -> None:
        self.models.pop(lm.key, None)
        self.evictions.append(lm.name)
        lm.scheduler.close()
        lm.batch.close()
        lm.engine.close()

    def acquire(self, stack: Any, keep_alive: float | None = None) -> tuple[LoadedModel, bool]:
        """The loaded model for ``stack`` (loading it if needed), leased; True when this call loaded it."""
        key = str(Path(stack.model.path).resolve())
        with self.lock:
            lm = self.models.get(key)
            loaded = lm is None
            if lm is None:
                lm = self._load(stack)
            lm.leases += 1
            lm.last_used = time.monotonic()
            if keep_alive is not None:
                lm.keep_alive = keep_alive
            return lm, loaded

    def release(self, lm: LoadedModel) -> None:
        with self.lock:
            lm.leases -= 1
            lm.last_used = time.monotonic()
            if lm.keep_alive == 0 and lm.idle() and lm.key in self.models:
                self._unload(lm)

    def lease(
        self,
        stack: Any,
        reporter: Reporter | None = None,
        *,
        keep_alive: float | None = None,
        cancel: threading.Event | None = None,
        deadline: float | None = None,
        on_job: Callable[[Job], None] | None = None,
    ) -> PooledEngine:
        lm, loaded = self.acquire(stack, keep_alive)
        return PooledEngine(self, lm, reporter or NullReporter(), loaded=loaded, cancel=cancel, deadline=deadline, on_job=on_job)

    # ------------------------------------------------------------ idle unload

    def reap(self) -> list[str]:
        """Unload models idle for longer than their keep_alive; returns their names."""
        now = time.monotonic()
        gone: list[str] = []
        with self.lock:
            for lm in list(self.models.values()):
                if lm.keep_alive >= 0 and lm.idle() and now - lm.last_used >= lm.keep_alive:
                    self._unload(lm)
                    gone.append(lm.name)
        return gone

    def _reap_loop(self) -> None:
        while not self._stop.wait(0.5):
            try:
                self.reap()
            except Exception as exc:  # never let the reaper die silently
                self.reporter.warn(f"pool reaper: {exc}")

    def status(self) -> list[dict[str, Any]]:
        with self.lock:
            return [m.to_json() for m in self.models.values()]

    def close(self) -> None:
        self._stop.set()
        with self.lock:
            for lm in list(self.models.values()):
                self._unload(lm)


def adapter_key(adapters: Sequence[tuple[str | Path, float]]) -> AdapterKey:
    """The canonical adapter set: resolved paths, the same file once with scales added, scale 0 left out."""
    merged: dict[str, float] = {}
    for p, s in adapters:
        k = str(Path(p).resolve())
        merged[k] = merged.get(k, 0.0) + float(s)
    return tuple((k, s) for k, s in merged.items() if s != 0.0)


class PooledEngine:
    """The ``Engine`` interface on a pooled model: generation goes through its scheduler."""

    name = "llama.cpp (pooled)"

    def __init__(
        self,
        pool: Pool,
        lm: LoadedModel,
        reporter: Reporter,
        *,
        loaded: bool,
        cancel: threading.Event | None,
        deadline: float | None,
        on_job: Callable[[Job], None] | None,
    ):
        self.pool = pool
        self.lm = lm
        self.reporter = reporter
        self.load_s = lm.load_s if loaded else 0.0
        self.cancel = cancel or threading.Event()
        self.deadline = deadline
        self.on_job = on_job
        self.adapters: AdapterKey = ()
        self._closed = False
        base = lm.engine
        self.llm = base.llm
        self.chat_template = base.chat_template
        self.device = base.device
        self.bos_id, self.eos_id, self.add_bos = base.bos_id, base.eos_id, base.add_bos

    # --- what the pipeline reads
    @property
    def n_ctx(self) -> int:
        return self.lm.batch.seq_ctx

    @property
    def n_threads(self) -> int:
        return self.lm.batch.n_threads

    @property
    def n_vocab(self) -> int:
        return self.lm.engine.n_vocab

    @property
    def options(self) -> EngineOptions:
        return self.lm.engine.options

    def tokenize(self, text: str, *, add_bos: bool | None = None, special: bool = True) -> list[int]:
        return self.lm.engine.tokenize(text, add_bos=add_bos, special=special)

    def detokenize(self, tokens: Sequence[int]) -> str:
        return self.lm.engine.detokenize(tokens)

    def token_piece(self, token: int, special: bool = False) -> bytes:
        return self.lm.engine.token_piece(token, special)

    def apply_chat_template(self, messages: Sequence[dict[str, Any]], *, add_generation_prompt: bool = True, tools: list[dict] | None = None) -> str:
        return self.lm.engine.apply_chat_template(messages, add_generation_prompt=add_generation_prompt, tools=tools)

    def prompt_tokens(self, messages: Sequence[dict[str, Any]], *, tools: list[dict] | None = None) -> list[int]:
        return self.lm.engine.prompt_tokens(messages, tools=tools)

    def check_fits(self, n_prompt: int) -> None:
        require_room(n_prompt, self.n_ctx, "shorten the input (the server's --ctx sets the context of each request)")

    def set_adapters(self, adapters: Sequence[tuple[str | Path, float]]) -> None:
        key = adapter_key(adapters)
        with self.lm.scheduler.model_lock:  # ABI check and load now, so errors come before generation
            for path, _ in key:
                self.lm.engine.adapter_pointer(path)
        self.adapters = key

    def generate(
        self,
        prompt_tokens: Sequence[int],
        params: SamplingParams,
        on_text: Callable[[str], None] | None = None,
        grammar: str | None = None,
    ) -> Generation:
        prompt = list(prompt_tokens)
        if not prompt:
            raise RuntimeFailure("empty prompt")
        self.check_fits(len(prompt))
        limit = self.pool.options.max_tokens
        if limit and (not params.max_tokens or params.max_tokens <= 0 or params.max_tokens > limit):
            params = dataclasses.replace(params, max_tokens=limit)
        job = Job(prompt, params, adapters=self.adapters, grammar=grammar, on_text=on_text)
        t0 = time.perf_counter()
        self.lm.scheduler.submit(job)
        if self.on_job is not None:
            self.on_job(job)
        while not job.wait(0.05):
            if self.cancel.is_set():
                self.lm.scheduler.cancel(job)
                job.wait()
                raise Cancelled("the client disconnected; generation stopped")
            if self.deadline is not None and time.monotonic() > self.deadline:
                self.lm.scheduler.cancel(job)
                job.wait()
                raise TimeLimit("the request ran past the server's time limit", "ask for fewer tokens, or raise --timeout")
        if job.finish_reason == "cancelled":
            raise Cancelled("the generation was stopped")
        if job.error is not None:
            if isinstance(job.error, LlmosError):
                raise job.error
            raise RuntimeFailure(f"generation failed: {job.error}")
        t_first = job.t_first or job.t_end or time.perf_counter()
        t_end = job.t_end or t_first
        return Generation(
            text=job.text,
            tokens=list(job.generated),
            finish_reason=job.finish_reason or "stop",
            prompt_tokens=len(prompt),
            completion_tokens=len(job.generated),
            prompt_s=t_first - t0,
            generate_s=t_end - t_first,
        )

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self.pool.release(self.lm)
