"""Several sequences in one llama.cpp context: the decode step of ``llmos serve``.

``BatchContext`` owns a second llama.cpp context on a model that a
``LlamaCppEngine`` already loaded (the engine keeps the vocabulary, the chat
template and the loaded LoRA adapters; this context only decodes).  It has
``slots`` sequence ids, each with its own part of the KV cache
(``kv_unified`` off: ``n_ctx = slots × seq_ctx``), and decodes any mix of
prompt chunks and next tokens of several sequences in one ``llama_decode``.

Facts it relies on (llama-cpp-python 0.3.36, ../shared/serving-notes.md):

* every ``seq_id`` < ``n_seq_max``; ``n_batch`` tokens at most per decode;
* ``llama_get_logits_ith`` / ``llama_sampler_sample`` take the token's index
  in the batch, not the sequence id;
* flash attention is turned off, as ``Llama()`` does, so that batched and
  in-process answers agree;
* the adapter set belongs to the context (``llama_set_adapters_lora``), so a
  step decodes sequences of one adapter set only; a sequence's KV cells were
  computed under its own set and are removed (``llama_memory_seq_rm``) when
  it ends or is preempted: nothing is shared between sequences.

``SequenceSampler`` is one request's sampler chain, built like
``Llama._init_sampler`` (penalties, grammar, then greedy or
top-k/top-p/min-p/temperature/dist), so that sampling state never leaks
between requests.
"""

from __future__ import annotations

import ctypes
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from llmos_cli.errors import RuntimeFailure
from llmos_cli.runtime.engine import NATIVE_LOG, LlamaCppEngine, SamplingParams, last_native_error

#: penalty window of llama-cpp-python's ``Llama`` (``last_n_tokens_size``)
PENALTY_LAST_N = 64


@dataclass
class BatchItem:
    """Tokens of one sequence for one decode step."""

    seq: int
    tokens: list[int]
    pos: int  # position of tokens[0]
    logits: bool  # keep the logits of the last token


class BatchContext:
    def __init__(self, engine: LlamaCppEngine, *, slots: int, seq_ctx: int, n_batch: int = 512, n_threads: int | None = None):
        if slots < 1:
            raise RuntimeFailure("a batch context needs at least one slot")
        self.engine = engine
        self.lc = lc = engine._llama_cpp
        self.slots = slots
        self.seq_ctx = seq_ctx
        params = lc.llama_context_default_params()
        params.n_ctx = slots * seq_ctx
        params.n_batch = min(n_batch, params.n_ctx)
        params.n_ubatch = params.n_batch
        params.n_seq_max = slots
        params.kv_unified = False
        params.flash_attn_type = lc.LLAMA_FLASH_ATTN_TYPE_DISABLED
        params.type_k = params.type_v = 1  # f16, as LlamaCppEngine's default
        params.no_perf = True
        threads = n_threads or engine.n_threads
        params.n_threads = params.n_threads_batch = threads
        mark = NATIVE_LOG.mark()
        ctx = lc.llama_init_from_model(engine.llm.model, params)
        if not ctx:
            native = NATIVE_LOG.errors_since(mark) or last_native_error()
            raise RuntimeFailure(
                f"llama.cpp could not create a context for {slots} sequences of {seq_ctx} tokens: {native or 'out of memory?'}",
                "lower --parallel or --ctx",
            )
        self.ctx = ctx
        self.n_batch = int(params.n_batch)
        self.n_threads = threads
        self._mem = lc.llama_get_memory(ctx)
        self._batch = lc.llama_batch_init(self.n_batch, 0, 1)
        self._active_set: tuple[tuple[str, float], ...] = ()
        self._closed = False

    # ------------------------------------------------------------ adapters

    def set_adapter_set(self, key: tuple[tuple[str, float], ...]) -> None:
        """Make exactly this set of (resolved path, scale) active in the context."""
        if key == self._active_set:
            return
        lc = self.lc
        ptrs = [self.engine.adapter_pointer(p) for p, _ in key]
        if ptrs:
            arr = (lc.llama_adapter_lora_p_ctypes * len(ptrs))(*ptrs)
            scales = (ctypes.c_float * len(ptrs))(*[s for _, s in key])
            rc = lc.llama_set_adapters_lora(self.ctx, arr, len(ptrs), scales)
        else:
            rc = lc.llama_set_adapters_lora(self.ctx, None, 0, None)
        if rc != 0:
            raise RuntimeFailure(f"llama.cpp could not set the adapter set (code {rc}): {last_native_error()}")
        self._active_set = key

    # ------------------------------------------------------------ decoding

    def decode(self, items: Sequence[BatchItem]) -> dict[int, int]:
        """One ``llama_decode`` over ``items``; returns seq -> batch index of its logits."""
        b = self._batch
        n = 0
        out: dict[int, int] = {}
        for it in items:
            for j, tok in enumerate(it.tokens):
                if n >= self.n_batch:
                    raise RuntimeFailure(f"batch overflow: more than {self.n_batch} tokens in one step")
                b.token[n] = tok
                b.pos[n] = it.pos + j
                b.n_seq_id[n] = 1
                b.seq_id[n][0] = it.seq
                last = it.logits and j == len(it.tokens) - 1
                b.logits[n] = 1 if last else 0
                if last:
                    out[it.seq] = n
                n += 1
        if n == 0:
            return out
        b.n_tokens = n
        mark = NATIVE_LOG.mark()
        rc = self.lc.llama_decode(self.ctx, b)
        if rc != 0:
            native = NATIVE_LOG.errors_since(mark)
            raise RuntimeFailure(f"llama_decode failed (code {rc}){': ' + native if native else ''}")
        return out

    def remove(self, seq: int) -> None:
        """Forget everything a sequence left in the KV cache."""
        self.lc.llama_memory_seq_rm(self._mem, seq, -1, -1)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        lc = self.lc
        if self._active_set:
            lc.llama_set_adapters_lora(self.ctx, None, 0, None)
        lc.llama_batch_free(self._batch)
        lc.llama_free(self.ctx)


class SequenceSampler:
    """One request's sampler chain (``Llama._init_sampler``'s order)."""

    def __init__(self, engine: LlamaCppEngine, params: SamplingParams, grammar: str | None = None):
        lc = self.lc = engine._llama_cpp
        self.chain = lc.llama_sampler_chain_init(lc.llama_sampler_chain_default_params())
        add = lambda s: lc.llama_sampler_chain_add(self.chain, s)  # noqa: E731
        add(lc.llama_sampler_init_penalties(engine.n_vocab, PENALTY_LAST_N, params.repeat_penalty, 0.0, 0.0))
        if grammar:
            engine.check_grammar(grammar)  # a grammar that does not parse never reaches the chain
            add(lc.llama_sampler_init_grammar(engine.vocab, grammar.encode("utf-8"), b"root"))
        seed = lc.LLAMA_DEFAULT_SEED if params.seed is None else int(params.seed) & 0xFFFFFFFF
        if params.temperature <= 0.0:
            add(lc.llama_sampler_init_greedy())
        else:
            add(lc.llama_sampler_init_top_k(params.top_k))
            add(lc.llama_sampler_init_typical(1.0, 1))
            add(lc.llama_sampler_init_top_p(params.top_p, 1))
            add(lc.llama_sampler_init_min_p(params.min_p, 1))
            add(lc.llama_sampler_init_temp(params.temperature))
            add(lc.llama_sampler_init_dist(seed))

    def sample(self, batch: BatchContext, index: int) -> int:
        """Sample (and accept) the next token from the logits at batch ``index``."""
        return int(self.lc.llama_sampler_sample(self.chain, batch.ctx, index))

    def logits(self, batch: BatchContext, index: int, n_vocab: int) -> Any:
        """A copy of the logits at batch ``index`` (numpy)."""
        import numpy as np

        ptr = self.lc.llama_get_logits_ith(batch.ctx, index)
        return np.ctypeslib.as_array(ptr, shape=(n_vocab,)).copy()

    def close(self) -> None:
        if self.chain is not None:
            self.lc.llama_sampler_free(self.chain)
            self.chain = None
