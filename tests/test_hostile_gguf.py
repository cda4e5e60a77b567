"""Hostile GGUF files: every one is refused with a one-line error, never a traceback or a crash.

Issue 11, item 1.  The files are generated here byte by byte (no binary blobs
are checked in): ``HOSTILE`` maps a threat class to a generator and the words
the error must carry.  ``write_typed_lora`` writes a LoRA adapter whose
tensors have any ggml type, for the type check (I32 and F64 adapters used to
pass every check and then segfault llama.cpp at the first decode).

The end-to-end tests run llmos as a real subprocess, so a crash (signal) of
llama.cpp fails the test instead of killing pytest.
"""

from __future__ import annotations

import hashlib
import io
import json
import sqlite3
import struct
import tarfile
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

from llmos_cli.errors import ExitCode, InvalidPackageError
from llmos_cli.gguf_info import read_header, read_metadata
from llmos_cli.runtime.abi import LORA_TENSOR_TYPES, adapter_problems, check_adapter, validate_adapter_file
from tests.helpers.fixtures_models import TinyModel, write_lora, write_tiny_llama

# ---------------------------------------------------------------- byte-level generators

T_U8, T_U32, T_STRING, T_ARRAY = 0, 4, 8, 9


def gstr(text: str | bytes) -> bytes:
    raw = text.encode() if isinstance(text, str) else text
    return struct.pack("<Q", len(raw)) + raw


def kv(key: str, vtype: int, payload: bytes) -> bytes:
    return gstr(key) + struct.pack("<I", vtype) + payload


def kv_str(key: str, value: str) -> bytes:
    return kv(key, T_STRING, gstr(value))


def kv_u32(key: str, value: int) -> bytes:
    return kv(key, T_U32, struct.pack("<I", value))


def tensor_info(name: str, shape: tuple[int, ...], type_id: int = 0, offset: int = 0) -> bytes:
    return gstr(name) + struct.pack("<I", len(shape)) + b"".join(struct.pack("<Q", d) for d in shape) + struct.pack("<IQ", type_id, offset)


ADAPTER_KVS = [kv_str("general.architecture", "llama"), kv_str("general.type", "adapter"), kv_str("adapter.type", "lora")]


def gguf(
    kvs: list[bytes], tensors: Sequence[bytes] = (), *, data: bytes = b"", n_kv: int | None = None, n_tensors: int | None = None, version: int = 3
) -> bytes:
    """A GGUF file: header, key/values, tensor infos, padding to 32, tensor data."""
    head = b"GGUF" + struct.pack("<IQQ", version, len(tensors) if n_tensors is None else n_tensors, len(kvs) if n_kv is None else n_kv)
    body = head + b"".join(kvs) + b"".join(tensors)
    return body + b"\x00" * (-len(body) % 32) + data


def nested_arrays(depth: int) -> bytes:
    """A key whose value is an array of an array of ... (``depth`` levels) of an empty u8 array."""
    return kv("deep", T_ARRAY, struct.pack("<IQ", T_ARRAY, 1) * (depth - 1) + struct.pack("<IQ", T_U8, 0))


def _ok_tensor() -> tuple[bytes, bytes]:
    return tensor_info("blk.0.attn_q.weight.lora_a", (4, 2), 0, 0), b"\x00" * 32


#: threat class -> (generator of the file's bytes, words the one-line error must contain)
HOSTILE: dict[str, tuple[Callable[[], bytes], str]] = {
    "nested-arrays-5000": (lambda: gguf([*ADAPTER_KVS, nested_arrays(5000)]), "nested more than"),
    "nested-arrays-5": (lambda: gguf([*ADAPTER_KVS, nested_arrays(5)]), "nested more than"),
    "string-length-2^62": (lambda: gguf([kv("general.name", T_STRING, struct.pack("<Q", 1 << 62))]), "string of"),
    "string-past-end": (lambda: gguf([kv("general.name", T_STRING, struct.pack("<Q", 5000) + b"abc")]), "past the end"),
    "key-length-2^40": (lambda: gguf([struct.pack("<Q", 1 << 40) + b"k" * 16]), "metadata key of"),
    "array-count-2^60": (lambda: gguf([kv("a", T_ARRAY, struct.pack("<IQ", T_U8, 1 << 60))]), "array of"),
    "string-array-past-end": (lambda: gguf([kv("tokenizer.ggml.tokens", T_ARRAY, struct.pack("<IQ", T_STRING, 100_000) + gstr("a"))]), "past the end"),
    "array-bad-element-type": (lambda: gguf([kv("a", T_ARRAY, struct.pack("<IQ", 77, 1) + b"\x00" * 8)]), "unknown array element type"),
    "value-type-unknown": (lambda: gguf([kv("a", 99, b"\x00" * 8)]), "unknown metadata value type"),
    "kv-count-2^40": (lambda: gguf(ADAPTER_KVS, n_kv=1 << 40), "implausible counts"),
    "tensor-count-2^40": (lambda: gguf(ADAPTER_KVS, n_tensors=1 << 40), "implausible counts"),
    "tensor-count-vs-size": (lambda: gguf(ADAPTER_KVS, n_tensors=500_000), "cannot fit in a file"),
    "duplicate-key": (lambda: gguf([*ADAPTER_KVS, kv_str("general.type", "model")]), "duplicate metadata key"),
    "duplicate-tensor": (
        lambda: gguf(ADAPTER_KVS, [tensor_info("t.lora_a", (4, 2)), tensor_info("t.lora_a", (4, 2), 0, 32)], data=b"\x00" * 64),
        "duplicate tensor",
    ),
    "tensor-5-dims": (lambda: gguf(ADAPTER_KVS, [tensor_info("t.lora_a", (1, 1, 1, 1, 1))], data=b"\x00" * 32), "dimensions"),
    "tensor-type-unknown": (lambda: gguf(ADAPTER_KVS, [tensor_info("t.lora_a", (4, 2), 999)], data=b"\x00" * 32), "unknown ggml tensor type"),
    "tensor-elements-overflow": (lambda: gguf(ADAPTER_KVS, [tensor_info("t.lora_a", (1 << 32, 1 << 32))]), "declares"),
    "tensor-misaligned": (lambda: gguf(ADAPTER_KVS, [tensor_info("t.lora_a", (4, 2), 0, 3)], data=b"\x00" * 64), "not aligned"),
    "tensor-block-misfit": (lambda: gguf(ADAPTER_KVS, [tensor_info("t.lora_a", (5, 2), 8)], data=b"\x00" * 128), "block size"),
    "tensor-data-past-end": (lambda: gguf(ADAPTER_KVS, [tensor_info("t.lora_a", (1024, 1024))], data=b"\x00" * 32), "truncated"),
    "alignment-not-power-of-2": (lambda: gguf([*ADAPTER_KVS, kv_u32("general.alignment", 3)]), "general.alignment"),
    "version-99": (lambda: gguf(ADAPTER_KVS, version=99), "unsupported GGUF version"),
    "not-gguf": (lambda: b"PK\x03\x04" + b"\x00" * 200, "not a GGUF file"),
    "empty": (lambda: b"", "only 0 bytes"),
}


@pytest.mark.parametrize("label", sorted(HOSTILE))
def test_hostile_headers_are_refused(tmp_path, label):
    make, needle = HOSTILE[label]
    p = tmp_path / f"{label}.gguf"
    p.write_bytes(make())
    for read in (lambda: read_header(p), lambda: read_header(p, with_vocab=False), lambda: read_metadata(p, [""])):
        with pytest.raises(InvalidPackageError) as ei:
            read()
        assert needle in ei.value.message, (label, ei.value.message)
        assert "\n" not in ei.value.message and len(ei.value.message) < 400


def test_a_good_header_still_reads(tmp_path):
    """The generators make valid files when nothing hostile is added (so each case above fails for its own reason)."""
    t, data = _ok_tensor()
    p = tmp_path / "ok.gguf"
    p.write_bytes(gguf([*ADAPTER_KVS, nested_arrays(3)], [t], data=data))
    hdr = read_header(p)
    assert hdr.is_adapter and hdr.tensors == {"blk.0.attn_q.weight.lora_a": (4, 2)}
    assert read_metadata(p, ["deep"])["deep"] == [[[]]]


def test_limits_are_enforced_below_the_file_size(tmp_path, monkeypatch):
    """A string or array within the file but over the limit is refused too (limits lowered to keep the files small)."""
    import llmos_cli.gguf_info as gi

    monkeypatch.setattr(gi, "MAX_STRING_BYTES", 100)
    monkeypatch.setattr(gi, "MAX_ARRAY_ELEMENTS", 10)
    p = tmp_path / "s.gguf"
    p.write_bytes(gguf([*ADAPTER_KVS, kv_str("tokenizer.chat_template", "x" * 101)]))
    with pytest.raises(InvalidPackageError, match="string of 101 bytes"):
        read_header(p)
    p.write_bytes(gguf([*ADAPTER_KVS, kv("a", T_ARRAY, struct.pack("<IQ", T_U8, 11) + b"\x00" * 11)]))
    with pytest.raises(InvalidPackageError, match="array of 11 elements"):
        read_header(p)


# ---------------------------------------------------------------- adapters of every tensor type

#: numpy dtypes gguf-py writes as these plain ggml types
_PLAIN = {"F32": "float32", "F16": "float16", "F64": "float64", "I8": "int8", "I16": "int16", "I32": "int32", "I64": "int64"}


def write_typed_lora(path: Path, base: TinyModel, type_name: str, *, rank: int = 32, seed: int = 1) -> Path:
    """A LoRA adapter for ``base`` (right names and shapes) whose tensors all have ggml type ``type_name``.

    Quantised types need rows that are whole blocks: rank 32 with the tiny
    model's 32-wide embedding gives that for the 32-element blocks.
    """
    import numpy as np
    from gguf import GGMLQuantizationType, GGUFWriter
    from gguf.quants import quantize

    ref = write_lora(path.with_name(path.stem + ".f32.gguf"), base, rank=rank, seed=seed)
    w = GGUFWriter(str(path), "llama")
    w.add_type("adapter")
    w.add_string("adapter.type", "lora")
    w.add_float32("adapter.lora.alpha", ref.alpha)
    for name, (a, b) in ref.pairs.items():
        for suffix, arr in ((".lora_a", a), (".lora_b", b)):
            if type_name in _PLAIN:
                scale = 100 if type_name.startswith("I") else 1
                w.add_tensor(name + suffix, (arr * scale).astype(getattr(np, _PLAIN[type_name])))
            else:
                qt = GGMLQuantizationType[type_name]
                w.add_tensor(name + suffix, quantize(arr, qt), raw_dtype=qt)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


REFUSED_TYPES = ("I8", "I16", "I32", "I64", "F64")


@pytest.fixture(scope="module")
def base_model(tmp_path_factory) -> TinyModel:
    return write_tiny_llama(tmp_path_factory.mktemp("hostile-base") / "tiny.gguf")


@pytest.mark.parametrize("type_name", sorted(LORA_TENSOR_TYPES) + list(REFUSED_TYPES))
def test_adapter_tensor_types(tmp_path, base_model, type_name):
    p = write_typed_lora(tmp_path / f"{type_name}.gguf", base_model, type_name)
    hdr = read_header(p)
    assert set(hdr.tensor_types.values()) == {type_name}
    problems = check_adapter(hdr, read_header(base_model.path))
    if type_name in LORA_TENSOR_TYPES:
        assert problems == [] and adapter_problems(hdr) == []
        validate_adapter_file(p)
    else:
        assert problems and {pr.code for pr in problems} == {"tensor-type"}, problems
        assert type_name in problems[0].message
        with pytest.raises(InvalidPackageError, match=f"has type {type_name}"):
            validate_adapter_file(p)


# ---------------------------------------------------------------- end to end, as a subprocess


def hand_archive(dest: Path, package: dict, files: dict[str, bytes], extra: dict | None = None) -> Path:
    """A ``.llmos`` archive written by hand (what an attacker or an old llmos could publish: no ``llmos build`` checks)."""
    import tomli_w

    manifest = {"schema": 1, "package": package, **(extra or {})}
    manifest["files"] = {rel: {"sha256": hashlib.sha256(b).hexdigest(), "size": len(b)} for rel, b in sorted(files.items())}
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(dest, "w:gz") as tar:
        for rel, content in [("llmos.toml", tomli_w.dumps(manifest).encode()), *sorted(files.items())]:
            ti = tarfile.TarInfo(rel)
            ti.size = len(content)
            ti.mode = 0o644
            tar.addfile(ti, io.BytesIO(content))
    return dest


def library_archive(dest_dir: Path, name: str, adapter: bytes, *, base: str = "tiny") -> Path:
    pkg = {"name": name, "version": "1.0", "kind": "library", "summary": "s", "license": "MIT", "maintainer": "T <t@example.org>", "base": base}
    return hand_archive(dest_dir / f"{name}_1.0.llmos", pkg, {"adapter.gguf": adapter}, {"adapter": {"file": "adapter.gguf"}})


def state_snapshot(home: Path) -> dict:
    """The database's packages, files and history statuses, and the store's blob names."""
    db = home / "state.db"
    out: dict = {"store": sorted(p.name for p in (home / "store").rglob("*") if p.is_file()) if (home / "store").is_dir() else []}
    if db.exists():
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
        try:
            out["packages"] = con.execute("SELECT name, version, attached FROM packages ORDER BY name").fetchall()
            out["files"] = con.execute("SELECT package, path, sha256 FROM files ORDER BY package, path").fetchall()
            out["history"] = con.execute("SELECT id, status FROM history WHERE status != 'rolled_back' ORDER BY id").fetchall()
        finally:
            con.close()
    return out


def one_line_error(r, code: int) -> None:
    assert r.exit_code == code, r
    assert "Traceback" not in r.stderr, r
    errors = [ln for ln in r.stderr.splitlines() if ln.startswith("error")]
    assert len(errors) == 1, r


@pytest.fixture
def with_tiny(cli, base_model):
    r = cli("import-model", base_model.path, "--name", "tiny", "--version", "1.0", "-y")
    assert r.exit_code == 0, r
    return base_model


def test_install_refuses_bad_adapters(with_tiny, llmos_proc, llmos_home, tmp_path):
    """A non-GGUF 'adapter', an I32 adapter and a 5000-deep GGUF are refused at install (exit 5); nothing changes."""
    before = state_snapshot(llmos_home)
    cases = {
        "text-lib": (b"this is not a GGUF file at all\n" * 20, "not a GGUF file"),
        "i32-lib": (write_typed_lora(tmp_path / "i32.gguf", with_tiny, "I32").read_bytes(), "has type I32"),
        "deep-lib": (HOSTILE["nested-arrays-5000"][0](), "nested more than"),
    }
    for name, (blob, needle) in cases.items():
        arch = library_archive(tmp_path / "dist", name, blob)
        r = llmos_proc("install", arch, "-y")
        one_line_error(r, ExitCode.INVALID_PACKAGE)
        assert needle in r.stderr and name in r.stderr, r
        assert state_snapshot(llmos_home) == before, name


@pytest.fixture
def installed_unchecked(cli, with_tiny, tmp_path):
    """Libraries installed as an older llmos (without the install-time GGUF check) would have."""
    import llmos_cli.app.install as app_install

    libs = {
        "i32-lib": write_typed_lora(tmp_path / "i32.gguf", with_tiny, "I32").read_bytes(),
        "f64-lib": write_typed_lora(tmp_path / "f64.gguf", with_tiny, "F64").read_bytes(),
        "deep-lib": HOSTILE["nested-arrays-5000"][0](),
    }
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(app_install, "validate_staged", lambda *a, **k: None)
        for name, blob in libs.items():
            r = cli("install", library_archive(tmp_path / "dist", name, blob), "-y")
            assert r.exit_code == 0, r
    return libs


@pytest.mark.slow
def test_stack_and_run_refuse_bad_adapters(installed_unchecked, llmos_proc):
    """Attached (the default) or named with --lib: refused before llama.cpp sees the file (used to exit 139)."""
    r = llmos_proc("stack", "--json")
    assert r.exit_code == 0, r
    libs = {x["name"]: x for x in json.loads(r.stdout)["data"]["libraries"]}
    assert libs["i32-lib"]["fits"] is False and "type I32" in libs["i32-lib"]["problems"][0]
    assert libs["f64-lib"]["fits"] is False and "type F64" in libs["f64-lib"]["problems"][0]
    assert libs["deep-lib"]["fits"] is False and "nested more than" in libs["deep-lib"]["problems"][0]
    r = llmos_proc("run", "hi", "-n", "2")  # every library attached
    one_line_error(r, ExitCode.ABI)
    for name, word in (("i32-lib", "I32"), ("f64-lib", "F64"), ("deep-lib", "nested")):
        r = llmos_proc("run", "hi", "-n", "2", "--lib", name)
        one_line_error(r, ExitCode.ABI)
        assert name in r.stderr and word in r.stderr, r
    r = llmos_proc("run", "hi", "-n", "2", "--no-libs")
    assert r.exit_code == 0, r


def test_check_refuses_bad_adapters(with_tiny, llmos_proc, tmp_path):
    for name, blob, needle in (
        ("i32-lib", write_typed_lora(tmp_path / "i32.gguf", with_tiny, "I32").read_bytes(), "adapter-tensor-type"),
        ("f64-lib", write_typed_lora(tmp_path / "f64.gguf", with_tiny, "F64").read_bytes(), "adapter-tensor-type"),
        ("deep-lib", HOSTILE["nested-arrays-5000"][0](), "nested more than"),
        ("text-lib", b"plain text\n" * 30, "not a GGUF file"),
    ):
        arch = library_archive(tmp_path / "dist", name, blob)
        r = llmos_proc("check", arch, "--json")
        assert r.exit_code == ExitCode.CHECK_FAILED, r
        assert "Traceback" not in r.stderr
        assert needle in r.stdout, r


def test_attach_refuses_a_bad_adapter(installed_unchecked, llmos_proc, llmos_home):
    """A detached library whose adapter llama.cpp cannot run is not put back into runs (exit 11, nothing changed)."""
    r = llmos_proc("detach", "i32-lib", "f64-lib", "deep-lib")
    assert r.exit_code == 0, r
    before = state_snapshot(llmos_home)
    for name, word in (("i32-lib", "I32"), ("f64-lib", "F64"), ("deep-lib", "nested")):
        r = llmos_proc("attach", name)
        one_line_error(r, ExitCode.ABI)
        assert name in r.stderr and word in r.stderr, r
    assert state_snapshot(llmos_home) == before
    r = llmos_proc("run", "hi", "-n", "2")  # the bad libraries stay out of the run
    assert r.exit_code == 0, r
