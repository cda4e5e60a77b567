"""Inference engines behind one small interface, and the llama.cpp one.

The ``Engine`` protocol is all ``llmos run`` (and the knowledge/tool stages
built on it) needs from a backend::

    engine.n_ctx                                  context window in tokens
    engine.set_adapters([(path, scale), ...])     the whole LoRA set; [] = bare base
    engine.tokenize(text) / engine.detokenize(tokens)
    engine.apply_chat_template(messages)          -> prompt text (model's own template)
    engine.prompt_tokens(messages)                -> token ids, BOS handled once
    engine.generate(tokens, SamplingParams, on_text=callback, grammar=None) -> Generation
    engine.close()

``LlamaCppEngine`` implements it on llama-cpp-python 0.3.36.  What it takes care of:

* native log lines never reach stdout: llama.cpp's log callback is replaced
  by one that keeps the last lines (quoted in error messages) and prints them
  to stderr only when ``verbose``;
* several LoRA adapters at once through the low-level
  ``llama_adapter_lora_init`` / ``llama_set_adapters_lora`` (the high-level
  ``Llama`` takes one ``lora_path`` and turns mmap off).  Each adapter is
  ABI-checked against the model's GGUF header before llama.cpp sees it, a
  NULL adapter pointer is tested with ``bool()`` (llama-cpp-python's own
  ``is None`` test misses it and the process later segfaults), loaded adapters
  are kept so switching sets costs no reload, the cached prompt prefix is
  dropped (``Llama.reset()``) after every change of set, and an adapter is
  only freed once the context no longer uses it (and always before the model);
* grammars are parsed by llama.cpp once before use: one that does not parse
  becomes ``RuntimeFailure`` instead of a NULL sampler that crashes the process;
* ``generate`` streams text as it decodes (UTF-8 split across tokens is held
  until complete; text that may be the start of a stop string is held until
  it is not), stops on end-of-generation tokens, stop strings or the token
  budget, and reports token counts and prompt/generation times.
"""

from __future__ import annotations

import codecs
import ctypes
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from llmos_cli.errors import AbiError, ContextOverflow, InvalidPackageError, RuntimeFailure, UsageError
from llmos_cli.gguf_info import GGUFHeader, read_header
from llmos_cli.progress import NullReporter, Reporter
from llmos_cli.runtime.abi import ensure_adapter_fits
from llmos_cli.runtime.chat import render_chat

#: context used when the model's own is larger (a KV cache for 128k tokens costs GBs)
DEFAULT_MAX_CTX = 4096
DEVICES = ("auto", "cpu", "gpu")


@dataclass
class SamplingParams:
    max_tokens: int | None = 256  # None or <= 0: until the context is full
    temperature: float = 0.8
    top_p: float = 0.95
    top_k: int = 40
    min_p: float = 0.05
    repeat_penalty: float = 1.0
    seed: int | None = None  # None: a random seed
    stop: list[str] = field(default_factory=list)


@dataclass
class Generation:
    text: str
    tokens: list[int]
    finish_reason: str  # "stop" (end of turn or a stop string) | "length" (token budget or context full)
    prompt_tokens: int
    completion_tokens: int
    prompt_s: float  # prompt evaluation up to the first sampled token
    generate_s: float  # the remaining tokens


def require_room(n_prompt: int, n_ctx: int, hint: str) -> None:
    """Raise ``ContextOverflow`` when ``n_prompt`` tokens leave no room in a context of ``n_ctx``."""
    if n_prompt >= n_ctx:
        over = n_prompt - n_ctx + 1
        raise ContextOverflow(
            f"the prompt is {n_prompt} tokens but the context holds {n_ctx}: {over} token{'s' if over != 1 else ''} too many",
            hint,
            details={"prompt_tokens": n_prompt, "n_ctx": n_ctx, "over_by": over},
        )


class Engine(Protocol):
    """What a run needs from an inference backend (llama.cpp now; a server later)."""

    @property
    def n_ctx(self) -> int: ...

    def set_adapters(self, adapters: Sequence[tuple[str | Path, float]]) -> None: ...

    def tokenize(self, text: str, *, add_bos: bool | None = None, special: bool = True) -> list[int]: ...

    def detokenize(self, tokens: Sequence[int]) -> str: ...

    def apply_chat_template(self, messages: Sequence[dict[str, Any]], *, add_generation_prompt: bool = True, tools: list[dict] | None = None) -> str: ...

    def prompt_tokens(self, messages: Sequence[dict[str, Any]], *, tools: list[dict] | None = None) -> list[int]: ...

    def generate(
        self,
        prompt_tokens: Sequence[int],
        params: SamplingParams,
        on_text: Callable[[str], None] | None = None,
        grammar: str | None = None,
    ) -> Generation: ...

    def check_fits(self, n_prompt: int) -> None:
        """Raise ``ContextOverflowError`` (with a hint) when ``n_prompt`` tokens leave no room to answer."""
        ...

    def close(self) -> None: ...


@dataclass
class EngineOptions:
    n_ctx: int = 0  # 0: the model's own, at most DEFAULT_MAX_CTX
    device: str = "auto"  # auto | cpu | gpu
    gpu_layers: int | None = None  # None: all layers on a GPU device
    n_threads: int | None = None  # None: llama-cpp-python's default (half the cores)
    n_batch: int = 512
    kv_type: str = "f16"  # "f32" makes logits bit-comparable with a float64 reference
    logits_all: bool = False  # keep logits of every position (tests, scoring)
    verbose: bool = False  # llama.cpp's own log lines on stderr


# ---------------------------------------------------------------- llama.cpp plumbing


def import_llama() -> Any:
    """``import llama_cpp`` with a clear error when the extension is missing or broken."""
    try:
        import llama_cpp
    except Exception as exc:  # ImportError, OSError from a missing libllama
        raise RuntimeFailure(
            f"llama-cpp-python is not usable: {type(exc).__name__}: {exc}",
            "install it: pip install llama-cpp-python==0.3.36 (see docs/runtime.md for GPU builds)",
        ) from None
    _install_log_callback(llama_cpp)
    return llama_cpp


# ggml_log_level (ggml.h): the comment in llama-cpp-python's _logger.py is out of date
LOG_DEBUG, LOG_INFO, LOG_WARN, LOG_ERROR, LOG_CONT = 1, 2, 3, 4, 5


class _NativeLog:
    """llama.cpp's log, captured: the last lines, echoed to stderr only when verbose."""

    def __init__(self) -> None:
        self.lines: deque[tuple[int, int, str]] = deque(maxlen=200)  # (sequence, level, text)
        self.seq = 0
        self.last_level = LOG_INFO
        self.verbose = False
        self.callback: Any = None  # the ctypes function object must stay referenced

    def __call__(self, level: int, text: bytes, _user: Any) -> None:
        try:
            s = text.decode("utf-8", errors="replace") if text else ""
            lvl = self.last_level if level == LOG_CONT else int(level)
            self.last_level = lvl
            self.seq += 1
            self.lines.append((self.seq, lvl, s))
            if self.verbose:
                os.write(2, s.encode("utf-8", errors="replace"))
        except Exception:  # never raise into C
            pass

    def mark(self) -> int:
        return self.seq

    def errors_since(self, mark: int = 0) -> str:
        """The first error line logged after ``mark`` (the cause; later ones say "failed"), else the last warning."""
        errors = [s.strip() for seq, lvl, s in self.lines if seq > mark and lvl == LOG_ERROR and s.strip()]
        if errors:
            return _strip_func(errors[0])
        warns = [s.strip() for seq, lvl, s in self.lines if seq > mark and lvl == LOG_WARN and s.strip()]
        return _strip_func(warns[-1]) if warns else ""


def _strip_func(line: str) -> str:
    """``llama_model_load: error loading model: X`` -> ``error loading model: X``."""
    head, sep, rest = line.partition(": ")
    return rest if sep and head.isidentifier() and rest else line


NATIVE_LOG = _NativeLog()


def _install_log_callback(llama_cpp: Any) -> None:
    if NATIVE_LOG.callback is None:
        NATIVE_LOG.callback = llama_cpp.llama_log_callback(NATIVE_LOG)
        llama_cpp.llama_log_set(NATIVE_LOG.callback, ctypes.c_void_p(0))


def last_native_error() -> str:
    return NATIVE_LOG.errors_since(0)


def gpu_offload_supported() -> bool:
    return bool(import_llama().llama_supports_gpu_offload())


@dataclass
class DevicePlan:
    device: str  # "cpu" | "gpu"
    n_gpu_layers: int
    note: str


def plan_device(device: str, gpu_layers: int | None, *, supports_gpu: bool | None = None) -> DevicePlan:
    """Turn ``--device``/``--gpu-layers`` into llama.cpp's ``n_gpu_layers``."""
    if device not in DEVICES:
        raise UsageError(f"unknown device {device!r}", "use --device auto, cpu or gpu")
    if gpu_layers is not None and gpu_layers < -1:
        raise UsageError(f"--gpu-layers {gpu_layers}: must be -1 (all), 0 or a positive number")
    if device == "cpu":
        if gpu_layers not in (None, 0):
            raise UsageError("--gpu-layers needs a GPU device", "drop --device cpu, or drop --gpu-layers")
        return DevicePlan("cpu", 0, "CPU (requested)")
    gpu = gpu_offload_supported() if supports_gpu is None else supports_gpu
    if device == "gpu":
        if not gpu:
            raise RuntimeFailure(
                "a GPU was requested but this llama-cpp-python build has no GPU offload",
                'install a CUDA or Metal build: CMAKE_ARGS="-DGGML_CUDA=on" pip install --force-reinstall --no-cache-dir llama-cpp-python==0.3.36 (docs/runtime.md)',
            )
        n = -1 if gpu_layers is None else gpu_layers
        return DevicePlan("gpu", n, f"GPU ({'all' if n == -1 else n} layers offloaded)")
    # auto
    if gpu:
        n = -1 if gpu_layers is None else gpu_layers
        return DevicePlan("gpu" if n != 0 else "cpu", n, f"GPU ({'all' if n == -1 else n} layers offloaded)" if n != 0 else "CPU (--gpu-layers 0)")
    return DevicePlan("cpu", 0, "CPU: this llama-cpp-python build has no GPU offload")


def _kv_type(llama_cpp: Any, name: str) -> int:
    types = {"f16": 1, "f32": 0}
    if name not in types:
        raise UsageError(f"unknown KV cache type {name!r}", "use f16 or f32")
    return types[name]


# ---------------------------------------------------------------- the engine


class _StopScanner:
    """Holds back text that may be the start of a stop string."""

    def __init__(self, stops: Iterable[str]):
        self.stops = [s for s in stops if s]
        self.longest = max((len(s) for s in self.stops), default=0)

    def find(self, text: str, start: int) -> int | None:
        """Index of the earliest stop string that ends at or after ``start``."""
        if not self.stops:
            return None
        lo = max(0, start - self.longest)
        hits = [i for i in (text.find(s, lo) for s in self.stops) if i >= 0]
        return min(hits) if hits else None

    def safe_end(self, text: str) -> int:
        """How much of ``text`` can be emitted without splitting a possible stop string."""
        if not self.stops:
            return len(text)
        hold = 0
        for s in self.stops:
            for k in range(min(len(s) - 1, len(text)), 0, -1):
                if text.endswith(s[:k]):
                    hold = max(hold, k)
                    break
        return len(text) - hold


class TextStream:
    """Token pieces to text: UTF-8 split across tokens held until complete, stop strings cut.

    ``push(piece)`` returns the text that may be emitted now; ``stopped`` turns
    true once a stop string appeared (the text is cut before it); ``finish()``
    returns what is left to emit.  ``text`` is the whole answer so far.
    """

    def __init__(self, stops: Iterable[str]):
        self.scanner = _StopScanner(stops)
        self.decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self.text = ""
        self.emitted = 0
        self.stopped = False

    def push(self, piece: bytes) -> str:
        before = len(self.text)
        self.text += self.decoder.decode(piece)
        hit = self.scanner.find(self.text, before)
        if hit is not None:
            self.text = self.text[:hit]
            self.stopped = True
            return self._take(len(self.text))
        return self._take(self.scanner.safe_end(self.text))

    def finish(self) -> str:
        if not self.stopped:
            self.text += self.decoder.decode(b"", final=True)
        return self._take(len(self.text))

    def _take(self, end: int) -> str:
        if end <= self.emitted:
            return ""
        out = self.text[self.emitted : end]
        self.emitted = end
        return out


class LlamaCppEngine:
    """llama-cpp-python 0.3.36 behind the ``Engine`` interface (see the module docstring)."""

    name = "llama.cpp"

    def __init__(
        self,
        model_path: str | Path,
        options: EngineOptions | None = None,
        *,
        reporter: Reporter | None = None,
        header: GGUFHeader | None = None,
    ):
        self.options = opts = options or EngineOptions()
        self.reporter = reporter or NullReporter()
        self.model_path = Path(model_path)
        self._header = header
        self._adapters: dict[str, Any] = {}  # resolved path -> llama_adapter_lora pointer
        self._active: list[tuple[str, float]] = []
        self._llm: Any = None
        self._closed = False
        self.device = plan_device(opts.device, opts.gpu_layers)
        self.reporter.debug(f"device: {self.device.note}")

        if not self.model_path.is_file():
            raise InvalidPackageError(f"{self.model_path}: no such model file")
        # read (and so validate) the header before llama.cpp sees the file: truncated
        # or junk files become InvalidPackageError here
        hdr = self.base_header
        if hdr.is_adapter:
            raise InvalidPackageError(f"{self.model_path}: is a LoRA adapter, not a model", "install it as a library's adapter instead")
        n_ctx = opts.n_ctx or min(hdr.context_length or DEFAULT_MAX_CTX, DEFAULT_MAX_CTX)

        llama_cpp = import_llama()
        NATIVE_LOG.verbose = opts.verbose
        mark = NATIVE_LOG.mark()
        kwargs: dict[str, Any] = dict(
            n_ctx=n_ctx,
            n_batch=min(opts.n_batch, n_ctx),
            n_gpu_layers=self.device.n_gpu_layers,
            logits_all=opts.logits_all,
            verbose=False,
            type_k=_kv_type(llama_cpp, opts.kv_type),
            type_v=_kv_type(llama_cpp, opts.kv_type),
        )
        if opts.n_threads:
            kwargs["n_threads"] = opts.n_threads
            kwargs["n_threads_batch"] = opts.n_threads
        t0 = time.perf_counter()
        try:
            self._llm = llama_cpp.Llama(str(self.model_path), **kwargs)
        except (ValueError, RuntimeError, OSError) as exc:
            native = NATIVE_LOG.errors_since(mark) or last_native_error()
            raise RuntimeFailure(
                f"llama.cpp could not load {self.model_path.name}: {native or exc}",
                "the file may be corrupt, truncated or for an architecture this llama.cpp does not know",
            ) from None
        self.load_s = time.perf_counter() - t0
        self._llama_cpp = llama_cpp
        self._vocab = llama_cpp.llama_model_get_vocab(self._llm.model)
        self._piece_local = threading.local()
        meta = getattr(self._llm, "metadata", {}) or {}
        self.chat_template: str | None = meta.get("tokenizer.chat_template") or (self._header.chat_template if self._header else None)
        self.bos_id = int(self._llm.token_bos())
        self.eos_id = int(self._llm.token_eos())
        self.add_bos = bool(llama_cpp.llama_vocab_get_add_bos(self._vocab))

    # ------------------------------------------------------------ properties

    @property
    def base_header(self) -> GGUFHeader:
        """The model's GGUF header (tensor shapes for the ABI check), read once."""
        if self._header is None:
            self._header = read_header(self.model_path, with_vocab=False)
        return self._header

    @property
    def llm(self) -> Any:
        if self._llm is None or self._closed:
            raise RuntimeFailure("the engine is closed")
        return self._llm

    @property
    def n_ctx(self) -> int:
        return int(self.llm.n_ctx())

    @property
    def n_vocab(self) -> int:
        return int(self.llm.n_vocab())

    @property
    def n_threads(self) -> int:
        return int(self.llm.context_params.n_threads)

    @property
    def active_adapters(self) -> list[tuple[Path, float]]:
        return [(Path(p), s) for p, s in self._active]

    @property
    def loaded_adapters(self) -> list[Path]:
        return [Path(p) for p in self._adapters]

    # ------------------------------------------------------------ adapters

    def _load_adapter(self, key: str) -> Any:
        ptr = self._adapters.get(key)
        if ptr is not None:
            return ptr

        path = Path(key)
        header = read_header(path, with_vocab=False)
        ensure_adapter_fits(header, self.base_header, label=path.name, model_label=self.model_path.name)
        mark = NATIVE_LOG.mark()
        ptr = self._llama_cpp.llama_adapter_lora_init(self.llm.model, str(path).encode("utf-8"))
        if not bool(ptr):  # a NULL pointer is not None: test its truth value
            native = NATIVE_LOG.errors_since(mark) or last_native_error()
            raise AbiError(
                f"llama.cpp refused adapter {path.name}: {native or 'unknown reason'}",
                "the adapter does not fit this model",
            )
        self._adapters[key] = ptr
        return ptr

    def adapter_pointer(self, path: str | Path) -> Any:
        """The loaded adapter for ``path`` (ABI-checked and loaded on first use; kept for later sets)."""
        return self._load_adapter(str(Path(path).resolve()))

    @property
    def vocab(self) -> Any:
        return self._vocab

    def check_grammar(self, grammar: str) -> None:
        """Raise ``RuntimeFailure`` unless llama.cpp parses ``grammar``."""
        lc = self._llama_cpp
        mark = NATIVE_LOG.mark()
        probe = lc.llama_sampler_init_grammar(self._vocab, grammar.encode("utf-8"), b"root")
        if not bool(probe):
            native = NATIVE_LOG.errors_since(mark) or last_native_error()
            raise RuntimeFailure(f"the grammar does not parse: {native or 'syntax error'}", "check the GBNF text")
        lc.llama_sampler_free(probe)

    def set_adapters(self, adapters: Sequence[tuple[str | Path, float]]) -> None:
        """Make exactly ``adapters`` (path, scale) active; ``[]`` gives the bare base.

        Adapters at scale 0 are left out (llama.cpp drops them too); the same
        file twice counts once with the scales added.  Loaded adapters stay
        loaded for a later switch; ``unload_adapter`` frees one.
        """
        merged: dict[str, float] = {}
        for p, s in adapters:
            key = str(Path(p).resolve())
            merged[key] = merged.get(key, 0.0) + float(s)
        wanted = [(k, s) for k, s in merged.items() if s != 0.0]
        if wanted == self._active:
            return
        ptrs = [self._load_adapter(k) for k, _ in wanted]  # may raise: the set stays as it was
        lc = self._llama_cpp
        if wanted:
            arr = (lc.llama_adapter_lora_p_ctypes * len(ptrs))(*ptrs)
            scales = (ctypes.c_float * len(ptrs))(*[s for _, s in wanted])
            rc = lc.llama_set_adapters_lora(self.llm.ctx, arr, len(ptrs), scales)
        else:
            rc = lc.llama_set_adapters_lora(self.llm.ctx, None, 0, None)
        if rc != 0:
            raise RuntimeFailure(f"llama.cpp could not set the adapter set (code {rc}): {last_native_error()}")
        self._active = wanted
        # the cached prompt prefix was computed under the old set: drop it
        self.llm.reset()

    def unload_adapter(self, path: str | Path) -> None:
        """Free a loaded adapter; refused while it is part of the active set."""
        key = str(Path(path).resolve())
        if any(k == key for k, _ in self._active):
            raise RuntimeFailure(f"adapter {Path(path).name} is in use", "set another adapter set first")
        ptr = self._adapters.pop(key, None)
        if ptr is not None:
            self._llama_cpp.llama_adapter_lora_free(ptr)

    # ------------------------------------------------------------ text

    def tokenize(self, text: str, *, add_bos: bool | None = None, special: bool = True) -> list[int]:
        bos = self.add_bos if add_bos is None else add_bos
        return list(self.llm.tokenize(text.encode("utf-8"), add_bos=bos, special=special))

    def token_piece(self, token: int, special: bool = False) -> bytes:
        lc = self._llama_cpp
        # one buffer per thread: llmos serve decodes in one thread while request threads detokenize
        buf = getattr(self._piece_local, "buf", None)
        if buf is None:
            buf = self._piece_local.buf = ctypes.create_string_buffer(256)
        n = lc.llama_token_to_piece(self._vocab, token, buf, len(buf), 0, special)
        if n < 0:
            buf = self._piece_local.buf = ctypes.create_string_buffer(-n + 16)
            n = lc.llama_token_to_piece(self._vocab, token, buf, len(buf), 0, special)
        return buf.raw[: max(n, 0)]

    def detokenize(self, tokens: Sequence[int]) -> str:
        return b"".join(self.token_piece(t) for t in tokens).decode("utf-8", errors="replace")

    def _token_text(self, token: int) -> str:
        if token < 0:
            return ""
        return self.token_piece(token, special=True).decode("utf-8", errors="replace")

    def apply_chat_template(self, messages: Sequence[dict[str, Any]], *, add_generation_prompt: bool = True, tools: list[dict] | None = None) -> str:

        rendered = render_chat(
            self.chat_template,
            messages,
            bos_token=self._token_text(self.bos_id),
            eos_token=self._token_text(self.eos_id),
            add_generation_prompt=add_generation_prompt,
            tools=tools,
        )
        if rendered.used_fallback:
            self.reporter.debug("the model has no chat template; using a plain prompt")
        return rendered.text

    def prompt_tokens(self, messages: Sequence[dict[str, Any]], *, tools: list[dict] | None = None) -> list[int]:
        """Render and tokenize; BOS once, whether or not the template writes it."""
        text = self.apply_chat_template(messages, tools=tools)
        toks = self.tokenize(text, add_bos=False, special=True)
        if self.add_bos and self.bos_id >= 0 and (not toks or toks[0] != self.bos_id):
            toks.insert(0, self.bos_id)
        return toks

    # ------------------------------------------------------------ generation

    def check_fits(self, n_prompt: int) -> None:
        require_room(n_prompt, self.n_ctx, "shorten the input, or raise the context with --ctx (up to the model's own)")

    def _grammar(self, grammar: str) -> Any:
        self.check_grammar(grammar)
        return self._llama_cpp.LlamaGrammar.from_string(grammar, verbose=False)

    def generate(
        self,
        prompt_tokens: Sequence[int],
        params: SamplingParams,
        on_text: Callable[[str], None] | None = None,
        grammar: str | None = None,
    ) -> Generation:
        llm = self.llm
        lc = self._llama_cpp
        prompt = list(prompt_tokens)
        if not prompt:
            raise UsageError("empty prompt")
        self.check_fits(len(prompt))
        room = self.n_ctx - len(prompt)
        budget = room if not params.max_tokens or params.max_tokens <= 0 else min(params.max_tokens, room)
        grammar_obj = self._grammar(grammar) if grammar else None
        llm.set_seed(lc.LLAMA_DEFAULT_SEED if params.seed is None else int(params.seed) & 0xFFFFFFFF)
        scanner = _StopScanner(params.stop)
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        text = ""
        emitted = 0
        tokens: list[int] = []
        finish = "length"
        t0 = time.perf_counter()
        t_first: float | None = None
        gen = llm.generate(
            prompt,
            top_k=params.top_k,
            top_p=params.top_p,
            min_p=params.min_p,
            temp=max(params.temperature, 0.0),
            repeat_penalty=params.repeat_penalty,
            grammar=grammar_obj,
        )
        stopped_at: int | None = None
        try:
            for tok in gen:
                if t_first is None:
                    t_first = time.perf_counter()
                if lc.llama_vocab_is_eog(self._vocab, tok):
                    finish = "stop"
                    break
                tokens.append(int(tok))
                before = len(text)
                text += decoder.decode(self.token_piece(tok))
                hit = scanner.find(text, before)
                if hit is not None:
                    stopped_at = hit
                    finish = "stop"
                    break
                safe = scanner.safe_end(text)
                if on_text is not None and safe > emitted:
                    on_text(text[emitted:safe])
                    emitted = safe
                if len(tokens) >= budget:
                    finish = "length"
                    break
        finally:
            gen.close()
        if stopped_at is not None:
            text = text[:stopped_at]
        else:
            text += decoder.decode(b"", final=True)
        if on_text is not None and len(text) > emitted:
            on_text(text[emitted:])
        t_end = time.perf_counter()
        t_first = t_first or t_end
        return Generation(
            text=text,
            tokens=tokens,
            finish_reason=finish,
            prompt_tokens=len(prompt),
            completion_tokens=len(tokens),
            prompt_s=t_first - t0,
            generate_s=t_end - t_first,
        )

    def logits(self, tokens: Sequence[int]) -> Any:
        """Logits of every position for ``tokens`` (numpy ``[n, n_vocab]``); needs ``logits_all``."""
        import numpy as np

        if not self.options.logits_all:
            raise UsageError("logits() needs EngineOptions(logits_all=True)")
        self.check_fits(len(tokens))
        llm = self.llm
        llm.reset()
        llm.eval(list(tokens))
        return np.array(llm.scores[: len(tokens)], copy=True)

    # ------------------------------------------------------------ lifetime

    def close(self) -> None:
        """Take adapters out of the context, free them, then free the model."""
        if self._closed or self._llm is None:
            self._closed = True
            return
        lc = self._llama_cpp
        try:
            if self._active:
                lc.llama_set_adapters_lora(self._llm.ctx, None, 0, None)
                self._active = []
            for ptr in self._adapters.values():
                lc.llama_adapter_lora_free(ptr)
            self._adapters.clear()
        finally:
            self._closed = True
            self._llm.close()

    def __enter__(self) -> LlamaCppEngine:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass
