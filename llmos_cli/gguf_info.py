"""Read GGUF headers without llama.cpp (gguf-py's GGUFReader, memory-mapped).

Used by ``llmos check`` (adapter architecture), ``llmos build`` of a model
(architecture, context length, chat template, fingerprint) and the runtime's
ABI check.  Any unreadable, truncated or non-GGUF file raises
``InvalidPackageError`` -- never hand such a file to llama.cpp.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llmos_cli.errors import InvalidPackageError


@dataclass
class GGUFHeader:
    path: Path
    architecture: str | None
    general_type: str | None  # "model" / "adapter" / None
    adapter_type: str | None  # "lora" for LoRA adapters
    lora_alpha: float | None
    name: str | None
    context_length: int | None
    chat_template: str | None
    #: tensor name -> shape as written in the file (GGUF order: fastest-varying first)
    tensors: dict[str, tuple[int, ...]] = field(default_factory=dict)
    tensor_types: dict[str, str] = field(default_factory=dict)
    #: selected scalar metadata (architecture hyper-parameters)
    kv: dict[str, Any] = field(default_factory=dict)
    vocab_sha256: str | None = None
    vocab_size: int | None = None

    @property
    def is_adapter(self) -> bool:
        return self.general_type == "adapter"

    def fingerprint(self) -> str:
        """ABI fingerprint of a base model: architecture, tensor names+shapes, vocabulary."""
        h = hashlib.sha256()
        h.update(f"arch={self.architecture}\n".encode())
        for name in sorted(self.tensors):
            h.update(f"{name}:{','.join(map(str, self.tensors[name]))}\n".encode())
        h.update(f"vocab={self.vocab_sha256}\n".encode())
        return "sha256:" + h.hexdigest()


def _field_value(reader: Any, key: str) -> Any:
    f = reader.fields.get(key)
    if f is None:
        return None
    try:
        return f.contents()
    except Exception:  # pragma: no cover - very old gguf-py
        return None


def read_header(path: str | Path, *, with_vocab: bool = True) -> GGUFHeader:
    p = Path(path)
    try:
        size = p.stat().st_size
    except FileNotFoundError:
        raise InvalidPackageError(f"{p}: no such GGUF file") from None
    if size < 24:
        raise InvalidPackageError(f"{p}: not a GGUF file (only {size} bytes)", "the file is empty or truncated")
    with open(p, "rb") as fh:
        magic = fh.read(4)
    if magic != b"GGUF":
        raise InvalidPackageError(f"{p}: not a GGUF file (bad magic {magic!r})")
    try:
        from gguf import GGUFReader

        reader = GGUFReader(str(p), "r")
        tensors: dict[str, tuple[int, ...]] = {}
        types: dict[str, str] = {}
        for t in reader.tensors:
            tensors[t.name] = tuple(int(x) for x in t.shape)
            types[t.name] = t.tensor_type.name
            # a truncated file leaves tensor data past EOF
            if int(t.data_offset) + int(t.n_bytes) > size:
                raise InvalidPackageError(f"{p}: truncated GGUF (tensor {t.name} runs past the end of the file)")
    except InvalidPackageError:
        raise
    except Exception as exc:  # gguf-py raises ValueError/IndexError/struct errors on junk
        raise InvalidPackageError(f"{p}: unreadable GGUF ({type(exc).__name__}: {exc})", "the file is corrupt or truncated") from None

    arch = _field_value(reader, "general.architecture")
    kv: dict[str, Any] = {}
    for key in reader.fields:
        if arch and key.startswith(f"{arch}.") or key.startswith("general.") or key.startswith("adapter."):
            v = _field_value(reader, key)
            if isinstance(v, (int, float, str, bool)):
                kv[key] = v
    vocab_sha = None
    vocab_size = None
    if with_vocab:
        toks = reader.fields.get("tokenizer.ggml.tokens")
        if toks is not None:
            h = hashlib.sha256()
            model = _field_value(reader, "tokenizer.ggml.model") or ""
            h.update(str(model).encode() + b"\n")
            n = 0
            for idx in toks.data:
                h.update(bytes(toks.parts[idx]) + b"\x00")
                n += 1
            vocab_sha = h.hexdigest()
            vocab_size = n
    alpha = _field_value(reader, "adapter.lora.alpha")
    ctx = _field_value(reader, f"{arch}.context_length") if arch else None
    return GGUFHeader(
        path=p,
        architecture=arch,
        general_type=_field_value(reader, "general.type"),
        adapter_type=_field_value(reader, "adapter.type"),
        lora_alpha=float(alpha) if alpha is not None else None,
        name=_field_value(reader, "general.name"),
        context_length=int(ctx) if ctx is not None else None,
        chat_template=_field_value(reader, "tokenizer.chat_template"),
        tensors=tensors,
        tensor_types=types,
        kv=kv,
        vocab_sha256=vocab_sha,
        vocab_size=vocab_size,
    )
