"""Read GGUF headers without llama.cpp.

Used by ``llmos check`` (adapter architecture), ``llmos build`` of a model
(architecture, context length, chat template, fingerprint) and the runtime's
ABI check.  Any unreadable, truncated or non-GGUF file raises
``InvalidPackageError`` -- never hand such a file to llama.cpp.

The parser here is a small pure-Python reader of the GGUF header (magic,
key/value metadata, tensor infos) over a memory map.  gguf-py's
``GGUFReader`` builds numpy views for every element of every array, which
takes seconds (tens of seconds on a busy machine) on a 150k-token vocabulary;
this reader skips arrays it does not need and stays in the tens of
milliseconds, which matters because ``llmos run`` reads the base header on
every run with adapters.  It imports neither numpy nor gguf.

Public API:

* ``read_header(path, with_vocab=True) -> GGUFHeader``
* ``read_metadata(path, prefixes=None) -> dict`` -- every key (or those
  starting with one of ``prefixes``) with full values, arrays as lists; used
  by test fixtures to copy a real tokenizer into a tiny model.
* ``GGUFHeader.fingerprint()`` -- the ABI fingerprint of a base model.
"""

from __future__ import annotations

import hashlib
import mmap
import struct
from collections.abc import Iterable
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

    def to_json(self) -> dict:
        return {
            "path": str(self.path),
            "architecture": self.architecture,
            "general_type": self.general_type,
            "adapter_type": self.adapter_type,
            "lora_alpha": self.lora_alpha,
            "name": self.name,
            "context_length": self.context_length,
            "chat_template": self.chat_template,
            "tensors": {k: list(v) for k, v in self.tensors.items()},
            "tensor_types": dict(self.tensor_types),
            "kv": dict(self.kv),
            "vocab_sha256": self.vocab_sha256,
            "vocab_size": self.vocab_size,
        }

    @classmethod
    def from_json(cls, d: dict) -> GGUFHeader:
        return cls(
            path=Path(d["path"]),
            architecture=d.get("architecture"),
            general_type=d.get("general_type"),
            adapter_type=d.get("adapter_type"),
            lora_alpha=d.get("lora_alpha"),
            name=d.get("name"),
            context_length=d.get("context_length"),
            chat_template=d.get("chat_template"),
            tensors={k: tuple(v) for k, v in (d.get("tensors") or {}).items()},
            tensor_types=dict(d.get("tensor_types") or {}),
            kv=dict(d.get("kv") or {}),
            vocab_sha256=d.get("vocab_sha256"),
            vocab_size=d.get("vocab_size"),
        )


# ---------------------------------------------------------------- the parser

# GGUF value types -> (struct code, size)
_SCALARS: dict[int, tuple[str, int]] = {
    0: ("B", 1),
    1: ("b", 1),
    2: ("H", 2),
    3: ("h", 2),
    4: ("I", 4),
    5: ("i", 4),
    6: ("f", 4),
    7: ("?", 1),
    10: ("Q", 8),
    11: ("q", 8),
    12: ("d", 8),
}
_STRING = 8
_ARRAY = 9

# ggml tensor types: id -> (name, block size, bytes per block).  Stable ABI of ggml.
GGML_TYPES: dict[int, tuple[str, int, int]] = {
    0: ("F32", 1, 4),
    1: ("F16", 1, 2),
    2: ("Q4_0", 32, 18),
    3: ("Q4_1", 32, 20),
    6: ("Q5_0", 32, 22),
    7: ("Q5_1", 32, 24),
    8: ("Q8_0", 32, 34),
    9: ("Q8_1", 32, 40),
    10: ("Q2_K", 256, 84),
    11: ("Q3_K", 256, 110),
    12: ("Q4_K", 256, 144),
    13: ("Q5_K", 256, 176),
    14: ("Q6_K", 256, 210),
    15: ("Q8_K", 256, 292),
    16: ("IQ2_XXS", 256, 66),
    17: ("IQ2_XS", 256, 74),
    18: ("IQ3_XXS", 256, 98),
    19: ("IQ1_S", 256, 50),
    20: ("IQ4_NL", 32, 18),
    21: ("IQ3_S", 256, 110),
    22: ("IQ2_S", 256, 82),
    23: ("IQ4_XS", 256, 136),
    24: ("I8", 1, 1),
    25: ("I16", 1, 2),
    26: ("I32", 1, 4),
    27: ("I64", 1, 8),
    28: ("F64", 1, 8),
    29: ("IQ1_M", 256, 56),
    30: ("BF16", 1, 2),
    34: ("TQ1_0", 256, 54),
    35: ("TQ2_0", 256, 66),
    39: ("MXFP4", 32, 17),
    40: ("NVFP4", 64, 36),
    41: ("Q1_0", 128, 18),
}

DEFAULT_ALIGNMENT = 32
_MAX_DIMS = 4

# Limits on hostile headers (docs/security.md, "GGUF files").  Every length and
# count is checked against these and against the bytes left in the file
# *before* anything is read, so a few bytes can never make the reader loop,
# allocate or recurse without bound.
#: longest metadata key or tensor name (llama.cpp's own names are < 100 bytes)
MAX_KEY_BYTES = 64 * 1024
#: longest string value (chat templates are tens of KB)
MAX_STRING_BYTES = 16 * 1024 * 1024
#: most elements in one metadata array (vocabularies and merges are < 1M)
MAX_ARRAY_ELEMENTS = 16 * 1024 * 1024
#: arrays of arrays nest at most this deep (llama.cpp itself reads none)
MAX_NESTING = 4
#: most metadata keys, most tensors
MAX_KV = 1_000_000
MAX_TENSORS = 1_000_000
#: the fewest bytes one key/value pair and one tensor info take in a file
_MIN_KV_BYTES = 8 + 4 + 1
_MIN_TENSOR_BYTES = 8 + 4 + 4 + 8


def _ggml_type(type_id: int) -> tuple[str, int, int]:
    t = GGML_TYPES.get(type_id)
    if t is not None:
        return t
    try:  # a newer ggml type: ask gguf-py (slower import, rare path)
        from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType

        qt = GGMLQuantizationType(type_id)
        block, size = GGML_QUANT_SIZES[qt]
        return qt.name, int(block), int(size)
    except Exception:
        raise ValueError(f"unknown ggml tensor type {type_id}") from None


class _Corrupt(Exception):
    pass


@dataclass
class _ArrayInfo:
    etype: int
    count: int
    offset: int  # where the elements start


@dataclass
class _Tensor:
    name: str
    shape: tuple[int, ...]
    type_id: int
    offset: int


class _Reader:
    """Sequential reader over the memory-mapped header."""

    def __init__(self, buf: Any, size: int):
        self.buf = buf
        self.size = size
        self.pos = 0
        self.e = "<"

    def need(self, n: int) -> None:
        if n < 0 or self.pos + n > self.size:
            raise _Corrupt(f"header runs past the end of the file (at byte {self.pos})")

    def unpack(self, code: str, n: int) -> Any:
        self.need(n)
        v = struct.unpack_from(self.e + code, self.buf, self.pos)[0]
        self.pos += n
        return v

    def u32(self) -> int:
        return self.unpack("I", 4)

    def u64(self) -> int:
        return self.unpack("Q", 8)

    def raw_string(self, limit: int | None = None, what: str = "string") -> bytes:
        limit = MAX_STRING_BYTES if limit is None else limit
        n = self.u64()
        if n > limit:
            raise _Corrupt(f"{what} of {n} bytes at byte {self.pos - 8} (the limit is {limit})")
        self.need(n)
        s = self.buf[self.pos : self.pos + n]
        self.pos += n
        return bytes(s)

    def string(self, limit: int | None = None, what: str = "string") -> str:
        return self.raw_string(limit, what).decode("utf-8", errors="replace")

    def array_head(self, depth: int) -> tuple[int, int]:
        """Element type and count of an array, checked against the limits and the bytes left."""
        if depth >= MAX_NESTING:
            raise _Corrupt(f"arrays nested more than {MAX_NESTING} deep (at byte {self.pos})")
        etype, count = self.u32(), self.u64()
        if count > MAX_ARRAY_ELEMENTS:
            raise _Corrupt(f"array of {count} elements at byte {self.pos - 12} (the limit is {MAX_ARRAY_ELEMENTS})")
        if etype in _SCALARS:
            least = _SCALARS[etype][1]
        elif etype == _STRING:
            least = 8
        elif etype == _ARRAY:
            least = 12
        else:
            raise _Corrupt(f"unknown array element type {etype}")
        if count * least > self.size - self.pos:
            raise _Corrupt(f"array of {count} elements runs past the end of the file (at byte {self.pos})")
        return etype, count

    def skip_value(self, vtype: int, depth: int = 0) -> None:
        if vtype in _SCALARS:
            self.need(_SCALARS[vtype][1])
            self.pos += _SCALARS[vtype][1]
        elif vtype == _STRING:
            n = self.u64()
            if n > MAX_STRING_BYTES:
                raise _Corrupt(f"string of {n} bytes at byte {self.pos - 8} (the limit is {MAX_STRING_BYTES})")
            self.need(n)
            self.pos += n
        elif vtype == _ARRAY:
            etype, count = self.array_head(depth)
            self.skip_array(etype, count, depth + 1)
        else:
            raise _Corrupt(f"unknown metadata value type {vtype}")

    def skip_array(self, etype: int, count: int, depth: int = 1) -> None:
        if etype in _SCALARS:
            n = _SCALARS[etype][1] * count
            self.need(n)
            self.pos += n
        elif etype == _STRING:
            buf, pos, size = self.buf, self.pos, self.size
            unpack = struct.Struct(self.e + "Q").unpack_from
            for _ in range(count):
                if pos + 8 > size:
                    raise _Corrupt("string array runs past the end of the file")
                n = unpack(buf, pos)[0]
                if n > MAX_STRING_BYTES:
                    raise _Corrupt(f"string of {n} bytes at byte {pos} (the limit is {MAX_STRING_BYTES})")
                pos += 8 + n
            if pos > size:
                raise _Corrupt("string array runs past the end of the file")
            self.pos = pos
        else:
            for _ in range(count):
                self.skip_value(etype, depth)

    def read_value(self, vtype: int, decode_arrays: bool, depth: int = 0) -> Any:
        if vtype in _SCALARS:
            code, n = _SCALARS[vtype]
            return self.unpack(code, n)
        if vtype == _STRING:
            return self.string()
        if vtype == _ARRAY:
            etype, count = self.array_head(depth)
            start = self.pos
            if not decode_arrays:
                self.skip_array(etype, count, depth + 1)
                return _ArrayInfo(etype, count, start)
            return self.read_array(etype, count, depth + 1)
        raise _Corrupt(f"unknown metadata value type {vtype}")

    def read_array(self, etype: int, count: int, depth: int = 1) -> list:
        if etype in _SCALARS:
            code, n = _SCALARS[etype]
            self.need(n * count)
            vals = list(struct.unpack_from(f"{self.e}{count}{code}", self.buf, self.pos))
            self.pos += n * count
            return vals
        if etype == _STRING:
            return [self.string() for _ in range(count)]
        return [self.read_value(etype, True, depth) for _ in range(count)]

    def string_array_bytes(self, info: _ArrayInfo) -> list[bytes]:
        """Raw bytes of each element of a string array (for hashing a vocabulary)."""
        out: list[bytes] = []
        buf, pos = self.buf, info.offset
        unpack = struct.Struct(self.e + "Q").unpack_from
        for _ in range(info.count):
            n = unpack(buf, pos)[0]
            out.append(bytes(buf[pos + 8 : pos + 8 + n]))
            pos += 8 + n
        return out


@dataclass
class _Parsed:
    fields: dict[str, Any]
    tensors: list[_Tensor]
    reader: _Reader


def _parse(p: Path, mm: Any, size: int, decode: Iterable[str] | None) -> _Parsed:
    r = _Reader(mm, size)
    if bytes(mm[:4]) != b"GGUF":
        raise _Corrupt(f"bad magic {bytes(mm[:4])!r}")
    r.pos = 4
    version = r.u32()
    if version & 0xFFFF == 0 and version != 0:  # written big-endian
        r.e = ">"
        r.pos = 4
        version = r.u32()
    if version not in (2, 3):
        raise _Corrupt(f"unsupported GGUF version {version}")
    n_tensors, n_kv = r.u64(), r.u64()
    if n_kv > MAX_KV or n_tensors > MAX_TENSORS:
        raise _Corrupt(f"implausible counts ({n_kv} keys, {n_tensors} tensors; the limits are {MAX_KV} and {MAX_TENSORS})")
    if n_kv * _MIN_KV_BYTES + n_tensors * _MIN_TENSOR_BYTES > size - r.pos:
        raise _Corrupt(f"{n_kv} keys and {n_tensors} tensors cannot fit in a file of {size} bytes")
    prefixes = tuple(decode) if decode is not None else None
    fields: dict[str, Any] = {}
    for _ in range(n_kv):
        key = r.string(MAX_KEY_BYTES, "metadata key")
        if key in fields:
            raise _Corrupt(f"duplicate metadata key {key[:80]!r}")
        vtype = r.u32()
        want = prefixes is not None and (not prefixes or key.startswith(prefixes))
        fields[key] = r.read_value(vtype, decode_arrays=want)
    tensors: list[_Tensor] = []
    names: set[str] = set()
    for _ in range(n_tensors):
        name = r.string(MAX_KEY_BYTES, "tensor name")
        if name in names:
            raise _Corrupt(f"duplicate tensor {name[:80]!r}")
        names.add(name)
        n_dims = r.u32()
        if n_dims > _MAX_DIMS:
            raise _Corrupt(f"tensor {name[:80]} has {n_dims} dimensions")
        shape = tuple(r.u64() for _ in range(n_dims))
        tensors.append(_Tensor(name, shape, r.u32(), r.u64()))
    align = fields.get("general.alignment", DEFAULT_ALIGNMENT)
    if isinstance(align, bool) or not isinstance(align, int) or align <= 0 or align & (align - 1):
        raise _Corrupt(f"invalid general.alignment {align!r}")
    data_start = (r.pos + align - 1) // align * align
    for t in tensors:
        try:
            _tname, block, bsize = _ggml_type(t.type_id)
        except ValueError as exc:
            raise _Corrupt(f"tensor {t.name[:80]}: {exc}") from None
        n = 1
        for d in t.shape:
            n *= d
        if n >= 1 << 62:
            raise _Corrupt(f"tensor {t.name[:80]} declares {n} elements")
        if t.shape and t.shape[0] % block:
            raise _Corrupt(f"tensor {t.name[:80]}: first dimension {t.shape[0]} is not a multiple of the {_tname} block size {block}")
        if t.offset % align:
            raise _Corrupt(f"tensor {t.name[:80]}: data offset {t.offset} is not aligned to {align}")
        nbytes = n // block * bsize
        if data_start + t.offset + nbytes > size:
            raise InvalidPackageError(
                f"{p}: truncated GGUF (tensor {t.name} runs past the end of the file)", "the file is truncated; download or copy it again"
            )
    return _Parsed(fields, tensors, r)


def _open(p: Path):
    try:
        size = p.stat().st_size
    except FileNotFoundError:
        raise InvalidPackageError(f"{p}: no such GGUF file") from None
    if p.is_dir():
        raise InvalidPackageError(f"{p}: is a directory, not a GGUF file")
    if size < 24:
        raise InvalidPackageError(f"{p}: not a GGUF file (only {size} bytes)", "the file is empty or truncated")
    with open(p, "rb") as fh:
        magic = fh.read(4)
        if magic != b"GGUF":
            raise InvalidPackageError(f"{p}: not a GGUF file (bad magic {magic!r})")
        mm = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
    return mm, size


def _parse_file(p: Path, decode: Iterable[str] | None) -> _Parsed:
    mm, size = _open(p)
    try:
        return _parse(p, mm, size, decode)
    except InvalidPackageError:
        raise
    except (_Corrupt, struct.error, UnicodeError, OverflowError, MemoryError, ValueError, RecursionError) as exc:
        raise InvalidPackageError(f"{p}: unreadable GGUF ({exc})", "the file is corrupt or truncated") from None


def read_metadata(path: str | Path, prefixes: Iterable[str] | None = None) -> dict[str, Any]:
    """Every metadata key (or those starting with one of ``prefixes``) with full values.

    Arrays come back as Python lists; keys outside ``prefixes`` are left out.
    """
    p = Path(path)
    pre = tuple(prefixes) if prefixes is not None else ()
    parsed = _parse_file(p, pre)
    try:
        return {k: v for k, v in parsed.fields.items() if not pre or k.startswith(pre)}
    finally:
        parsed.reader.buf.close()


def read_header(path: str | Path, *, with_vocab: bool = True) -> GGUFHeader:
    p = Path(path)
    parsed = _parse_file(p, None)
    fields, r = parsed.fields, parsed.reader
    try:

        def scalar(key: str) -> Any:
            v = fields.get(key)
            return None if isinstance(v, _ArrayInfo) else v

        arch = scalar("general.architecture")
        kv: dict[str, Any] = {}
        for key, v in fields.items():
            if (arch and key.startswith(f"{arch}.")) or key.startswith(("general.", "adapter.")):
                if isinstance(v, (int, float, str, bool)):
                    kv[key] = v
        vocab_sha = None
        vocab_size = None
        toks = fields.get("tokenizer.ggml.tokens")
        if with_vocab and isinstance(toks, _ArrayInfo) and toks.etype == _STRING:
            h = hashlib.sha256()
            model = scalar("tokenizer.ggml.model") or ""
            h.update(str(model).encode() + b"\n")
            items = r.string_array_bytes(toks)
            h.update(b"".join(t + b"\x00" for t in items))
            vocab_sha = h.hexdigest()
            vocab_size = len(items)
        alpha = scalar("adapter.lora.alpha")
        ctx = scalar(f"{arch}.context_length") if arch else None
        return GGUFHeader(
            path=p,
            architecture=arch,
            general_type=scalar("general.type"),
            adapter_type=scalar("adapter.type"),
            lora_alpha=float(alpha) if isinstance(alpha, (int, float)) else None,
            name=scalar("general.name"),
            context_length=int(ctx) if isinstance(ctx, int) else None,
            chat_template=scalar("tokenizer.chat_template"),
            tensors={t.name: t.shape for t in parsed.tensors},
            tensor_types={t.name: _ggml_type(t.type_id)[0] for t in parsed.tensors},
            kv=kv,
            vocab_sha256=vocab_sha,
            vocab_size=vocab_size,
        )
    finally:
        r.buf.close()
