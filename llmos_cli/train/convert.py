"""Hugging Face Llama checkpoints <-> GGUF base models.

``convert_hf_to_gguf(hf_dir, out_path)`` writes a llama.cpp base model from a
transformers checkpoint folder (``config.json`` + ``*.safetensors`` +
SentencePiece ``tokenizer.model`` + chat template), the way llama.cpp's own
``convert_hf_to_gguf.py`` does for the Llama family:

* tensor names through gguf-py's tensor-name map;
* the rows of ``q_proj``/``k_proj`` permuted into llama.cpp's rotary layout
  (``permute_qk``; the same permutation must be applied to LoRA ``lora_B`` of
  q/k, see ``export.py``);
* the SentencePiece vocabulary (pieces, scores, token types), special token ids
  and ``tokenizer.chat_template``.

``load_llama_from_gguf(path)`` goes the other way (f32/f16/quantised weights,
q/k rows un-permuted) so that ``llmos train``/``merge`` can work from an
installed model package, which only carries the GGUF.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmos_cli.errors import InvalidPackageError, NotFoundError
from llmos_cli.fileio import atomic_path
from llmos_cli.gguf_info import read_header
from llmos_cli.progress import NullReporter, Reporter
from llmos_cli.train._deps import require_train_extra

SUPPORTED_ARCHS = {"LlamaForCausalLM": "llama"}

#: HF tensor name templates of a Llama decoder layer ("{i}" = block index)
_LAYER_TENSORS = (
    "model.layers.{i}.input_layernorm.weight",
    "model.layers.{i}.self_attn.q_proj.weight",
    "model.layers.{i}.self_attn.k_proj.weight",
    "model.layers.{i}.self_attn.v_proj.weight",
    "model.layers.{i}.self_attn.o_proj.weight",
    "model.layers.{i}.post_attention_layernorm.weight",
    "model.layers.{i}.mlp.gate_proj.weight",
    "model.layers.{i}.mlp.up_proj.weight",
    "model.layers.{i}.mlp.down_proj.weight",
)
_GLOBAL_TENSORS = ("model.embed_tokens.weight", "model.norm.weight", "lm_head.weight")


# ---------------------------------------------------------------- q/k permutation


def permute_qk(w: Any, n_head: int, n_head_kv: int | None = None) -> Any:
    """Rows of a q/k projection (or of its LoRA B) into llama.cpp's rotary order.

    HF Llama rotates the two halves of each head (``rotate_half``); llama.cpp
    rotates interleaved pairs.  Same formula as llama.cpp's converter.
    """
    if n_head_kv is not None and n_head != n_head_kv:
        n_head = n_head_kv
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def unpermute_qk(w: Any, n_head: int, n_head_kv: int | None = None) -> Any:
    """Inverse of ``permute_qk``."""
    if n_head_kv is not None and n_head != n_head_kv:
        n_head = n_head_kv
    return w.reshape(n_head, w.shape[0] // n_head // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


# ---------------------------------------------------------------- hyper-parameters


@dataclass
class LlamaHParams:
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    n_layer: int
    n_head: int
    n_head_kv: int
    head_dim: int
    context_length: int
    rms_eps: float
    rope_theta: float
    tie_embeddings: bool

    @classmethod
    def from_hf(cls, cfg: dict) -> LlamaHParams:
        n_head = int(cfg["num_attention_heads"])
        hidden = int(cfg["hidden_size"])
        rope = cfg.get("rope_parameters") or {}
        scaling = cfg.get("rope_scaling") or {}
        rtype = rope.get("rope_type") or scaling.get("rope_type") or scaling.get("type") or "default"
        if rtype not in ("default", None):
            raise InvalidPackageError(f"rope scaling {rtype!r} is not supported by this converter", "use llama.cpp's convert_hf_to_gguf.py")
        return cls(
            vocab_size=int(cfg["vocab_size"]),
            hidden_size=hidden,
            intermediate_size=int(cfg["intermediate_size"]),
            n_layer=int(cfg["num_hidden_layers"]),
            n_head=n_head,
            n_head_kv=int(cfg.get("num_key_value_heads") or n_head),
            head_dim=int(cfg.get("head_dim") or hidden // n_head),
            context_length=int(cfg.get("max_position_embeddings", 2048)),
            rms_eps=float(cfg.get("rms_norm_eps", 1e-6)),
            rope_theta=float(rope.get("rope_theta", cfg.get("rope_theta", 10000.0))),
            tie_embeddings=bool(cfg.get("tie_word_embeddings", False)),
        )

    def to_hf(self) -> dict:
        return {
            "architectures": ["LlamaForCausalLM"],
            "model_type": "llama",
            "vocab_size": self.vocab_size,
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "num_hidden_layers": self.n_layer,
            "num_attention_heads": self.n_head,
            "num_key_value_heads": self.n_head_kv,
            "head_dim": self.head_dim,
            "max_position_embeddings": self.context_length,
            "rms_norm_eps": self.rms_eps,
            "rope_theta": self.rope_theta,
            "rope_parameters": {"rope_theta": self.rope_theta, "rope_type": "default"},
            "tie_word_embeddings": self.tie_embeddings,
            "hidden_act": "silu",
            "attention_bias": False,
            "mlp_bias": False,
        }


def tensor_name_map(n_layer: int) -> Any:
    import gguf

    return gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, n_layer)


def hf_tensor_names(n_layer: int) -> list[str]:
    names = list(_GLOBAL_TENSORS)
    for i in range(n_layer):
        names += [t.format(i=i) for t in _LAYER_TENSORS]
    return names


_NAME_MAPS: dict[int, Any] = {}


def gguf_name(hf_name: str, n_layer: int) -> str:
    """GGUF tensor name of a HF Llama tensor (``model.layers.0.self_attn.q_proj.weight`` -> ``blk.0.attn_q.weight``)."""
    tmap = _NAME_MAPS.get(n_layer)
    if tmap is None:
        tmap = _NAME_MAPS[n_layer] = tensor_name_map(n_layer)
    name = tmap.get_name(hf_name, try_suffixes=(".weight", ".bias"))
    if name is None:
        raise InvalidPackageError(f"no GGUF name for tensor {hf_name!r}", "only Llama-architecture checkpoints are supported")
    return name


# ---------------------------------------------------------------- SentencePiece vocabulary


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    out = shift = 0
    while True:
        b = buf[pos]
        pos += 1
        out |= (b & 0x7F) << shift
        if not b & 0x80:
            return out, pos
        shift += 7


def read_spm_pieces(model_file: Path) -> list[tuple[str, float, int]]:
    """(piece, score, type) of every piece in a SentencePiece ``.model`` file.

    A minimal protobuf reader (ModelProto field 1 = SentencePiece{1 piece, 2 score,
    3 type}); SentencePiece's Python API does not expose USER_DEFINED.  Types use
    SentencePiece's numbering, which equals gguf's ``TokenType``.
    """
    buf = Path(model_file).read_bytes()
    pieces: list[tuple[str, float, int]] = []
    pos = 0
    try:
        while pos < len(buf):
            key, pos = _varint(buf, pos)
            field, wire = key >> 3, key & 7
            if wire == 2:
                n, pos = _varint(buf, pos)
                chunk = buf[pos : pos + n]
                pos += n
                if field == 1:
                    pieces.append(_parse_piece(chunk))
            elif wire == 0:
                _, pos = _varint(buf, pos)
            elif wire == 5:
                pos += 4
            elif wire == 1:
                pos += 8
            else:
                raise ValueError(f"wire type {wire}")
    except (IndexError, ValueError, UnicodeDecodeError, struct.error) as exc:
        raise InvalidPackageError(f"{model_file}: not a SentencePiece model ({exc})") from None
    if not pieces:
        raise InvalidPackageError(f"{model_file}: SentencePiece model has no pieces")
    return pieces


def _parse_piece(chunk: bytes) -> tuple[str, float, int]:
    piece, score, typ = "", 0.0, 1
    pos = 0
    while pos < len(chunk):
        key, pos = _varint(chunk, pos)
        field, wire = key >> 3, key & 7
        if wire == 2:
            n, pos = _varint(chunk, pos)
            if field == 1:
                piece = chunk[pos : pos + n].decode("utf-8")
            pos += n
        elif wire == 5:
            if field == 2:
                score = struct.unpack("<f", chunk[pos : pos + 4])[0]
            pos += 4
        elif wire == 0:
            v, pos = _varint(chunk, pos)
            if field == 3:
                typ = v
        elif wire == 1:
            pos += 8
        else:
            raise ValueError(f"wire type {wire}")
    return piece, score, typ


@dataclass
class TokenizerInfo:
    tokens: list[str]
    scores: list[float]
    types: list[int]
    bos_id: int | None
    eos_id: int | None
    unk_id: int | None
    pad_id: int | None
    add_bos: bool
    add_eos: bool
    chat_template: str | None


def _token_id(value: Any, tokens: list[str]) -> int | None:
    if isinstance(value, dict):
        value = value.get("content")
    if isinstance(value, str):
        try:
            return tokens.index(value)
        except ValueError:
            return None
    if isinstance(value, list):
        value = value[0] if value else None
    return int(value) if isinstance(value, int) else None


def read_hf_tokenizer(hf_dir: Path, cfg: dict) -> TokenizerInfo:
    model_file = hf_dir / "tokenizer.model"
    if not model_file.is_file():
        raise InvalidPackageError(
            f"{hf_dir}: no tokenizer.model (SentencePiece) found",
            "this converter handles SentencePiece (Llama-style) tokenizers; use llama.cpp's convert_hf_to_gguf.py for others",
        )
    pieces = read_spm_pieces(model_file)
    tokens = [p for p, _, _ in pieces]
    scores = [s for _, s, _ in pieces]
    types = [t for _, _, t in pieces]
    tcfg: dict = {}
    if (hf_dir / "tokenizer_config.json").is_file():
        tcfg = json.loads((hf_dir / "tokenizer_config.json").read_text())
    # tokens added on top of the SentencePiece model
    for sid, entry in sorted((tcfg.get("added_tokens_decoder") or {}).items(), key=lambda kv: int(kv[0])):
        i = int(sid)
        content = entry.get("content", "")
        ttype = 3 if entry.get("special") else 4
        if i < len(tokens):
            if tokens[i] != content:
                raise InvalidPackageError(f"added token {i} {content!r} clashes with piece {tokens[i]!r}")
            continue
        while len(tokens) < i:
            tokens.append(f"[PAD{len(tokens)}]")
            scores.append(0.0)
            types.append(5)
        tokens.append(content)
        scores.append(0.0)
        types.append(ttype)
    while len(tokens) < int(cfg.get("vocab_size", len(tokens))):
        tokens.append(f"[PAD{len(tokens)}]")
        scores.append(0.0)
        types.append(5)
    template = tcfg.get("chat_template")
    if (hf_dir / "chat_template.jinja").is_file():
        template = (hf_dir / "chat_template.jinja").read_text()
    gen: dict = {}
    if (hf_dir / "generation_config.json").is_file():
        gen = json.loads((hf_dir / "generation_config.json").read_text())

    def pick(key: str) -> int | None:
        for src in (tcfg.get(key), gen.get(key + "_id"), cfg.get(key + "_id")):
            tid = _token_id(src, tokens)
            if tid is not None:
                return tid
        return None

    return TokenizerInfo(
        tokens=tokens,
        scores=scores,
        types=types,
        bos_id=pick("bos_token"),
        eos_id=pick("eos_token"),
        unk_id=pick("unk_token"),
        pad_id=pick("pad_token"),
        add_bos=bool(tcfg.get("add_bos_token", True)),
        add_eos=bool(tcfg.get("add_eos_token", False)),
        chat_template=template if isinstance(template, str) else None,
    )


# ---------------------------------------------------------------- HF -> GGUF


def _load_safetensors(hf_dir: Path) -> dict[str, Any]:
    """HF tensors as float32 numpy arrays (bf16 goes through torch)."""
    files = sorted(hf_dir.glob("*.safetensors"))
    if not files:
        raise InvalidPackageError(f"{hf_dir}: no *.safetensors weights", "save the checkpoint with safe_serialization=True")
    out: dict[str, Any] = {}
    from safetensors import safe_open

    for f in files:
        with safe_open(str(f), framework="pt") as fh:
            for key in fh.keys():
                out[key] = fh.get_tensor(key).float().numpy()
    return out


def convert_hf_to_gguf(
    hf_dir: str | Path,
    out_path: str | Path,
    *,
    dtype: str = "f16",
    name: str | None = None,
    vocab_only: bool = False,
    reporter: Reporter | None = None,
) -> Path:
    """Write a llama.cpp base model GGUF from a transformers Llama checkpoint folder.

    ``vocab_only`` writes the metadata and tokenizer without tensors: enough for
    llama.cpp's tokenizer (``Llama(..., vocab_only=True)``), which training uses.
    """
    import numpy as np

    require_train_extra("converting a Hugging Face checkpoint", ("torch", "safetensors"))
    import gguf

    rep = reporter or NullReporter()
    hf_dir = Path(hf_dir)
    out_path = Path(out_path)
    if dtype not in ("f16", "f32"):
        raise InvalidPackageError(f"unknown dtype {dtype!r}", "use f16 or f32")
    cfg_file = hf_dir / "config.json"
    if not cfg_file.is_file():
        raise NotFoundError(f"{hf_dir}: no config.json", "pass a Hugging Face checkpoint folder (config.json + *.safetensors + tokenizer.model)")
    cfg = json.loads(cfg_file.read_text())
    archs = cfg.get("architectures") or []
    if not any(a in SUPPORTED_ARCHS for a in archs):
        raise InvalidPackageError(
            f"{hf_dir}: architecture {archs or cfg.get('model_type')} is not supported",
            f"this converter handles {', '.join(SUPPORTED_ARCHS)}; use llama.cpp's convert_hf_to_gguf.py for others",
        )
    hp = LlamaHParams.from_hf(cfg)
    tok = read_hf_tokenizer(hf_dir, cfg)
    weights = {} if vocab_only else _load_safetensors(hf_dir)

    with atomic_path(out_path) as tmp:
        w = gguf.GGUFWriter(str(tmp), "llama")
        w.add_name(name or cfg.get("_name_or_path") or hf_dir.name)
        w.add_type(gguf.GGUFType.MODEL)
        w.add_file_type(gguf.LlamaFileType.MOSTLY_F16 if dtype == "f16" else gguf.LlamaFileType.ALL_F32)
        w.add_vocab_size(len(tok.tokens))
        w.add_context_length(hp.context_length)
        w.add_embedding_length(hp.hidden_size)
        w.add_block_count(hp.n_layer)
        w.add_feed_forward_length(hp.intermediate_size)
        w.add_head_count(hp.n_head)
        w.add_head_count_kv(hp.n_head_kv)
        w.add_layer_norm_rms_eps(hp.rms_eps)
        w.add_rope_dimension_count(hp.head_dim)
        w.add_rope_freq_base(hp.rope_theta)
        if hp.head_dim * hp.n_head != hp.hidden_size:
            w.add_key_length(hp.head_dim)
            w.add_value_length(hp.head_dim)
        w.add_tokenizer_model("llama")
        w.add_tokenizer_pre("default")
        w.add_token_list(tok.tokens)
        w.add_token_scores(tok.scores)
        w.add_token_types(tok.types)
        for setter, value in (
            (w.add_bos_token_id, tok.bos_id),
            (w.add_eos_token_id, tok.eos_id),
            (w.add_unk_token_id, tok.unk_id),
            (w.add_pad_token_id, tok.pad_id),
        ):
            if value is not None:
                setter(value)
        w.add_add_bos_token(tok.add_bos)
        w.add_add_eos_token(tok.add_eos)
        if tok.chat_template:
            w.add_chat_template(tok.chat_template)

        names = [n for n in hf_tensor_names(hp.n_layer) if n in weights]
        missing = [] if vocab_only else [n for n in hf_tensor_names(hp.n_layer) if n not in weights and n != "lm_head.weight"]
        if missing:
            raise InvalidPackageError(f"{hf_dir}: checkpoint lacks tensor {missing[0]}" + (f" (+{len(missing) - 1} more)" if len(missing) > 1 else ""))
        with rep.task("converting tensors", total=len(names)) as task:
            for hf_name in names:
                data = weights[hf_name]
                if hf_name == "lm_head.weight" and hp.tie_embeddings:
                    task.advance()
                    continue
                if hf_name.endswith("self_attn.q_proj.weight"):
                    data = permute_qk(data, hp.n_head, hp.n_head)
                elif hf_name.endswith("self_attn.k_proj.weight"):
                    data = permute_qk(data, hp.n_head, hp.n_head_kv)
                if data.ndim == 1 or dtype == "f32":
                    data = data.astype(np.float32)
                else:
                    data = data.astype(np.float16)
                w.add_tensor(gguf_name(hf_name, hp.n_layer), np.ascontiguousarray(data))
                task.advance()
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()
    if not vocab_only:
        rep.info(f"wrote {out_path} ({out_path.stat().st_size / 1e6:.1f} MB, {hp.n_layer} layers, vocabulary {len(tok.tokens)})")
    return out_path


# ---------------------------------------------------------------- GGUF -> HF


def _field(reader: Any, key: str, default: Any = None) -> Any:
    f = reader.fields.get(key)
    if f is None:
        return default
    return f.contents()


def hparams_from_gguf(reader: Any) -> LlamaHParams:
    arch = _field(reader, "general.architecture")
    if arch != "llama":
        raise InvalidPackageError(f"{arch!r} models are not supported for training", "llmos trains Llama-architecture base models")
    n_head = int(_field(reader, "llama.attention.head_count"))
    hidden = int(_field(reader, "llama.embedding_length"))
    toks = reader.fields.get("tokenizer.ggml.tokens")
    vocab = int(_field(reader, "llama.vocab_size", 0) or (len(toks.data) if toks is not None else 0))
    names = {t.name for t in reader.tensors}
    return LlamaHParams(
        vocab_size=vocab,
        hidden_size=hidden,
        intermediate_size=int(_field(reader, "llama.feed_forward_length")),
        n_layer=int(_field(reader, "llama.block_count")),
        n_head=n_head,
        n_head_kv=int(_field(reader, "llama.attention.head_count_kv", n_head)),
        head_dim=int(_field(reader, "llama.attention.key_length", 0) or _field(reader, "llama.rope.dimension_count", 0) or hidden // n_head),
        context_length=int(_field(reader, "llama.context_length", 2048)),
        rms_eps=float(_field(reader, "llama.attention.layer_norm_rms_epsilon", 1e-6)),
        rope_theta=float(_field(reader, "llama.rope.freq_base", 10000.0)),
        tie_embeddings="output.weight" not in names,
    )


def gguf_state_dict(path: str | Path) -> tuple[LlamaHParams, dict[str, Any]]:
    """HF-named float32 numpy tensors of a Llama GGUF (q/k un-permuted)."""
    import numpy as np
    from gguf import GGMLQuantizationType, GGUFReader
    from gguf.quants import dequantize

    read_header(path, with_vocab=False)  # clear error on junk/truncated files
    reader = GGUFReader(str(path), "r")
    hp = hparams_from_gguf(reader)
    by_gguf = {gguf_name(n, hp.n_layer): n for n in hf_tensor_names(hp.n_layer)}
    out: dict[str, Any] = {}
    for t in reader.tensors:
        hf = by_gguf.get(t.name)
        if hf is None:
            continue  # rope_freqs and friends
        if t.tensor_type in (GGMLQuantizationType.F32, GGMLQuantizationType.F16):
            data = np.asarray(t.data, dtype=np.float32)
        else:
            data = dequantize(t.data, t.tensor_type).astype(np.float32)
        shape = tuple(int(x) for x in reversed(t.shape))
        data = data.reshape(shape)
        if hf.endswith("self_attn.q_proj.weight"):
            data = unpermute_qk(data, hp.n_head, hp.n_head)
        elif hf.endswith("self_attn.k_proj.weight"):
            data = unpermute_qk(data, hp.n_head, hp.n_head_kv)
        out[hf] = np.array(data, dtype=np.float32, order="C", copy=True)
    if hp.tie_embeddings:
        out.pop("lm_head.weight", None)
    return hp, out


def load_llama_from_gguf(path: str | Path, dtype: Any = None) -> Any:
    """A transformers ``LlamaForCausalLM`` with the weights of a Llama GGUF."""

    require_train_extra("loading a GGUF model into transformers", ("torch", "transformers"))
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    hp, sd = gguf_state_dict(path)
    config = LlamaConfig(**{k: v for k, v in hp.to_hf().items() if k not in ("architectures", "model_type")})
    model = LlamaForCausalLM(config)
    tensors = {k: torch.from_numpy(v) for k, v in sd.items()}
    if hp.tie_embeddings:
        tensors["lm_head.weight"] = tensors["model.embed_tokens.weight"]
    with torch.no_grad():
        model.load_state_dict(tensors, strict=True)
    model = model.to(dtype or torch.float32)  # type: ignore[arg-type]  # transformers' overloads of .to
    model.eval()
    return model
