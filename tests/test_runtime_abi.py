"""GGUF header reader and the adapter ABI check, on real generated files.

The shape rules of ``check_adapter`` were derived from llama.cpp's loader;
``test_llama_cpp_agrees`` loads every broken adapter with the real
``llama_adapter_lora_init`` in a subprocess and checks llama.cpp refuses
exactly the files llmos refuses (and accepts the good ones).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from llmos_cli.errors import AbiError, InvalidPackageError
from llmos_cli.gguf_info import read_header, read_metadata
from llmos_cli.runtime.abi import check_adapter, ensure_adapter_fits, lora_rank, lora_targets
from tests.helpers.fixtures_models import write_lora, write_tiny_llama

pytest_plugins = ["tests.helpers.fixtures_models"]  # tiny_model, tiny_lora, tiny_lora2


# ---------------------------------------------------------------- the reader


def test_reader_matches_gguf_py(tiny_model, tiny_lora):
    from gguf import GGUFReader

    for path in (tiny_model.path, tiny_lora.path):
        ours = read_header(path)
        ref = GGUFReader(str(path))
        assert ours.tensors == {t.name: tuple(int(x) for x in t.shape) for t in ref.tensors}
        assert ours.tensor_types == {t.name: t.tensor_type.name for t in ref.tensors}
        assert ours.architecture == ref.fields["general.architecture"].contents()
    hdr = read_header(tiny_model.path)
    assert hdr.context_length == tiny_model.hp.n_ctx
    assert hdr.chat_template == tiny_model.chat_template
    assert hdr.vocab_size == tiny_model.hp.n_vocab
    assert hdr.general_type is None and not hdr.is_adapter
    # numpy (out, in) is GGUF [in, out]
    assert hdr.tensors["blk.0.ffn_up.weight"] == (tiny_model.hp.n_embd, tiny_model.hp.n_ff)
    lh = read_header(tiny_lora.path)
    assert lh.is_adapter and lh.adapter_type == "lora" and lh.lora_alpha == 8.0


def test_fingerprint_tracks_shapes_and_vocab(tmp_path):
    a = read_header(write_tiny_llama(tmp_path / "a.gguf", seed=1).path).fingerprint()
    b = read_header(write_tiny_llama(tmp_path / "b.gguf", seed=2).path).fingerprint()
    c = read_header(write_tiny_llama(tmp_path / "c.gguf", n_ff=96).path).fingerprint()
    assert a == b  # same architecture, shapes and vocabulary: same ABI, whatever the weights
    assert a != c


def test_read_metadata_decodes_arrays(tiny_model):
    md = read_metadata(tiny_model.path, ["tokenizer."])
    assert md["tokenizer.ggml.tokens"] == tiny_model.tokenizer["tokenizer.ggml.tokens"]
    assert md["tokenizer.ggml.token_type"] == list(tiny_model.tokenizer["tokenizer.ggml.token_type"])
    assert md["tokenizer.ggml.add_bos_token"] is True
    assert not any(k.startswith("llama.") for k in md)


@pytest.mark.parametrize(
    "mutate, needle",
    [
        (lambda b: b[: len(b) - 100], "truncated"),
        (lambda b: b[:20], "only 20 bytes"),
        (lambda b: b"", "only 0 bytes"),
        (lambda b: b"GGML" + b[4:], "bad magic"),
        (lambda b: b[:24] + b"\xff" * 64 + b[88:], "unreadable GGUF"),
        (lambda b: b[:300], "unreadable GGUF"),
    ],
)
def test_reader_refuses_broken_files(tmp_path, tiny_model, mutate, needle):
    data = tiny_model.path.read_bytes()
    p = tmp_path / "broken.gguf"
    p.write_bytes(mutate(data))
    with pytest.raises(InvalidPackageError) as ei:
        read_header(p)
    assert needle in ei.value.message


# ---------------------------------------------------------------- the ABI check


def test_good_adapters_fit(tiny_model, tiny_lora, tiny_lora2):
    base = read_header(tiny_model.path)
    for lora in (tiny_lora, tiny_lora2):
        hdr = read_header(lora.path)
        assert check_adapter(hdr, base) == []
        ensure_adapter_fits(hdr, base)
    assert lora_targets(read_header(tiny_lora.path)) == sorted(tiny_lora.pairs)
    assert lora_rank(read_header(tiny_lora2.path)) == 2


def _broken_adapters(tmp_path: Path, base):
    other = write_tiny_llama(tmp_path / "other.gguf", n_embd=48, n_ff=96)
    return {
        "wrong-arch": (write_lora(tmp_path / "arch.gguf", base, arch="qwen2"), "arch-mismatch"),
        "not-adapter": (write_lora(tmp_path / "type.gguf", base, general_type="model"), "not-adapter"),
        "not-lora": (write_lora(tmp_path / "kind.gguf", base, adapter_type="control_vector"), "not-lora"),
        "missing-b": (write_lora(tmp_path / "pair.gguf", base, drop=["blk.1.attn_v.weight.lora_b"]), "incomplete-pair"),
        "unknown-tensor": (write_lora(tmp_path / "extra.gguf", base, extra_tensor="blk.7.attn_q.weight"), "unknown-tensor"),
        "rank-mismatch": (write_lora(tmp_path / "rank.gguf", base, rank_mismatch="blk.0.attn_q.weight"), "rank-mismatch"),
        "wrong-in-dim": (write_lora(tmp_path / "indim.gguf", base, wrong_in_dim="blk.0.ffn_up.weight"), "shape-mismatch"),
        "other-base": (write_lora(tmp_path / "otherbase.gguf", other), "shape-mismatch"),
    }


def test_broken_adapters_are_named(tmp_path, tiny_model):
    base = read_header(tiny_model.path)
    for label, (lora, code) in _broken_adapters(tmp_path, tiny_model).items():
        problems = check_adapter(read_header(lora.path), base)
        assert problems, label
        assert problems[0].code == code, (label, problems)
        with pytest.raises(AbiError) as ei:
            ensure_adapter_fits(read_header(lora.path), base, label=label, model_label="tiny")
        assert f"adapter {label} does not fit model tiny" in ei.value.message
        assert ei.value.details["problems"][0]["code"] == code


_PROBE = r"""
import json, sys
import llama_cpp

quiet = llama_cpp.llama_log_callback(lambda *a: None)  # keep a reference: C calls it later
llama_cpp.llama_log_set(quiet, None)
llm = llama_cpp.Llama(sys.argv[1], n_ctx=64, verbose=False)
for label, path in json.loads(sys.argv[2]).items():
    print(label, flush=True)  # a crash names the file that caused it
    ptr = llama_cpp.llama_adapter_lora_init(llm.model, path.encode())
    print(json.dumps({label: bool(ptr)}), flush=True)
    if ptr:
        llama_cpp.llama_adapter_lora_free(ptr)
"""


def test_llama_cpp_agrees(tmp_path, tiny_model, tiny_lora, tiny_lora2):
    """What llmos refuses, llama.cpp refuses too (so the check is neither too strict nor too lax)."""
    broken = _broken_adapters(tmp_path, tiny_model)
    files = {label: str(lora.path) for label, (lora, _code) in broken.items()}
    files["good-a"] = str(tiny_lora.path)
    files["good-b"] = str(tiny_lora2.path)
    proc = subprocess.run([sys.executable, "-c", _PROBE, str(tiny_model.path), json.dumps(files)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, (proc.stdout[-500:], proc.stderr[-2000:])
    loaded: dict[str, bool] = {}
    for line in proc.stdout.splitlines():
        if line.startswith("{"):
            loaded.update(json.loads(line))
    base = read_header(tiny_model.path)
    for label, path in files.items():
        ours = not check_adapter(read_header(path), base)
        assert loaded[label] == ours, (label, loaded[label], ours)
    assert loaded["good-a"] and loaded["good-b"]


# ---------------------------------------------------------------- tensor types (issue 11)

_TYPE_PROBE = r"""
import ctypes, json, resource, sys
import numpy as np
import llama_cpp

resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # an expected crash leaves no core file
quiet = llama_cpp.llama_log_callback(lambda *a: None)
llama_cpp.llama_log_set(quiet, None)
llm = llama_cpp.Llama(sys.argv[1], n_ctx=64, verbose=False)
n_vocab = llama_cpp.llama_n_vocab(llama_cpp.llama_model_get_vocab(llm.model))


def logits():
    llm.reset()
    llm.eval([1, 5, 6, 7])
    return np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(llm.ctx, -1), shape=(n_vocab,)).copy()


ptr = llama_cpp.llama_adapter_lora_init(llm.model, sys.argv[2].encode())
print(json.dumps({"loaded": bool(ptr)}), flush=True)
arr = (llama_cpp.llama_adapter_lora_p_ctypes * 1)(ptr)
llama_cpp.llama_set_adapters_lora(llm.ctx, arr, 1, (ctypes.c_float * 1)(1.0))
print(json.dumps({"logits": [float(x) for x in logits()]}), flush=True)
"""


def _decode_with(base_path: Path, adapter: Path) -> tuple[int, dict]:
    proc = subprocess.run([sys.executable, "-c", _TYPE_PROBE, str(base_path), str(adapter)], capture_output=True, text=True, timeout=300)
    out: dict = {}
    for line in proc.stdout.splitlines():
        if line.startswith("{"):
            out.update(json.loads(line))
    return proc.returncode, out


def test_llama_cpp_agrees_on_tensor_types(tmp_path, tiny_model):
    """Each tensor type llmos accepts really loads and decodes in llama.cpp, close to the F32 adapter's logits.

    Each type llmos refuses loads (llama.cpp's loader checks no types) and then
    crashes the process at the first decode: the reason the check exists.
    """
    import numpy as np

    from llmos_cli.runtime.abi import LORA_TENSOR_TYPES
    from tests.test_hostile_gguf import REFUSED_TYPES, write_typed_lora

    base = read_header(tiny_model.path)
    results = {}
    for t in sorted(LORA_TENSOR_TYPES) + ["I32", "F64"]:
        p = write_typed_lora(tmp_path / f"{t}.gguf", tiny_model, t)
        results[t] = (_decode_with(tiny_model.path, p), not check_adapter(read_header(p), base))
    ref = np.array(results["F32"][0][1]["logits"])
    for t, ((rc, out), ours) in results.items():
        if t in LORA_TENSOR_TYPES:
            assert ours, t
            assert rc == 0 and out["loaded"], (t, rc)
            got = np.array(out["logits"])
            assert np.isfinite(got).all(), t
            assert np.abs(got - ref).max() < 0.05, (t, float(np.abs(got - ref).max()))  # quantisation error only
        else:
            assert t in REFUSED_TYPES and not ours, t
            assert out.get("loaded") is True and "logits" not in out and rc != 0, (t, rc, out.keys())
