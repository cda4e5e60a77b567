"""Property-based fuzzing of GGUF headers and registry index files (issue 11).

The property: whatever the bytes, the reader returns a header or raises
``InvalidPackageError``; the index parser returns an index or raises an
``LlmosError``; and every command (``check``, ``install``, ``stack``, ``run``,
``update``), run as a real subprocess, ends with a documented exit code and
a one-line error -- never a traceback (exit 1) or a signal -- and leaves the
state database and the store as they were.

Example counts are bounded for CI, and derandomised so that CI is
reproducible.  ``LLMOS_FUZZ_SCALE=N`` multiplies them and
``LLMOS_FUZZ_RANDOM=1`` draws new examples (the longer runs recorded in
docs/security.md used both).
"""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from llmos_cli.errors import ExitCode, InvalidPackageError, LlmosError
from llmos_cli.gguf_info import read_header, read_metadata
from llmos_cli.registry.index import Index
from llmos_cli.runtime.abi import adapter_problems, check_adapter
from tests.helpers.fixtures_models import write_lora, write_tiny_llama
from tests.test_hostile_gguf import library_archive, state_snapshot

SCALE = max(1, int(os.environ.get("LLMOS_FUZZ_SCALE", "1")))
DERANDOMIZE = not os.environ.get("LLMOS_FUZZ_RANDOM")
#: subprocess properties: no shrinking (each step costs seconds); the failing input is printed as found
NO_SHRINK = [Phase.explicit, Phase.reuse, Phase.generate]
DOCUMENTED = {int(c) for c in ExitCode} - {int(ExitCode.FAILURE)}

_SEEDS: dict[str, bytes] = {}


def _seed_files() -> dict[str, bytes]:
    """A tiny base model and a LoRA adapter for it (written once per session)."""
    if not _SEEDS:
        import tempfile

        d = Path(tempfile.mkdtemp(prefix="llmos-fuzz-"))
        base = write_tiny_llama(d / "base.gguf")
        _SEEDS["base"] = base.path.read_bytes()
        _SEEDS["adapter"] = write_lora(d / "lora.gguf", base).path.read_bytes()
        _SEEDS["_dir"] = str(d).encode()
    return _SEEDS


_HEADER_LEN: dict[str, int] = {}


def _header_len(seed: str) -> int:
    """Where the seed file's tensor data starts (gguf-py's reader, once per seed)."""
    if seed not in _HEADER_LEN:
        import tempfile

        from gguf import GGUFReader

        with tempfile.NamedTemporaryFile(suffix=".gguf") as fh:
            fh.write(_seed_files()[seed])
            fh.flush()
            _HEADER_LEN[seed] = int(GGUFReader(fh.name).data_offset)
    return _HEADER_LEN[seed]


EXTREMES = [0, 1, 2, 3, 4, 5, 8, 9, 31, 32, 255, 1 << 31, (1 << 32) - 1, 1 << 32, (1 << 62), (1 << 63) - 1, (1 << 64) - 1]


@st.composite
def mutated(draw, seed: str) -> bytes:
    """Up to four mutations, mostly inside the header (where the parser reads)."""
    data = bytearray(_seed_files()[seed])
    hlen = _header_len(seed)
    for _ in range(draw(st.integers(1, 4))):
        if not data:
            break
        limit = hlen if draw(st.integers(0, 9)) else len(data)
        pos = draw(st.integers(0, max(0, min(limit, len(data)) - 1)))
        op = draw(st.sampled_from(["byte", "u64", "u32", "truncate", "insert", "delete", "duplicate", "data"]))
        if op == "data" and len(data) > hlen:  # tensor data only: NaN, infinities, huge values pass every header check
            at = draw(st.integers(hlen, len(data) - 1))
            value = draw(st.sampled_from([float("nan"), float("inf"), -float("inf"), 3.0e38, 0.0]))
            n = min(draw(st.integers(1, 256)), (len(data) - at) // 4)
            data[at : at + 4 * n] = struct.pack(f"<{n}f", *([value] * n))
        elif op == "byte":
            data[pos] = draw(st.integers(0, 255))
        elif op in ("u64", "u32"):
            n = 8 if op == "u64" else 4
            v = draw(st.sampled_from(EXTREMES) | st.integers(0, (1 << (8 * n)) - 1)) % (1 << (8 * n))
            data[pos : pos + n] = struct.pack("<Q" if n == 8 else "<I", v)
        elif op == "truncate":
            del data[pos:]
        elif op == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=64))
        elif op == "delete":
            del data[pos : pos + draw(st.integers(1, 64))]
        else:
            n = draw(st.integers(1, 256))
            data[pos:pos] = data[pos : pos + n]
    return bytes(data)


# ---------------------------------------------------------------- in-process: the reader and the ABI check


@settings(max_examples=150 * SCALE, deadline=None, derandomize=DERANDOMIZE, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(data=mutated("adapter"))
def test_mutated_adapter_headers(tmp_path, data):
    p = tmp_path / "a.gguf"
    p.write_bytes(data)
    try:
        hdr = read_header(p)
    except InvalidPackageError as exc:
        assert "\n" not in exc.message
        return
    adapter_problems(hdr)
    check_adapter(hdr, read_header(Path(_seed_files()["_dir"].decode()) / "base.gguf", with_vocab=False))
    read_metadata(p, [""])


@settings(max_examples=100 * SCALE, deadline=None, derandomize=DERANDOMIZE, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(data=mutated("base"))
def test_mutated_model_headers(tmp_path, data):
    p = tmp_path / "m.gguf"
    p.write_bytes(data)
    try:
        hdr = read_header(p)
    except InvalidPackageError as exc:
        assert "\n" not in exc.message
        return
    hdr.fingerprint()
    json.dumps(hdr.to_json())


# ---------------------------------------------------------------- in-process: registry indexes


def _valid_index() -> dict:
    return {
        "schema": 1,
        "created": "2026-01-01T00:00:00Z",
        "version": 3,
        "expires": None,
        "packages": [
            {
                "name": "med-lib",
                "version": "1.0.0",
                "kind": "library",
                "summary": "s",
                "depends": ["bio-core (>=1.0)"],
                "filename": "med-lib_1.0.0.llmos",
                "size": 10,
                "sha256": "0" * 64,
            }
        ],
    }


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12,
)


@st.composite
def mutated_index(draw) -> bytes:
    doc = _valid_index()
    kind = draw(st.sampled_from(["field", "entry-field", "bytes", "deep"]))
    if kind == "field":
        doc[draw(st.sampled_from(["schema", "created", "version", "expires", "packages", "extra"]))] = draw(json_values)
    elif kind == "entry-field":
        key = draw(st.sampled_from(["name", "version", "kind", "depends", "conflicts", "provides", "base", "filename", "size", "sha256", "summary"]))
        doc["packages"][0][key] = draw(json_values)
    raw = json.dumps(doc).encode()
    if kind == "bytes":
        b = bytearray(raw)
        for _ in range(draw(st.integers(1, 4))):
            b[draw(st.integers(0, len(b) - 1))] = draw(st.integers(0, 255))
        raw = bytes(b)
    elif kind == "deep":
        depth = draw(st.sampled_from([100, 1000, 5000]))
        raw = b'{"schema": 1, "packages": ' + b"[" * depth + b"]" * depth + b"}"
    return raw


@settings(max_examples=300 * SCALE, deadline=None, derandomize=DERANDOMIZE)
@given(raw=mutated_index())
def test_mutated_indexes(raw):
    try:
        Index.parse(raw, "fuzz")
    except LlmosError as exc:
        assert "\n" not in exc.message


# ---------------------------------------------------------------- subprocess: every command


def _log(*fields) -> None:
    """``LLMOS_FUZZ_LOG=FILE``: one line per command run, for the long runs' counts in docs/security.md."""
    if os.environ.get("LLMOS_FUZZ_LOG"):
        with open(os.environ["LLMOS_FUZZ_LOG"], "a") as fh:
            fh.write(" ".join(str(f) for f in fields) + "\n")


def _one_line_or_ok(r, label: str) -> None:
    _log(label, r.exit_code)
    assert r.exit_code >= 0, f"{label}: killed by signal {-r.exit_code}\n{r.stderr[-2000:]}"
    assert r.exit_code in DOCUMENTED, (label, r)
    assert "Traceback" not in r.stderr, (label, r)
    if label == "check":  # a report of findings (``error [code] ...`` lines), exit 10 when any is an error
        assert r.exit_code in (ExitCode.OK, ExitCode.CHECK_FAILED), (label, r)
    elif r.exit_code:
        assert len([ln for ln in r.stderr.splitlines() if ln.startswith("error:")]) == 1, (label, r)


@pytest.mark.slow
@settings(
    max_examples=4 * SCALE,
    deadline=None,
    derandomize=DERANDOMIZE,
    phases=NO_SHRINK,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(data=mutated("adapter"))
def test_commands_on_mutated_adapters(cli, llmos_proc, llmos_home, tmp_path_factory, data):
    """check and install a library carrying a mutated adapter; when it installs, stack and run it."""
    tmp = tmp_path_factory.mktemp("fz")
    if not (llmos_home / "state.db").exists():
        base = tmp / "base.gguf"
        base.write_bytes(_seed_files()["base"])
        assert cli("import-model", base, "--name", "tiny", "--version", "1.0", "-y").exit_code == 0
    arch = library_archive(tmp, "fuzz-lib", data)
    r = llmos_proc("check", arch)
    _one_line_or_ok(r, "check")
    before = state_snapshot(llmos_home)
    r = llmos_proc("install", arch, "-y")
    _one_line_or_ok(r, "install")
    if r.exit_code:
        assert state_snapshot(llmos_home) == before
        return
    try:
        snap = state_snapshot(llmos_home)
        for args in (("stack", "--json"), ("run", "hi", "-n", "2", "--seed", "1")):
            r = llmos_proc(*args)
            _one_line_or_ok(r, args[0])
            assert state_snapshot(llmos_home) == snap, args
    finally:
        assert cli("remove", "fuzz-lib", "-y").exit_code == 0


@st.composite
def hostile_weights(draw) -> bytes:
    """A valid adapter whose tensor data holds NaN, infinities or huge values: every check passes, llama.cpp runs it."""
    data = bytearray(_seed_files()["adapter"])
    hlen = _header_len("adapter")
    for _ in range(draw(st.integers(1, 3))):
        at = hlen + 4 * draw(st.integers(0, (len(data) - hlen) // 4 - 1))
        value = draw(st.sampled_from([float("nan"), float("inf"), -float("inf"), 3.0e38, -3.0e38]))
        n = min(draw(st.integers(1, 4096)), (len(data) - at) // 4)
        data[at : at + 4 * n] = struct.pack(f"<{n}f", *([value] * n))
    return bytes(data)


@pytest.mark.slow
@settings(
    max_examples=3 * SCALE,
    deadline=None,
    derandomize=DERANDOMIZE,
    phases=NO_SHRINK,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(data=hostile_weights())
def test_run_with_hostile_weights(cli, llmos_proc, llmos_home, tmp_path_factory, data):
    """Weights no header check can judge: installed, then ``run`` ends cleanly (no signal, documented exit)."""
    tmp = tmp_path_factory.mktemp("hw")
    if not (llmos_home / "state.db").exists():
        base = tmp / "base.gguf"
        base.write_bytes(_seed_files()["base"])
        assert cli("import-model", base, "--name", "tiny", "--version", "1.0", "-y").exit_code == 0
    r = llmos_proc("install", library_archive(tmp, "weights-lib", data), "-y")
    _one_line_or_ok(r, "install")
    assert r.exit_code == 0, r
    try:
        for args in (("stack", "--json"), ("run", "hi", "-n", "4", "--seed", "1"), ("run", "hi", "-n", "4", "--temperature", "0.8")):
            _one_line_or_ok(llmos_proc(*args), args[0])
    finally:
        assert cli("remove", "weights-lib", "-y").exit_code == 0


@pytest.mark.slow
@settings(
    max_examples=4 * SCALE,
    deadline=None,
    derandomize=DERANDOMIZE,
    phases=NO_SHRINK,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(raw=mutated_index())
def test_update_on_mutated_indexes(cli, llmos_proc, llmos_home, tmp_path_factory, raw):
    """``llmos update`` of a folder source whose index.json is mutated: a documented exit and nothing changed."""
    reg = tmp_path_factory.mktemp("reg")
    (reg / "index.json").write_bytes(raw)
    if (llmos_home / "state.db").exists():
        cli("source", "remove", "fz", "-y")
    r = cli("source", "add", "fz", reg, "--allow-unsigned", "-y")
    assert r.exit_code == 0, r
    before = state_snapshot(llmos_home)
    r = llmos_proc("update")
    _one_line_or_ok(r, "update")
    if r.exit_code:
        assert state_snapshot(llmos_home) == before
