"""Iteration-level scheduling of one loaded model (Orca, FastServe).

One thread per loaded model runs ``Scheduler.loop``.  Every iteration is one
``llama_decode`` and may change who is in the batch:

* **Jobs** are generations (a prompt, sampling parameters, an adapter set).
  Each running job holds a *slot* (a sequence id and its part of the KV
  cache); the others wait.
* **Priority: skip-join MLFQ.**  A job's attained service is the number of
  tokens it has generated plus its prompt length divided by
  ``prefill_weight`` (a long prompt "skips" the first levels, as FastServe's
  skip-join does).  Its level is 0 below ``quantum`` units of service, then
  one more for each doubling.  Within a level, a job whose token budget
  (``max_tokens``) ends within one quantum goes first: its size is known to
  be small, unlike FastServe's jobs.  A step decodes only the jobs of the
  best (level, known-short) rank, oldest first, at most ``max_batch`` of
  them, so a short request that arrives while long ones run is decoded
  alone until it is done or sinks to their rank.  Jobs of one rank advance
  together and so stay batched together.
* **Preemption at token granularity.**  Jobs left out of a step keep their
  KV cache and continue at a later step.  When every slot is taken and a
  waiting job has a better level than a running one, the worst running job
  gives its slot up: its KV cells are removed, and when it runs again its
  prompt and the tokens it already generated are evaluated again
  (recomputation, as vLLM preempts).
* **Adapter sets take turns.**  A step decodes one adapter set (the
  context's set is switched with ``llama_set_adapters_lora``); among the
  sets that have jobs at the best level, the one served longest ago goes
  next.
* **Limits.**  At most ``max_waiting`` jobs wait (``QueueFull`` beyond, HTTP
  429); each job's new tokens are capped by its sequence's context.
* **Cancellation.**  ``cancel(job)`` (a client went away) ends the job at
  the next step and frees its slot.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from llmos_cli.errors import ExitCode, LlmosError, RuntimeFailure
from llmos_cli.runtime.engine import LlamaCppEngine, SamplingParams, TextStream
from llmos_cli.serve.batch import BatchContext, BatchItem, SequenceSampler

AdapterKey = tuple[tuple[str, float], ...]


class QueueFull(LlmosError):
    """Too many requests wait already (HTTP 429)."""

    exit_code = ExitCode.RUNTIME
    slug = "queue_full"


@dataclass
class SchedulerOptions:
    #: sequences decoded together in one step at most
    max_batch: int = 16
    #: units of service of the first MLFQ level; each further level doubles it
    quantum: int = 8
    #: prompt tokens that count as one unit of service (skip-join)
    prefill_weight: int = 32
    #: jobs that may wait for a slot; beyond that submit() raises QueueFull
    max_waiting: int = 64


_ids = iter(range(1, 1 << 62))


@dataclass
class Job:
    prompt: list[int]
    params: SamplingParams
    adapters: AdapterKey = ()
    grammar: str | None = None
    on_text: Callable[[str], None] | None = None
    #: keep a copy of the logits of every sampled position (tests compare them with separate runs)
    keep_logits: bool = False
    id: int = field(default_factory=lambda: next(_ids))
    # --- filled by the scheduler
    generated: list[int] = field(default_factory=list)
    n_past: int = 0  # tokens of prompt + generated that are in the KV cache
    slot: int | None = None
    budget: int = 0
    arrival: float = field(default_factory=time.perf_counter)
    t_first: float | None = None
    t_end: float | None = None
    finish_reason: str | None = None
    error: BaseException | None = None
    cancelled: bool = False
    preemptions: int = 0
    steps: int = 0
    text: str = ""
    done: threading.Event = field(default_factory=threading.Event)
    logits: list[Any] = field(default_factory=list)
    _sampler: Any = None
    _stream: Any = None

    def all_tokens(self) -> list[int]:
        return self.prompt + self.generated

    def wait(self, timeout: float | None = None) -> bool:
        return self.done.wait(timeout)


class Scheduler:
    def __init__(self, engine: LlamaCppEngine, batch: BatchContext, options: SchedulerOptions | None = None):
        self.engine = engine
        self.batch = batch
        self.options = options or SchedulerOptions()
        self.lock = threading.Condition()
        #: held around every llama.cpp call on this model (decode, adapter loads)
        self.model_lock = threading.RLock()
        self.waiting: list[Job] = []
        self.running: list[Job] = []
        self.free_slots = list(range(batch.slots))
        self._last_served: dict[AdapterKey, int] = {}
        self.step_no = 0
        #: (step, [job ids]) of recent steps: what the tests read to check the order
        self.trace: deque[tuple[int, list[int]]] = deque(maxlen=4096)
        self._stop = False
        self.busy_since: float | None = None
        self.thread = threading.Thread(target=self.loop, name="llmos-scheduler", daemon=True)
        self.thread.start()

    # ------------------------------------------------------------ API

    def service(self, job: Job) -> float:
        """Attained service: generated tokens, plus the prompt at ``prefill_weight`` tokens a unit."""
        return len(job.generated) + len(job.prompt) / max(1, self.options.prefill_weight)

    def level(self, job: Job) -> int:
        q = max(1, self.options.quantum)
        s = self.service(job)
        return 0 if s < q else int(math.log2(s / q)) + 1

    def submit(self, job: Job) -> Job:
        room = self.batch.seq_ctx - len(job.prompt)
        if room <= 0:
            raise RuntimeFailure(f"the prompt is {len(job.prompt)} tokens but a sequence holds {self.batch.seq_ctx}")
        mt = job.params.max_tokens
        job.budget = room if not mt or mt <= 0 else min(mt, room)
        job._stream = TextStream(job.params.stop)
        with self.model_lock:  # the grammar is parsed and the adapters loaded before the job is queued
            job._sampler = SequenceSampler(self.engine, job.params, job.grammar)
            try:
                for path, _ in job.adapters:
                    self.engine.adapter_pointer(path)
            except BaseException:
                job._sampler.close()
                raise
        with self.lock:
            if len(self.waiting) - len(self.free_slots) >= self.options.max_waiting:  # jobs about to take a free slot do not count
                job._sampler.close()
                raise QueueFull(f"{len(self.waiting)} requests are already waiting", "retry later")
            self.waiting.append(job)
            self.lock.notify_all()
        return job

    def cancel(self, job: Job) -> None:
        job.cancelled = True
        with self.lock:
            self.lock.notify_all()

    @property
    def load(self) -> int:
        """Jobs waiting or running."""
        with self.lock:
            return len(self.waiting) + len(self.running)

    def close(self) -> None:
        with self.lock:
            self._stop = True
            self.lock.notify_all()
        if self.thread is not threading.current_thread():
            self.thread.join(timeout=30)
        with self.lock:
            jobs = self.waiting + self.running
            self.waiting, self.running = [], []
        for job in jobs:
            self._finish(job, "cancelled", RuntimeFailure("the model was unloaded"))

    # ------------------------------------------------------------ the loop

    def loop(self) -> None:
        while True:
            with self.lock:
                while not self._stop and not self.waiting and not self.running:
                    self.busy_since = None
                    self.lock.wait()
                if self._stop:
                    return
                if self.busy_since is None:
                    self.busy_since = time.perf_counter()
                self._drop_cancelled()
                self._admit()
                step = self._pick()
            if not step:
                continue
            try:
                self._step(step)
            except BaseException as exc:  # a failed decode ends the jobs of that step, not the server
                for job in step:
                    self._retire(job, "error", exc)

    def _drop_cancelled(self) -> None:
        for job in [j for j in self.waiting if j.cancelled]:
            self.waiting.remove(job)
            self._finish(job, "cancelled")
        for job in [j for j in self.running if j.cancelled]:
            self._retire_locked(job, "cancelled")

    def finishing(self, job: Job) -> bool:
        """True when the job's token budget ends within one quantum: its size is known to be small."""
        return job.budget - len(job.generated) <= max(1, self.options.quantum)

    def rank(self, job: Job) -> tuple[int, int]:
        """(MLFQ level, 0 for a job that is known to end within a quantum, else 1): lower runs first."""
        return (self.level(job), 0 if self.finishing(job) else 1)

    def _order(self, job: Job) -> tuple[int, int, float]:
        return (*self.rank(job), job.arrival)

    def _admit(self) -> None:
        self.waiting.sort(key=self._order)
        while self.waiting:
            best = self.waiting[0]
            if not self.free_slots:
                worst = max(self.running, key=self._order, default=None)
                if worst is None or self.rank(best) >= self.rank(worst):
                    return
                self._preempt(worst)
            job = self.waiting.pop(0)
            job.slot = self.free_slots.pop(0)
            self.running.append(job)

    def _preempt(self, job: Job) -> None:
        with self.model_lock:
            self.batch.remove(job.slot)  # type: ignore[arg-type]
        self.free_slots.append(job.slot)  # type: ignore[arg-type]
        job.slot = None
        job.n_past = 0
        job.preemptions += 1
        self.running.remove(job)
        self.waiting.append(job)
        self.waiting.sort(key=self._order)

    def _pick(self) -> list[Job]:
        if not self.running:
            return []
        best = min(self.rank(j) for j in self.running)
        top = [j for j in self.running if self.rank(j) == best]
        groups: dict[AdapterKey, list[Job]] = {}
        for j in sorted(top, key=lambda j: j.arrival):
            groups.setdefault(j.adapters, []).append(j)
        key = min(groups, key=lambda k: (self._last_served.get(k, -1), groups[k][0].arrival))
        self.step_no += 1
        self._last_served[key] = self.step_no
        return groups[key][: self.options.max_batch]

    def _step(self, jobs: list[Job]) -> None:
        room = self.batch.n_batch
        items: list[BatchItem] = []
        # next tokens first (one each), then prompt chunks in the room left
        for job in sorted(jobs, key=lambda j: len(j.all_tokens()) - j.n_past):
            feed = job.all_tokens()[job.n_past :]
            if room <= 0:
                break
            chunk = feed[:room]
            room -= len(chunk)
            items.append(BatchItem(job.slot, chunk, job.n_past, logits=len(chunk) == len(feed)))  # type: ignore[arg-type]
        with self.model_lock:
            self.batch.set_adapter_set(jobs[0].adapters)
            where = self.batch.decode(items)
            self.trace.append((self.step_no, [j.id for j in jobs if any(it.seq == j.slot for it in items)]))
            by_slot = {j.slot: j for j in jobs}
            sampled: list[tuple[Job, int]] = []
            for it in items:
                job = by_slot[it.seq]
                job.n_past += len(it.tokens)
                job.steps += 1
                if it.seq in where:
                    if job.keep_logits:
                        job.logits.append(job._sampler.logits(self.batch, where[it.seq], self.engine.n_vocab))
                    sampled.append((job, job._sampler.sample(self.batch, where[it.seq])))
        now = time.perf_counter()
        for job, tok in sampled:
            if job.t_first is None:
                job.t_first = now
            if self.engine._llama_cpp.llama_vocab_is_eog(self.engine.vocab, tok):
                self._retire(job, "stop")
                continue
            job.generated.append(tok)
            out = job._stream.push(self.engine.token_piece(tok))
            if out and job.on_text is not None:
                self._emit(job, out)
            if job._stream.stopped:
                self._retire(job, "stop")
            elif len(job.generated) >= job.budget:
                self._retire(job, "length")

    def _emit(self, job: Job, text: str) -> None:
        try:
            job.on_text(text)  # type: ignore[misc]
        except Exception:  # a broken consumer cancels its own job only
            job.cancelled = True

    def _retire(self, job: Job, reason: str, error: BaseException | None = None) -> None:
        with self.lock:
            self._retire_locked(job, reason, error)

    def _retire_locked(self, job: Job, reason: str, error: BaseException | None = None) -> None:
        if job in self.running:
            self.running.remove(job)
        if job.slot is not None:
            with self.model_lock:
                self.batch.remove(job.slot)
            self.free_slots.append(job.slot)
            self.free_slots.sort()
            job.slot = None
        self._finish(job, reason, error)

    def _finish(self, job: Job, reason: str, error: BaseException | None = None) -> None:
        if job.done.is_set():
            return
        if job._stream is not None and reason not in ("cancelled", "error"):
            rest = job._stream.finish()
            if rest and job.on_text is not None:
                self._emit(job, rest)
            job.text = job._stream.text
        elif job._stream is not None:
            job.text = job._stream.text
        if job._sampler is not None:
            with self.model_lock:
                job._sampler.close()
        job.finish_reason = reason
        job.error = error
        job.t_end = time.perf_counter()
        job.done.set()
