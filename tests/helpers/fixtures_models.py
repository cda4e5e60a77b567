"""Real tiny GGUF models, LoRA adapters and real tokenizers for tests (shared by every engineer).

Nothing here is mocked: the files are real GGUFs written with gguf-py's
``GGUFWriter`` from numpy random weights, and llama.cpp loads and runs them.

Plain functions (usable from tests, bench scripts and other fixtures)
---------------------------------------------------------------------

``write_tiny_llama(path, **hp) -> TinyModel``
    A Llama-architecture model with a small self-made SentencePiece-style
    vocabulary (``TINY_VOCAB``: ``<unk> <s> </s> <|im_start|> <|im_end|>``,
    the 256 byte tokens ``<0x00>``..``<0xFF>``, printable ASCII and some common
    words) and a ChatML chat template (``CHATML_TEMPLATE``).  Defaults:
    n_embd 32, 2 layers, 4 heads (2 KV heads), n_ff 64, context 256, f32.
    About 0.2 MB; loads in milliseconds; no download.  ``TinyModel.weights``
    holds every tensor in numpy layout (``(out, in)`` for linear weights), so a
    test can compute a reference forward pass with ``reference_logits``.

``write_lora(path, base, **kw) -> TinyLora``
    A LoRA adapter GGUF exactly as llama.cpp's converter writes one:
    ``general.type=adapter``, ``adapter.type=lora``, ``adapter.lora.alpha``,
    tensors ``<base tensor>.lora_a`` (numpy ``(r, in)``) and ``.lora_b``
    (numpy ``(out, r)``).  ``TinyLora.delta(name, scale)`` is the weight
    change ``scale * alpha / r * B @ A`` llama.cpp applies.  Options make
    broken adapters for error tests (``arch=``, ``drop=``, ``rank_mismatch=``,
    ``extra_tensor=``).

``merged_weights(base, [(lora, scale), ...]) -> dict`` and
``write_weights(path, base, weights)``
    Merge adapters into the base weights in numpy and write that model.

``reference_logits(weights, hp, tokens) -> ndarray[n_tokens, n_vocab]``
    A numpy forward pass of the Llama graph (RMSNorm, RoPE in llama.cpp's
    "normal" adjacent-pair layout, grouped-query causal attention, SwiGLU).

``llama_sdist_assets() -> SdistAssets``
    llama-cpp-python 0.3.36's sdist, fetched with
    ``pip download --no-deps --no-binary :all: llama-cpp-python==0.3.36``
    into ``$LLMOS_TEST_CACHE`` (default ``~/.cache/llmos-tests``) once, of
    which only ``vendor/llama.cpp/models/ggml-vocab-*.gguf`` and
    ``models/templates/*.jinja`` are extracted and kept.  ``.vocab(name)``
    and ``.template(name)`` return paths.  Never committed.

``write_real_vocab_model(path, vocab="qwen2", template=None, **hp) -> TinyModel``
    A tiny model (n_embd 16, f16 tied embeddings: a few MB even for a 150k
    vocabulary) carrying a REAL tokenizer (every ``tokenizer.*`` key copied
    from ``ggml-vocab-<vocab>.gguf``) and a REAL chat template (the vocab's own,
    or ``templates/<template>.jinja``).

pytest fixtures
---------------

``tiny_model`` (session): a ``TinyModel`` in a session temp dir.
``tiny_lora`` / ``tiny_lora2`` (session): two different adapters for it.
``llama_sdist`` (session): ``SdistAssets`` (downloads on first use; the test
is skipped with a clear reason if pip cannot fetch it).
``real_vocab_model`` (session): qwen2 tokenizer + Qwen2.5 chat template.

Use from a test module::

    from tests.helpers.fixtures_models import write_tiny_llama, write_lora   # plain functions
    pytest_plugins = ["tests.helpers.fixtures_models"]                       # the fixtures below

(``tests`` is a package importable from the repository root; PYTEST_DONT_REWRITE keeps pytest
from warning that the module was imported before it became a plugin.)  The models are random: their
text is gibberish, but llama.cpp loads and runs them like real ones.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest

LLAMA_CPP_VERSION = "0.3.36"

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

# token types (gguf.TokenType)
_NORMAL, _UNKNOWN, _CONTROL, _USER_DEFINED, _UNUSED, _BYTE = 1, 2, 3, 4, 5, 6

_WORDS = [
    "the",
    "a",
    "an",
    "and",
    "of",
    "to",
    "in",
    "is",
    "it",
    "you",
    "that",
    "for",
    "on",
    "with",
    "as",
    "are",
    "this",
    "be",
    "at",
    "or",
    "by",
    "from",
    "not",
    "what",
    "all",
    "we",
    "can",
    "hello",
    "world",
    "llm",
    "model",
    "library",
    "knowledge",
    "answer",
    "question",
    "summary",
    "notes",
    "yes",
    "no",
    "ok",
]


def _tiny_vocab() -> tuple[list[str], list[float], list[int]]:
    tokens = ["<unk>", "<s>", "</s>", "<|im_start|>", "<|im_end|>"]
    types = [_UNKNOWN, _CONTROL, _CONTROL, _CONTROL, _CONTROL]
    scores = [0.0] * 5
    for b in range(256):
        tokens.append(f"<0x{b:02X}>")
        types.append(_BYTE)
        scores.append(0.0)
    chars = ["\u2581"] + [chr(c) for c in range(33, 127)]
    for i, ch in enumerate(chars):
        tokens.append(ch)
        types.append(_NORMAL)
        scores.append(-1000.0 - i)
    for i, w in enumerate(_WORDS):
        for piece in (w, "\u2581" + w):
            if piece not in tokens:
                tokens.append(piece)
                types.append(_NORMAL)
                scores.append(-10.0 - i)
    # prefixes so SentencePiece merges can build the words pair by pair
    for w in _WORDS:
        for piece in ("\u2581" + w[:k] for k in range(2, len(w))):
            if piece not in tokens:
                tokens.append(piece)
                types.append(_NORMAL)
                scores.append(-100.0)
        for piece in (w[:k] for k in range(2, len(w))):
            if piece not in tokens:
                tokens.append(piece)
                types.append(_NORMAL)
                scores.append(-200.0)
    return tokens, scores, types


TINY_VOCAB, _TINY_SCORES, _TINY_TYPES = _tiny_vocab()


@dataclass
class HParams:
    n_vocab: int
    n_embd: int = 32
    n_layer: int = 2
    n_head: int = 4
    n_head_kv: int = 2
    n_ff: int = 64
    n_ctx: int = 256
    rms_eps: float = 1e-5
    rope_base: float = 10000.0

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head


@dataclass
class TinyModel:
    path: Path
    hp: HParams
    #: GGUF tensor name -> numpy array in numpy layout ((out, in) for linear weights)
    weights: dict[str, np.ndarray]
    tokenizer: dict[str, Any] = field(default_factory=dict)
    chat_template: str | None = None

    #: names of the linear weights an adapter may target, per layer
    LINEAR = ("attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down")

    def linear_names(self, kinds: Iterable[str] | None = None) -> list[str]:
        kinds = tuple(kinds or self.LINEAR)
        return [f"blk.{i}.{k}.weight" for i in range(self.hp.n_layer) for k in kinds]


def _random_weights(hp: HParams, seed: int, tied: bool = False) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)

    def lin(out_dim: int, in_dim: int) -> np.ndarray:
        return (rng.standard_normal((out_dim, in_dim)) / np.sqrt(in_dim)).astype(np.float32)

    def norm(n: int) -> np.ndarray:
        return (1.0 + 0.1 * rng.standard_normal(n)).astype(np.float32)

    hd = hp.head_dim
    w: dict[str, np.ndarray] = {"token_embd.weight": (rng.standard_normal((hp.n_vocab, hp.n_embd)) * 0.5).astype(np.float32)}
    for i in range(hp.n_layer):
        p = f"blk.{i}."
        w[p + "attn_norm.weight"] = norm(hp.n_embd)
        w[p + "attn_q.weight"] = lin(hp.n_head * hd, hp.n_embd)
        w[p + "attn_k.weight"] = lin(hp.n_head_kv * hd, hp.n_embd)
        w[p + "attn_v.weight"] = lin(hp.n_head_kv * hd, hp.n_embd)
        w[p + "attn_output.weight"] = lin(hp.n_embd, hp.n_head * hd)
        w[p + "ffn_norm.weight"] = norm(hp.n_embd)
        w[p + "ffn_gate.weight"] = lin(hp.n_ff, hp.n_embd)
        w[p + "ffn_up.weight"] = lin(hp.n_ff, hp.n_embd)
        w[p + "ffn_down.weight"] = lin(hp.n_embd, hp.n_ff)
    w["output_norm.weight"] = norm(hp.n_embd)
    if not tied:
        w["output.weight"] = lin(hp.n_vocab, hp.n_embd)
    return w


def _add_tokenizer(writer: Any, tok: dict[str, Any]) -> None:
    """Write tokenizer.* keys with the right GGUF types."""
    from gguf import GGUFValueType

    for key, value in tok.items():
        if key in ("tokenizer.ggml.tokens", "tokenizer.ggml.merges"):
            writer.add_array(key, list(value))
        elif key == "tokenizer.ggml.token_type":
            writer.add_key_value(key, [int(v) for v in value], GGUFValueType.ARRAY, sub_type=GGUFValueType.INT32)
        elif key == "tokenizer.ggml.scores":
            writer.add_key_value(key, [float(v) for v in value], GGUFValueType.ARRAY, sub_type=GGUFValueType.FLOAT32)
        elif isinstance(value, bool):
            writer.add_bool(key, value)
        elif isinstance(value, int):
            writer.add_uint32(key, value)
        elif isinstance(value, float):
            writer.add_float32(key, value)
        elif isinstance(value, str):
            writer.add_string(key, value)
        elif isinstance(value, list) and all(isinstance(v, str) for v in value):
            writer.add_array(key, value)
        # other arrays (rare) are left out


def tiny_tokenizer() -> dict[str, Any]:
    return {
        "tokenizer.ggml.model": "llama",
        "tokenizer.ggml.pre": "default",
        "tokenizer.ggml.tokens": TINY_VOCAB,
        "tokenizer.ggml.scores": _TINY_SCORES,
        "tokenizer.ggml.token_type": _TINY_TYPES,
        "tokenizer.ggml.bos_token_id": 1,
        "tokenizer.ggml.eos_token_id": 4,  # <|im_end|> ends a ChatML turn
        "tokenizer.ggml.unknown_token_id": 0,
        "tokenizer.ggml.add_bos_token": True,
        "tokenizer.ggml.add_eos_token": False,
    }


def _write_model(
    path: Path,
    hp: HParams,
    weights: dict[str, np.ndarray],
    tokenizer: dict[str, Any],
    chat_template: str | None,
    *,
    name: str = "tiny-llama",
    dtype: Any = np.float32,
    arch: str = "llama",
) -> None:
    from gguf import GGUFWriter

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".incomplete")
    w = GGUFWriter(str(tmp), arch)
    w.add_name(name)
    w.add_context_length(hp.n_ctx)
    w.add_embedding_length(hp.n_embd)
    w.add_block_count(hp.n_layer)
    w.add_feed_forward_length(hp.n_ff)
    w.add_head_count(hp.n_head)
    w.add_head_count_kv(hp.n_head_kv)
    w.add_layer_norm_rms_eps(hp.rms_eps)
    w.add_rope_dimension_count(hp.head_dim)
    w.add_rope_freq_base(hp.rope_base)
    w.add_vocab_size(hp.n_vocab)
    w.add_file_type(0 if dtype == np.float32 else 1)
    _add_tokenizer(w, tokenizer)
    if chat_template:
        w.add_chat_template(chat_template)
    for tname, arr in weights.items():
        # norms stay f32 (ggml wants f32 for 1-d tensors)
        w.add_tensor(tname, arr.astype(dtype) if arr.ndim == 2 else arr.astype(np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    os.replace(tmp, path)


def write_tiny_llama(
    path: str | Path,
    *,
    n_embd: int = 32,
    n_layer: int = 2,
    n_head: int = 4,
    n_head_kv: int = 2,
    n_ff: int = 64,
    n_ctx: int = 256,
    seed: int = 0,
    chat_template: str | None = CHATML_TEMPLATE,
    name: str = "tiny-llama",
    dtype: Any = np.float32,
    tokenizer: dict[str, Any] | None = None,
    tied: bool = False,
) -> TinyModel:
    """Write a tiny random Llama GGUF (self-made vocabulary unless ``tokenizer`` is given)."""
    tok = tokenizer or tiny_tokenizer()
    hp = HParams(n_vocab=len(tok["tokenizer.ggml.tokens"]), n_embd=n_embd, n_layer=n_layer, n_head=n_head, n_head_kv=n_head_kv, n_ff=n_ff, n_ctx=n_ctx)
    weights = _random_weights(hp, seed, tied=tied)
    p = Path(path)
    _write_model(p, hp, weights, tok, chat_template, name=name, dtype=dtype)
    return TinyModel(p, hp, weights, tok, chat_template)


def write_weights(path: str | Path, base: TinyModel, weights: dict[str, np.ndarray], *, name: str = "tiny-merged") -> TinyModel:
    """Write ``weights`` (e.g. from ``merged_weights``) as a model shaped like ``base``."""
    p = Path(path)
    _write_model(p, base.hp, weights, base.tokenizer, base.chat_template, name=name)
    return TinyModel(p, base.hp, weights, base.tokenizer, base.chat_template)


# ---------------------------------------------------------------- LoRA


@dataclass
class TinyLora:
    path: Path
    alpha: float
    rank: int
    #: base tensor name -> (A (r, in), B (out, r)) in numpy layout
    pairs: dict[str, tuple[np.ndarray, np.ndarray]]

    def delta(self, name: str, scale: float = 1.0) -> np.ndarray:
        a, b = self.pairs[name]
        r = b.shape[1]
        factor = scale * (self.alpha / r if self.alpha else 1.0)
        return (factor * (b.astype(np.float64) @ a.astype(np.float64))).astype(np.float32)


def write_lora(
    path: str | Path,
    base: TinyModel,
    *,
    targets: Sequence[str] = ("attn_q", "attn_v", "ffn_up"),
    rank: int = 4,
    alpha: float | None = 8.0,
    seed: int = 1,
    magnitude: float = 0.5,
    arch: str = "llama",
    general_type: str = "adapter",
    adapter_type: str = "lora",
    drop: Sequence[str] = (),
    rank_mismatch: str | None = None,
    extra_tensor: str | None = None,
    wrong_in_dim: str | None = None,
) -> TinyLora:
    """Write a LoRA GGUF for ``base``.

    ``drop``: tensor names (e.g. ``"blk.0.attn_q.weight.lora_b"``) to leave out;
    ``rank_mismatch``/``wrong_in_dim``: a base tensor name whose pair gets
    inconsistent shapes; ``extra_tensor``: a base tensor name that does not
    exist in the base (e.g. ``"blk.9.attn_q.weight"``).
    """
    from gguf import GGUFWriter

    rng = np.random.default_rng(seed)
    pairs: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    names = base.linear_names(targets)
    if extra_tensor:
        names.append(extra_tensor)
    for tname in names:
        out_dim, in_dim = base.weights[tname].shape if tname in base.weights else (base.hp.n_embd, base.hp.n_embd)
        if tname == wrong_in_dim:
            in_dim += 1
        a = (rng.standard_normal((rank, in_dim)) * magnitude / np.sqrt(in_dim)).astype(np.float32)
        rb = rank + 1 if tname == rank_mismatch else rank
        b = (rng.standard_normal((out_dim, rb)) * magnitude / np.sqrt(rank)).astype(np.float32)
        pairs[tname] = (a, b)
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(p.name + ".incomplete")
    w = GGUFWriter(str(tmp), arch)
    w.add_type(general_type)
    w.add_string("adapter.type", adapter_type)
    if alpha is not None:
        w.add_float32("adapter.lora.alpha", float(alpha))
    w.add_name(p.stem)
    for tname, (a, b) in pairs.items():
        if f"{tname}.lora_a" not in drop:
            w.add_tensor(f"{tname}.lora_a", a)
        if f"{tname}.lora_b" not in drop:
            w.add_tensor(f"{tname}.lora_b", b)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    os.replace(tmp, p)
    return TinyLora(p, float(alpha or 0.0), rank, pairs)


def model_stub(path: str | Path) -> TinyModel:
    """A ``TinyModel`` for an existing Llama GGUF with zero-memory placeholder weights.

    Enough for ``write_lora`` (which only needs shapes) on big models that are
    cached on disk, e.g. in bench scripts.  Not for ``reference_logits``.
    """
    from llmos_cli.gguf_info import read_header

    hdr = read_header(path, with_vocab=False)
    kv = hdr.kv
    arch = hdr.architecture
    n_embd = int(kv[f"{arch}.embedding_length"])
    hp = HParams(
        n_vocab=int(hdr.tensors["token_embd.weight"][1]),
        n_embd=n_embd,
        n_layer=int(kv[f"{arch}.block_count"]),
        n_head=int(kv[f"{arch}.attention.head_count"]),
        n_head_kv=int(kv.get(f"{arch}.attention.head_count_kv", kv[f"{arch}.attention.head_count"])),
        n_ff=int(kv[f"{arch}.feed_forward_length"]),
        n_ctx=int(kv.get(f"{arch}.context_length", 0)),
    )
    # GGUF shapes are [in, out]; numpy layout is (out, in)
    weights = {name: np.broadcast_to(np.float32(0), tuple(reversed(shape))) for name, shape in hdr.tensors.items()}
    return TinyModel(Path(path), hp, weights)  # type: ignore[arg-type]


def merged_weights(base: TinyModel, adapters: Sequence[tuple[TinyLora, float]]) -> dict[str, np.ndarray]:
    """``W + sum(s * alpha/r * B @ A)`` for every adapted tensor (float64 accumulation)."""
    out = {k: v.copy() for k, v in base.weights.items()}
    for lora, scale in adapters:
        for name in lora.pairs:
            out[name] = (out[name].astype(np.float64) + lora.delta(name, scale)).astype(np.float32)
    return out


# ---------------------------------------------------------------- numpy reference


def _rms(x: np.ndarray, w: np.ndarray, eps: float) -> np.ndarray:
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * w


def _rope(x: np.ndarray, base: float) -> np.ndarray:
    """llama.cpp's "normal" RoPE: rotate adjacent pairs (x[2i], x[2i+1]).  x: (T, H, D)."""
    t, _h, d = x.shape
    inv = base ** (-np.arange(0, d, 2, dtype=np.float64) / d)
    ang = np.arange(t, dtype=np.float64)[:, None] * inv[None, :]  # (T, D/2)
    cos, sin = np.cos(ang)[:, None, :], np.sin(ang)[:, None, :]
    x0, x1 = x[..., 0::2], x[..., 1::2]
    out = np.empty_like(x)
    out[..., 0::2] = x0 * cos - x1 * sin
    out[..., 1::2] = x0 * sin + x1 * cos
    return out


def reference_logits(weights: dict[str, np.ndarray], hp: HParams, tokens: Sequence[int]) -> np.ndarray:
    """Logits for every position, computed in float64 numpy from the GGUF tensors."""
    w = {k: v.astype(np.float64) for k, v in weights.items()}
    x = w["token_embd.weight"][np.asarray(tokens)]
    t, hd = len(tokens), hp.head_dim
    mask = np.triu(np.full((t, t), -np.inf), k=1)
    group = hp.n_head // hp.n_head_kv
    for i in range(hp.n_layer):
        p = f"blk.{i}."
        h = _rms(x, w[p + "attn_norm.weight"], hp.rms_eps)
        q = (h @ w[p + "attn_q.weight"].T).reshape(t, hp.n_head, hd)
        k = (h @ w[p + "attn_k.weight"].T).reshape(t, hp.n_head_kv, hd)
        v = (h @ w[p + "attn_v.weight"].T).reshape(t, hp.n_head_kv, hd)
        q, k = _rope(q, hp.rope_base), _rope(k, hp.rope_base)
        heads = []
        for hh in range(hp.n_head):
            kk, vv = k[:, hh // group], v[:, hh // group]
            s = q[:, hh] @ kk.T / np.sqrt(hd) + mask
            s = np.exp(s - s.max(axis=-1, keepdims=True))
            s /= s.sum(axis=-1, keepdims=True)
            heads.append(s @ vv)
        x = x + np.concatenate(heads, axis=-1) @ w[p + "attn_output.weight"].T
        h = _rms(x, w[p + "ffn_norm.weight"], hp.rms_eps)
        g = h @ w[p + "ffn_gate.weight"].T
        u = h @ w[p + "ffn_up.weight"].T
        x = x + ((g / (1.0 + np.exp(-g))) * u) @ w[p + "ffn_down.weight"].T
    x = _rms(x, w["output_norm.weight"], hp.rms_eps)
    out = w.get("output.weight", w["token_embd.weight"])
    return x @ out.T


# ---------------------------------------------------------------- llama-cpp-python's sdist


def test_cache_dir() -> Path:
    return Path(os.environ.get("LLMOS_TEST_CACHE") or Path.home() / ".cache" / "llmos-tests")


# not a test, despite the name
test_cache_dir.__test__ = False  # type: ignore[attr-defined]


@dataclass
class SdistAssets:
    root: Path

    @property
    def vocab_dir(self) -> Path:
        return self.root / "vocab"

    @property
    def template_dir(self) -> Path:
        return self.root / "templates"

    def vocab(self, name: str) -> Path:
        p = self.vocab_dir / f"ggml-vocab-{name}.gguf"
        if not p.exists():
            raise FileNotFoundError(f"no vocabulary {name!r} in {self.vocab_dir}")
        return p

    def template(self, name: str) -> Path:
        p = self.template_dir / f"{name}.jinja"
        if not p.exists():
            raise FileNotFoundError(f"no template {name!r} in {self.template_dir}")
        return p

    def vocabs(self) -> list[str]:
        return sorted(p.name[len("ggml-vocab-") : -len(".gguf")] for p in self.vocab_dir.glob("ggml-vocab-*.gguf"))

    def templates(self) -> list[str]:
        return sorted(p.stem for p in self.template_dir.glob("*.jinja"))


class SdistUnavailable(RuntimeError):
    pass


def llama_sdist_assets(cache: Path | None = None) -> SdistAssets:
    """Fetch (once, with pip) and extract the vocabularies and templates of llama-cpp-python's sdist."""
    from filelock import FileLock

    cache = cache or test_cache_dir()
    root = cache / f"llama-cpp-python-{LLAMA_CPP_VERSION}"
    done = root / ".complete"
    if done.exists():
        return SdistAssets(root)
    cache.mkdir(parents=True, exist_ok=True)
    with FileLock(str(cache / ".sdist.lock")):
        if done.exists():
            return SdistAssets(root)
        dl = cache / "download"
        dl.mkdir(exist_ok=True)
        tarballs = sorted(dl.glob(f"llama_cpp_python-{LLAMA_CPP_VERSION}.tar.gz"))
        if not tarballs:
            cmd = [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--no-deps",
                "--no-binary",
                ":all:",
                f"llama-cpp-python=={LLAMA_CPP_VERSION}",
                "-d",
                str(dl),
                "--quiet",
            ]
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
            tarballs = sorted(dl.glob(f"llama_cpp_python-{LLAMA_CPP_VERSION}.tar.gz"))
            if proc.returncode != 0 or not tarballs:
                raise SdistUnavailable(f"pip download failed: {proc.stderr.strip()[-500:]}")
        tmp = Path(tempfile.mkdtemp(prefix=".extract-", dir=cache))
        try:
            (tmp / "vocab").mkdir()
            (tmp / "templates").mkdir()
            with tarfile.open(tarballs[0], "r:gz") as tf:
                for m in tf:
                    if not m.isfile():
                        continue
                    parts = m.name.split("/")
                    if len(parts) >= 4 and parts[1:4] == ["vendor", "llama.cpp", "models"]:
                        fname = parts[-1]
                        if len(parts) == 5 and fname.startswith("ggml-vocab-") and fname.endswith(".gguf"):
                            dest = tmp / "vocab" / fname
                        elif len(parts) == 6 and parts[4] == "templates" and fname.endswith(".jinja"):
                            dest = tmp / "templates" / fname
                        else:
                            continue
                        src = tf.extractfile(m)
                        assert src is not None
                        with open(dest, "wb") as fh:
                            shutil.copyfileobj(src, fh)
            (tmp / ".complete").write_text(tarballs[0].name + "\n")
            if root.exists():
                shutil.rmtree(root)
            os.replace(tmp, root)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
        # the tarball is no longer needed: keep only what tests use
        for t in tarballs:
            t.unlink(missing_ok=True)
    return SdistAssets(root)


def real_tokenizer(vocab_path: Path) -> dict[str, Any]:
    """Every ``tokenizer.*`` key of a ggml-vocab GGUF (values decoded)."""
    from llmos_cli.gguf_info import read_metadata

    return read_metadata(vocab_path, ["tokenizer."])


def write_real_vocab_model(
    path: str | Path,
    assets: SdistAssets,
    vocab: str = "qwen2",
    template: str | None = None,
    *,
    n_embd: int = 16,
    n_layer: int = 1,
    n_head: int = 2,
    n_head_kv: int = 1,
    n_ff: int = 32,
    n_ctx: int = 512,
    seed: int = 0,
) -> TinyModel:
    """Tiny model with a REAL tokenizer and chat template (f16, tied embeddings: a few MB)."""
    tok = real_tokenizer(assets.vocab(vocab))
    chat = tok.pop("tokenizer.chat_template", None)
    if template is not None:
        chat = assets.template(template).read_text()
    for k in [k for k in tok if k.startswith("tokenizer.chat_template")]:
        tok.pop(k)
    hp = HParams(n_vocab=len(tok["tokenizer.ggml.tokens"]), n_embd=n_embd, n_layer=n_layer, n_head=n_head, n_head_kv=n_head_kv, n_ff=n_ff, n_ctx=n_ctx)
    weights = _random_weights(hp, seed, tied=True)
    p = Path(path)
    _write_model(p, hp, weights, tok, chat, name=f"tiny-{vocab}", dtype=np.float16)
    return TinyModel(p, hp, weights, tok, chat)


# ---------------------------------------------------------------- pytest fixtures


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> TinyModel:
    return write_tiny_llama(tmp_path_factory.mktemp("models") / "tiny.gguf")


@pytest.fixture(scope="session")
def tiny_lora(tiny_model, tmp_path_factory) -> TinyLora:
    return write_lora(tmp_path_factory.mktemp("loras") / "lora-a.gguf", tiny_model, seed=11)


@pytest.fixture(scope="session")
def tiny_lora2(tiny_model, tmp_path_factory) -> TinyLora:
    return write_lora(tmp_path_factory.mktemp("loras") / "lora-b.gguf", tiny_model, seed=22, targets=("attn_k", "attn_output", "ffn_down"), rank=2, alpha=4.0)


@pytest.fixture(scope="session")
def llama_sdist() -> SdistAssets:
    try:
        return llama_sdist_assets()
    except SdistUnavailable as exc:  # no network and no cache
        pytest.skip(f"llama-cpp-python sdist unavailable: {exc}")


@pytest.fixture(scope="session")
def real_vocab_model(llama_sdist, tmp_path_factory) -> TinyModel:
    return write_real_vocab_model(tmp_path_factory.mktemp("models") / "tiny-qwen2.gguf", llama_sdist, "qwen2", "Qwen-Qwen2.5-7B-Instruct")
